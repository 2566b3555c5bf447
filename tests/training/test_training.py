"""Data pipeline, LoRA training, resume, bits per byte and the train / eval-bpb verbs on a tiny
random Llama (tests/training/checkpoint_helpers.py) with a word-level tokenizer ("t1 t7 ...")."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.modeling.helpers import SPECIAL, V, base_stream
from tests.training.checkpoint_helpers import tiny_base_folder
from z2z_vllm.codec import LZWCodec
from z2z_vllm.training import TrainConfig, build_dataset, load_documents, train
from z2z_vllm.training.data import load_text_tokenizer
from z2z_vllm.training.evaluate import compare_bits_per_byte
from z2z_vllm.training.trainer import _datasets, build_model, latest_checkpoint, load_trained_model

C, M = 24, 3


def words(ids: list[int]) -> str:
    return " ".join("<s>" if i == SPECIAL else f"t{i}" for i in ids)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return tiny_base_folder(tmp_path_factory.mktemp("tiny_base"))


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    """Training files over t1..t6 and held-out files over t30..t35: a window's ids show its split."""
    root = tmp_path_factory.mktemp("texts")
    train_files, eval_files = [], []
    for n in range(3):
        path = root / f"train{n}.txt"
        path.write_text(words(base_stream(150 + 40 * n, seed=n)))
        train_files.append(str(path))
    for n in range(2):
        path = root / f"heldout{n}.txt"
        path.write_text(words([i + 29 if i else i for i in base_stream(90, seed=10 + n)]))
        eval_files.append(str(path))
    return {"train": train_files, "eval": eval_files}


def tiny_config(base_dir, texts, output_dir, **changes) -> TrainConfig:
    settings = dict(
        output_dir=str(output_dir), base_model=str(base_dir), train_files=texts["train"],
        eval_files=texts["eval"], eval_max_bytes=None, seq_len=24, max_codebook_size=C, max_subtokens=M,
        protect_digits=False, lora_r=4, lora_alpha=8, max_steps=6, batch_size=2, grad_accum=2, lr=3e-3,
        min_lr=1e-4, warmup_steps=1, log_every=1, eval_every=3, eval_max_sequences=4, save_every=3,
        encoder={"kind": "residual"}, progress=False, num_threads=1,
    )
    settings.update(changes)
    return TrainConfig(**settings)


def tiny_codec() -> LZWCodec:
    return LZWCodec(initial_vocab_size=V, max_codebook_size=C, max_subtokens=M, disabled_ids=(SPECIAL,))


# -- data ---------------------------------------------------------------------------------------


def test_windows_decompress_to_the_documents_base_tokens(base_dir, texts):
    tokenizer, codec = load_text_tokenizer(base_dir), tiny_codec()
    documents = load_documents(files=texts["train"])
    data = build_dataset(documents, tokenizer=tokenizer, codec=codec, length=16, start_id=SPECIAL)
    windows = iter(zip(data.sequences, data.base_tokens))
    for doc in documents:
        expected = tokenizer.encode(doc.text, add_special_tokens=False).ids
        rebuilt, doc_windows = [], []
        while len(rebuilt) < len(expected):
            window, covered = next(windows)
            assert window[0] == SPECIAL and len(window) <= 16
            body = window[1:].tolist()
            assert body == codec.encode(codec.decode(body))  # its own LZW stream (fresh codebook)
            assert len(codec.decode(body)) == covered
            rebuilt += codec.decode(body)
            doc_windows.append(window)
        assert rebuilt == expected
        assert all(len(w) == 16 for w in doc_windows[:-1])  # only a document's last window is short
    assert next(windows, None) is None
    assert data.num_bytes == sum(len(d.text.encode()) for d in documents)


class CountingTokenizer:
    """Wraps a tokenizer to count batch encodes (cache hits do none)."""

    def __init__(self, tokenizer):
        self.tokenizer, self.calls = tokenizer, 0

    def encode_batch(self, *args, **kwargs):
        self.calls += 1
        return self.tokenizer.encode_batch(*args, **kwargs)

    def to_str(self):
        return self.tokenizer.to_str()


def test_cache_hits_and_misses_on_changed_files(base_dir, texts, tmp_path):
    tokenizer, codec = CountingTokenizer(load_text_tokenizer(base_dir)), tiny_codec()
    options = dict(tokenizer=tokenizer, codec=codec, length=16, start_id=SPECIAL, cache_dir=tmp_path)
    first = build_dataset(load_documents(files=texts["train"]), **options)
    again = build_dataset(load_documents(files=texts["train"]), **options)
    assert tokenizer.calls == 1
    assert [w.tolist() for w in again.sequences] == [w.tolist() for w in first.sequences]
    assert again.base_tokens == first.base_tokens and again.num_bytes == first.num_bytes
    build_dataset(load_documents(files=texts["train"]), **{**options, "length": 20})  # other settings
    assert tokenizer.calls == 2
    changed = tmp_path / "changed.txt"
    changed.write_text("t1 t2")
    build_dataset(load_documents(files=[changed]), **options)
    changed.write_text("t1 t2 t3")
    os.utime(changed, ns=(1, 1))
    build_dataset(load_documents(files=[changed]), **options)
    assert tokenizer.calls == 4


def base_ids_of(data, codec) -> set[int]:
    return {i for w in data.sequences for i in codec.decode(w.tolist())} - {SPECIAL}


def test_train_and_eval_windows_come_from_their_own_split(base_dir, texts, tmp_path):
    cfg = tiny_config(base_dir, texts, tmp_path)
    tokenizer = load_text_tokenizer(base_dir)
    model = build_model(cfg, tokenizer=tokenizer)
    train_sets, eval_sets = _datasets(cfg, model, tokenizer)
    assert set(train_sets) == set(eval_sets) == {"files"}
    assert base_ids_of(train_sets["files"], model.codec) <= set(range(1, 7))
    assert base_ids_of(eval_sets["files"], model.codec) <= set(range(30, 36))


# -- domain mixtures ----------------------------------------------------------------------------

# Fake corpus domains: each (domain, split) writes its own six ids, so a window shows its source.
FAKE_IDS = {("code", "train"): 1, ("prose", "train"): 7, ("code", "heldout"): 30, ("prose", "heldout"): 36}


@pytest.fixture
def fake_domains(monkeypatch):
    """``z2z_vllm.data.corpus_documents`` over the fake domains; records each call's arguments."""
    from z2z_vllm.data.corpora import Document as CorpusDocument

    calls = []

    def corpus_documents(domain, *, split="train", max_bytes=None):
        calls.append((domain, split, max_bytes))
        offset = FAKE_IDS[(domain, split)] - 1
        docs = [CorpusDocument(domain, f"{domain}-{split}-{n}", words([i + offset if i else i for i in
                                                                       base_stream(120, seed=n + offset)]))
                for n in range(3)]
        kept, budget = [], max_bytes if max_bytes is not None else float("inf")
        for doc in docs:  # whole documents up to the cap: enough to see the cap act
            if budget <= 0:
                break
            kept.append(doc)
            budget -= len(doc.text.encode())
        return kept

    monkeypatch.setattr("z2z_vllm.data.corpus_documents", corpus_documents)
    return calls


def domain_config(base_dir, output_dir, **changes) -> TrainConfig:
    settings = dict(train_files=[], eval_files=[], domains={"code": None, "prose": 500}, eval_max_bytes=700)
    return tiny_config(base_dir, {"train": [], "eval": []}, output_dir, **{**settings, **changes})


def test_domains_mix_in_training_and_evaluate_apart(base_dir, tmp_path, fake_domains):
    cfg = domain_config(base_dir, tmp_path, max_steps=2, eval_every=2)
    tokenizer = load_text_tokenizer(base_dir)
    model = build_model(cfg, tokenizer=tokenizer)
    train_sets, eval_sets = _datasets(cfg, model, tokenizer)
    assert sorted(fake_domains) == [("code", "heldout", 700), ("code", "train", None),
                                    ("prose", "heldout", 700), ("prose", "train", 500)]
    assert set(train_sets) == set(eval_sets) == {"code", "prose"}
    assert base_ids_of(train_sets["code"], model.codec) <= set(range(1, 7))
    assert base_ids_of(train_sets["prose"], model.codec) <= set(range(7, 13))
    assert base_ids_of(eval_sets["code"], model.codec) <= set(range(30, 36))
    assert base_ids_of(eval_sets["prose"], model.codec) <= set(range(36, 42))
    assert train_sets["prose"].num_documents < train_sets["code"].num_documents  # the cap acted

    state = train(cfg)
    start = state.log_history[0]
    sizes = {name: len(data) for name, data in train_sets.items()}
    assert start["train_sequences_by_source"] == sizes and start["train_sequences"] == sum(sizes.values())
    final = state.log_history[-1]
    per_domain = [final["eval_clm_loss/code"], final["eval_clm_loss/prose"]]
    assert all(math.isfinite(loss) for loss in per_domain)
    assert final["eval_clm_loss"] == pytest.approx(sum(per_domain) / 2)


def test_domain_cache_entries_follow_domains_and_caps(base_dir, tmp_path, fake_domains):
    tokenizer = load_text_tokenizer(base_dir)
    cache = tmp_path / "cache"

    def cached_after(domains) -> int:
        cfg = domain_config(base_dir, tmp_path, domains=domains, cache_dir=str(cache))
        _datasets(cfg, build_model(cfg, tokenizer=tokenizer), tokenizer)
        return len(list(cache.glob("windows-*.npz")))

    assert cached_after({"code": None}) == 2  # train and held-out
    assert cached_after({"code": None}) == 2  # hits
    assert cached_after({"code": 300}) == 3  # a new cap: a new training entry
    assert cached_after({"code": 300, "prose": None}) == 5  # a new domain: two more


def test_domains_config_is_checked_and_old_configs_still_load(base_dir, tmp_path):
    from z2z_vllm.training.config import TrainConfig as Config

    base = {"output_dir": str(tmp_path)}
    assert Config.from_dict({**base, "domain": "code", "train_max_bytes": 1000}).domains == {"code": 1000}
    assert Config.from_dict({**base, "domains": {"code": None, "math": 5}}).domains == {"code": None, "math": 5}
    with pytest.raises(ValueError, match="not both"):
        Config.from_dict({**base, "domain": "code", "domains": {"math": None}})
    with pytest.raises(ValueError, match="unknown domains"):
        Config.from_dict({**base, "domains": {"poetry": None}})
    for bad in (0, -5, "3e6", True):
        with pytest.raises(ValueError, match="positive number of bytes"):
            Config.from_dict({**base, "domains": {"code": bad}})
    with pytest.raises(ValueError, match="map domain names"):
        Config.from_dict({**base, "domains": ["code", "prose"]})
    with pytest.raises(ValueError, match="no training data"):
        Config.from_dict(base)


# -- training -----------------------------------------------------------------------------------


def test_only_lora_and_hyper_weights_train(base_dir, texts, tmp_path):
    cfg = tiny_config(base_dir, texts, tmp_path, lora_target_modules=["q_proj", "down_proj"])
    model = build_model(cfg, tokenizer=load_text_tokenizer(base_dir))
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    hyper = ("input_encoder.", "output_encoder.", "reconstruction.")
    assert all("lora_" in name or name.startswith(hyper) for name in trainable)
    lora_targets = {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in trainable if "lora_" in name}
    assert lora_targets == {"q_proj", "down_proj"}
    assert any(name.startswith("output_encoder.") for name in trainable)


@pytest.fixture(scope="module")
def trained(base_dir, texts, tmp_path_factory):
    """A tiny run long enough to learn the repetitive training text."""
    cfg = tiny_config(base_dir, texts, tmp_path_factory.mktemp("trained"), max_steps=40, eval_every=40,
                      save_every=40, lora_dropout=0.0, lr=1e-2)
    return cfg, train(cfg)


def test_training_lowers_the_loss(trained):
    cfg, state = trained
    losses = [r["clm_loss"] for r in state.log_history if "clm_loss" in r]
    assert len(losses) == cfg.max_steps
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5  # nats per compressed id
    assert state.compressed_tokens > 0 and state.base_tokens > state.compressed_tokens
    assert math.isfinite(state.log_history[-1]["eval_clm_loss"])


def test_stopped_run_resumes_on_the_same_trajectory(base_dir, texts, tmp_path):
    whole = train(tiny_config(base_dir, texts, tmp_path / "whole"))
    split_cfg = tiny_config(base_dir, texts, tmp_path / "split")
    halfway = train(split_cfg, stop_at_step=3)
    assert halfway.step == 3 and latest_checkpoint(split_cfg.output_dir).name == "checkpoint-3"
    resumed = train(split_cfg)
    assert resumed.step == whole.step == 6
    assert resumed.compressed_tokens == whole.compressed_tokens

    def by_step(state):
        return {r["step"]: r for r in state.log_history if "clm_loss" in r}

    expected, got = by_step(whole), by_step(resumed)
    for step in range(1, 7):
        for key in ("clm_loss", "reconstruction_loss", "lr"):
            assert got[step][key] == pytest.approx(expected[step][key], rel=1e-5), (step, key)
    with pytest.raises(FileExistsError):
        train(split_cfg, resume=False)


# -- evaluation and CLI -------------------------------------------------------------------------


def test_bits_per_byte_is_finite_and_base_is_near_uniform(trained, texts):
    cfg, _ = trained
    documents = load_documents(files=texts["eval"])
    z2z, base = compare_bits_per_byte(cfg.output_dir, documents, window=32, progress=False)
    tokenizer = load_text_tokenizer(cfg.base_model)
    base_ids = sum(len(tokenizer.encode(d.text, add_special_tokens=False).ids) for d in documents)
    assert base.scored_tokens == base_ids  # every base token scored once
    assert 0 < z2z.scored_tokens < base_ids
    assert math.isfinite(z2z.bits_per_byte) and z2z.bits_per_byte > 0
    # An untrained random model is close to uniform over V ids.
    assert abs(base.bits_per_token - math.log2(V)) < 1.0
    model, loaded_cfg = load_trained_model(cfg.output_dir)
    assert loaded_cfg == cfg and not any(p.__class__.__name__ == "LoraLayer" for p in model.modules())


def test_cli_train_then_eval_bpb(base_dir, texts, tmp_path, capsys):
    from z2z_vllm.cli import main

    settings = tiny_config(base_dir, texts, tmp_path / "run").to_dict()
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps(settings))  # JSON is YAML
    assert main(["train", "--config", str(config), "--set", "max_steps=2", "--set", "lr=1e-3"]) == 0
    assert "trained 2 steps" in capsys.readouterr().out
    assert (tmp_path / "run" / "checkpoint-2" / "adapter_model.safetensors").is_file()
    assert main(["eval-bpb", "--model", str(tmp_path / "run"), "--window", "32", *texts["eval"]]) == 0
    out = capsys.readouterr().out
    assert "upper bound" in out and "ratio z2z/base" in out
    assert main(["train", "--config", str(config), "--set", "no_such_key=1"]) == 2


def test_distillation_terms_train_and_are_logged(base_dir, texts, tmp_path):
    # Distillation alone (no CLM): the random tiny teacher is far from the training text.
    cfg = tiny_config(base_dir, texts, tmp_path, max_steps=8, lr=3e-3, lora_dropout=0.0, clm_weight=0.0,
                      distill_folded_weight=1.0, distill_expansion_weight=1.0, reconstruction_samples=4)
    state = train(cfg)
    records = [r for r in state.log_history if "folded_kl" in r]
    assert len(records) == cfg.max_steps
    assert all(r["folded_kl"] >= 0 and r["expansion_kl"] >= 0 for r in records)
    assert np.mean([r["folded_kl"] for r in records[-3:]]) < np.mean([r["folded_kl"] for r in records[:3]])


def test_init_from_starts_where_a_run_ended(base_dir, texts, tmp_path):
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    from z2z_vllm.training.trainer import _load_weights

    first = tiny_config(base_dir, texts, tmp_path / "first", max_steps=3)
    train(first)
    checkpoint = latest_checkpoint(first.output_dir)
    second = tiny_config(base_dir, texts, tmp_path / "second", max_steps=1, init_from=str(checkpoint))
    model = build_model(second, tokenizer=load_text_tokenizer(base_dir))
    _load_weights(checkpoint, model, fresh_reconstruction=True)
    saved_hyper = load_file(str(checkpoint / "z2z_encoders.safetensors"))
    for name, tensor in model.hyper_state_dict().items():
        assert torch.equal(tensor, saved_hyper[name]) != name.startswith("reconstruction."), name
    saved_lora = load_file(str(checkpoint / "adapter_model.safetensors"))
    loaded_lora = get_peft_model_state_dict(model.base_model)
    assert saved_lora.keys() == loaded_lora.keys()
    assert all(torch.equal(saved_lora[k], loaded_lora[k]) for k in saved_lora)
    state = train(second)
    assert state.log_history[0]["initialised_from"] == str(checkpoint)
    other_codec = tiny_config(base_dir, texts, tmp_path / "third", max_steps=1, max_subtokens=2,
                              init_from=str(checkpoint))
    with pytest.raises(ValueError, match="another codec"):
        train(other_codec)


def test_bf16_setting_resolves_to_a_bool():
    from z2z_vllm.training.trainer import use_bf16

    cpu = torch.device("cpu")
    assert use_bf16(True, cpu) is True and use_bf16(False, cpu) is False
    assert use_bf16("auto", cpu) in (True, False)
    with pytest.raises(ValueError, match="bf16"):
        TrainConfig(train_files=["x"], bf16="yes")


def _torchrun(config, *overrides: str) -> None:
    """``z2z train --config config`` under torchrun, 2 ranks over gloo."""
    import subprocess
    import sys

    sets = [arg for override in overrides for arg in ("--set", override)]
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "z2z_vllm.cli", "train", "--config", str(config), *sets],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=900,
    )
    assert run.returncode == 0, run.stderr[-4000:]


def _records(cfg: TrainConfig) -> list[dict]:
    return [json.loads(line) for line in (Path(cfg.output_dir) / "log.jsonl").read_text().splitlines()]


def _curve(cfg: TrainConfig, steps=None) -> dict[int | str, dict]:
    """Loss terms, gradient norm and tokens of each step (of the last run over it), and evaluations."""
    curve = {}
    for r in _records(cfg):
        if "clm_loss" in r:
            curve[r["step"]] = {key: r[key] for key in ("clm_loss", "reconstruction_loss", "folded_kl",
                                                        "expansion_kl", "grad_norm", "compressed_tokens")}
        elif "eval_clm_loss" in r:
            curve[f"eval {r['step']}"] = {key: r[key] for key in ("eval_clm_loss", "eval_reconstruction_loss")}
    return {key: value for key, value in curve.items() if steps is None or key in steps}


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_follow_the_single_process_loss_curve(base_dir, texts, tmp_path, parallel):
    """torchrun, 2 ranks over gloo (DDP, or FSDP2 with sharded weights) == 1 process at the same
    global batch: loss terms (distillation's teacher forward included), gradient norms (clipped at
    max_grad_norm) and evaluations; the checkpoint, written in the single-process format, resumes
    in a single process. Under FSDP a single process's checkpoint resumes too, on the curve a
    single process continues on."""
    import dataclasses

    settings = dict(max_steps=4, grad_accum=2, lora_dropout=0.0, save_every=2, eval_every=4, max_grad_norm=0.5,
                    distill_folded_weight=0.5, distill_expansion_weight=0.5)
    single = tiny_config(base_dir, texts, tmp_path / "one", **settings)
    train(single)
    two = tiny_config(base_dir, texts, tmp_path / "two", **settings)
    config = tmp_path / "two.json"
    config.write_text(json.dumps(two.to_dict()))
    _torchrun(config, f"parallel={parallel}")

    start = _records(two)[0]
    assert start["world_size"] == 2 and start["trainable_params"] == _records(single)[0]["trainable_params"]
    expected, got = _curve(single), _curve(two)
    assert sorted(got, key=str) == sorted(expected, key=str) == [1, 2, 3, 4, "eval 4"]
    assert any(record.get("grad_norm", 0) > settings["max_grad_norm"] for record in expected.values())
    for step in expected:
        assert got[step] == pytest.approx(expected[step], rel=1e-4), step
    resumed = train(dataclasses.replace(two, max_steps=6))
    assert resumed.step == 6 and _records(two)[-1]["step"] == 6
    assert [r for r in _records(two) if r.get("event") == "start"][-1]["resumed_from"] == "checkpoint-4"
    if parallel == "fsdp":
        with pytest.raises(ValueError, match="torchrun"):  # one process has nothing to shard over
            train(dataclasses.replace(two, max_steps=7, parallel="fsdp"))
        # Single-process checkpoint-4 continued under FSDP == the FSDP checkpoint continued alone.
        config.write_text(json.dumps(dataclasses.replace(single, max_steps=6, parallel="fsdp").to_dict()))
        _torchrun(config)
        continued, alone = _curve(single, steps={5, 6, "eval 6"}), _curve(two, steps={5, 6, "eval 6"})
        assert len(continued) == 3
        for step in continued:
            assert continued[step] == pytest.approx(alone[step], rel=1e-4), step
