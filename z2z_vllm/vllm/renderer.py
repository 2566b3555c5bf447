"""The ``z2z`` renderer: vLLM's HF renderer (chat templates, text and token-id prompts) over a
:class:`~z2z_vllm.vllm.tokenizer.Zip2ZipTokenizer`, with checks of compressed prompts.

- Chat messages are rendered to text with the base tokenizer's chat template, then compressed
  (:meth:`Zip2ZipTokenizer.apply_chat_template`); text prompts are compressed by the tokenizer.
- Prompt token ids are compressed ids. :meth:`Zip2ZipRenderer.validate_token_ids` (run by vLLM's
  input processor on every prompt before it reaches the engine) refuses a sequence that is not a
  valid stream, with vLLM's ``VLLMValidationError`` (HTTP 400) naming the id and its position.
- Prompt truncation (``truncate_prompt_tokens``) keeps a valid stream: cutting the start off a
  compressed sequence would leave hypertokens whose definitions were cut, so the kept end is
  re-encoded from its base ids (:meth:`Zip2ZipTokenizer.truncate`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, TypeVar

from vllm.exceptions import VLLMValidationError
from vllm.renderers.hf import HfRenderer
from vllm.renderers.inputs import DictPrompt, TokPrompt
from vllm.renderers.params import TokenizeParams
from vllm.tokenizers.hf import maybe_make_thread_pool

from z2z_vllm.vllm.tokenizer import Zip2ZipTokenizer

if TYPE_CHECKING:
    from vllm.config import VllmConfig

__all__ = ["Zip2ZipRenderer"]

_Tokens = TypeVar("_Tokens")  # a token list, or prompt embeddings


class Zip2ZipRenderer(HfRenderer):
    """Renderer of the ``z2z`` tokenizer mode (see the module docstring)."""

    def __init__(self, config: VllmConfig, tokenizer: Zip2ZipTokenizer | None) -> None:
        if tokenizer is not None and not isinstance(tokenizer, Zip2ZipTokenizer):
            raise TypeError(f"Zip2ZipRenderer needs a Zip2ZipTokenizer, got {type(tokenizer).__name__}")
        super().__init__(config, tokenizer)
        if self.tokenizer is not None:
            # What HfRenderer does for HF tokenizers, which are not safe to share between its
            # worker threads. Its tokenizer is a copy with its own base, so the original's is
            # left unchanged.
            maybe_make_thread_pool(self.tokenizer.base, config.model_config.renderer_num_workers + 1)

    def _can_produce_offsets(self) -> bool:
        # Character offsets per compressed token are not computed.
        return False

    def validate_token_ids(self, token_ids: Sequence[int], *, parameter: str | None = None) -> None:
        """Raises VLLMValidationError unless ``token_ids`` is a valid compressed stream: every
        id in ``0 .. V+C-1``, every hypertoken defined where it appears."""
        tokenizer = self.tokenizer
        if not token_ids or tokenizer is None:
            return
        try:
            tokenizer.codec.decode(token_ids)
        except (ValueError, TypeError) as error:  # TypeError: ids that are not integers
            raise _invalid_prompt(error, parameter=parameter) from error

    def tokenize_prompt(self, prompt: DictPrompt, params: TokenizeParams) -> TokPrompt:
        return super().tokenize_prompt(prompt, _StreamTokenizeParams.of(params))

    async def tokenize_prompt_async(self, prompt: DictPrompt, params: TokenizeParams) -> TokPrompt:
        return await super().tokenize_prompt_async(prompt, _StreamTokenizeParams.of(params))


def _invalid_prompt(error: Exception, *, parameter: str | None) -> VLLMValidationError:
    return VLLMValidationError(f"invalid z2z prompt token ids: {error}", parameter=parameter)


@dataclass(frozen=True)
class _StreamTokenizeParams(TokenizeParams):
    """vLLM's tokenization parameters, with prompt truncation that keeps a valid stream."""

    @classmethod
    def of(cls, params: TokenizeParams) -> _StreamTokenizeParams:
        if isinstance(params, cls):
            return params
        return cls(**{f.name: getattr(params, f.name) for f in fields(params)})

    def _token_truncation(self, tokenizer: Zip2ZipTokenizer, tokens: _Tokens) -> _Tokens:
        truncation = self._truncation_slice(tokenizer, len(tokens))
        if truncation is None or not isinstance(tokens, list):  # prompt embeddings: as vLLM
            return super()._token_truncation(tokenizer, tokens)
        start, stop, _ = truncation.indices(len(tokens))
        if start == 0:  # a prefix of a stream is a valid stream
            return tokens[:stop]
        try:
            return tokenizer.truncate(tokens, max_length=stop - start, side="left")
        except ValueError as error:
            raise _invalid_prompt(error, parameter=self.truncate_prompt_tokens_param) from error
