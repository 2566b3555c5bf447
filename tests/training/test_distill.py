"""Distillation from the frozen base (training/distill.py): against a plain-Python reference, zero
when the student is the teacher, and training on it moves a student toward its teacher."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.modeling.helpers import SPECIAL, V, base_stream, pad_batch, tiny_base, tiny_model
from z2z_vllm.codec import LZWCodec
from z2z_vllm.modeling import CodebookBatch, Zip2ZipForCausalLM
from z2z_vllm.training.distill import distillation_losses, expansion_ends, teacher_log_probs


def student_and_teacher_inputs(model: Zip2ZipForCausalLM, streams: list[list[int]]):
    """Compressed and base batches of the same text, both right-padded."""
    compressed = [model.codec.encode(s) for s in streams]
    ids, mask = pad_batch(compressed)
    base_ids, base_mask = pad_batch(streams)
    return ids, mask, CodebookBatch.from_sequences(model.codec, compressed), base_ids, base_mask


def losses_of(model: Zip2ZipForCausalLM, teacher: torch.nn.Module, streams: list[list[int]]):
    ids, mask, codebooks, base_ids, base_mask = student_and_teacher_inputs(model, streams)
    logits = model(ids, attention_mask=mask, codebooks=codebooks).logits
    q = teacher_log_probs(teacher, base_ids, base_mask, initial_vocab_size=V)
    return distillation_losses(logits, ids, mask, codebooks, q, base_ids, initial_vocab_size=V)


def reference_losses(model: Zip2ZipForCausalLM, teacher: torch.nn.Module, streams: list[list[int]]):
    """Both terms by loops over one sequence at a time, from the codec's own codebooks."""
    folded_terms, expansion_terms = [], []
    for stream in streams:
        compressed = model.codec.encode(stream)
        codebook = model.codec.codebook(compressed)  # hyper id -> base ids, as the decoder builds it
        ids = torch.tensor([compressed])
        with torch.no_grad():
            p = torch.log_softmax(model(ids).logits[0].float(), -1).exp()
            q = torch.log_softmax(teacher(input_ids=torch.tensor([stream])).logits[0, :, :V].float(), -1)
        expansions = [codebook[c] if c >= V else (c,) for c in compressed]
        read = 0
        for t in range(len(compressed) - 1):
            read += len(expansions[t])
            folded = p[t, :V].clone()
            for column, first in _first_subtokens(model.codec, compressed[: t + 1]).items():
                folded[first] += p[t, column]
            folded_terms.append(float((q[read - 1].exp() * (q[read - 1] - folded.log())).sum()))
            span = sum(float(q[j - 1, stream[j]]) for j in range(read, read + len(expansions[t + 1])))
            qx, px = math.exp(span), float(p[t, compressed[t + 1]])
            expansion_terms.append(qx * math.log(qx / px) + (1 - qx) * math.log((1 - qx) / (1 - px)))
    return float(np.mean(folded_terms)), float(np.mean(expansion_terms))


def _first_subtokens(codec: LZWCodec, read: list[int]) -> dict[int, int]:
    """First base id of every hyper column a model may predict after reading ``read``: the known
    entries and the KwKwK candidate (the entry that naming itself would define)."""
    first = {hyper: entry[0] for hyper, entry in codec.codebook(read).items()}
    decoder = codec.decoder()
    decoder.feed(read)
    if decoder.candidate is not None:
        hyper, entry = decoder.candidate
        first[hyper] = entry[0]
    return first


@pytest.fixture(scope="module")
def streams() -> list[list[int]]:
    return [base_stream(60, seed=1), base_stream(45, seed=2)]


def test_losses_match_the_loop_reference(streams):
    student = tiny_model(seed=3)
    teacher = tiny_base(seed=4)  # a different model: both terms are far from zero
    kd = losses_of(student, teacher, streams)
    folded, expansion = reference_losses(student, teacher, streams)
    assert float(kd.folded_kl) == pytest.approx(folded, rel=1e-4)
    assert float(kd.expansion_kl) == pytest.approx(expansion, rel=1e-4)
    assert folded > 0.1 and expansion > 0.01


def test_losses_are_zero_when_the_student_is_the_teacher_on_base_only_text(streams):
    # M = 1: nothing merges, the compressed stream is the base stream and every hyper column is -inf.
    base = tiny_base(seed=5)
    student = Zip2ZipForCausalLM.from_base(base, max_codebook_size=8, max_subtokens=1, disabled_ids=(SPECIAL,)).eval()
    kd = losses_of(student, base, streams)
    assert float(kd.folded_kl) == pytest.approx(0.0, abs=1e-5)
    assert float(kd.expansion_kl) == pytest.approx(0.0, abs=1e-5)


def test_expansion_ends_count_base_tokens(streams):
    codec = LZWCodec(initial_vocab_size=V, max_codebook_size=24, max_subtokens=3, disabled_ids=(SPECIAL,))
    compressed = [codec.encode(s) for s in streams]
    ids, mask = pad_batch(compressed)
    ends = expansion_ends(ids, mask, CodebookBatch.from_sequences(codec, compressed).entries, initial_vocab_size=V)
    for row, (stream, seq) in enumerate(zip(streams, compressed)):
        assert ends[row, len(seq) - 1] == len(stream)
        assert [ends[row, t].item() for t in range(len(seq))] == [
            len(codec.decode(seq[: t + 1])) for t in range(len(seq))
        ]


def test_distillation_moves_a_student_toward_its_teacher(streams):
    teacher = tiny_base(seed=6)
    student = tiny_model(seed=7)  # another random base: far from the teacher
    student.train()
    optimizer = torch.optim.Adam(student.parameters(), lr=3e-3)
    before = losses_of(student, teacher, streams)
    for _ in range(40):
        kd = losses_of(student, teacher, streams)
        optimizer.zero_grad()
        (kd.folded_kl + kd.expansion_kl).backward()
        optimizer.step()
    after = losses_of(student, teacher, streams)
    assert float(after.folded_kl) < 0.5 * float(before.folded_kl)
    assert float(after.expansion_kl) < float(before.expansion_kl)


def test_input_side_loss_is_the_base_loss_when_nothing_merges(streams):
    from z2z_vllm.training.data import CompressedDataset
    from z2z_vllm.training.evaluate import input_side_loss

    base = tiny_base(seed=5)
    same = Zip2ZipForCausalLM.from_base(base, max_codebook_size=8, max_subtokens=1, disabled_ids=(SPECIAL,)).eval()
    merging = tiny_model(seed=5)  # the same base weights, reading hypertokens through untrained encoders
    for model, equal in ((same, True), (merging, False)):
        windows = [np.asarray(model.codec.encode(s)) for s in streams]
        data = CompressedDataset(windows, [len(s) for s in streams], num_bytes=1, num_documents=len(streams))
        loss = input_side_loss(model, base, data, batch_size=2)
        assert loss.positions == sum(len(w) - 1 for w in windows)
        assert (loss.z2z_nats == pytest.approx(loss.base_nats, rel=1e-5)) is equal
