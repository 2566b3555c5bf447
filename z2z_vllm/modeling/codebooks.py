"""Codebooks of a batch of compressed sequences as tensors, for scoring whole sequences."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from z2z_vllm.codec import LZWCodec

__all__ = ["CodebookBatch", "NEVER"]

NEVER = 2**31 - 1  # known_at of padding entries: known after no position


@dataclass(frozen=True)
class CodebookBatch:
    """Per-sequence codebooks, positions counted over each sequence's own (unpadded) ids.

    - ``entries`` [B, E, W] int64: base ids of hypertoken ``V + e`` (-1 padding); E >= 1;
    - ``known_at`` [B, E] int64: entry e may be predicted after position t iff ``known_at <= t``
      (``NEVER`` for padding entries);
    - ``candidates`` [B, T, W] int64 (T >= 1): after position t, the entry that id ``V + (entries known at t)``
      would define by naming itself (LZW's KwKwK case), all -1 where that id is not valid.

    Built on CPU (e.g. in DataLoader workers) and moved with :meth:`to`.
    """

    entries: torch.Tensor
    known_at: torch.Tensor
    candidates: torch.Tensor

    @classmethod
    def from_sequences(
        cls, codec: LZWCodec, sequences: Sequence[Sequence[int]], *, num_threads: int | None = None
    ) -> CodebookBatch:
        """Codebooks of unpadded compressed sequences (raises ``ValueError`` on invalid ids)."""
        arrays = codec.codebook_arrays(list(sequences), num_threads=num_threads)
        entries, known_at, candidates = arrays["entries"], arrays["known_at"], arrays["candidates"]
        if entries.shape[1] == 0:  # keep E >= 1 so that gathers by slot always have a row
            entries = np.full((len(sequences), 1, max(entries.shape[2], 1)), -1, dtype=np.int32)
            known_at = np.full((len(sequences), 1), NEVER, dtype=np.int32)
        if candidates.shape[1] == 0:  # likewise T >= 1 (a batch of empty sequences)
            candidates = np.full((len(sequences), 1, entries.shape[2]), -1, dtype=np.int32)
        return cls(
            entries=torch.from_numpy(entries).long(),
            known_at=torch.from_numpy(known_at).long(),
            candidates=torch.from_numpy(candidates).long(),
        )

    def to(self, device: torch.device | str) -> CodebookBatch:
        return CodebookBatch(
            entries=self.entries.to(device),
            known_at=self.known_at.to(device),
            candidates=self.candidates.to(device),
        )
