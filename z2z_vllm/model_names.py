"""z2z models by name: ``vllm serve z2z-smollm2-135m`` from any folder, with no network.

``z2z build-model``, ``z2z export --name NAME`` and ``z2z init --name NAME`` register the folder
they wrote as a snapshot of the Hugging Face cache (``HF_HUB_CACHE``; by default
``~/.cache/huggingface/hub``, or ``$HF_HOME/hub``)::

    models--z2z-smollm2-135m/
        refs/main                  the snapshot's revision: 40 hex digits from the folder's path
        snapshots/<revision>  ->   /abs/path/models/z2z-smollm2-135m   (a symlink: nothing copied)

That is the layout ``huggingface_hub`` downloads into, so a name resolves where names already
resolve: ``transformers`` (``AutoConfig.from_pretrained("z2z-smollm2-135m")``), ``huggingface_hub``
(``snapshot_download("z2z-smollm2-135m")``) and vLLM with ``HF_HUB_OFFLINE=1``, which replaces the
name by the snapshot before anything else. Without ``HF_HUB_OFFLINE`` vLLM 0.32 also asks the Hub
for the model's file list, which fails for a name that only this machine knows; the plugin maps
registered names to their snapshot first (:func:`resolve_name`, called by the plugin), and
refuses a ``z2z-`` name that is not registered with a message saying how to build it.

Names are Hugging Face repo ids: a bare ``NAME`` (what the Hub no longer creates, so a local name
never shadows a Hub model) or ``ORG/NAME``. The symlink follows its folder: a rebuild in place needs
no new registration; a moved or deleted folder leaves a dangling name that ``z2z list`` marks and
registering again repairs. Like any cached model, ``hf cache rm NAME`` deletes the files it points
to.

Only the standard library and ``huggingface_hub`` (which vLLM imports anyway) are imported here:
vLLM's engine-argument process looks names up through this module whatever model it serves.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "NAME_PREFIX",
    "RegisteredModel",
    "check_name",
    "hub_cache_dir",
    "register_model",
    "registered_models",
    "resolve_name",
]

# Names the project gives its models. A bare name with this prefix that is not registered is
# refused with instructions rather than sent to the Hub, which has no such models.
NAME_PREFIX = "z2z-"
# As z2z_vllm.modeling.config writes an export (importing it would load torch; a test checks).
HF_CONFIG_FILE = "config.json"
HF_CONFIG_KEY = "z2z"
_REVISION_REF = "main"
_WEIGHT_SUFFIX = ".safetensors"
_ENCODERS_FILE = "z2z_encoders.safetensors"


@dataclass(frozen=True)
class RegisteredModel:
    """One registered name, with what ``z2z list`` shows about the folder it points to."""

    name: str
    folder: Path  # where the snapshot points
    snapshot: Path  # the cache path that vLLM and transformers are given
    present: bool  # False when the folder was moved or deleted after registration
    base_architecture: str | None = None
    base_parameters: int | None = None  # of the base weights (hyper-encoders not counted)
    initial_vocab_size: int | None = None  # V
    max_codebook_size: int | None = None  # C
    max_subtokens: int | None = None  # M
    size_bytes: int | None = None


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache this process uses (``HF_HUB_CACHE``, ``HF_HOME``, default)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _repo_dir(name: str, cache_dir: Path) -> Path:
    """The cache folder of repo id ``name``; ``HFValidationError`` (a ``ValueError``) when ``name``
    is no valid repo id."""
    from huggingface_hub.file_download import repo_folder_name

    return cache_dir / repo_folder_name(repo_id=name, repo_type="model")


def _z2z_block(folder: Path) -> dict | None:
    try:
        return json.loads((folder / HF_CONFIG_FILE).read_text()).get(HF_CONFIG_KEY)
    except (OSError, ValueError, AttributeError):  # missing, unreadable, or not a JSON object
        return None


def _current_snapshot(repo: Path) -> Path | None:
    try:
        revision = (repo / "refs" / _REVISION_REF).read_text().strip()
    except OSError:
        return None
    return repo / "snapshots" / revision


def check_name(name: str, *, cache_dir: str | os.PathLike | None = None) -> None:
    """Raises ``ValueError`` unless ``name`` can be registered: a valid Hugging Face repo id that
    the cache does not already hold as a downloaded (not z2z-registered) model."""
    from huggingface_hub.utils import HFValidationError

    try:
        repo = _repo_dir(name, Path(cache_dir or hub_cache_dir()))
    except HFValidationError as invalid:
        raise ValueError(f"invalid model name {name!r}: {invalid}") from None
    snapshot = _current_snapshot(repo)
    if snapshot is not None and snapshot.exists() and not snapshot.is_symlink():
        raise ValueError(
            f"the Hugging Face cache already holds a downloaded model named {name!r} ({snapshot}): choose another name"
        )


def register_model(folder: str | os.PathLike, name: str, *, cache_dir: str | os.PathLike | None = None) -> Path:
    """Registers the servable z2z folder ``folder`` as ``name`` (module docstring); returns the
    snapshot path. Registering a name again points it at the new folder."""
    cache_dir = Path(cache_dir or hub_cache_dir())
    check_name(name, cache_dir=cache_dir)
    folder = Path(folder).resolve()
    if _z2z_block(folder) is None:
        raise ValueError(f"{folder} is not a servable z2z model (no {HF_CONFIG_KEY!r} block in {HF_CONFIG_FILE})")
    repo = _repo_dir(name, cache_dir)
    revision = hashlib.sha1(str(folder).encode()).hexdigest()
    snapshots = repo / "snapshots"
    snapshots.mkdir(parents=True, exist_ok=True)
    snapshot = snapshots / revision
    # Made beside the final name, then renamed over it: a concurrent reader never sees it missing.
    pending = snapshots / f".{revision}.{os.getpid()}"
    pending.unlink(missing_ok=True)
    pending.symlink_to(folder, target_is_directory=True)
    pending.replace(snapshot)
    for stale in snapshots.iterdir():  # earlier registrations of this name (links only)
        if stale.is_symlink() and stale.name != revision and not stale.name.startswith("."):
            stale.unlink()
    refs = repo / "refs"
    refs.mkdir(exist_ok=True)
    (refs / _REVISION_REF).write_text(revision)  # no newline, as huggingface_hub writes it
    return snapshot


def resolve_name(model: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The snapshot of ``model`` when it is a registered z2z name; None when it is a path that
    exists here or any other name. A bare ``z2z-`` name that is not registered raises
    ``ValueError`` saying how to build or register it. Costs a few ``stat`` calls and, for a
    registered name, one small JSON read."""
    from huggingface_hub.utils import HFValidationError

    model = str(model)
    if os.path.exists(model):
        return None
    cache_dir = Path(cache_dir or hub_cache_dir())
    try:
        snapshot = _current_snapshot(_repo_dir(model, cache_dir))
    except HFValidationError:  # a URL, a missing path, ...: not a name
        return None
    if snapshot is not None and snapshot.is_symlink() and _z2z_block(snapshot) is not None:
        return snapshot
    if model.startswith(NAME_PREFIX) and "/" not in model:
        known = [entry.name for entry in registered_models(cache_dir=cache_dir) if entry.present]
        raise ValueError(
            f"no z2z model named {model!r} on this machine (Hugging Face cache {cache_dir}; "
            f"registered: {', '.join(known) or 'none'}). Build the bundled model with `z2z build-model`, "
            f"or name a folder with `z2z export SRC DST --name {model}` / `z2z init BASE DST --name {model}`; "
            "`z2z list` shows the registered names"
        )
    return None


def registered_models(*, cache_dir: str | os.PathLike | None = None) -> list[RegisteredModel]:
    """Every z2z name registered in the cache, sorted by name."""
    cache_dir = Path(cache_dir or hub_cache_dir())
    found = []
    for repo in sorted(cache_dir.glob("models--*")):
        snapshot = _current_snapshot(repo)
        if snapshot is None or not snapshot.is_symlink():
            continue  # a downloaded model, not one of ours
        name = repo.name.removeprefix("models--").replace("--", "/")
        folder = Path(os.path.realpath(snapshot))
        block = _z2z_block(folder)
        if block is None:
            found.append(RegisteredModel(name, folder, snapshot, present=False))
            continue
        files = [path for path in folder.iterdir() if path.is_file()]
        found.append(
            RegisteredModel(
                name,
                folder,
                snapshot,
                present=True,
                base_architecture=block.get("base_architecture"),
                base_parameters=sum(
                    _safetensors_parameters(path)
                    for path in files
                    if path.name.endswith(_WEIGHT_SUFFIX) and path.name != _ENCODERS_FILE
                ),
                initial_vocab_size=block.get("initial_vocab_size"),
                max_codebook_size=block.get("max_codebook_size"),
                max_subtokens=block.get("max_subtokens"),
                size_bytes=sum(path.stat().st_size for path in files),
            )
        )
    return found


def _safetensors_parameters(path: Path) -> int:
    """Number of values stored in a safetensors file, read from its header (no tensor loaded)."""
    with path.open("rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    total = 0
    for key, tensor in header.items():
        if key != "__metadata__":
            count = 1
            for dim in tensor["shape"]:
                count *= dim
            total += count
    return total
