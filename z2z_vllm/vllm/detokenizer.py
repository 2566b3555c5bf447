"""Output text and sample-logprob texts of z2z requests, in vLLM's front end.

vLLM detokenizes each sampled id on its own (ids beyond the base vocabulary would come out as
empty strings), but a hypertoken's text depends on the ids before it in its own request. The
classes here keep an incremental LZW decoder per request, fed with the prompt and then with each
sampled id:

- :class:`Zip2ZipIncrementalDetokenizer` expands each sampled id into base ids and streams them
  through vLLM's incremental detokenizer for the base tokenizer (for a fast tokenizer, a
  ``tokenizers`` ``DecodeStream`` primed with the expanded prompt). Stop strings, ``min_tokens``,
  ``include_stop_str_in_output`` and streamed deltas are vLLM's own logic over the text, so
  they behave as for a plain model: a stop string ending inside a hypertoken's text cuts the
  text at that character. ``stop_token_ids`` are base ids: the engine stops on one emitted
  alone, and this detokenizer on one inside a hypertoken's expansion, cutting the text
  before it (after it with ``include_stop_str_in_output``) with the id as ``stop_reason``.
  ``output_token_ids`` are the compressed ids, and ``max_tokens`` / ``min_tokens`` count
  them: emitted tokens, each worth 1 to M base tokens.
- :class:`Zip2ZipLogprobsProcessor` gives each id of the sample logprobs the text of its
  expansion under the request's codebook at that position.

:mod:`z2z_vllm.vllm.patches` makes vLLM's output processor build these for a
:class:`~z2z_vllm.vllm.tokenizer.Zip2ZipTokenizer`.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec
from vllm.logprobs import append_logprobs_for_next_position
from vllm.tokenizers.detokenizer_utils import convert_ids_list_to_tokens
from vllm.v1.engine import EngineCoreRequest
from vllm.v1.engine.detokenizer import BaseIncrementalDetokenizer, IncrementalDetokenizer
from vllm.v1.engine.logprobs import LogprobsProcessor
from vllm.v1.outputs import LogprobsLists

from z2z_vllm.vllm.tokenizer import Zip2ZipTokenizer

__all__ = ["Zip2ZipIncrementalDetokenizer", "Zip2ZipLogprobsProcessor"]

# What decode() shows for the bytes of an incomplete UTF-8 character.
REPLACEMENT_CHARACTER = "\ufffd"
# Preceding base ids that hold the start of any UTF-8 character a token completes (a character
# has at most 4 bytes, a token at least one); vLLM uses as many.
UTF8_CONTEXT_TOKENS = 4


def _prompt_ids(request: EngineCoreRequest) -> list[int]:
    if request.prompt_token_ids is None:
        raise ValueError(f"request {request.request_id}: z2z models need prompt token ids, not prompt embeddings")
    return request.prompt_token_ids


class Zip2ZipIncrementalDetokenizer(BaseIncrementalDetokenizer):
    """Incremental detokenizer of one z2z request (see the module docstring)."""

    def __init__(self, tokenizer: Zip2ZipTokenizer, request: EngineCoreRequest) -> None:
        super().__init__(request)
        self.request_id = request.request_id
        self._decoder = tokenizer.codec.decoder()
        base_prompt_ids = self._decoder.decode(_prompt_ids(request))
        # vLLM's detokenizer for the base tokenizer, over the same request in base ids: it does
        # the streaming decode (special tokens, spacing, invalid UTF-8 recovery) as for a plain
        # model. Only its decode_next is used; stop strings are checked here, per emitted token.
        base_request = msgspec.structs.replace(request, prompt_token_ids=base_prompt_ids)
        self._base_detokenizer = IncrementalDetokenizer.from_new_request(tokenizer.base, base_request)
        # Stop ids the engine cannot see: those that may be merged into hypertokens.
        disabled = set(tokenizer.codec.disabled_ids) | {tokenizer.codec.pad_token_id}
        self._stop_ids = frozenset(request.sampling_params.stop_token_ids or ()) - disabled
        # Set by decode_next when a hypertoken holds a stop id: (text length to keep, stop id,
        # number of token ids to keep).
        self._stop_inside: tuple[int, int, int] | None = None

    def update(self, new_token_ids: list[int], stop_terminated: bool) -> str | int | None:
        """vLLM's update (text, stop strings), then a stop id found inside a hypertoken: the
        text is cut there, later tokens dropped, and the id returned as the stop reason."""
        stop_string = super().update(new_token_ids, stop_terminated)
        if stop_string is not None or self._stop_inside is None:
            return stop_string
        text_length, stop_id, num_token_ids = self._stop_inside
        self.output_text = self.output_text[:text_length]
        del self.token_ids[num_token_ids:]
        return stop_id

    def decode_next(self, next_token_id: int) -> str:
        try:
            base_ids = self._decoder.decode([next_token_id])
        except ValueError as error:
            raise ValueError(f"request {self.request_id}: {error}") from error
        text = ""
        for base_id in base_ids:
            piece = self._decode_next_base_id(base_id)
            if self._stops_at(base_id, len(base_ids)):
                kept = text + piece if self.include_stop_str_in_output else text
                self._stop_inside = (len(self.output_text) + len(kept), base_id, len(self.token_ids))
            text += piece
        return text

    def _stops_at(self, base_id: int, expansion_length: int) -> bool:
        # As the engine's own check: the first stop id, once min_tokens ids were emitted (update
        # has appended the id being decoded to token_ids).
        return (
            expansion_length > 1
            and base_id in self._stop_ids
            and self._stop_inside is None
            and self.num_output_tokens() >= self.min_tokens
        )

    def _decode_next_base_id(self, base_id: int) -> str:
        # BaseIncrementalDetokenizer.update appends each id to token_ids before decode_next reads
        # it (the slow detokenizer needs it there).
        self._base_detokenizer.token_ids.append(base_id)
        return self._base_detokenizer.decode_next(base_id)


class _PositionTexts:
    """Texts of the ids that may come next in one request: the prompt and the sampled ids so far
    define which hypertokens exist and what they expand to."""

    def __init__(self, tokenizer: Zip2ZipTokenizer, prompt_ids: Sequence[int]) -> None:
        self._base = tokenizer.base
        self._initial_vocab_size = tokenizer.initial_vocab_size
        self._decoder = tokenizer.codec.decoder()
        base_prompt_ids = self._decoder.decode(prompt_ids)
        self._expansions: dict[int, tuple[int, ...]] = dict(self._decoder.codebook)
        self._context: deque[int] = deque(base_prompt_ids[-UTF8_CONTEXT_TOKENS:], maxlen=UTF8_CONTEXT_TOKENS)

    def text(self, token_id: int) -> str:
        """Text of ``token_id`` at the next position; "" for an id not defined there."""
        base_ids = self._expansion(token_id)
        if base_ids is None:
            return ""
        text = self._text_alone(base_ids)
        if REPLACEMENT_CHARACTER in text:
            return self._text_after_context(base_ids)
        return text

    def advance(self, token_id: int) -> None:
        """Reads the id sampled at the next position."""
        self._expansions.update(self._decoder.feed([token_id]))
        self._context.extend(self._expansions.get(token_id, (token_id,)))

    def _expansion(self, token_id: int) -> tuple[int, ...] | None:
        if 0 <= token_id < self._initial_vocab_size:
            return (token_id,)
        if token_id in self._expansions:
            return self._expansions[token_id]
        candidate = self._decoder.candidate  # the id that would define itself here (KwKwK)
        if candidate is not None and candidate[0] == token_id:
            return candidate[1]
        return None

    def _text_alone(self, base_ids: tuple[int, ...]) -> str:
        # As vLLM shows a base token (it restores a leading space that decode() strips), then
        # the text the other base ids add.
        first = convert_ids_list_to_tokens(self._base, list(base_ids[:1]))[0]
        whole = self._base.decode(list(base_ids))
        first_decoded = self._base.decode(list(base_ids[:1]))
        return first + whole[len(first_decoded) :] if whole.startswith(first_decoded) else whole

    def _text_after_context(self, base_ids: tuple[int, ...]) -> str:
        # Like vLLM's repair of pieces of UTF-8 characters, over base ids: the text these ids
        # add after the preceding ones, where the bytes of a character show with the token that
        # completes it (the context's own incomplete bytes decode alike in both texts).
        context = list(self._context)
        before = self._base.decode(context)
        after = self._base.decode(context + list(base_ids))
        return after[len(os.path.commonprefix([before, after])) :].rstrip(REPLACEMENT_CHARACTER)


@dataclass
class Zip2ZipLogprobsProcessor(LogprobsProcessor):
    """Sample logprobs of one z2z request, with the texts of the request's hypertokens.

    The text of an id at a position is the text of its expansion under the codebook of the
    prompt and the ids sampled before that position; the id that may define itself there
    (LZW's KwKwK case) gets its would-be expansion, and ids not defined there get "". Texts are
    per token as in vLLM, except that an incomplete UTF-8 character is resolved with the
    preceding base ids. Prompt logprobs are not supported (refused at admission).
    """

    # None when the request asks no sample logprobs.
    _position_texts: _PositionTexts | None = field(default=None, kw_only=True)

    @classmethod
    def from_new_request(cls, tokenizer: Zip2ZipTokenizer, request: EngineCoreRequest) -> Zip2ZipLogprobsProcessor:
        processor = super().from_new_request(tokenizer, request)
        if processor.num_logprobs is not None:
            processor._position_texts = _PositionTexts(tokenizer, _prompt_ids(request))
        return processor

    def _update_sample_logprobs(self, logprobs_lists: LogprobsLists) -> None:
        assert self.logprobs is not None and self.cumulative_logprob is not None
        assert self._position_texts is not None and self.num_logprobs is not None
        token_ids_rows, logprobs_rows, ranks, _ = logprobs_lists
        for rank, logprobs_row, token_ids_row in zip(ranks, logprobs_rows, token_ids_rows):
            token_ids = token_ids_row.tolist()
            logprobs = logprobs_row.tolist()
            texts = [self._position_texts.text(token_id) for token_id in token_ids]
            # The sampler puts the sampled id first.
            self.cumulative_logprob += logprobs[0]
            append_logprobs_for_next_position(
                self.logprobs, token_ids, logprobs, texts, rank.tolist(), self.num_logprobs
            )
            self._position_texts.advance(token_ids[0])
