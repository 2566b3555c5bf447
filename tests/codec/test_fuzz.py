"""A short run of the codec fuzz target (the long run is `python tests/codec/fuzz_codec.py`)."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.codec.strategies import examples

pytest.importorskip("atheris")


def test_fuzz_target_short_run():
    runs = examples(20_000)
    target = Path(__file__).with_name("fuzz_codec.py")
    result = subprocess.run(
        [sys.executable, str(target), f"-atheris_runs={runs}", "-seed=1"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"Done {runs} in" in result.stderr
