"""What the benchmarks record about the machine and the installed packages, beside their figures.

Imported by the scripts in this folder (run as ``python benchmarks/<script>.py``, which puts this
folder on ``sys.path``).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
from pathlib import Path

__all__ = ["cpu_model", "load_average", "package_version", "write_report"]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: above the core count, the figures are not to be trusted."""
    return [round(load, 2) for load in os.getloadavg()] if hasattr(os, "getloadavg") else None


def package_version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def write_report(path: Path, report: dict) -> None:
    """Writes a benchmark's conditions and rows as JSON (``--json PATH``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
