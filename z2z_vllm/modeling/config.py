"""Configuration of a zip2zip model: codec settings, hyper-encoders, training knobs.

A :class:`Zip2ZipConfig` is plain JSON. It is stored in one of two places, and
:meth:`Zip2ZipConfig.load` reads either:

- ``z2z_config.json`` (the whole dict): written by :meth:`Zip2ZipConfig.save` and by
  ``Zip2ZipForCausalLM.save_pretrained`` (training checkpoints: hyper-encoders only);
- the ``"z2z"`` block of an HF ``config.json``: the servable export folder, where ``config.json``
  describes the base architecture for vLLM and carries this dict beside it.

``z2z_config.json`` wins when a folder has both.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from z2z_vllm.codec import LZWCodec

CONFIG_FILE = "z2z_config.json"
HF_CONFIG_FILE = "config.json"
HF_CONFIG_KEY = "z2z"
# Rows of embed_tokens / lm_head in an export's weights (>= V); its "vocab_size" is V + C.
BASE_VOCAB_SIZE_KEY = "z2z_base_vocab_size"
FORMAT_VERSION = 1

EncoderKind = Literal["mean", "attention", "transformer", "residual"]
ENCODER_KINDS: tuple[str, ...] = ("mean", "attention", "transformer", "residual")


@dataclass(frozen=True)
class EncoderConfig:
    """One hyper-encoder (see ``z2z_vllm.modeling.encoders`` for what each kind computes).

    ``None`` sizes are filled from the base model when the wrapper is built
    (:meth:`resolved`), so a saved config always holds concrete numbers.
    """

    kind: EncoderKind = "transformer"
    num_layers: int = 1  # transformer / residual layers
    num_heads: int | None = None  # None: the base model's attention heads
    intermediate_size: int | None = None  # MLP width; None: 4 * hidden_size
    hidden_size: int | None = None  # encoder width; None: the model's. Only residual may differ.
    positions: Literal["learned"] | None = "learned"  # learned subtoken positions, or none
    pool_mask_pads: bool = True  # False: average over all M slots, pads included (authors' encoders)
    pad_embedding_id: int | None = None  # base id whose embedding fills pad slots; None: zeros

    def __post_init__(self) -> None:
        if self.kind not in ENCODER_KINDS:
            raise ValueError(f"encoder kind {self.kind!r} is not one of {ENCODER_KINDS}")
        if self.positions not in ("learned", None):
            raise ValueError(f"positions must be 'learned' or None, got {self.positions!r}")
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {self.num_layers}")

    def resolved(self, *, model_hidden_size: int, model_num_heads: int) -> EncoderConfig:
        hidden = self.hidden_size or model_hidden_size
        if self.kind != "residual" and hidden != model_hidden_size:
            raise ValueError(
                f"a {self.kind} encoder works at the model's width {model_hidden_size}, "
                f"got hidden_size={hidden} (only 'residual' may project to another width)"
            )
        heads = self.num_heads or model_num_heads
        if hidden % heads:
            raise ValueError(f"encoder hidden_size {hidden} is not divisible by num_heads {heads}")
        return replace(
            self,
            hidden_size=hidden,
            num_heads=heads,
            intermediate_size=self.intermediate_size or 4 * hidden,
        )


@dataclass(frozen=True)
class Zip2ZipConfig:
    """Everything besides the base model's own weights that defines a zip2zip model.

    Vocabulary seen by the model: base ids ``0 .. V-1`` then hypertoken slots ``V .. V+C-1``.
    """

    initial_vocab_size: int  # V
    max_codebook_size: int  # C
    max_subtokens: int  # M
    disabled_ids: tuple[int, ...] = ()  # never merged: special tokens, and digits if protected
    protect_digits: bool = False  # records whether disabled_ids include the digit tokens
    pad_token_id: int | None = None  # the codec's pad id (also disabled)
    input_encoder: EncoderConfig = field(default_factory=EncoderConfig)
    output_encoder: EncoderConfig | None = None  # None: same settings as input_encoder
    tie_encoders: bool = False  # one encoder module for input and output rows
    base_model: str | None = None  # HF name or path of the base causal LM
    base_architecture: str | None = None  # e.g. "LlamaForCausalLM"
    reconstruction_weight: float = 0.1  # lambda of the auxiliary loss; 0 disables it
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "disabled_ids", tuple(sorted({int(i) for i in self.disabled_ids})))
        if self.tie_encoders and self.output_encoder not in (None, self.input_encoder):
            raise ValueError("tie_encoders=True needs output_encoder None or equal to input_encoder")
        if self.reconstruction_weight < 0:
            raise ValueError(f"reconstruction_weight must be >= 0, got {self.reconstruction_weight}")
        if self.format_version != FORMAT_VERSION:
            raise ValueError(f"unsupported z2z config format_version {self.format_version}")

    @property
    def vocab_size(self) -> int:
        """V + C: the width of the logits."""
        return self.initial_vocab_size + self.max_codebook_size

    @property
    def output_encoder_config(self) -> EncoderConfig:
        return self.output_encoder or self.input_encoder

    def codec(self) -> LZWCodec:
        return LZWCodec(
            initial_vocab_size=self.initial_vocab_size,
            max_codebook_size=self.max_codebook_size,
            max_subtokens=self.max_subtokens,
            disabled_ids=self.disabled_ids,
            pad_token_id=self.pad_token_id,
        )

    def replace(self, **changes: Any) -> Zip2ZipConfig:
        return replace(self, **changes)

    # -- JSON ---------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["disabled_ids"] = list(self.disabled_ids)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Zip2ZipConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown z2z config keys: {sorted(unknown)}")
        values = dict(data)
        values["input_encoder"] = EncoderConfig(**values.get("input_encoder", {}))
        if values.get("output_encoder") is not None:
            values["output_encoder"] = EncoderConfig(**values["output_encoder"])
        values["disabled_ids"] = tuple(values.get("disabled_ids", ()))
        return cls(**values)

    def save(self, directory: str | os.PathLike) -> Path:
        """Writes ``z2z_config.json`` into ``directory``; returns its path."""
        path = Path(directory) / CONFIG_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Zip2ZipConfig:
        """Reads ``z2z_config.json``, else the ``"z2z"`` block of ``config.json``."""
        directory = Path(directory)
        own = directory / CONFIG_FILE
        if own.is_file():
            return cls.from_dict(json.loads(own.read_text()))
        hf = directory / HF_CONFIG_FILE
        if hf.is_file():
            block = json.loads(hf.read_text()).get(HF_CONFIG_KEY)
            if block is not None:
                return cls.from_dict(block)
        raise FileNotFoundError(
            f"no z2z config in {directory}: expected {CONFIG_FILE} or a "
            f"{HF_CONFIG_KEY!r} block in {HF_CONFIG_FILE}"
        )


def serving_architecture(base_architecture: str) -> str:
    """The architecture name the vLLM plugin registers for a base: ``LlamaForCausalLM`` ->
    ``Zip2ZipLlamaForCausalLM``."""
    return f"Zip2Zip{base_architecture}"


def disabled_ids_for(tokenizer: Any, *, initial_vocab_size: int, protect_digits: bool = False) -> tuple[int, ...]:
    """Base ids that must never merge: the tokenizer's special / added tokens, and with
    ``protect_digits`` every token whose text contains an ASCII digit 0-9.

    ``tokenizer`` is a Hugging Face tokenizer (``PreTrainedTokenizerBase``) or a
    ``tokenizers.Tokenizer``. Ids ``>= initial_vocab_size`` are left out (they are not base ids).
    """
    special: set[int] = set(getattr(tokenizer, "all_special_ids", ()) or ())
    if hasattr(tokenizer, "get_added_vocab"):  # transformers
        special.update(tokenizer.get_added_vocab().values())
    elif hasattr(tokenizer, "get_added_tokens_decoder"):  # tokenizers
        special.update(tokenizer.get_added_tokens_decoder())
    ids = {i for i in special if 0 <= i < initial_vocab_size}
    if protect_digits:
        vocab = tokenizer.get_vocab()  # token text -> id; byte-level BPE keeps ASCII digits as-is
        ids.update(
            i for token, i in vocab.items() if i < initial_vocab_size and any("0" <= ch <= "9" for ch in token)
        )
    return tuple(sorted(ids))
