"""A tiny exported z2z model (random Llama, word-level tokenizer) and fast vLLM settings.

The model reads ``t1 .. t47`` words (ids 1..47; ``<s>`` = id 0 is BOS/EOS/pad, never merged),
V = 48, C = 24, M = 3: prompts of repeated words fill the codebook in a few dozen tokens, so
hypertokens appear in every test. Float32 throughout, so vLLM and the HF reference agree
token for token.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from tests.modeling.helpers import C, M
from tests.training.checkpoint_helpers import randomize_, tiny_base_folder

# Fast, stable engines for tests (ENVIRONMENT.md): in-process engine core, eager, small cache.
VLLM_TEST_ENV = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "OMP_NUM_THREADS": "1",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
LLM_TEST_KWARGS = dict(
    dtype="float32",
    enforce_eager=True,
    max_model_len=256,
    max_num_seqs=8,
    distributed_executor_backend="uni",
    seed=0,
)


def use_test_env() -> None:
    os.environ.update(VLLM_TEST_ENV)


def answers_beside_loopback(port: int) -> bool:
    """Whether a server on ``port`` accepts connections at 127.0.0.2: on Linux every 127.x address
    is local, but only a socket bound to every interface (0.0.0.0 or ::) answers there, not one
    bound to 127.0.0.1."""
    try:
        with socket.create_connection(("127.0.0.2", port), timeout=5):
            return True
    except OSError:
        return False


def export_tiny_model(directory: Path, *, seed: int = 0, arch: str = "llama", **base_config) -> Path:
    """Writes a servable export of a tiny random z2z model over a ``arch`` base (llama, qwen2,
    qwen3) into ``directory``; returns it. ``base_config``: changes to the base's config (e.g.
    ``num_key_value_heads=2``; weights of a changed shape start fresh, all are randomized)."""
    import transformers

    from z2z_vllm.modeling import EncoderConfig, Zip2ZipForCausalLM
    from z2z_vllm.training import export_for_serving, save_checkpoint

    base_dir = tiny_base_folder(directory / "base", seed=seed, arch=arch)
    base = transformers.AutoModelForCausalLM.from_pretrained(
        str(base_dir), **base_config, ignore_mismatched_sizes=bool(base_config)
    )
    model = Zip2ZipForCausalLM.from_base(
        base,
        max_codebook_size=C,
        max_subtokens=M,
        disabled_ids=(0,),
        input_encoder=EncoderConfig(kind="attention"),
    ).eval()
    # Random weights at a scale where greedy decoding wanders over base ids and hypertokens
    # instead of repeating one id.
    randomize_(model.base_model, seed=seed + 3)
    randomize_(model.input_encoder, seed=seed + 1)
    randomize_(model.output_encoder, seed=seed + 2)
    checkpoint = save_checkpoint(model, directory / "checkpoint", include_base_weights=True)
    from tests.training.checkpoint_helpers import tiny_tokenizer

    tiny_tokenizer().save_pretrained(str(checkpoint))
    return export_for_serving(checkpoint, directory / "export")


def repeated_words(pattern: list[int], times: int) -> str:
    """Text of ``pattern`` (word ids) repeated ``times`` times: compresses well."""
    return " ".join(f"t{i}" for i in pattern * times)


# -- engines and the reference generation -------------------------------------------------------

MAX_TOKENS = 24
EOS = 0
# Word-id patterns: repeats build codebook entries in the prompt, the rest varies the batch.
PATTERNS = [
    [1, 2, 3, 4] * 6,
    [5, 6, 5, 7] * 5 + [1, 2],
    [8, 9, 10] * 8 + [11],
    [12, 13, 12, 13, 12, 13, 14] * 3,
    list(range(15, 40)),
    [40, 41] * 12 + [42, 43, 44],
    [3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3],  # KwKwK in the prompt
    [20, 21, 22, 23] * 10,
]


def shared_prefix_prompts(codec, *, count: int = 4) -> list[list[int]]:
    """Compressed prompts sharing a prefix of 150 base ids (several 32-token KV blocks): with
    prefix caching, later requests start from cached blocks whose tokens the model never sees."""
    import torch

    g = torch.Generator().manual_seed(0)
    shared = torch.randint(1, 12, (150,), generator=g).tolist()
    return [codec.encode(shared + [30 + i, 40 + i] * 3) for i in range(count)]


def make_llm(model_dir: Path, **overrides):
    """An in-process engine with the fast test settings. In-process engines share vLLM's
    distributed state and shutting one down tears it down: shut each down before the next
    engine is used."""
    import vllm

    use_test_env()
    return vllm.LLM(model=str(model_dir), **{**LLM_TEST_KWARGS, **overrides})


def greedy(llm, prompts: list[list[int]], *, max_tokens: int = MAX_TOKENS) -> list[list[int]]:
    """Greedy continuations (compressed ids) of compressed prompts."""
    import vllm

    outputs = llm.generate(
        [vllm.TokensPrompt(prompt_token_ids=p) for p in prompts],
        vllm.SamplingParams(max_tokens=max_tokens, temperature=0.0),
        use_tqdm=False,
    )
    return [list(o.outputs[0].token_ids) for o in outputs]


def reference_generation(model_dir: Path, prompts: list[list[int]], *, max_tokens: int = MAX_TOKENS) -> list[list[int]]:
    """Greedy continuations by the HF-level reference (z2z_vllm.modeling.generation)."""
    import torch

    from z2z_vllm.modeling.generation import generate
    from z2z_vllm.training import load_for_inference

    model = load_for_inference(model_dir, dtype=torch.float32)
    return generate(model, prompts, max_new_tokens=max_tokens, eos_token_id=EOS).sequences
