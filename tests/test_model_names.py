"""Model names: a registered folder resolves by name through the Hugging Face cache layout, for
huggingface_hub and transformers as for vLLM, offline; unknown z2z names say how to build them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from z2z_vllm import cli
from z2z_vllm.model_names import (
    HF_CONFIG_FILE,
    HF_CONFIG_KEY,
    check_name,
    register_model,
    registered_models,
    resolve_name,
)

Z2Z_BLOCK = {"base_architecture": "LlamaForCausalLM", "initial_vocab_size": 48, "max_codebook_size": 24, "max_subtokens": 3}


def fake_export(folder: Path) -> Path:
    """A folder that looks like a servable export to the name registry: config.json with a z2z
    block, and base weights of 6 x 4 + 4 = 28 values."""
    from safetensors.numpy import save_file
    import numpy as np

    folder.mkdir(parents=True)
    (folder / HF_CONFIG_FILE).write_text(json.dumps({"model_type": "llama", HF_CONFIG_KEY: Z2Z_BLOCK}))
    save_file({"w": np.zeros((6, 4), np.float32), "b": np.zeros(4, np.float32)}, str(folder / "model.safetensors"))
    save_file({"e": np.zeros(100, np.float32)}, str(folder / "z2z_encoders.safetensors"))  # not base weights
    return folder


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "hub"


@pytest.fixture
def default_cache(cache, monkeypatch) -> Path:
    """``cache`` as this process's default Hugging Face cache (what the ``z2z`` verbs use)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_constants_match_what_exports_are_written_with():
    from z2z_vllm.modeling import config

    assert (HF_CONFIG_FILE, HF_CONFIG_KEY) == (config.HF_CONFIG_FILE, config.HF_CONFIG_KEY)


def test_a_registered_name_is_a_hub_cache_snapshot_that_links_to_the_folder(tmp_path, cache, monkeypatch):
    from huggingface_hub import snapshot_download, try_to_load_from_cache

    folder = fake_export(tmp_path / "models" / "mine")
    snapshot = register_model(folder, "z2z-mine", cache_dir=cache)
    repo = cache / "models--z2z-mine"
    assert snapshot.parent == repo / "snapshots" and (repo / "refs" / "main").read_text() == snapshot.name
    assert snapshot.is_symlink() and snapshot.resolve() == folder.resolve(), "a link, not a copy"
    monkeypatch.chdir(tmp_path)  # the name, not a folder of that name, is what resolves
    assert resolve_name("z2z-mine", cache_dir=cache) == snapshot
    assert snapshot_download("z2z-mine", cache_dir=cache, local_files_only=True) == str(snapshot)
    assert try_to_load_from_cache("z2z-mine", HF_CONFIG_FILE, cache_dir=cache) == str(snapshot / HF_CONFIG_FILE)


def test_registering_again_points_the_name_at_the_new_folder(tmp_path, cache):
    first = register_model(fake_export(tmp_path / "a"), "z2z-mine", cache_dir=cache)
    second = register_model(fake_export(tmp_path / "b"), "z2z-mine", cache_dir=cache)
    assert first != second and not first.is_symlink(), "the old link is gone"
    assert resolve_name("z2z-mine", cache_dir=cache).resolve() == (tmp_path / "b").resolve()
    assert register_model(tmp_path / "b", "z2z-mine", cache_dir=cache) == second, "same folder, same revision"


def test_other_names_and_paths_are_left_to_vllm(tmp_path, cache, monkeypatch):
    register_model(fake_export(tmp_path / "mine"), "z2z-mine", cache_dir=cache)
    assert resolve_name(str(tmp_path / "mine"), cache_dir=cache) is None, "a path that exists"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "z2z-mine").mkdir()
    assert resolve_name("z2z-mine", cache_dir=cache) is None, "a folder of that name here wins, as in vLLM"
    for other in ("HuggingFaceTB/SmolLM2-135M", "gpt2", "someone/z2z-theirs", "s3://bucket/model"):
        assert resolve_name(other, cache_dir=cache) is None


def test_an_unknown_z2z_name_says_how_to_build_it(tmp_path, cache):
    register_model(fake_export(tmp_path / "mine"), "z2z-mine", cache_dir=cache)
    with pytest.raises(ValueError) as refused:
        resolve_name("z2z-smollm2-135m", cache_dir=cache)
    message = str(refused.value)
    assert "no z2z model named 'z2z-smollm2-135m'" in message and "registered: z2z-mine" in message
    assert "z2z build-model" in message and "z2z export SRC DST --name z2z-smollm2-135m" in message


def test_a_moved_folder_leaves_a_dangling_name_that_list_marks(tmp_path, cache):
    folder = fake_export(tmp_path / "mine")
    register_model(folder, "z2z-mine", cache_dir=cache)
    folder.rename(tmp_path / "moved")
    (entry,) = registered_models(cache_dir=cache)
    assert entry.name == "z2z-mine" and not entry.present
    with pytest.raises(ValueError, match="no z2z model named 'z2z-mine'"):
        resolve_name("z2z-mine", cache_dir=cache)


def test_bad_names_and_downloaded_models_are_refused(tmp_path, cache):
    folder = fake_export(tmp_path / "mine")
    for bad in ("bad name", "a/b/c", "z2z--x", "-z2z"):
        with pytest.raises(ValueError, match="invalid model name"):
            register_model(folder, bad, cache_dir=cache)
    downloaded = cache / "models--org--model"  # as huggingface_hub downloads: a real snapshot folder
    (downloaded / "snapshots" / "abc").mkdir(parents=True)
    (downloaded / "refs").mkdir()
    (downloaded / "refs" / "main").write_text("abc")
    with pytest.raises(ValueError, match="already holds a downloaded model named 'org/model'"):
        check_name("org/model", cache_dir=cache)
    with pytest.raises(ValueError, match="not a servable z2z model"):
        register_model(tmp_path, "z2z-empty", cache_dir=cache)
    assert [entry.name for entry in registered_models(cache_dir=cache)] == [], "a downloaded model is not listed"


def test_z2z_list_prints_name_base_vcm_size_and_folder(tmp_path, default_cache, capsys):
    assert cli.main(["list"]) == 0
    assert capsys.readouterr().out == f"no z2z models registered in {default_cache}: run `z2z build-model`\n"
    folder = fake_export(tmp_path / "mine")
    register_model(folder, "org/z2z-mine")
    assert cli.main(["list"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["NAME", "BASE", "V", "C", "M", "SIZE", "FOLDER"]
    assert row.split() == ["org/z2z-mine", "LlamaForCausalLM", "28", "48", "24", "3", "0.0", "MB", str(folder.resolve())]
    folder.rename(tmp_path / "moved")
    assert cli.main(["list"]) == 0
    assert "(missing: rebuild or register again)" in capsys.readouterr().out


def test_transformers_finds_a_registered_export_offline_from_any_folder(tiny_export, tmp_path):
    """A fresh process in an empty folder, network off: the name alone loads config and tokenizer."""
    cache = tmp_path / "hub"
    register_model(tiny_export, "z2z-tiny", cache_dir=cache)
    empty = tmp_path / "empty"
    empty.mkdir()
    script = (
        "from transformers import AutoConfig, AutoTokenizer\n"
        "config = AutoConfig.from_pretrained('z2z-tiny')\n"
        "print(config.architectures[0], config.z2z['max_subtokens'], AutoTokenizer.from_pretrained('z2z-tiny')('t1 t2').input_ids)\n"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-c", script], cwd=empty, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["Zip2ZipLlamaForCausalLM", "3", "[1,", "2]"]


def test_export_with_a_name_registers_it_and_a_bad_name_is_refused_first(tiny_export, tmp_path, default_cache, capsys):
    checkpoint = tiny_export.parent / "checkpoint"
    assert cli.main(["export", str(checkpoint), str(tmp_path / "never"), "--name", "bad name"]) == 2
    assert "invalid model name 'bad name'" in capsys.readouterr().err
    assert not (tmp_path / "never").exists(), "refused before exporting"
    assert cli.main(["export", str(checkpoint), str(tmp_path / "named"), "--name", "z2z-named-export"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("(serve with: vllm serve z2z-named-export)")
    assert resolve_name("z2z-named-export").resolve() == (tmp_path / "named").resolve()
