"""Weight sources as explicit schemes.

- ``random``: random initialisation, recorded as such (only when the user asks for it).
- ``pretrain:<task>``: built by fairbench itself (the tiny test models), cached in the user cache directory.
- ``local-dir:/path``: a directory in the upstream layout.
- ``hf-hub:org/repo``: resolved from the local Hugging Face cache only (never downloaded here).
- anything else: a path to a checkpoint file.

Nothing here touches the network.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from fairbench.errors import WeightsError

__all__ = ["WeightsSource", "parse_weights", "sha256_file", "cache_root"]


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
            return WeightsSource(scheme, value)
    return WeightsSource("file", str(Path(spec).expanduser()))


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def cache_root() -> Path:
    """``$FAIRBENCH_CACHE``, else ``$XDG_CACHE_HOME/fairbench``, else ``~/.cache/fairbench``."""
    env = os.environ.get("FAIRBENCH_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "fairbench"


def require_file(path: Path, *, card: str, obtain: str) -> Path:
    if not path.is_file():
        where = f" Get them from: {obtain}" if obtain else ""
        raise WeightsError(f"model '{card}': weights file not found: {path}.{where} "
                           f"(or pass --weights PATH; --weights random for an untrained model)")
    return path
