"""Real corpora: plausible content per domain, same text on every machine, stable disjoint splits."""

from __future__ import annotations

import gettext
import hashlib
import json
import platform
import unicodedata

import pytest

from z2z_vllm.data import DOMAINS, HELDOUT_FRACTION, corpus_documents, corpus_text, split_of
from z2z_vllm.data.corpora import REFERENCE_PYTHON, _detagged_brown, _mo_translations
from z2z_vllm.data.sources import pip_package_files

# sha256 over every document of the domain (name, NUL, text, NUL, in corpus order): the text is
# pinned, so these only change when a pin or the reading code changes.
DOMAIN_DIGESTS = {
    "code": "0f552ac107f728a7a15db796611d53f383efa1a0dda104eb146e6556853a66b5",  # Python 3.11.7
    "prose": "ca13b1947b018fe35fc435937f87be8d20c671e09d00b7da4cc9ef9b53ee0e85",
    "math": "3432e48d409e8086817ecc0304260c34bea5ff05267436dab16e3a8e7b307109",
    "multilingual": "30e9c21fb2d28872c58d8bdcdf0c0d3bd74ef76ff70f06e4a276c01b26ae8f58",
    "structured": "43e79be259206b4a48a55ce8b8d40e29a11d3d073a43f3b9158c9ad46d2e7bbd",
    "biomedical": "4cdf4e52b97905842b4671712f8dbca614e7c43b3e43167a9ff38175bd68d1a4",
}


def _documents(domain):
    return corpus_documents(domain, split="train") + corpus_documents(domain, split="heldout")


@pytest.mark.parametrize("domain", DOMAINS)
def test_text_is_the_pinned_text(domain):
    if domain == "code" and platform.python_version() != REFERENCE_PYTHON:
        pytest.skip(f"the code corpus is pinned to Python {REFERENCE_PYTHON}'s standard library")
    digest = hashlib.sha256()
    for doc in sorted(_documents(domain), key=lambda doc: hashlib.sha256(doc.name.encode()).digest()):
        digest.update(doc.name.encode() + b"\0" + doc.text.encode() + b"\0")
    assert digest.hexdigest() == DOMAIN_DIGESTS[domain]


@pytest.mark.parametrize("domain", DOMAINS)
def test_splits_are_disjoint_stable_and_about_ten_percent(domain):
    train, heldout = corpus_documents(domain, split="train"), corpus_documents(domain, split="heldout")
    assert train and heldout
    assert not {doc.name for doc in train} & {doc.name for doc in heldout}
    assert all(split_of(doc.name) == "heldout" for doc in heldout)
    assert all(doc.domain == domain and doc.text for doc in train + heldout)
    assert 0.5 * HELDOUT_FRACTION < len(heldout) / (len(train) + len(heldout)) < 1.5 * HELDOUT_FRACTION
    assert [doc.name for doc in corpus_documents(domain, split="heldout")] == [doc.name for doc in heldout]


def test_split_of_never_changes():
    assert [split_of(name) for name in ("json/decoder.py", "brown/ca01", "HP:0000001", "sympy/core/add.py")] == [
        "train",
        "train",
        "train",
        "heldout",
    ]


def test_max_bytes_keeps_a_prefix():
    small = corpus_documents("multilingual", split="train", max_bytes=10_000)
    large = corpus_documents("multilingual", split="train", max_bytes=50_000)
    small_bytes = sum(len(doc.text.encode()) for doc in small)
    assert 10_000 - 4 <= small_bytes <= 10_000  # the last document is cut, at most one character short
    assert [doc.name for doc in small] == [doc.name for doc in large[: len(small)]]
    assert large[len(small) - 1].text.startswith(small[-1].text)
    assert corpus_documents("prose", max_bytes=0) == []
    assert corpus_text("prose", max_bytes=3_000, separator="\n\n") == "\n\n".join(
        doc.text for doc in corpus_documents("prose", max_bytes=3_000)
    )


def test_code_is_python_source():
    text = corpus_text("code", split="heldout", max_bytes=2_000_000)
    assert text.count("def ") > 1_000 and "import " in text and "class " in text


def test_prose_is_english_without_pos_tags():
    text = corpus_text("prose", max_bytes=500_000)
    assert text.count(" the ") > 5_000
    assert "/nn" not in text and "/at " not in text and "``" not in text


def test_brown_tags_are_stripped_and_spacing_restored():
    tagged = "\n\n\tThe/at jury/nn said/vbd ``/`` no/at ''/'' ,/, (/( it/pps )/) ./.\n\n\tAnd/cc 1/2/cd more/ap ./.\n"
    assert _detagged_brown(tagged) == 'The jury said "no", (it).\nAnd 1/2 more.\n'


def test_math_is_sympy_source():
    text = corpus_text("math", max_bytes=2_000_000)
    assert "Symbol" in text and "sympy" in text and "def " in text


def test_multilingual_covers_many_scripts():
    scripts = {}
    for char in corpus_text("multilingual"):
        if char.isalpha() and ord(char) > 0x7F:
            script = unicodedata.name(char, "?").split()[0]
            scripts[script] = scripts.get(script, 0) + 1
    common = {script for script, count in scripts.items() if count > 1_000}
    assert {"CYRILLIC", "ARABIC", "GREEK", "CJK", "DEVANAGARI", "HEBREW", "HANGUL", "THAI"} <= common
    assert not any("/locale/en/" in doc.name for doc in _documents("multilingual"))


def test_mo_reader_agrees_with_gettext():
    catalogs = [path for name, path in pip_package_files("Django", suffixes=(".mo",)) if "/locale/ru/" in name]
    assert catalogs
    for path in catalogs:
        with path.open("rb") as handle:
            expected = gettext.GNUTranslations(handle)._catalog  # stdlib's own parse, as the oracle
        forms = [text for key, text in expected.items() if key != "" and text]  # "" is the header
        assert sorted(_mo_translations(path.read_bytes())) == sorted(forms)


def test_structured_is_json():
    docs = corpus_documents("structured", split="heldout")
    for doc in docs[:20]:
        json.loads(doc.text)
    assert any(doc.name.endswith("service-2.json.gz") for doc in docs)


def test_biomedical_is_hpo_terms():
    docs = corpus_documents("biomedical", split="heldout", max_bytes=200_000)
    assert all(doc.text.startswith("[Term]\nid: HP:") and doc.name.startswith("HP:") for doc in docs)
    assert sum("\ndef: " in doc.text for doc in docs) > len(docs) // 2


def test_unknown_domain_or_split_is_a_clear_error():
    with pytest.raises(ValueError, match="known: code"):
        corpus_documents("poetry")
    with pytest.raises(ValueError, match="known: train"):
        corpus_documents("code", split="test")
