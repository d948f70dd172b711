"""Weight sources as explicit schemes.

- ``random``: random initialisation, recorded as such (only when the user asks for it).
- ``pretrain:<task>``: built by fairbench itself (the tiny test models), cached in the user cache directory.
- ``local-dir:/path``: a directory in the upstream layout.
- ``hf-hub:org/repo[@revision]``: resolved from the local Hugging Face cache only. It is downloaded only inside
  :func:`allow_downloads` (``fairbench run --allow-download``) and never while ``HF_HUB_OFFLINE`` is set.
- anything else: a path to a checkpoint file (a directory given this way is read as ``local-dir:``).

``{cache}`` in a path stands for :func:`cache_root` (so cards can name ``{cache}/weights/<model>``).
Nothing here touches the network unless downloads were allowed explicitly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fairbench.errors import WeightsError
from fairbench.paths import cache_root

if TYPE_CHECKING:
    from fairbench.models.base import ModelCard

__all__ = [
    "WeightsSource",
    "allow_downloads",
    "cache_root",
    "downloads_allowed",
    "expand_path",
    "files_info",
    "find_in_dir",
    "hf_cached_snapshot",
    "hf_offline",
    "locate",
    "parse_weights",
    "require_file",
    "require_in_dir",
    "sha256_cached",
    "sha256_file",
    "tensors_sha256",
]


@dataclass(frozen=True)
class WeightsSource:
    scheme: str  # random | pretrain | local-dir | hf-hub | file
    value: str

    def describe(self) -> str:
        return self.scheme if self.scheme == "random" else f"{self.scheme}:{self.value}"


def parse_weights(spec: str) -> WeightsSource:
    spec = spec.strip()
    if spec == "random":
        return WeightsSource("random", "")
    for scheme in ("pretrain", "local-dir", "hf-hub"):
        if spec.startswith(scheme + ":"):
            value = spec[len(scheme) + 1:]
            if not value:
                raise WeightsError(f"weights source {spec!r}: nothing after '{scheme}:'")
            if scheme == "local-dir":
                value = str(expand_path(value))
            return WeightsSource(scheme, value)
    return WeightsSource("file", str(expand_path(spec)))


def expand_path(value: str) -> Path:
    """``~`` and ``{cache}`` (the fairbench cache root) expanded."""
    return Path(value.replace("{cache}", str(cache_root()))).expanduser()


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_cached(path: Path) -> str:
    """:func:`sha256_file`, remembered per (path, size, mtime) under the cache root, so that a multi-gigabyte
    checkpoint is hashed once, not on every run."""
    path = Path(path).resolve()
    st = path.stat()
    key = hashlib.sha256(f"{path}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:32]
    memo = cache_root() / "sha256" / f"{key}.json"
    try:
        return str(json.loads(memo.read_text())["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    digest = sha256_file(path)
    with contextlib.suppress(OSError):
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"path": str(path), "sha256": digest}))
        os.replace(tmp, memo)
    return digest


def tensors_sha256(state: Mapping[str, Any]) -> str:
    """sha256 over a state dict's tensors in canonical order: for each name in sorted order, ``name|dtype|shape``
    and then the tensor's bytes (C order). It identifies the weights themselves, whatever the file format or
    the order of a file's metadata (safetensors writes its header in varying order; pickles vary too)."""
    import torch

    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())  # the buffer itself: no copy of the tensor
    return h.hexdigest()


def files_info(source: str, files: Sequence[Path], module: Any) -> dict[str, Any]:
    """``weights_info`` for metrics.json: the source, the weights file names, and the sha256 of the weights as
    loaded (:func:`tensors_sha256` of ``module``'s state dict after the strict load: the tensors, never the
    file bytes)."""
    return {"source": source, "sha256": tensors_sha256(module.state_dict()), "sha256_of": "tensors",
            "files": [Path(f).name for f in files]}


def _obtain_hint(card: ModelCard | None, obtain: str | None = None) -> str:
    text = obtain if obtain is not None else (card.weights_obtain if card is not None else "")
    return f" Get them from: {text}." if text else ""


_ALTERNATIVES = " (or pass --weights PATH; --weights random for an untrained model)"


def require_file(path: Path, *, card: str, obtain: str) -> Path:
    if not path.is_file():
        where = f" Get them from: {obtain}" if obtain else ""
        raise WeightsError(f"model '{card}': weights file not found: {path}.{where} "
                           f"(or pass --weights PATH; --weights random for an untrained model)")
    return path


# -- downloads (off unless the user asks) ------------------------------------------------------------
_DOWNLOADS = {"allowed": False}


@contextlib.contextmanager
def allow_downloads(enabled: bool = True) -> Iterator[None]:
    """Within this block ``hf-hub:`` sources missing from the local cache may be downloaded (still never
    while ``HF_HUB_OFFLINE`` is set). ``fairbench run --allow-download`` wraps the run in it."""
    previous = _DOWNLOADS["allowed"]
    _DOWNLOADS["allowed"] = bool(enabled)
    try:
        yield
    finally:
        _DOWNLOADS["allowed"] = previous


def downloads_allowed() -> bool:
    return _DOWNLOADS["allowed"] and not hf_offline()


def hf_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _split_repo(value: str) -> tuple[str, str | None]:
    repo, _, revision = value.partition("@")
    return repo, (revision or None)


def hf_cached_snapshot(value: str) -> Path | None:
    """The snapshot directory of ``org/repo[@revision]`` in the local Hugging Face cache, or None."""
    from huggingface_hub import snapshot_download

    repo, revision = _split_repo(value)
    try:
        return Path(snapshot_download(repo, revision=revision, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure means "not in the cache"
        return None


def _hf_download(value: str, files: Sequence[str]) -> Path:
    from huggingface_hub import snapshot_download

    repo, revision = _split_repo(value)
    patterns = [alt for entry in files for alt in entry.split("|")]
    patterns += ["*.json", "*.txt", "*.model"]  # configs and tokenizer files
    try:
        return Path(snapshot_download(repo, revision=revision, allow_patterns=patterns or None))
    except Exception as exc:  # noqa: BLE001
        raise WeightsError(f"hf-hub:{value}: download failed ({type(exc).__name__}: {exc})") from None


# -- locating files and directories ------------------------------------------------------------------
def find_in_dir(directory: Path, entry: str) -> Path | None:
    """The first existing file among ``entry``'s ``|``-separated alternatives inside ``directory``."""
    for alt in entry.split("|"):
        p = directory / alt
        if p.is_file():
            return p
    return None


def require_in_dir(directory: Path, entries: Sequence[str], *, card: ModelCard | None, what: str = "weights",
                   obtain: str | None = None) -> dict[str, Path]:
    """Each expected file (``a|b`` alternatives) inside ``directory``; a missing one is a WeightsError naming
    the file, the directory, the card and where to get it."""
    found = {}
    for entry in entries:
        path = find_in_dir(directory, entry)
        if path is None:
            names = " or ".join(entry.split("|"))
            who = f"model '{card.name}': " if card is not None else ""
            raise WeightsError(f"{who}{what} directory {directory} has no {names}.{_obtain_hint(card, obtain)}"
                               f"{_ALTERNATIVES if what == 'weights' else ''}")
        found[entry] = path
    return found


def locate(source: WeightsSource, *, card: ModelCard | None, files: Sequence[str] = (), what: str = "weights",
           obtain: str | None = None, instead: str = "") -> Path:
    """The local file or directory a ``file``/``local-dir``/``hf-hub`` source names, checked to exist (a
    directory also to hold ``files``). Never silently falls back to anything. ``instead`` is the alternative a
    missing non-weights input names (e.g. where else the family looks for a tokenizer)."""
    who = f"model '{card.name}': " if card is not None else ""
    hint = _obtain_hint(card, obtain)
    tail = _ALTERNATIVES if what == "weights" else ""
    if source.scheme == "file":
        path = Path(source.value)
        if path.is_dir():
            require_in_dir(path, files, card=card, what=what, obtain=obtain)
            return path
        if not path.is_file():
            raise WeightsError(f"{who}{what} file not found: {path}.{hint}{tail}")
        return path
    if source.scheme == "local-dir":
        path = Path(source.value)
        if not path.is_dir():
            raise WeightsError(f"{who}{what} directory not found: {path}.{hint}{tail}")
        require_in_dir(path, files, card=card, what=what, obtain=obtain)
        return path
    if source.scheme == "hf-hub":
        snap = hf_cached_snapshot(source.value)
        if snap is not None and all(find_in_dir(snap, e) for e in files):
            return snap
        if downloads_allowed():
            snap = _hf_download(source.value, files)
            require_in_dir(snap, files, card=card, what=what, obtain=obtain)
            return snap
        from huggingface_hub import constants

        state = "is incomplete" if snap is not None else "is not"
        why = ("HF_HUB_OFFLINE is set, so nothing is downloaded" if hf_offline() else
               "fairbench downloads only with `fairbench run --allow-download`")
        needed = ", ".join(" or ".join(e.split("|")) for e in files) or "its files"
        repo, revision = _split_repo(source.value)
        if tail:  # weights: the whole repository, or other weights
            fetch = f"`hf download {repo}`; or pass --weights local-dir:PATH; --weights random for an " \
                    f"untrained model"
        else:  # a tokenizer or config: just its files
            names = " ".join(e.split("|")[0] for e in files)
            rev = f" --revision {revision}" if revision else ""
            fetch = f"`hf download {repo}{rev} {names}`" + (f"; {instead}" if instead else "")
        raise WeightsError(f"{who}{what} 'hf-hub:{source.value}' {state} in the local Hugging Face cache "
                           f"({constants.HF_HUB_CACHE}; needs {needed}); {why}.{hint} (e.g. {fetch})")
    raise WeightsError(f"{who}{what} source '{source.describe()}' does not name a file or directory")
