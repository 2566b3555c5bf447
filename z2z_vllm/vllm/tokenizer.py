"""The ``z2z`` tokenizer mode: text <-> compressed ids (base ids and hypertokens) for vLLM.

:class:`Zip2ZipTokenizer` implements vLLM's ``TokenizerLike`` over the model's base Hugging Face
tokenizer and its LZW codec. Encoding is base tokenization followed by ``codec.encode``; decoding
expands with ``codec.decode`` and decodes the base ids.

A hypertoken id means something only inside its own sequence (its expansion depends on every id
before it), so methods that read ids take a whole sequence from its start: prompt and outputs
together, never outputs alone. Truncation keeps the result a valid compressed stream.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from transformers import BatchEncoding
from vllm.tokenizers import TokenizerLike
from vllm.tokenizers.hf import CachedHfTokenizer, HfTokenizer

from z2z_vllm.modeling.config import Zip2ZipConfig

__all__ = ["Zip2ZipTokenizer", "hypertoken_name"]

TruncationSide = Literal["left", "right"]


def hypertoken_name(token_id: int) -> str:
    """The vocabulary name of hypertoken ``token_id``: a placeholder, since its text depends on
    the sequence it appears in."""
    return f"<hyper:{token_id}>"


def _from_base(name: str) -> property:
    """A read-only attribute answered by the base tokenizer."""
    return property(lambda self: getattr(self.base, name), doc=f"The base tokenizer's ``{name}``.")


class Zip2ZipTokenizer(TokenizerLike):
    """vLLM tokenizer of a zip2zip model: a vocabulary of ``V + C`` ids, base ids ``0 .. V-1``
    then hypertoken ids ``V .. V+C-1``.

    Attributes: ``base`` (the base HF tokenizer), ``config`` (:class:`Zip2ZipConfig`), ``codec``
    (its ``LZWCodec``) and ``initial_vocab_size`` (V).

    Hypertokens have no context-free text: :meth:`convert_ids_to_tokens` names them
    ``<hyper:ID>`` (see :func:`hypertoken_name`), and :meth:`get_vocab` lists those names so that
    vocabulary and ids stay consistent. Special tokens, chat templates and added vocabulary are
    the base tokenizer's.
    """

    def __init__(self, base: HfTokenizer, config: Zip2ZipConfig) -> None:
        self.base = base
        self.config = config
        self.codec = config.codec()
        self.initial_vocab_size = config.initial_vocab_size
        base_vocab = base.get_vocab()
        self._max_base_chars_per_token = max(len(token) for token in base_vocab)
        self._hypertoken_ids = {hypertoken_name(i): i for i in range(self.initial_vocab_size, self.vocab_size)}
        self._vocab = {**base_vocab, **self._hypertoken_ids}

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo_id: str | Path,
        *args: Any,
        trust_remote_code: bool = False,
        revision: str | None = None,
        download_dir: str | None = None,
        **kwargs: Any,
    ) -> Zip2ZipTokenizer:
        """Loads the base tokenizer of a z2z export folder as the ``hf`` mode would, and the
        codec settings of its z2z config."""
        base = CachedHfTokenizer.from_pretrained(
            path_or_repo_id,
            *args,
            trust_remote_code=trust_remote_code,
            revision=revision,
            download_dir=download_dir,
            **kwargs,
        )
        return cls(base, Zip2ZipConfig.load(path_or_repo_id))

    # -- copying and pickling: the native codec does neither, so rebuild it from the config ------

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.base, self.config)

    def __copy__(self) -> Zip2ZipTokenizer:
        # A copy gets its own base tokenizer object: vLLM's HfRenderer copies the tokenizer it is
        # given before wrapping it for thread safety, which must not change the original.
        return type(self)(copy.copy(self.base), self.config)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(base={self.name_or_path!r}, initial_vocab_size={self.initial_vocab_size}, "
            f"max_codebook_size={self.config.max_codebook_size}, max_subtokens={self.config.max_subtokens})"
        )

    # -- vocabulary ---------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def max_token_id(self) -> int:
        return self.vocab_size - 1

    @property
    def max_chars_per_token(self) -> int:
        """The base tokenizer's longest token, as vLLM's bound for a plain model: vLLM refuses
        (or cuts) a prompt of more than ``max_model_len * this`` characters before tokenizing
        it. A hypertoken stands for up to M base tokens, so only a text averaging more
        characters per compressed id than the longest base token (extreme repetition) could fit
        and still be refused; bounding by M times that would let every request make the server
        tokenize M times more text."""
        return self._max_base_chars_per_token

    def get_vocab(self) -> dict[str, int]:
        return self._vocab

    def get_added_vocab(self) -> dict[str, int]:
        return self.base.get_added_vocab()

    name_or_path = _from_base("name_or_path")
    is_fast = _from_base("is_fast")
    truncation_side = _from_base("truncation_side")

    # -- special tokens (never merged into hypertokens, so the base tokenizer's) --------------

    all_special_tokens = _from_base("all_special_tokens")
    all_special_ids = _from_base("all_special_ids")
    bos_token_id = _from_base("bos_token_id")
    eos_token_id = _from_base("eos_token_id")
    pad_token_id = _from_base("pad_token_id")

    def num_special_tokens_to_add(self) -> int:
        return self.base.num_special_tokens_to_add()

    # -- encoding -----------------------------------------------------------------------------

    def __call__(
        self,
        text: str | list[str],
        text_pair: str | None = None,
        add_special_tokens: bool = True,
        truncation: bool = False,
        max_length: int | None = None,
    ) -> BatchEncoding:
        """Compressed ``input_ids`` (and an all-ones ``attention_mask``) of ``text``, or of each
        text of a list. With ``truncation``, at most ``max_length`` ids (default: the base
        tokenizer's ``model_max_length``), cut on :attr:`truncation_side` (:meth:`truncate`);
        then only the end of a long text that can be kept is tokenized."""
        if truncation and max_length is None:
            max_length = self.base.model_max_length
        limit = max_length if truncation else None
        if limit is not None and text_pair is None:
            trimmed = [self._text_within_reach(t, limit) for t in ([text] if isinstance(text, str) else text)]
            text = trimmed[0] if isinstance(text, str) else trimmed
        base_ids = self.base(text, text_pair, add_special_tokens=add_special_tokens)["input_ids"]
        if isinstance(text, str):
            input_ids = self._encode_base_ids(base_ids, max_length=limit)
            return BatchEncoding({"input_ids": input_ids, "attention_mask": [1] * len(input_ids)})
        input_ids = [self._encode_base_ids(ids, max_length=limit) for ids in base_ids]
        return BatchEncoding({"input_ids": input_ids, "attention_mask": [[1] * len(ids) for ids in input_ids]})

    def encode(
        self,
        text: str,
        truncation: bool | None = None,
        max_length: int | None = None,
        add_special_tokens: bool = True,
    ) -> list[int]:
        """Compressed ids of ``text``. As in transformers, a ``max_length`` truncates unless
        ``truncation`` is False."""
        return self(
            text,
            add_special_tokens=add_special_tokens,
            truncation=max_length is not None and truncation is not False,
            max_length=max_length,
        )["input_ids"]

    def apply_chat_template(
        self,
        conversation: list[Any],
        tools: list[dict[str, Any]] | None = None,
        *,
        tokenize: bool = True,
        return_dict: bool = False,
        truncation: bool = False,
        max_length: int | None = None,
        **kwargs: Any,
    ) -> str | list[int] | BatchEncoding:
        """Renders ``conversation`` with the base tokenizer's chat template, then (``tokenize``)
        compresses the text. The template writes its own special tokens, so none are added, as
        in transformers. Returns the text, the ids, or with ``return_dict`` a ``BatchEncoding``."""
        text = self.base.apply_chat_template(conversation, tools=tools, tokenize=False, **kwargs)
        if not tokenize:
            return text
        encoding = self(text, add_special_tokens=False, truncation=truncation, max_length=max_length)
        return encoding if return_dict else encoding["input_ids"]

    def get_chat_template(self, chat_template: str | None = None, tools: list[dict[str, Any]] | None = None) -> str:
        return self.base.get_chat_template(chat_template, tools=tools)

    def truncate(self, ids: Sequence[int], *, max_length: int, side: TruncationSide | None = None) -> list[int]:
        """At most ``max_length`` ids of the compressed sequence ``ids``, still a valid stream:
        its first ids (``side="right"``), or the longest end of its base ids that compresses to
        ``max_length`` ids (``"left"``; raises ValueError if ``ids`` is not a valid stream).
        ``side`` defaults to :attr:`truncation_side`."""
        side = side or self.truncation_side
        if side not in ("left", "right"):
            raise ValueError(f"side must be 'left' or 'right', got {side!r}")
        if len(ids) <= max_length:
            return list(ids)
        if side == "right":  # a prefix of a compressed stream is a valid stream
            return list(ids[: max(max_length, 0)])
        return self._compressed_end(self.codec.decode(ids), max_length=max_length)

    def _text_within_reach(self, text: str, max_length: int) -> str:
        """The end of ``text`` (on :attr:`truncation_side`) that truncation to ``max_length``
        compressed ids can keep, so that a long text is not tokenized and compressed whole. The
        kept ids come from at most M * max_length + 1 base tokens (one more decides where the
        last one ends), each of at most the longest base token's characters; one token more
        leaves the token the cut splits outside them. (Tokenizers that merge across a whole
        word can still differ near the cut, as after vLLM's own character pre-trim.)"""
        reach = (self.config.max_subtokens * max(max_length, 0) + 2) * self._max_base_chars_per_token
        if len(text) <= reach:
            return text
        return text[-reach:] if self.truncation_side == "left" else text[:reach]

    def _encode_base_ids(self, base_ids: list[int], *, max_length: int | None = None) -> list[int]:
        try:
            ids = self.codec.encode(base_ids)
        except ValueError as error:
            raise ValueError(f"the base tokenizer gave ids this z2z model cannot read: {error}") from error
        if max_length is None or len(ids) <= max_length:
            return ids
        if self.truncation_side == "right":
            return ids[: max(max_length, 0)]
        return self._compressed_end(base_ids, max_length=max_length)

    def _compressed_end(self, base_ids: list[int], *, max_length: int) -> list[int]:
        """The longest end of ``base_ids`` that compresses to at most ``max_length`` ids,
        compressed on its own: the kept ids must not name hypertokens defined in the cut start."""
        if max_length <= 0:
            return []
        # Not a bisection: the compressed length of an end is not monotone in its length.
        return self.codec.encode(base_ids[self.codec.fitting_suffix_start(base_ids, max_length) :])

    # -- decoding -----------------------------------------------------------------------------

    def decode(self, ids: Sequence[int] | int, skip_special_tokens: bool = False) -> str:
        """Text of the compressed sequence ``ids`` (read from its start). Raises ValueError,
        naming the id and its position, for a hypertoken not defined where it appears."""
        if isinstance(ids, int):
            ids = [ids]
        return self.base.decode(self.codec.decode(ids), skip_special_tokens=skip_special_tokens)

    def convert_ids_to_tokens(self, ids: Sequence[int], skip_special_tokens: bool = False) -> list[str]:
        """Base tokens for base ids, ``<hyper:ID>`` for hypertoken ids (no context here to
        expand them), None for ids outside the vocabulary (as transformers)."""
        if skip_special_tokens:
            special = set(self.all_special_ids)
            ids = [i for i in ids if i not in special]
        base_tokens = iter(self.base.convert_ids_to_tokens([i for i in ids if i < self.initial_vocab_size]))
        return [
            next(base_tokens) if i < self.initial_vocab_size else hypertoken_name(i) if i < self.vocab_size else None
            for i in ids
        ]

    def convert_tokens_to_ids(self, tokens: str | list[str]) -> int | list[int]:
        if isinstance(tokens, str):
            return self._token_to_id(tokens)
        return [self._token_to_id(token) for token in tokens]

    def _token_to_id(self, token: str) -> int:
        hypertoken_id = self._hypertoken_ids.get(token)
        return self.base.convert_tokens_to_ids(token) if hypertoken_id is None else hypertoken_id

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """The base tokenizer's; hypertoken names stay as they are."""
        return self.base.convert_tokens_to_string(tokens)
