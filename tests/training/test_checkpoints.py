"""Training checkpoints and the servable export: save / load / export / load_for_inference give
the source model's logits (LoRA merged into the base, hyper weights carried over)."""

from __future__ import annotations

import json

import pytest
import torch

from tests.modeling.helpers import C, M, V, base_stream, pad_batch
from tests.training.checkpoint_helpers import randomize_, tiny_base_folder
from z2z_vllm.modeling import EncoderConfig, Zip2ZipConfig, Zip2ZipForCausalLM
from z2z_vllm.training.checkpoints import (
    export_for_serving,
    is_export,
    load_checkpoint,
    load_for_inference,
    pack_weights,
    save_checkpoint,
)

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def lora_model(base_dir, *, encoder=EncoderConfig(), tie_encoders=False) -> Zip2ZipForCausalLM:
    """Tiny Llama + LoRA with nonzero weights + hyper-encoders with random (not default) weights."""
    base = transformers.AutoModelForCausalLM.from_pretrained(str(base_dir))
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS, init_lora_weights=False)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(base_dir))
    model = Zip2ZipForCausalLM.from_base(
        peft.get_peft_model(base, lora),
        max_codebook_size=C,
        max_subtokens=M,
        tokenizer=tokenizer,
        input_encoder=encoder,
        tie_encoders=tie_encoders,
    )
    randomize_(model.input_encoder, seed=1)
    randomize_(model.output_encoder, seed=2)
    return model.eval()


def compressed_batch(model) -> tuple[torch.Tensor, torch.Tensor]:
    return pad_batch([model.codec.encode(base_stream(n, seed=n)) for n in (40, 25)])


def assert_same_logits(expected: torch.Tensor, actual: torch.Tensor) -> None:
    assert torch.equal(torch.isinf(expected), torch.isinf(actual))
    finite = torch.isfinite(expected)
    torch.testing.assert_close(actual[finite], expected[finite], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_checkpoint_and_export_round_trip_with_lora(tmp_path):
    base_dir = tiny_base_folder(tmp_path / "base")
    model = lora_model(base_dir)
    ids, mask = compressed_batch(model)
    expected = model(ids, attention_mask=mask).logits
    assert torch.isinf(expected[..., V:]).any() and torch.isfinite(expected[..., V:]).any()

    checkpoint = save_checkpoint(model, tmp_path / "ckpt")
    assert (checkpoint / "adapter_model.safetensors").is_file()
    reloaded = load_checkpoint(checkpoint)
    assert isinstance(reloaded.base_model, peft.PeftModel)
    assert torch.equal(reloaded(ids, attention_mask=mask).logits, expected)

    export = export_for_serving(checkpoint, tmp_path / "export")
    served = load_for_inference(export)
    assert not isinstance(served.base_model, peft.PeftModel)
    assert_same_logits(expected, served(ids, attention_mask=mask).logits)
    assert_same_logits(expected, load_checkpoint(export)(ids, attention_mask=mask).logits)


def test_exported_config_shape(tmp_path):
    base_dir = tiny_base_folder(tmp_path / "base")
    model = lora_model(base_dir, tie_encoders=True)
    export = export_for_serving(save_checkpoint(model, tmp_path / "ckpt"), tmp_path / "export")

    config = json.loads((export / "config.json").read_text())
    assert config["architectures"] == ["Zip2ZipLlamaForCausalLM"]
    assert config["model_type"] == "llama"
    assert config["vocab_size"] == V + C
    assert config["z2z_base_vocab_size"] == V
    block = config["z2z"]
    assert block["base_architecture"] == "LlamaForCausalLM"
    assert block["base_model"] is None
    assert (block["initial_vocab_size"], block["max_codebook_size"], block["max_subtokens"]) == (V, C, M)
    assert block["disabled_ids"] == [0] and block["pad_token_id"] == 0
    assert block["tie_encoders"] and block["output_encoder"] is None
    assert block["input_encoder"]["num_heads"] == 2 and block["input_encoder"]["hidden_size"] == 64
    assert block["reconstruction_weight"] == 0.0
    assert Zip2ZipConfig.load(export) == Zip2ZipConfig.from_dict(block)
    assert is_export(export) and not is_export(tmp_path / "ckpt")

    from safetensors import safe_open

    with safe_open(str(export / "z2z_encoders.safetensors"), "pt") as weights:
        prefixes = {key.split(".")[0] for key in weights.keys()}
    assert prefixes == {"input_encoder"}
    assert (export / "tokenizer.json").is_file() and (export / "model.safetensors").is_file()


@torch.no_grad()
def test_save_pretrained_folder_next_to_a_base_folder(tmp_path):
    base_dir = tiny_base_folder(tmp_path / "base")
    base = transformers.AutoModelForCausalLM.from_pretrained(str(base_dir))
    model = Zip2ZipForCausalLM.from_base(base, max_codebook_size=C, max_subtokens=M, disabled_ids=(0,)).eval()
    randomize_(model.input_encoder, seed=3)
    model.save_pretrained(tmp_path / "hyper")
    # The config may not say where the base is: --base tells.
    model.config.replace(base_model=None).save(tmp_path / "hyper")
    with pytest.raises(ValueError, match="base_model="):
        load_checkpoint(tmp_path / "hyper")

    export = export_for_serving(tmp_path / "hyper", tmp_path / "export", base_model=base_dir)
    ids, mask = compressed_batch(model)
    assert_same_logits(model(ids, attention_mask=mask).logits, load_for_inference(export)(ids, attention_mask=mask).logits)


@torch.no_grad()
def test_full_base_weights_checkpoint(tmp_path):
    base_dir = tiny_base_folder(tmp_path / "base")
    model = lora_model(base_dir, encoder=EncoderConfig(kind="residual", num_layers=1))
    model = Zip2ZipForCausalLM(model.base_model.merge_and_unload(), model.config)  # fine-tuned weights
    randomize_(model.input_encoder, seed=4)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(base_dir))
    checkpoint = save_checkpoint(model, tmp_path / "ckpt", tokenizer=tokenizer, include_base_weights=True)
    assert Zip2ZipConfig.load(checkpoint).base_model is None  # the folder is its own base

    ids, mask = compressed_batch(model)
    expected = model(ids, attention_mask=mask).logits
    assert torch.equal(load_checkpoint(checkpoint)(ids, attention_mask=mask).logits, expected)
    export = export_for_serving(checkpoint, tmp_path / "export")
    assert_same_logits(expected, load_for_inference(export)(ids, attention_mask=mask).logits)


@torch.no_grad()
def test_packed_weights_are_the_checkpoint_in_bfloat16_without_training_parts(tmp_path):
    from safetensors import safe_open

    base_dir = tiny_base_folder(tmp_path / "base")
    model = lora_model(base_dir)  # reconstruction head included (training default)
    checkpoint = save_checkpoint(model, tmp_path / "ckpt")
    (checkpoint / "train_config.json").write_text('{"base_model": "tiny"}')
    packed = pack_weights(checkpoint, tmp_path / "packed", base_model=str(base_dir))

    assert sorted(p.name for p in packed.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "train_config.json", "z2z_config.json",
        "z2z_encoders.safetensors",
    ]  # fmt: skip
    for name in ("adapter_model.safetensors", "z2z_encoders.safetensors"):
        with safe_open(str(packed / name), "pt") as weights:
            assert {weights.get_tensor(key).dtype for key in weights.keys()} == {torch.bfloat16}
            if name == "z2z_encoders.safetensors":
                assert not any(key.startswith("reconstruction.") for key in weights.keys())
    config = Zip2ZipConfig.load(packed)
    assert config.base_model == str(base_dir) and config.reconstruction_weight == 0.0
    assert json.loads((packed / "adapter_config.json").read_text())["base_model_name_or_path"] == str(base_dir)

    # The packed folder serves like the checkpoint, up to bfloat16 rounding of LoRA and encoders.
    ids, mask = compressed_batch(model)
    expected = model(ids, attention_mask=mask).logits
    served = load_for_inference(export_for_serving(packed, tmp_path / "export"))(ids, attention_mask=mask).logits
    assert torch.equal(torch.isinf(expected), torch.isinf(served))
    finite = torch.isfinite(expected)
    torch.testing.assert_close(served[finite], expected[finite], rtol=0.05, atol=0.05)
    with pytest.raises(FileExistsError):
        pack_weights(checkpoint, packed, base_model=str(base_dir))


def test_export_refuses_a_non_empty_destination(tmp_path):
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        export_for_serving(tmp_path / "ckpt", tmp_path / "export")


def test_cli_export(tmp_path, capsys):
    from z2z_vllm.cli import main

    base_dir = tiny_base_folder(tmp_path / "base")
    checkpoint = save_checkpoint(lora_model(base_dir), tmp_path / "ckpt")
    assert main(["export", str(checkpoint), str(tmp_path / "export")]) == 0
    assert is_export(tmp_path / "export")
    assert main(["export", str(checkpoint), str(tmp_path / "export")]) == 2  # not empty now
    assert "not empty" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing"), str(tmp_path / "other")]) == 2
