"""Per-epoch checkpoints of the training loop, and resuming from them.

A trainable cell ``<out>/<task>/<model>/<adapt>/seed<N>/`` keeps its checkpoints in the sibling folder
``seed<N>.ckpt/`` (so the cell folder only ever holds results):

- ``last.pt``: the state after the last completed epoch: trainable weights and buffers, optimizer, schedule,
  gradient scaler, torch RNG states, the selection history and the objective's own state (e.g. the DBPM loss
  memory). Written atomically at the end of every epoch.
- ``best.pt``: the trainable weights and buffers of the epoch selected so far.

A rerun of a cell that was interrupted (no metrics.json) resumes after the last completed epoch and reaches the
same final weights as an uninterrupted run (batches, group draws and prompt choices are drawn from generators
seeded by (seed, epoch), and the RNG state is restored). Each checkpoint carries a fingerprint of everything
the run depends on (adapter parameters, model card and weights, task card and sample ids, seed, number of
processes): a checkpoint with another fingerprint is ignored, with a message, and training starts afresh.
``--overwrite`` also starts afresh. The folder is removed once the cell's metrics.json is written, unless the
adapter parameter ``keep_checkpoints`` is true.

Files hold tensors and plain containers only and are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch

from fairbench.progress import info, warn

__all__ = ["CHECKPOINT_FORMAT", "CheckpointStore", "checkpoint_dir_for"]

CHECKPOINT_FORMAT = 1


def checkpoint_dir_for(cell: Path) -> Path:
    """``<cell>.ckpt`` beside the cell folder."""
    return cell.with_name(cell.name + ".ckpt")


class CheckpointStore:
    LAST = "last.pt"
    BEST = "best.pt"

    def __init__(self, directory: Path | None, fingerprint: str, *, writer: bool = True) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.fingerprint = fingerprint
        self.writer = writer

    @property
    def enabled(self) -> bool:
        return self.directory is not None

    def _path(self, name: str) -> Path:
        assert self.directory is not None
        return self.directory / name

    def save(self, name: str, state: dict[str, Any]) -> None:
        if self.directory is None or not self.writer:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(name)
        tmp = path.with_name(f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            torch.save({"format": CHECKPOINT_FORMAT, "fingerprint": self.fingerprint, **state}, tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def load(self, name: str) -> dict[str, Any] | None:
        """The checkpoint ``name`` if it exists, is readable and belongs to this run; else None (with a
        message when one was found but cannot be used)."""
        if self.directory is None:
            return None
        path = self._path(name)
        if not path.is_file():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - unreadable means unusable
            warn(f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc}); training starts afresh")
            return None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            warn(f"checkpoint {path} has an unknown format; training starts afresh")
            return None
        if state.get("fingerprint") != self.fingerprint:
            warn(f"checkpoint {path} belongs to a run with other settings (adapter parameters, model, data, seed "
                 f"or number of processes); training starts afresh")
            return None
        return state

    def discard(self, reason: str = "") -> None:
        """Remove the folder (only the writing process does)."""
        if self.directory is None or not self.writer or not self.directory.exists():
            return
        if reason:
            info(f"removing checkpoints {self.directory} ({reason})")
        shutil.rmtree(self.directory, ignore_errors=True)
