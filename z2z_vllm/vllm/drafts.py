"""Draft tokens for speculative decoding with z2z models, matched in base-token space.

vLLM's n-gram proposer looks for the request's last few ids earlier in its token list and
proposes the ids that followed. Over compressed ids that finds fewer repeats than the text holds:
LZW writes a repeated passage with different, longer hypertokens each time it recurs.
:class:`BaseSpaceNgramProposer` matches over the request's base tokens instead (its compressed
ids expanded with its own codebook) and re-encodes the base tokens that followed the match the
way the LZW encoder would go on from the request's codebook
(:meth:`z2z_vllm.codec.LZWDecoder.encode_continuation`): a repeat is drafted as the hypertokens a
model trained on canonical encodings would emit.

It is a vLLM proposer of the ``custom_class`` kind (vLLM's extension point for proposers); z2z
models use it for ``{"method": "ngram", ...}`` (the config hook swaps it in, with
``prompt_lookup_min`` / ``prompt_lookup_max`` counted in base tokens), unless
``Z2Z_NGRAM_DRAFTS=compressed`` keeps vLLM's own n-gram proposer over compressed ids.

Each step expands every request's token list anew (one native decode, about a microsecond per
100 ids): no state follows requests between steps.
"""

from __future__ import annotations

import os

import numpy as np

from z2z_vllm.modeling.config import HF_CONFIG_KEY, Zip2ZipConfig

__all__ = ["BaseSpaceNgramProposer", "NGRAM_DRAFTS_ENV", "PROPOSER_PATH", "propose_from_base"]

NGRAM_DRAFTS_ENV = "Z2Z_NGRAM_DRAFTS"
PROPOSER_PATH = "z2z_vllm.vllm.drafts.BaseSpaceNgramProposer"


def ngram_drafts_setting() -> str:
    """``Z2Z_NGRAM_DRAFTS``: ``base`` (default; :class:`BaseSpaceNgramProposer`) or
    ``compressed`` (vLLM's n-gram proposer over compressed ids)."""
    value = os.environ.get(NGRAM_DRAFTS_ENV, "base")
    if value not in ("base", "compressed"):
        raise ValueError(f"{NGRAM_DRAFTS_ENV} must be 'base' or 'compressed', got {value!r}")
    return value


def _last_earlier_match(base: np.ndarray, n: int) -> int:
    """End of the latest occurrence of ``base``'s last ``n`` ids that ends before the last
    position, or -1."""
    hay = base.tobytes()
    needle = hay[-4 * n :]
    end = len(hay) - 4  # the occurrence must end before the last id (the suffix itself)
    while True:
        start = hay.rfind(needle, 0, end)
        if start < 0:
            return -1
        if start % 4 == 0:
            return start // 4 + n
        end = start + len(needle) - 1  # misaligned (inside an id): look further left


def propose_from_base(decoder, base: np.ndarray, *, min_n: int, max_n: int, num_drafts: int, max_subtokens: int) -> list[int]:
    """Drafts after ``base`` (int32 base ids read by ``decoder``, which holds the request's
    codebook after them): the longest suffix of ``max_n`` .. ``min_n`` base ids found earlier,
    and the base ids that followed it, encoded from the decoder's state (up to ``num_drafts``)."""
    for n in range(min(max_n, len(base) - 1), min_n - 1, -1):
        end = _last_earlier_match(base, n)
        if end >= 0:
            following = base[end : end + num_drafts * max_subtokens]
            return decoder.encode_continuation(following, max_ids=num_drafts)
    return []


class BaseSpaceNgramProposer:
    """vLLM ``custom_class`` proposer for z2z models (module docstring)."""

    def __init__(self, vllm_config) -> None:
        speculative = vllm_config.speculative_config
        model_config = vllm_config.model_config
        z2z = Zip2ZipConfig.from_dict(getattr(model_config.hf_config, HF_CONFIG_KEY))
        self.codec = z2z.codec()
        self.max_subtokens = z2z.max_subtokens
        self.num_drafts = speculative.num_speculative_tokens
        # In base tokens. Set where the config hook turned method "ngram" into this proposer; a
        # config naming it directly has them zeroed by vLLM (custom proposers): 2 .. 8 then.
        self.min_n = max(1, speculative.prompt_lookup_min or 2)
        self.max_n = max(self.min_n, speculative.prompt_lookup_max or 8)
        self.max_model_len = model_config.max_model_len

    def propose(self, sampled_token_ids: list[list[int]], num_tokens_no_spec: np.ndarray, token_ids_cpu: np.ndarray,
                slot_mappings=None) -> list[list[int]]:  # fmt: skip
        """Drafts per request of the batch (empty where the request sampled nothing this step,
        e.g. a prefill chunk, or is at the model's length limit)."""
        del slot_mappings
        drafts: list[list[int]] = []
        for index, sampled in enumerate(sampled_token_ids):
            length = int(num_tokens_no_spec[index])
            room = min(self.num_drafts, self.max_model_len - length - 1)
            if not sampled or room <= 0:
                drafts.append([])
                continue
            decoder = self.codec.decoder()
            base = decoder.decode(token_ids_cpu[index, :length], as_numpy=True).astype(np.int32, copy=False)
            drafts.append(
                propose_from_base(
                    decoder, base, min_n=self.min_n, max_n=self.max_n, num_drafts=room, max_subtokens=self.max_subtokens
                )
            )
        return drafts

    def load_model(self, *args, **kwargs) -> None:
        """No model: drafts come from the request's own tokens."""
