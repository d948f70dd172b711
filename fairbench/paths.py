"""Where fairbench keeps what it caches (pretrained tinyclip weights, hashes, preprocessed images, embeddings).

A module of its own at the bottom of the package, so that the data layer (the image cache), the models (weights)
and the embedding cache all read the one root without importing each other."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_root"]


def cache_root() -> Path:
    """``$FAIRBENCH_CACHE``, else ``$XDG_CACHE_HOME/fairbench``, else ``~/.cache/fairbench``."""
    env = os.environ.get("FAIRBENCH_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "fairbench"
