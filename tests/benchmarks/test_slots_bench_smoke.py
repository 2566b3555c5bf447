"""benchmarks/slots_bench.py runs end to end with tiny knobs and reports both host paths."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "slots_bench.py"


def test_slots_bench_quick(tmp_path):
    path = tmp_path / "slots.json"
    finished = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--requests", "2", "3", "--json", str(path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr
    report = json.loads(path.read_text())
    assert report["conditions"]["V"] == 49_152 and report["conditions"]["C"] == 1_024
    rows = {(row["requests"], row["host_path"]): row for row in report["rows"]}
    assert set(rows) == {(n, path) for n in (2, 3) for path in ("python", "native")}
    for row in rows.values():
        assert len(row["decode_samples_s"]) == report["conditions"]["decode_steps"]
        assert row["decode_us_per_request"] > 0 and row["prefill_us_per_prompt_token"] > 0
    assert "native is" in finished.stdout and "us/request" in finished.stdout
