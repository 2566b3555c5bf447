"""Distillation from the frozen base model: the base (LoRA off) reads the same text as base tokens
and is a free teacher for the z2z model at every compressed position.

Alignment. A window's compressed ids ``c_0 .. c_{T-1}`` expand to base ids ``b_0 .. b_{N-1}``;
``c_t`` covers base positions ``[e_{t-1}, e_t)``. Having read ``c_0 .. c_t``, the z2z model has read
exactly ``b_0 .. b_{e_t - 1}``: the prefix the teacher has read at base position ``e_t - 1``. The
teacher's next-base-token distribution there, ``q_t``, is what the student must match at ``t``.

Two terms, both zero when the student induces the teacher's distribution over text:

- **folded KL**, ``KL(q_t || fold(p_t))``. ``fold(p_t)(v)`` adds to ``p_t(v)`` the probability of every
  hyper column whose expansion starts with ``v`` (the KwKwK candidate column included): the
  student's own probability that the next *base* token is ``v``. Every position gets the teacher's
  whole distribution over V (not one sampled target), which is where the sample efficiency comes
  from; it also teaches the base columns what the base model knew before uptraining.
- **expansion KL**, for the true next id ``c_{t+1}`` with expansion ``x``: the teacher's text
  probability ``q(x) = prod_j q(b_j | b_<j)``. A student that agrees with the teacher on text gives
  ``c_{t+1}`` at most ``q(x)`` (the compressed id also says that no longer known entry follows), so
  the term is the Bernoulli KL of the event "the next id is ``c_{t+1}``": ``KL(Bern(q(x)) ||
  Bern(p_t(c_{t+1})))``. It pulls over-confident predictions down and raises under-confident ones,
  e.g. mass left on spelling a defined hypertoken out as base tokens, which greedy decoding then
  picks. Unlike cross-entropy on ``c_{t+1}`` it does not push ``p`` to 1 where the text itself is
  uncertain.

Batches are right-padded (as ``training.data.Collator`` makes them). The folded KL touches
``[B, T, V]`` float32 tensors three times: ~0.6 GB for 2 x 512 ids at V = 49,152.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from z2z_vllm.modeling.codebooks import CodebookBatch

__all__ = ["DistillationLosses", "distillation_losses", "expansion_ends", "teacher_log_probs"]


@dataclass
class DistillationLosses:
    folded_kl: torch.Tensor  # mean over scored positions, nats
    expansion_kl: torch.Tensor  # mean over scored positions, nats


def expansion_ends(input_ids: torch.Tensor, attention_mask: torch.Tensor, entries: torch.Tensor,
                   *, initial_vocab_size: int) -> torch.Tensor:
    """``e_t`` [B, T]: base tokens covered by compressed ids ``0 .. t`` (constant over padding)."""
    V = initial_vocab_size
    entry_lengths = (entries >= 0).sum(-1)  # [B, E]
    slots = (input_ids - V).clamp(0, entries.shape[1] - 1)
    lengths = torch.where(input_ids >= V, entry_lengths.gather(1, slots), 1)
    return (lengths * attention_mask.long()).cumsum(1)


@torch.no_grad()
def teacher_log_probs(teacher: torch.nn.Module, base_ids: torch.Tensor, base_mask: torch.Tensor,
                      *, initial_vocab_size: int) -> torch.Tensor:
    """The teacher's next-token log-probabilities [B, N, V] (float32) over right-padded base ids."""
    logits = teacher(input_ids=base_ids, attention_mask=base_mask.long()).logits[..., :initial_vocab_size]
    return torch.log_softmax(logits.float(), dim=-1)


def _hyper_first_subtokens(codebooks: CodebookBatch, positions: int, columns: int) -> torch.Tensor:
    """[B, T, C]: the first base id of hyper column ``V + c`` at each position (0 where undefined:
    those columns have probability 0). The KwKwK column's entry is not yet in the codebook at that
    position; its first subtoken is the candidate's."""
    entries, known_at, candidates = codebooks.entries, codebooks.known_at, codebooks.candidates
    batch, num_entries = known_at.shape
    first = torch.zeros(batch, positions, columns, dtype=torch.long, device=entries.device)
    first[:, :, :num_entries] = entries[:, :, 0].clamp(min=0).unsqueeze(1)
    steps = torch.arange(positions, device=entries.device)
    known = (known_at.unsqueeze(1) <= steps.view(1, -1, 1)).sum(-1).clamp(max=columns - 1)  # [B, T]
    candidate_first = candidates[:, : min(positions, candidates.shape[1]), 0]
    candidate_first = F.pad(candidate_first, (0, positions - candidate_first.shape[1]), value=-1)
    has_candidate = candidate_first >= 0
    current = first.gather(2, known.unsqueeze(-1)).squeeze(-1)
    first.scatter_(2, known.unsqueeze(-1), torch.where(has_candidate, candidate_first, current).unsqueeze(-1))
    return first


def distillation_losses(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    codebooks: CodebookBatch,
    teacher: torch.Tensor,
    base_ids: torch.Tensor,
    *,
    initial_vocab_size: int,
) -> DistillationLosses:
    """Both terms for a right-padded batch: student ``logits`` [B, T, V + C] over compressed
    ``input_ids`` [B, T] with their ``codebooks``; ``teacher`` [B, N, V] log-probabilities over the
    windows' base ids ``base_ids`` [B, N] (see :func:`teacher_log_probs`)."""
    V = initial_vocab_size
    mask = attention_mask.bool()
    ends = expansion_ends(input_ids, mask, codebooks.entries, initial_vocab_size=V)  # [B, T]
    scored = mask[:, 1:]  # position t is scored when id t+1 exists
    if not scored.any():
        zero = logits.sum() * 0.0
        return DistillationLosses(zero, zero)
    student = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # [B, T-1, V+C]
    rows = (ends[:, :-1] - 1).clamp(min=0)  # teacher position aligned with student position t
    target = teacher.gather(1, rows.unsqueeze(-1).expand(-1, -1, V))  # [B, T-1, V]

    probs = student.exp()
    first = _hyper_first_subtokens(codebooks.to(logits.device), student.shape[1], logits.shape[-1] - V)
    folded = probs[..., :V].scatter_add(-1, first, probs[..., V:])
    folded_kl = F.kl_div(folded.clamp_min(1e-30).log(), target, log_target=True, reduction="none").sum(-1)

    # log q(x) of the next id's expansion: teacher log-probs of base tokens e_t .. e_{t+1} - 1.
    token = teacher[:, :-1].gather(2, base_ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # log q(b_j | b_<j), j >= 1
    cumulative = F.pad(token.cumsum(1), (1, 0))  # [B, N]: sum over j <= i
    start, stop = rows, (ends[:, 1:] - 1).clamp(min=0)
    log_q = (cumulative.gather(1, stop) - cumulative.gather(1, start)).clamp(max=0.0)
    log_p = student.gather(2, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    expansion_kl = _bernoulli_kl(log_q, log_p)

    def mean(values: torch.Tensor) -> torch.Tensor:
        return values[scored].mean()

    return DistillationLosses(folded_kl=mean(folded_kl), expansion_kl=mean(expansion_kl))


def _log1mexp(log_x: torch.Tensor) -> torch.Tensor:
    """log(1 - x) from log x (x < 1), stable near both ends."""
    log_x = log_x.clamp(max=-1e-7)
    return torch.where(log_x > -0.693, torch.log(-torch.expm1(log_x)), torch.log1p(-torch.exp(log_x)))


def _bernoulli_kl(log_q: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """KL(Bern(q) || Bern(p)) from log q and log p."""
    q = log_q.exp()
    return q * (log_q - log_p) + (1 - q) * (_log1mexp(log_q) - _log1mexp(log_p))
