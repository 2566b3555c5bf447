"""Masked hyper logits: the kernel against a float64 reference, the reference against the
plugin's CPU path (HyperSlots.logits)."""

from __future__ import annotations

import pytest
import torch

from tests.ops.helpers import DEVICES, assert_close_to, triton_device
from z2z_vllm.ops import hyper_logits
from z2z_vllm.ops.logits import hyper_logits_reference

V, S, C, H = 13, 5, 40, 48  # C and H not powers of two: partial blocks in both
R = 70  # table rows: fewer than the entries defined (S x C would be 200), so slots share rows


def inputs(seed: int, dtype: torch.dtype, device: str, *, num_rows: int = 7):
    g = torch.Generator().manual_seed(seed)
    rows = torch.randn(R, H, generator=g)
    hidden = torch.randn(num_rows, H, generator=g)
    candidate_rows = torch.randn(S, H, generator=g)
    # Empty, partly filled and full codebooks; a candidate flag on a full one is ignored.
    num_entries = torch.tensor([0, 1, 17, C, 33], dtype=torch.int32)
    has_candidate = torch.tensor([True, False, True, True, True])
    # Random rows for defined entries (shared between and within slots), -1 past them.
    index = torch.randint(0, R, (S, C), generator=g, dtype=torch.int32)
    index[torch.arange(C) >= num_entries[:, None]] = -1
    # Rows of every slot, a slot read by two rows, padding rows (-1).
    row_slots = torch.tensor([0, 1, 2, 3, 4, -1, 2, 4, -1, 0][:num_rows], dtype=torch.int32)
    # Mask state per logits row: its slot's (padding rows read slot 0's, ignored).
    of_row = row_slots.long().clamp(min=0)
    num_entries, candidate_rows, has_candidate = num_entries[of_row], candidate_rows[of_row], has_candidate[of_row]
    tensors = (hidden.to(dtype), rows.to(dtype), index, row_slots, num_entries, candidate_rows.to(dtype), has_candidate)
    return tuple(t.to(device) for t in tensors)


def expected(args) -> torch.Tensor:
    hidden, rows, index, row_slots, num_entries, candidate_rows, has_candidate = args
    out = torch.zeros(hidden.shape[0], V + C, dtype=torch.float64, device=hidden.device)
    return hyper_logits_reference(
        hidden.double(), rows.double(), index, row_slots, num_entries, candidate_rows.double(), has_candidate, out
    )[:, V:]


def test_reference_reads_each_entry_through_the_index():
    hidden, rows, index, row_slots, num_entries, candidate_rows, has_candidate = inputs(0, torch.float64, "cpu")
    got = expected((hidden, rows, index, row_slots, num_entries, candidate_rows, has_candidate))
    r, slot = 2, 2  # row 2 reads slot 2: 17 entries
    for c in range(17):
        torch.testing.assert_close(got[r, c], hidden[r] @ rows[index[slot, c]])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("logits_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("seed", range(2))
def test_kernel_matches_reference(device, dtype, logits_dtype, seed):
    device = triton_device(device)
    args = inputs(seed, dtype, device)
    base = torch.randn(args[0].shape[0], V, generator=torch.Generator().manual_seed(seed)).to(device, logits_dtype)
    logits = torch.cat([base, torch.full((base.shape[0], C), float("nan"), device=device, dtype=logits_dtype)], 1)
    out = hyper_logits(*args, logits, backend="triton")
    assert out is logits and torch.equal(logits[:, :V], base)  # base columns untouched
    ref = expected(args)
    hyper = logits[:, V:]
    assert not hyper.isnan().any()  # every hyper column written
    defined = torch.isfinite(ref)
    assert torch.equal(torch.isfinite(hyper), defined) and (hyper[~defined] == float("-inf")).all()
    assert_close_to(hyper[defined], ref[defined], torch.bfloat16 if torch.bfloat16 in (dtype, logits_dtype) else dtype)


def test_masking_pattern():
    args = inputs(0, torch.float32, "cpu", num_rows=10)
    finite = torch.isfinite(expected(args))
    # Slot 0: no entry, a candidate -> column 0 only; slot 1: entry 0; slot 2: 17 entries + KwKwK;
    # slot 3: full, no candidate column; slot 4: 33 + KwKwK; padding rows: nothing.
    assert finite.sum(1).tolist() == [1, 1, 18, C, 34, 0, 18, 34, 0, 1]
    assert finite[2, :18].all() and finite[4, 33]


def test_reference_is_the_plugins_cpu_path():
    """HyperSlots.logits (the vLLM plugin's CPU path) computes the same function."""
    from z2z_vllm.codec import LZWCodec
    from z2z_vllm.vllm.slots import HyperSlots

    hidden, rows, index, row_slots, num_entries, candidate_rows, has_candidate = inputs(
        1, torch.float32, "cpu", num_rows=5
    )
    slots = HyperSlots(
        codec=LZWCodec(initial_vocab_size=V, max_codebook_size=C, max_subtokens=4),
        num_slots=S, hidden_size=H, encode_inputs=None, encode_outputs=None, device=torch.device("cpu"),
        dtype=torch.float32,
    )  # fmt: skip
    slots.table.output_rows = rows
    slots.index.copy_(index)
    slots.num_known.copy_(num_entries)
    slots.candidate_rows.copy_(candidate_rows)
    slots.has_candidate.copy_(has_candidate & (num_entries < C))  # the decoder has none when full
    slots._row_slots, slots._columns_used = row_slots.long(), C  # what begin_step would set
    base = torch.randn(5, V)
    plugin = slots.logits(hidden, base)
    buffer = torch.cat([base, torch.empty(5, C)], 1)
    ours = hyper_logits(hidden, rows, index, row_slots, num_entries, candidate_rows, has_candidate, buffer)
    torch.testing.assert_close(ours, plugin, rtol=1e-5, atol=1e-5)
