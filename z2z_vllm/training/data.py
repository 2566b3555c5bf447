"""Training data: text -> base tokens -> LZW-compressed windows of fixed length, cached on disk.

The model builds ONE codebook per sequence, so a training sequence must be one LZW stream. Each
document is tokenized, then cut into consecutive *windows*: a window is the longest run of the
document's next base tokens whose compression fits ``length`` compressed ids (a start id, when
given, counts). Every window is compressed on its own (fresh codebook), windows never cross
documents, and together they cover every base token once: decompressing a document's windows
in order gives its base ids back. Short last windows are padded at batch time.

    from z2z_vllm.training.data import build_dataset, load_documents
    docs = load_documents(domain="code", split="train", max_bytes=1_000_000)
    data = build_dataset(docs, tokenizer=tok, codec=codec, length=256, start_id=1, cache_dir="cache")
    loader = DataLoader(data, batch_size=4, collate_fn=Collator(codec=codec))

Tokenization (``tokenizers`` batch encode) and compression (``LZWCodec.encode_batch``) run on
all cores. The cache key covers the tokenizer file's hash, V / C / M / disabled ids, the window
length, the start id and every source (file path, size and mtime; or domain, split and cap).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from z2z_vllm.codec import LZWCodec
from z2z_vllm.modeling import CodebookBatch

__all__ = [
    "Collator",
    "batch_to",
    "CompressedDataset",
    "Document",
    "build_dataset",
    "load_documents",
    "load_text_tokenizer",
    "window_documents",
]

CACHE_FORMAT = 1
IGNORE_INDEX = -100  # label of padding: ignored by Hugging Face losses and ours


@dataclass(frozen=True)
class Document:
    name: str
    text: str
    source: dict[str, Any]  # what identifies it in the cache key


def load_documents(
    *, files: Sequence[str | os.PathLike] = (), domain: str | None = None, split: str = "train",
    max_bytes: int | None = None,
) -> list[Document]:
    """Local UTF-8 ``files`` (one document each) then the ``split`` of corpus ``domain``
    (at most ``max_bytes``; see ``z2z_vllm.data.corpus_documents``)."""
    documents = []
    for file in files:
        path = Path(file).resolve()
        stat = path.stat()
        source = {"file": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        documents.append(Document(str(path), path.read_text(encoding="utf-8"), source))
    if domain is not None:
        from z2z_vllm.data import corpus_documents

        source = {"domain": domain, "split": split, "max_bytes": max_bytes}
        for doc in corpus_documents(domain, split=split, max_bytes=max_bytes):
            documents.append(Document(doc.name, doc.text, source))
    return documents


def load_text_tokenizer(name_or_dir: str | os.PathLike):
    """A ``tokenizers.Tokenizer`` from a folder with tokenizer.json or a ``z2z_vllm.data`` name."""
    from tokenizers import Tokenizer

    folder = Path(name_or_dir)
    if (folder / "tokenizer.json").is_file():
        return Tokenizer.from_file(str(folder / "tokenizer.json"))
    from z2z_vllm.data import load_tokenizer

    return load_tokenizer(str(name_or_dir))


def window_documents(
    documents_ids: Sequence[np.ndarray], *, length: int, codec: LZWCodec | None = None,
    start_id: int | None = None,
) -> tuple[list[np.ndarray], list[int]]:
    """Cuts each document's base ids into windows of at most ``length`` ids (compressed with
    ``codec`` when given, else plain base ids), ``start_id`` first when given.

    Returns the windows, in document order, and the number of base tokens each covers.
    Windows of one document are built in rounds so that each round compresses all documents'
    next windows in one parallel ``encode_batch``.
    """
    body = length - (start_id is not None)
    if body < 1:
        raise ValueError(f"length {length} leaves no room for tokens after the start id")
    # A window of `body` compressed ids covers at most body * M base ids.
    reach = body * (codec.max_subtokens if codec is not None else 1)
    prefix = np.array([start_id] if start_id is not None else [], dtype=np.int64)
    cursors = [0] * len(documents_ids)
    per_document: list[list[tuple[np.ndarray, int]]] = [[] for _ in documents_ids]
    active = [d for d, ids in enumerate(documents_ids) if len(ids)]
    while active:
        chunks = [documents_ids[d][cursors[d] : cursors[d] + reach] for d in active]
        if codec is None:
            windows, covered = chunks, [len(c) for c in chunks]
        else:
            encoded = codec.encode_batch(chunks, as_numpy=True)
            windows = [e[:body] for e in encoded]
            cut = [i for i, e in enumerate(encoded) if len(e) > body]
            covered = [len(c) for c in chunks]
            # A cut stream's prefix is exactly the encoding of the base ids it decodes to.
            for i, decoded in zip(cut, codec.decode_batch([windows[i] for i in cut], as_numpy=True)):
                covered[i] = len(decoded)
        for d, window, count in zip(active, windows, covered):
            per_document[d].append((np.concatenate([prefix, np.asarray(window, dtype=np.int64)]), count))
            cursors[d] += count
        active = [d for d in active if cursors[d] < len(documents_ids[d])]
    flat = [item for windows in per_document for item in windows]
    return [w for w, _ in flat], [c for _, c in flat]


class CompressedDataset(torch.utils.data.Dataset):
    """Windows (int64 arrays) with the base tokens and text bytes they stand for."""

    def __init__(self, sequences: list[np.ndarray], base_tokens: list[int], *, num_bytes: int, num_documents: int):
        self.sequences = sequences
        self.base_tokens = base_tokens
        self.num_bytes = num_bytes  # UTF-8 bytes of all documents
        self.num_documents = num_documents

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.sequences[index]

    @classmethod
    def concatenate(cls, parts: Sequence[CompressedDataset]) -> CompressedDataset:
        """The windows of ``parts`` one after another (e.g. several domains to shuffle together)."""
        return cls(
            [window for part in parts for window in part.sequences],
            [count for part in parts for count in part.base_tokens],
            num_bytes=sum(part.num_bytes for part in parts),
            num_documents=sum(part.num_documents for part in parts),
        )

    @property
    def num_tokens(self) -> int:
        return sum(len(s) for s in self.sequences)

    def save(self, path: Path) -> None:
        lengths = np.array([len(s) for s in self.sequences], dtype=np.int64)
        flat = np.concatenate(self.sequences) if self.sequences else np.zeros(0, dtype=np.int64)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(
            tmp, flat=flat.astype(np.int32), lengths=lengths, base_tokens=np.array(self.base_tokens, dtype=np.int64),
            num_bytes=self.num_bytes, num_documents=self.num_documents,
        )
        os.replace(tmp, path)  # a killed run never leaves a half-written cache entry

    @classmethod
    def load(cls, path: Path) -> CompressedDataset:
        with np.load(path) as saved:
            flat = saved["flat"].astype(np.int64)
            bounds = np.cumsum(saved["lengths"])[:-1]
            return cls(
                list(np.split(flat, bounds)) if len(saved["lengths"]) else [],
                saved["base_tokens"].tolist(),
                num_bytes=int(saved["num_bytes"]),
                num_documents=int(saved["num_documents"]),
            )


def _tokenizer_digest(tokenizer) -> str:
    return hashlib.sha256(tokenizer.to_str().encode("utf-8")).hexdigest()


def _cache_key(documents: Sequence[Document], *, tokenizer, codec: LZWCodec | None, length: int, start_id: int | None) -> str:
    sources = []
    for doc in documents:  # one entry per file, one per domain split
        if not sources or sources[-1] != doc.source:
            sources.append(doc.source)
    codec_key = None if codec is None else {
        "V": codec.initial_vocab_size, "C": codec.max_codebook_size, "M": codec.max_subtokens,
        "disabled": list(codec.disabled_ids), "pad": codec.pad_token_id,
    }
    key = {
        "format": CACHE_FORMAT, "tokenizer": _tokenizer_digest(tokenizer), "codec": codec_key,
        "length": length, "start_id": start_id, "sources": sources,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def build_dataset(
    documents: Sequence[Document], *, tokenizer, length: int, codec: LZWCodec | None = None,
    start_id: int | None = None, cache_dir: str | os.PathLike | None = None,
) -> CompressedDataset:
    """Tokenizes ``documents`` with ``tokenizer`` (a ``tokenizers.Tokenizer``; no special tokens
    added) and windows them (see :func:`window_documents`); reads / writes ``cache_dir`` when given."""
    cache_path = None
    if cache_dir is not None:
        key = _cache_key(documents, tokenizer=tokenizer, codec=codec, length=length, start_id=start_id)
        cache_path = Path(cache_dir) / f"windows-{key}.npz"
        if cache_path.is_file():
            return CompressedDataset.load(cache_path)
    encodings = tokenizer.encode_batch([doc.text for doc in documents], add_special_tokens=False)
    ids = [np.asarray(e.ids, dtype=np.int64) for e in encodings]
    windows, base_tokens = window_documents(ids, length=length, codec=codec, start_id=start_id)
    # A window needs an id after its first to be a training target.
    kept = [i for i, w in enumerate(windows) if len(w) >= 2]
    dataset = CompressedDataset(
        [windows[i] for i in kept], [base_tokens[i] for i in kept],
        num_bytes=sum(len(doc.text.encode("utf-8")) for doc in documents), num_documents=len(documents),
    )
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        dataset.save(cache_path)
    return dataset


class Collator:
    """Pads windows on the right into a batch dict for ``Zip2ZipForCausalLM.forward`` (with the
    batch's ``CodebookBatch``, built here so DataLoader workers do it) or, without a codec, for a
    plain causal LM."""

    def __init__(self, *, codec: LZWCodec | None = None, pad_id: int = 0, base_ids: bool = False):
        if base_ids and codec is None:
            raise ValueError("base_ids needs a codec to decompress the windows")
        self.codec = codec
        self.pad_id = pad_id
        self.base_ids = base_ids  # also the windows' base ids, for a teacher that reads them

    def __call__(self, windows: Sequence[np.ndarray]) -> dict[str, Any]:
        input_ids, attention_mask = self._pad(windows)
        labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        if self.codec is not None:
            batch["codebooks"] = CodebookBatch.from_sequences(self.codec, list(windows))
        if self.base_ids:
            decoded = self.codec.decode_batch([np.asarray(w) for w in windows], as_numpy=True)
            batch["base_ids"], batch["base_attention_mask"] = self._pad(decoded)
        return batch

    def _pad(self, rows: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ids [B, max length] and their attention mask."""
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.from_numpy(np.asarray(row, dtype=np.int64))
            mask[i, : len(row)] = 1
        return ids, mask


def batch_to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """A :class:`Collator` batch with every tensor (and the ``CodebookBatch``) on ``device``."""
    return {key: value.to(device) for key, value in batch.items()}
