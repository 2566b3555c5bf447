"""Tiny base-model folders (Llama weights + a word-level tokenizer) for the checkpoint tests."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.modeling.helpers import SPECIAL, V, tiny_base

SPECIAL_TOKEN = "<s>"  # id SPECIAL: BOS, EOS, pad and unk at once


def tiny_tokenizer():
    """A word-level HF tokenizer over ``V`` ids: ``<s>`` (id 0, special) and ``t1 .. t{V-1}``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {SPECIAL_TOKEN: SPECIAL, **{f"t{i}": i for i in range(1, V)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=SPECIAL_TOKEN))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=SPECIAL_TOKEN,
        eos_token=SPECIAL_TOKEN,
        pad_token=SPECIAL_TOKEN,
        unk_token=SPECIAL_TOKEN,
    )


def tiny_base_folder(directory: Path, *, seed: int = 0, arch: str = "llama") -> Path:
    """Saves a tiny random base model (head_dim 32; ``arch`` as in ``tiny_base``) and its
    tokenizer into ``directory``."""
    tiny_base(arch, seed=seed).save_pretrained(str(directory))
    tiny_tokenizer().save_pretrained(str(directory))
    return directory


def randomize_(module: torch.nn.Module, *, seed: int) -> None:
    """Gives every parameter random values (LoRA B and LayerNorms start at constants)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=g) * 0.2)
