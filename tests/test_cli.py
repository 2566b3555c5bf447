"""The ``z2z`` command line: ``z2z compress`` output, statistics and error handling."""

from __future__ import annotations

import io
import re
import subprocess
import sys

import pytest

from z2z_vllm import cli
from z2z_vllm.codec import LZWCodec

ANSI = re.compile(r"\x1b\[[0-9;]*m")
STAT_LABELS = (
    "bytes",
    "base tokens",
    "compressed tokens",
    "reduction",
    "entries created",
    "entries used",
    "bytes per token",
    "lossless",
)
# Repeats itself so that hypertokens are emitted; non-ASCII characters exercise byte-level tokens
# that split one character, and a trailing line without newline the output's last line.
TEXT = (
    "def add(a, b):\n    return a + b\n\n"
    "def sub(a, b):\n    return a - b\n\n"
    "def mul(a, b):\n    return a * b\n\n"
    "# café, naïve, 東京 — déjà vu: café, naïve, 東京\n"
    "def div(a, b):\n    return a / b"
)


def default_codec(base: cli.BaseTokenizer) -> LZWCodec:
    """The codec `z2z compress` uses with its default M=3, C=1024."""
    return LZWCodec(
        initial_vocab_size=base.vocab_size, max_codebook_size=1024, max_subtokens=3, disabled_ids=base.special_ids
    )


def _tokenizer_available(name: str) -> bool:
    try:
        cli.load_base_tokenizer(name)
    except cli.CLIError:
        return False
    return True


pytestmark = pytest.mark.skipif(
    not _tokenizer_available("smollm2"), reason="SmolLM2 tokenizer unavailable (bash scripts/install_data_sources.sh)"
)


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "sample.py"
    path.write_text(TEXT, encoding="utf-8")
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def printed_text(out: str) -> str:
    """The echoed text: everything before the statistics header."""
    return out.split("\n--- ", 1)[0]


def stats(out: str) -> dict[str, str]:
    """{label: value} of the statistics lines (label, then two or more spaces, then value)."""
    block = out.split("\n--- ", 1)[1].splitlines()[1:]
    return dict(re.split(r"\s{2,}", line, maxsplit=1) for line in block)


def test_no_color_echoes_the_text_exactly_and_prints_every_stat(capsys, text_file):
    code, out, err = run(capsys, "compress", str(text_file), "--tokenizer", "smollm2", "--no-color")
    assert code == 0, err
    assert not ANSI.search(out)
    assert printed_text(out) == TEXT + "\n"  # a newline is added only where the text lacks one
    found = stats(out)
    assert set(found) == set(STAT_LABELS)
    assert found["bytes"] == f"{len(TEXT.encode('utf-8')):,}"
    assert found["lossless"] == "yes"


def test_stats_agree_with_the_codec(capsys, text_file):
    base = cli.load_base_tokenizer("smollm2")
    ids = base.tokenizer.encode(TEXT, add_special_tokens=False).ids
    codec = default_codec(base)
    compressed = codec.encode(ids)
    assert len(compressed) < len(ids), "the test text must compress"

    _, out, _ = run(capsys, "compress", str(text_file), "--tokenizer", "smollm2", "--no-color")
    found = stats(out)
    assert found["base tokens"] == f"{len(ids):,}"
    assert found["compressed tokens"] == f"{len(compressed):,}"
    assert found["entries created"].startswith(f"{len(codec.codebook(compressed)):,} of 1,024")
    assert found["entries used"].startswith(f"{len({t for t in compressed if t >= base.vocab_size}):,} distinct")
    assert found["reduction"] == f"{100 * (1 - len(compressed) / len(ids)):.1f} %"


def test_compressed_ids_decode_back_to_the_text():
    base = cli.load_base_tokenizer("smollm2")
    result = cli.compress_text(TEXT, base, max_subtokens=3, codebook_size=1024)
    codec = default_codec(base)
    assert result.lossless
    assert base.tokenizer.decode(codec.decode(result.compressed_ids), skip_special_tokens=False) == TEXT
    segments = cli.token_segments(result)
    assert len(segments) == len(result.compressed_ids)
    assert "".join(piece for piece, _ in segments) == TEXT
    assert any(hyper for _, hyper in segments)


def test_forced_colour_marks_hypertokens_and_strips_back_to_the_text(capsys, text_file):
    code, out, _ = run(capsys, "compress", str(text_file), "--tokenizer", "smollm2", "--color")
    assert code == 0
    assert ANSI.search(out)
    assert ANSI.sub("", printed_text(out)) == TEXT + "\n"


def test_neighbouring_hypertokens_get_different_colours_and_newlines_stay_plain():
    rendered = cli.render([("ab", True), ("cd", True), ("e", False), ("f\ng", True)], colour=True)
    colours = re.findall(r"\x1b\[(30;4\dm)", rendered)
    assert colours[0] != colours[1] != colours[2]
    assert "\n" not in "".join(re.findall(r"\x1b\[30;4\dm(.*?)\x1b\[0m", rendered, flags=re.S))
    assert ANSI.sub("", rendered) == "abcdef\ng"


def test_stdin_and_a_tokenizer_folder(capsys, monkeypatch):
    from z2z_vllm.data import tokenizer_dir

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(TEXT.encode("utf-8"))))
    code, out, err = run(capsys, "compress", "-", "--tokenizer", str(tokenizer_dir("smollm2")), "--no-color")
    assert code == 0, err
    assert printed_text(out) == TEXT + "\n"


def test_sample_compresses(capsys):
    code, out, _ = run(capsys, "compress", "--sample", "--no-color")
    assert code == 0
    assert "Python Software Foundation" in printed_text(out)
    assert float(stats(out)["reduction"].split()[0]) > 20.0


def test_crlf_and_non_utf8_files(capsys, tmp_path):
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(b"one\r\ntwo\r\n")
    code, out, _ = run(capsys, "compress", str(crlf), "--no-color")
    assert code == 0
    assert printed_text(out) == "one\r\ntwo\r\n"  # bytes kept as they are, not newline-translated
    assert stats(out)["bytes"] == "10"

    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café".encode("latin-1"))
    code, _, err = run(capsys, "compress", str(latin1))
    assert code == 2 and "not UTF-8" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compress", "/no/such/file.txt", "--tokenizer", "smollm2"], "no such file"),
        (["compress", "{file}", "--tokenizer", "no-such-tokenizer"], "unknown tokenizer"),
        (["compress", "--tokenizer", "smollm2"], "give a FILE"),
        (["compress", "{file}", "--sample"], "not both"),
        (["compress", "{file}", "--max-subtokens", "0"], "must be >= 1"),
        (["compress", "{file}", "--codebook-size", "many"], "not an integer"),
    ],
)
def test_user_errors_exit_2_with_a_message(capsys, text_file, argv, message):
    code, out, err = run(capsys, *(arg.replace("{file}", str(text_file)) for arg in argv))
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    assert out == ""


def test_the_module_entry_point_exits_2_without_traceback():
    finished = subprocess.run(
        [sys.executable, "-m", "z2z_vllm.cli", "compress", "/no/such/file.txt"], capture_output=True, text=True
    )
    assert finished.returncode == 2
    assert "no such file" in finished.stderr
    assert "Traceback" not in finished.stderr
