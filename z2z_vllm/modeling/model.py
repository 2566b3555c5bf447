"""A zip2zip model around any Hugging Face causal LM.

The wrapper reads and predicts compressed ids: base ids ``0 .. V-1`` and hypertoken slots
``V .. V+C-1``. Hypertoken ``V + e`` means entry e of *that sequence's* codebook, so its input
embedding and output row are computed from the entry's base ids by the hyper-encoders, over the
base model's input embedding and lm_head tables.

Logits at position t (having read ids 0..t, predicting id t+1) cover V + C columns:

- base columns: the base model's logits, never masked;
- hyper column ``V + e``: ``hidden . output_row(e)`` if ``known_at[e] <= t``;
- the KwKwK column ``V + n`` (n = entries known at t), when the codec says an id naming itself is
  valid there: ``hidden . output_encoder(candidate at t)``;
- every other hyper column: ``-inf``.

Base models whose lm_head output is rescaled or soft-capped after the matmul get that treatment
on base columns only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from z2z_vllm.modeling.codebooks import CodebookBatch
from z2z_vllm.modeling.config import EncoderConfig, Zip2ZipConfig, disabled_ids_for
from z2z_vllm.modeling.encoders import build_encoder

__all__ = ["Zip2ZipForCausalLM", "Zip2ZipOutput", "ReconstructionHead", "WEIGHTS_FILE"]

WEIGHTS_FILE = "z2z_encoders.safetensors"
IGNORE_INDEX = -100


@dataclass
class Zip2ZipOutput:
    logits: torch.Tensor  # [B, T, V + C]
    loss: torch.Tensor | None = None  # clm_loss + reconstruction_weight * reconstruction_loss
    clm_loss: torch.Tensor | None = None
    reconstruction_loss: torch.Tensor | None = None  # None when reconstruction_weight == 0


class ReconstructionHead(nn.Module):
    """Predicts an entry's M base subtokens from its hyper input embedding.

    Slot m's logits over V are ``proj(norm(x))[m] . table^T``: scoring against the base input
    embedding table keeps the head at H x (M*H) parameters whatever the vocabulary size.
    """

    def __init__(self, hidden_size: int, max_subtokens: int) -> None:
        super().__init__()
        self.max_subtokens = max_subtokens
        self.norm = nn.LayerNorm(hidden_size)
        self.proj = nn.Linear(hidden_size, max_subtokens * hidden_size, bias=False)

    def forward(self, rows: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """[N, H] embeddings, [V, H] table -> [N, M, V] logits."""
        slots = self.proj(self.norm(rows)).view(rows.shape[0], self.max_subtokens, -1)
        return slots @ table.T


def _text_config(base_model: nn.Module) -> Any:
    config = base_model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _tokenizer_size(tokenizer: Any) -> int:
    """Ids a tokenizer can produce: HF tokenizers have len(), ``tokenizers.Tokenizer`` a method."""
    return len(tokenizer) if hasattr(tokenizer, "__len__") else tokenizer.get_vocab_size(with_added_tokens=True)


class Zip2ZipForCausalLM(nn.Module):
    """zip2zip wrapper: ``base_model`` (HF causal LM, possibly PEFT-wrapped) + hyper-encoders.

    Build with :meth:`from_base` (new model) or :meth:`from_pretrained` (saved encoders).
    ``config`` is stored with every encoder size resolved against the base model.
    """

    def __init__(self, base_model: nn.Module, config: Zip2ZipConfig) -> None:
        super().__init__()
        embedding = base_model.get_input_embeddings()
        hidden = embedding.embedding_dim
        if embedding.num_embeddings < config.initial_vocab_size:
            raise ValueError(
                f"initial_vocab_size {config.initial_vocab_size} exceeds the base model's "
                f"{embedding.num_embeddings} embedding rows"
            )
        base_heads = getattr(_text_config(base_model), "num_attention_heads", 1)
        heads = base_heads if hidden % base_heads == 0 else 1

        def resolve(encoder: EncoderConfig) -> EncoderConfig:
            return encoder.resolved(model_hidden_size=hidden, model_num_heads=heads)

        config = config.replace(
            input_encoder=resolve(config.input_encoder),
            output_encoder=None if config.tie_encoders else resolve(config.output_encoder_config),
        )
        self.config = config
        self.codec = config.codec()
        self.base_model = base_model

        def encoder(encoder_config: EncoderConfig) -> nn.Module:
            return build_encoder(encoder_config, model_hidden_size=hidden, max_subtokens=config.max_subtokens)

        self.input_encoder = encoder(config.input_encoder)
        self.output_encoder = self.input_encoder if config.tie_encoders else encoder(config.output_encoder)
        self.reconstruction = (
            ReconstructionHead(hidden, config.max_subtokens) if config.reconstruction_weight > 0 else None
        )
        for module in (self.input_encoder, self.output_encoder, self.reconstruction):
            if module is not None:  # not self.to(): the base model's own dtypes (RoPE buffers) stay
                module.to(device=embedding.weight.device, dtype=embedding.weight.dtype)

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_base(
        cls,
        base_model: nn.Module | str,
        *,
        max_codebook_size: int,
        max_subtokens: int,
        tokenizer: Any = None,
        initial_vocab_size: int | None = None,
        disabled_ids: tuple[int, ...] = (),
        protect_digits: bool = False,
        pad_token_id: int | None = None,
        input_encoder: EncoderConfig = EncoderConfig(),
        output_encoder: EncoderConfig | None = None,
        tie_encoders: bool = False,
        reconstruction_weight: float = 0.1,
        **from_pretrained_kwargs: Any,
    ) -> Zip2ZipForCausalLM:
        """A new zip2zip model over ``base_model`` (a model, or a name/path for
        ``AutoModelForCausalLM.from_pretrained``).

        V defaults to ``len(tokenizer)`` (else the base config's vocab size). With a tokenizer,
        its special tokens (and digit tokens if ``protect_digits``) join ``disabled_ids``.
        """
        if isinstance(base_model, str | os.PathLike):
            from transformers import AutoModelForCausalLM

            base_model = AutoModelForCausalLM.from_pretrained(base_model, **from_pretrained_kwargs)
        text_config = _text_config(base_model)
        if initial_vocab_size is None:
            initial_vocab_size = _tokenizer_size(tokenizer) if tokenizer is not None else text_config.vocab_size
        disabled = set(disabled_ids)
        if tokenizer is not None:
            disabled.update(
                disabled_ids_for(tokenizer, initial_vocab_size=initial_vocab_size, protect_digits=protect_digits)
            )
            pad = getattr(tokenizer, "pad_token_id", None)
            if pad_token_id is None and pad is not None and pad < initial_vocab_size:
                pad_token_id = pad
        architectures = getattr(base_model.config, "architectures", None)
        config = Zip2ZipConfig(
            initial_vocab_size=initial_vocab_size,
            max_codebook_size=max_codebook_size,
            max_subtokens=max_subtokens,
            disabled_ids=tuple(disabled),
            protect_digits=protect_digits,
            pad_token_id=pad_token_id,
            input_encoder=input_encoder,
            output_encoder=output_encoder,
            tie_encoders=tie_encoders,
            base_model=getattr(base_model, "name_or_path", None) or None,
            base_architecture=architectures[0] if architectures else type(base_model).__name__,
            reconstruction_weight=reconstruction_weight,
        )
        return cls(base_model, config)

    def save_pretrained(self, directory: str | os.PathLike, *,
                        state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """Writes ``z2z_config.json`` and ``z2z_encoders.safetensors`` (hyper-encoders and the
        reconstruction head, keys prefixed ``input_encoder.``, ``output_encoder.`` (absent when
        tied), ``reconstruction.``). The base model is not saved here. ``state_dict``: those
        weights to write instead of :meth:`hyper_state_dict` (e.g. gathered from FSDP shards)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        self.config.save(directory)
        save_file(
            {name: tensor.contiguous() for name, tensor in (state_dict or self.hyper_state_dict()).items()},
            str(directory / WEIGHTS_FILE),
            metadata={"format": "pt"},
        )

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike, *, base_model: nn.Module | str | None = None, **from_pretrained_kwargs: Any
    ) -> Zip2ZipForCausalLM:
        """Loads a folder written by :meth:`save_pretrained` onto ``base_model`` (default: the
        config's ``base_model`` through ``AutoModelForCausalLM.from_pretrained``)."""
        from safetensors.torch import load_file

        directory = Path(directory)
        config = Zip2ZipConfig.load(directory)
        if base_model is None:
            base_model = config.base_model
            if base_model is None:
                raise ValueError(f"{directory} names no base model: pass base_model=")
        if isinstance(base_model, str | os.PathLike):
            from transformers import AutoModelForCausalLM

            base_model = AutoModelForCausalLM.from_pretrained(base_model, **from_pretrained_kwargs)
        model = cls(base_model, config)
        model.load_hyper_state_dict(load_file(str(directory / WEIGHTS_FILE)))
        return model

    def hyper_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights of everything but the base model (tied encoders appear once)."""
        modules = {"input_encoder": self.input_encoder, "reconstruction": self.reconstruction}
        if not self.config.tie_encoders:
            modules["output_encoder"] = self.output_encoder
        return {
            f"{prefix}.{name}": tensor
            for prefix, module in modules.items()
            if module is not None
            for name, tensor in module.state_dict().items()
        }

    def load_hyper_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`hyper_state_dict`; every key must match."""
        expected = self.hyper_state_dict()
        if set(state_dict) != set(expected):
            missing, unexpected = set(expected) - set(state_dict), set(state_dict) - set(expected)
            raise ValueError(f"hyper weights do not match: missing {sorted(missing)}, unexpected {sorted(unexpected)}")
        with torch.no_grad():
            for name, tensor in expected.items():
                tensor.copy_(state_dict[name])

    # -- building blocks (shared with generation) ---------------------------------------------

    @property
    def initial_vocab_size(self) -> int:
        return self.config.initial_vocab_size

    def input_table(self) -> torch.Tensor:
        """Rows the model embeds base ids with (including any embedding scale, e.g. Gemma's)."""
        embedding = self.base_model.get_input_embeddings()
        scale = getattr(embedding, "embed_scale", None)
        if scale is None:
            return embedding.weight
        return embedding.weight * torch.as_tensor(scale, dtype=embedding.weight.dtype, device=embedding.weight.device)

    def output_table(self) -> torch.Tensor:
        head = self.base_model.get_output_embeddings()
        return (head if head is not None else self.base_model.get_input_embeddings()).weight

    def encode_inputs(self, subtoken_ids: torch.Tensor) -> torch.Tensor:
        """[N, W] base ids (-1 padded) -> [N, H] hyper input embeddings."""
        return self.input_encoder(subtoken_ids, self.input_table())

    def encode_outputs(self, subtoken_ids: torch.Tensor) -> torch.Tensor:
        """[N, W] base ids (-1 padded) -> [N, H] hyper output (unembedding) rows."""
        return self.output_encoder(subtoken_ids, self.output_table())

    def embed(self, ids: torch.Tensor, hyper_rows: torch.Tensor) -> torch.Tensor:
        """Input embeddings [B, T, H] of ids [B, T]; hyper id ``V + e`` takes ``hyper_rows[b, e]``.
        Ids must be valid (pads replaced by a base id)."""
        V = self.initial_vocab_size
        is_hyper = ids >= V
        base = F.embedding(ids.masked_fill(is_hyper, 0), self.input_table())
        slots = (ids - V).clamp(0, hyper_rows.shape[1] - 1)
        hyper = hyper_rows.gather(1, slots.unsqueeze(-1).expand(-1, -1, hyper_rows.shape[-1]))
        return torch.where(is_hyper.unsqueeze(-1), hyper, base)

    def run_base(
        self,
        inputs_embeds: torch.Tensor,
        *,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        past_key_values: Any = None,
        use_cache: bool = False,
        last_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """Final hidden states [B, T', H], base logits [B, T', V] and the KV cache
        (T' = 1 with ``last_only``)."""
        out = self.base_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask.long(),
            position_ids=position_ids,
            past_key_values=past_key_values,
            use_cache=use_cache,
            output_hidden_states=True,
            **({"logits_to_keep": 1} if last_only else {}),
        )
        hidden = out.hidden_states[-1]
        if last_only:
            hidden = hidden[:, -1:]
        return hidden, out.logits[..., : self.initial_vocab_size], out.past_key_values

    def logits(
        self,
        hidden: torch.Tensor,
        base_logits: torch.Tensor,
        output_rows: torch.Tensor,
        allowed: torch.Tensor,
        candidate_rows: torch.Tensor,
        candidate_where: torch.Tensor,
    ) -> torch.Tensor:
        """Logits [B, T, V + C].

        ``output_rows`` [B, S, H] are slots ``V .. V+S-1`` (S <= C), ``allowed`` [B, T, S] says which
        are known at each position; ``candidate_where`` [B, T] (bool) marks positions whose KwKwK
        column ``V + allowed.sum(-1)`` gets ``hidden . candidate_rows`` ([B, T, H])."""
        C = self.config.max_codebook_size
        slots = allowed.shape[-1]
        hyper = (hidden @ output_rows.transpose(1, 2)).masked_fill(~allowed, float("-inf"))
        hyper = F.pad(hyper, (0, C - slots), value=float("-inf"))
        candidate_logit = (hidden * candidate_rows).sum(-1)
        candidate_slot = allowed.sum(-1).clamp(max=C - 1)
        is_candidate = candidate_where.unsqueeze(-1) & (
            torch.arange(C, device=hyper.device) == candidate_slot.unsqueeze(-1)
        )
        hyper = torch.where(is_candidate, candidate_logit.unsqueeze(-1), hyper)
        return torch.cat([base_logits, hyper.to(base_logits.dtype)], dim=-1)

    # -- whole-sequence scoring ---------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        codebooks: CodebookBatch | None = None,
        reconstruction_samples: int | None = None,
    ) -> Zip2ZipOutput:
        """Scores compressed sequences ``input_ids`` [B, T] (padding left or right, marked 0 in
        ``attention_mask``; pad columns may hold any id).

        ``codebooks``: the sequences' :class:`CodebookBatch` over their unpadded ids (built here
        with the codec when None). ``labels`` [B, T]: usually ``input_ids``; shifted inside, -100
        and padded positions ignored. Returns logits [B, T, V + C] and, with labels, the losses.
        ``reconstruction_samples``: score the reconstruction loss on at most this many of the
        batch's distinct entries, drawn at random (an unbiased estimate of the mean at a fraction
        of its cost: each entry is M rows of logits over V).
        """
        mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        if codebooks is None:
            rows = [ids[keep].tolist() for ids, keep in zip(input_ids.cpu(), mask.cpu())]
            codebooks = CodebookBatch.from_sequences(self.codec, rows)
        codebooks = codebooks.to(input_ids.device)
        positions = (mask.long().cumsum(1) - 1).clamp(min=0)  # index within each sequence

        entries = codebooks.entries
        batch, num_entries, width = entries.shape
        candidates = codebooks.candidates.gather(
            1, positions.clamp(max=codebooks.candidates.shape[1] - 1).unsqueeze(-1).expand(-1, -1, width)
        )
        candidate_where = (candidates[..., 0] >= 0) & mask

        # Embeddings depend on content only: encode each distinct entry once for the whole batch.
        unique, inverse = torch.unique(entries.view(-1, width), dim=0, return_inverse=True)
        input_unique = self.encode_inputs(unique)
        input_rows = input_unique[inverse].view(batch, num_entries, -1)
        output_ids = torch.cat([entries.view(-1, width), candidates[candidate_where]])
        output_unique, output_inverse = torch.unique(output_ids, dim=0, return_inverse=True)
        output_all = self.encode_outputs(output_unique)[output_inverse]
        output_rows = output_all[: batch * num_entries].view(batch, num_entries, -1)
        candidate_rows = output_all.new_zeros(batch, input_ids.shape[1], output_all.shape[-1])
        candidate_rows = candidate_rows.index_put((candidate_where,), output_all[batch * num_entries :])

        embeds = self.embed(input_ids.masked_fill(~mask, 0), input_rows)
        hidden, base_logits, _ = self.run_base(embeds, attention_mask=mask, position_ids=positions)
        allowed = codebooks.known_at.unsqueeze(1) <= positions.unsqueeze(-1)
        logits = self.logits(hidden, base_logits, output_rows, allowed, candidate_rows, candidate_where)

        if labels is None:
            return Zip2ZipOutput(logits=logits)
        targets = labels.masked_fill(~mask, IGNORE_INDEX)[:, 1:]
        clm_loss = F.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX
        )
        reconstruction_loss = None
        loss = clm_loss
        if self.reconstruction is not None:
            reconstruction_loss = self.reconstruction_loss(unique, input_unique, samples=reconstruction_samples)
            loss = clm_loss + self.config.reconstruction_weight * reconstruction_loss
        return Zip2ZipOutput(
            logits=logits, loss=loss, clm_loss=clm_loss, reconstruction_loss=reconstruction_loss
        )

    def reconstruction_loss(self, subtoken_ids: torch.Tensor, rows: torch.Tensor, *,
                            samples: int | None = None) -> torch.Tensor:
        """Mean cross-entropy of predicting each entry's real subtokens from its embedding.

        ``subtoken_ids`` [N, W] (-1 padded; all-pad rows are skipped), ``rows`` [N, H];
        ``samples``: over at most that many entries drawn uniformly (torch's global RNG)."""
        real = (subtoken_ids[:, 0] >= 0).nonzero().squeeze(1)
        if not len(real):
            return rows.sum() * 0.0  # a batch without entries: zero, still connected to the graph
        if samples is not None and len(real) > samples:
            real = real[torch.randperm(len(real), device=real.device)[:samples]]
        table = self.input_table()[: self.initial_vocab_size]
        logits = self.reconstruction(rows[real], table)[:, : subtoken_ids.shape[1]]
        return F.cross_entropy(logits.flatten(0, 1).float(), subtoken_ids[real].flatten(), ignore_index=-1)

    # -- generation ---------------------------------------------------------------------------

    def generate(self, input_ids: Any, **kwargs: Any) -> Any:
        """Reference generation; see :func:`z2z_vllm.modeling.generation.generate`."""
        from z2z_vllm.modeling.generation import generate

        return generate(self, input_ids, **kwargs)
