"""Draft tokens for speculative decoding with z2z models: n-gram matches over compressed ids,
then over base tokens.

vLLM's n-gram proposer looks for the request's last few ids earlier in its token list and
proposes the ids that followed. Over compressed ids that finds the model's own repeats (a greedy
loop is written with the same ids each time), but fewer repeats than the text holds: LZW writes
a recurring passage with different, longer hypertokens each time. :class:`Zip2ZipNgramProposer`
tries that first and, where it finds nothing, matches over the request's base tokens (its
compressed ids expanded with its own codebook) and re-encodes the base tokens that followed the
match the way the LZW encoder would go on from the request's codebook
(:meth:`z2z_vllm.codec.LZWDecoder.encode_continuation`): a repeat of the text is drafted as the
hypertokens a model trained on canonical encodings would emit.

It is a vLLM proposer of the ``custom_class`` kind (vLLM's extension point for proposers), chosen
for ``{"method": "ngram", ...}`` on a z2z model with ``Z2Z_NGRAM_DRAFTS=ids+base`` (or ``base``:
base-token matches only); the config hook swaps it in, and ``prompt_lookup_min`` /
``prompt_lookup_max`` bound both matches, in ids and in base tokens. The default,
``compressed``, keeps vLLM's own n-gram proposer over compressed ids: with the uptrained
SmolLM2 its drafts were accepted most often (``benchmarks/serve_bench.py`` at batch 8: code
0.46 / 0.35 / 0.12 for compressed / ids+base / base, JSON 0.38 / 0.30 / 0.21, greedy): the
model writes a repeat as it wrote it before more often than as LZW would encode it now, and
the base-token matches the ids lack are short and mostly rejected.

Each step searches every request's token list anew (and expands it, one native decode, where the
ids hold no match): no state follows requests between steps.
"""

from __future__ import annotations

import os

import numpy as np

from z2z_vllm.modeling.config import HF_CONFIG_KEY, Zip2ZipConfig

__all__ = [
    "NGRAM_DRAFTS_ENV", "NGRAM_DRAFTS_SETTINGS", "PROPOSER_PATH", "Zip2ZipNgramProposer", "ngram_drafts_setting",
    "propose_from_base", "propose_from_ids",
]  # fmt: skip

NGRAM_DRAFTS_ENV = "Z2Z_NGRAM_DRAFTS"
NGRAM_DRAFTS_SETTINGS = ("compressed", "ids+base", "base")
PROPOSER_PATH = "z2z_vllm.vllm.drafts.Zip2ZipNgramProposer"


def ngram_drafts_setting() -> str:
    """``Z2Z_NGRAM_DRAFTS`` (module docstring), checked; ``compressed`` when unset."""
    value = os.environ.get(NGRAM_DRAFTS_ENV, NGRAM_DRAFTS_SETTINGS[0])
    if value not in NGRAM_DRAFTS_SETTINGS:
        raise ValueError(f"{NGRAM_DRAFTS_ENV} must be one of {', '.join(NGRAM_DRAFTS_SETTINGS)}; got {value!r}")
    return value


def _last_earlier_match(ids: np.ndarray, n: int) -> int:
    """End of the latest occurrence of ``ids``' last ``n`` (int32) that ends before the last
    position, or -1."""
    hay = ids.tobytes()
    needle = hay[-4 * n :]
    end = len(hay) - 4  # the occurrence must end before the last id (the suffix itself)
    while True:
        start = hay.rfind(needle, 0, end)
        if start < 0:
            return -1
        if start % 4 == 0:
            return start // 4 + n
        end = start + len(needle) - 1  # misaligned (inside an id): look further left


def _longest_match_end(ids: np.ndarray, min_n: int, max_n: int) -> int:
    """Where the longest suffix of ``max_n`` .. ``min_n`` ids last occurred earlier ends, or -1."""
    for n in range(min(max_n, len(ids) - 1), min_n - 1, -1):
        end = _last_earlier_match(ids, n)
        if end >= 0:
            return end
    return -1


def propose_from_ids(ids: np.ndarray, *, min_n: int, max_n: int, num_drafts: int) -> list[int]:
    """vLLM's n-gram drafts over compressed ``ids`` (int32): the ids after the longest suffix
    found earlier. They are valid ids now: entries are only ever added."""
    end = _longest_match_end(ids, min_n, max_n)
    return ids[end : end + num_drafts].tolist() if end >= 0 else []


def propose_from_base(decoder, base: np.ndarray, *, min_n: int, max_n: int, num_drafts: int, max_subtokens: int) -> list[int]:
    """Drafts after ``base`` (int32 base ids read by ``decoder``, which holds the request's
    codebook after them): the base ids after the longest suffix of ``max_n`` .. ``min_n`` base
    ids found earlier, encoded from the decoder's state (up to ``num_drafts``)."""
    end = _longest_match_end(base, min_n, max_n)
    if end < 0:
        return []
    return decoder.encode_continuation(base[end : end + num_drafts * max_subtokens], max_ids=num_drafts)


class Zip2ZipNgramProposer:
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
        self.match_ids = ngram_drafts_setting() != "base"  # named directly (custom_class): ids, then base

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
            ids = token_ids_cpu[index, :length].astype(np.int32, copy=False)
            found = propose_from_ids(ids, min_n=self.min_n, max_n=self.max_n, num_drafts=room) if self.match_ids else []
            if not found:
                decoder = self.codec.decoder()
                base = decoder.decode(ids, as_numpy=True).astype(np.int32, copy=False)
                found = propose_from_base(
                    decoder, base, min_n=self.min_n, max_n=self.max_n, num_drafts=room, max_subtokens=self.max_subtokens
                )
            drafts.append(found)
        return drafts

    def load_model(self, *args, **kwargs) -> None:
        """No model: drafts come from the request's own tokens."""
