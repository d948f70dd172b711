"""The writer's side of a result cell: layout, atomic writes, provenance and the metrics.json schema version.

A cell is ``<out>/<task>/<model>/<adapt>/seed<N>/`` with ``predictions.parquet`` and ``metrics.json``; a
cross-dataset cell (trained on task A, evaluated on task B: ``--eval-task``) is
``<out>/<B>/<model>/<adapt>@<A>/seed<N>/``.
Both are written to a temporary name and renamed, and metrics.json is written last: a cell is complete
exactly when its metrics.json exists, and a partial cell is redone.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import subprocess
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from fairbench import __version__
from fairbench.errors import ResultsError

__all__ = [
    "ERROR",
    "MAX_SEED",
    "METRICS",
    "PREDICTIONS",
    "SCHEMA_VERSION",
    "adapt_folder",
    "atomic_write",
    "cell_dir",
    "check_seed",
    "ensure_writable",
    "is_complete",
    "now_iso",
    "provenance",
    "read_metrics",
    "write_json",
]

SCHEMA_VERSION = 1
PREDICTIONS = "predictions.parquet"
METRICS = "metrics.json"
ERROR = "error.json"
_PACKAGES = ("torch", "torchvision", "transformers", "open_clip_torch", "peft", "fairlearn", "numpy", "pandas",
             "scikit-learn")


#: the largest seed: numpy's legacy seeding and torch.manual_seed take seeds in [0, 2**32)
MAX_SEED = 2**32 - 1


def check_seed(seed: object, what: str = "seed") -> int:
    """``seed`` as an int in [0, MAX_SEED], or a one-line error naming ``what`` (``--seed``, a sweep file...)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ResultsError(f"{what} {seed!r}: expected a whole number from 0 to {MAX_SEED} (what numpy and torch "
                           f"accept as a seed)")
    return seed


#: joins an adapter and the task it was trained on in a cross-dataset cell's folder name (``linear_probe@A``)
TRAINED_ON_SEP = "@"


def adapt_folder(adapt: str, train_task: str | None = None) -> str:
    """The adapter's folder name: ``adapt``, or ``adapt@train_task`` for a cell trained on another task."""
    return f"{adapt}{TRAINED_ON_SEP}{train_task}" if train_task else adapt


def cell_dir(out: Path, task: str, model: str, adapt: str, seed: int, train_task: str | None = None) -> Path:
    """The cell folder; ``task`` is the evaluated task, ``train_task`` the task a cross-dataset cell was
    trained on (None: the evaluated one)."""
    return Path(out) / task / model / adapt_folder(adapt, train_task) / f"seed{seed}"


def is_complete(cell: Path) -> bool:
    return (cell / METRICS).is_file()


def ensure_writable(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ResultsError(f"output directory {directory} is not writable: {exc.strerror or exc}") from None


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``; a crash leaves no half-written ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(path)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _create_temporary(path: Path) -> str:
    """An empty file beside ``path`` created with mode 0666 less the umask (what ``open`` gives a new file;
    ``tempfile.mkstemp`` would make it 0600, and the rename would keep that)."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return str(tmp)
    raise FileExistsError(f"no free temporary name beside {path}")


def write_json(path: Path, obj: Any) -> None:
    text = json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n"
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def read_metrics(path: Path) -> dict[str, Any]:
    """Read a metrics.json, rejecting malformed files and other schema versions with a clear message."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such metrics file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path}: malformed metrics.json ({exc})") from None
    if not isinstance(data, dict) or "schema_version" not in data:
        raise ResultsError(f"{path}: not a fairbench metrics.json (no schema_version)")
    if data["schema_version"] != SCHEMA_VERSION:
        raise ResultsError(f"{path}: schema_version {data['schema_version']} is not the version this fairbench "
                           f"reads ({SCHEMA_VERSION}); recompute it with `fairbench metrics`")
    return data


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _git_state() -> tuple[str | None, bool | None]:
    src = Path(__file__).resolve().parents[2]  # the checkout holding fairbench/results/store.py
    if not (src / ".git").exists():
        return None, None
    try:
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip() != ""
        return commit or None, dirty
    except (OSError, subprocess.SubprocessError):
        return None, None


def _package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _build_state() -> tuple[str | None, bool | None]:
    """The commit an installed (non-editable) copy was built from: ``fairbench/_build_info.py``, written into the
    wheel by ``hatch_build.py``; (None, None) when it is absent (built outside a git checkout)."""
    try:
        from fairbench import _build_info  # type: ignore[attr-defined]
    except ImportError:
        return None, None
    commit = getattr(_build_info, "BUILD_COMMIT", None)
    dirty = getattr(_build_info, "BUILD_DIRTY", None)
    return (str(commit) if commit else None), (bool(dirty) if dirty is not None else None)


def source_state() -> tuple[str | None, bool | None, str]:
    """(commit, dirty, where it came from): ``checkout`` (git, live), ``build`` (the commit baked into the
    installed package at build time) or ``unknown``."""
    commit, dirty = _git_state()
    if commit is not None:
        return commit, dirty, "checkout"
    commit, dirty = _build_state()
    if commit is not None:
        return commit, dirty, "build"
    return None, None, "unknown"


def provenance(*, device: str, started_at: str, duration_s: float) -> dict[str, Any]:
    commit, dirty, source = source_state()
    return {
        "fairbench_version": __version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "git_commit_source": source,
        "packages": _package_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "started_at": started_at,
        "duration_s": round(duration_s, 3),
    }
