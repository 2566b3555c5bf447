"""z2z model names in vLLM (z2z_vllm.vllm.name_resolution): ``LLM(model=NAME)`` from an empty
folder, network off, generates what the HF reference does; without ``HF_HUB_OFFLINE`` a registered
name becomes its snapshot before vLLM asks the Hub anything; an unregistered z2z name is refused
with how to build it, with and without ``HF_HUB_OFFLINE``. (``vllm serve NAME``: test_server.py.)"""

from __future__ import annotations

import pytest

from tests.vllm.helpers import LLM_TEST_KWARGS, greedy, make_llm, use_test_env

vllm = pytest.importorskip("vllm")

import huggingface_hub  # noqa: E402
from huggingface_hub import constants  # noqa: E402
from huggingface_hub.errors import OfflineModeIsEnabled  # noqa: E402

from z2z_vllm.model_names import register_model  # noqa: E402
from z2z_vllm.vllm import register  # noqa: E402

NAME = "z2z-tiny-by-name"


@pytest.fixture(autouse=True, scope="module")
def plugin_loaded():
    register()  # what vLLM's plugin loading runs; done here for tests that call vLLM functions directly


@pytest.fixture
def empty_folder(tmp_path, monkeypatch):
    folder = tmp_path / "empty"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


@pytest.fixture
def hub_requests(monkeypatch) -> list[str]:
    """Every request for Hub metadata or file lists, recorded and answered as if offline (vLLM
    and transformers then fall back to the cache)."""
    asked = []

    def record(what):
        def refuse(*args, **kwargs):
            asked.append(what)
            raise OfflineModeIsEnabled("recorded by the test")

        return refuse

    monkeypatch.setattr(huggingface_hub.file_download, "get_hf_file_metadata", record("file metadata"))
    for method in ("list_repo_files", "list_repo_tree", "repo_info", "model_info"):
        monkeypatch.setattr(huggingface_hub.HfApi, method, record(method))
    return asked


def test_llm_by_name_from_an_empty_folder_offline_generates_like_the_reference(
    tiny_export, prompts, reference, empty_folder, monkeypatch
):
    register_model(tiny_export, NAME)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # CI's network-free setting
    llm = make_llm(NAME)
    try:
        assert greedy(llm, prompts) == reference
    finally:
        llm.llm_engine.engine_core.shutdown()


def test_without_hf_hub_offline_a_registered_name_resolves_without_asking_the_hub(
    tiny_export, empty_folder, hub_requests, monkeypatch
):
    snapshot = register_model(tiny_export, NAME)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    use_test_env()
    config = vllm.EngineArgs(model=NAME, **LLM_TEST_KWARGS).create_engine_config()
    assert config.model_config.model == config.model_config.tokenizer == str(snapshot)
    assert config.model_config.architectures == ["Zip2ZipLlamaForCausalLM"]
    assert hub_requests == []


@pytest.mark.parametrize("offline", [True, False], ids=["HF_HUB_OFFLINE=1", "HF_HUB_OFFLINE unset"])
def test_an_unregistered_z2z_name_is_refused_with_how_to_build_it(offline, empty_folder, hub_requests, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    with pytest.raises(ValueError, match=r"no z2z model named 'z2z-not-built' on this machine .* `z2z build-model`"):
        vllm.LLM(model="z2z-not-built", **LLM_TEST_KWARGS)
    assert hub_requests == []


def test_other_models_are_left_to_vllm(tiny_export, empty_folder, monkeypatch):
    """A path, and a Hub name that is not cached: vLLM's own handling and error."""
    from vllm.engine import arg_utils

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert arg_utils.get_model_path(str(tiny_export)) == str(tiny_export)
    with pytest.raises(huggingface_hub.errors.LocalEntryNotFoundError):
        arg_utils.get_model_path("someone/z2z-not-cached")
