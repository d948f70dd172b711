"""One result cell on disk: the :class:`ResultCell` type and the finders that the leaderboard's collector and
``fairbench compare`` share.

A cell folder is one that holds ``metrics.json``, ``predictions.parquet`` or ``error.json``. The collector
(:mod:`fairbench.report.collect`) reads complete cells (metrics.json required); ``compare`` also accepts a bare
predictions file or a folder of ``seed<N>`` cells (:func:`resolve_cells`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fairbench.errors import FairbenchError, ResultsError
from fairbench.results.store import ERROR, METRICS, PREDICTIONS, TRAINED_ON_SEP, adapt_folder, read_metrics

__all__ = [
    "CELL_MARKERS",
    "ResultCell",
    "adapt_label",
    "find_cell_dirs",
    "is_cell_dir",
    "resolve_cells",
    "resolve_side",
]

#: files whose presence makes a folder a result cell
CELL_MARKERS = (METRICS, PREDICTIONS, ERROR)
_SEED_DIR = re.compile(r"^seed(\d+)$")


@dataclass(frozen=True)
class ResultCell:
    """A cell folder and its metrics.json (``doc``; None for a predictions file without one, which only
    ``compare`` accepts). ``label`` names the cell in messages (default: its path)."""

    path: Path
    doc: dict[str, Any] | None
    label: str = ""
    predictions_file: Path | None = None

    @property
    def name(self) -> str:
        return self.label or str(self.path)

    @property
    def task(self) -> str:
        return str(self._doc["task"]["name"])

    @property
    def model(self) -> str:
        return str(self._doc["model"]["name"])

    @property
    def adapt(self) -> str:
        """The adapter as the cell's folder names it: its name, or ``name@A`` for a cross-dataset cell trained
        on task A (:attr:`train_task`), so such cells never group with the evaluated task's own."""
        return adapt_folder(str(self._doc["adapt"]["name"]), self.train_task)

    @property
    def train_task(self) -> str | None:
        """The task a cross-dataset cell was trained on (metrics.json ``train_task``); None for a cell trained
        on the task it is evaluated on."""
        name = ((self.doc or {}).get("train_task") or {}).get("name")
        return str(name) if name else None

    @property
    def seed(self) -> int | None:
        doc = self.doc or {}
        if doc.get("seed") is not None:
            return int(doc["seed"])
        m = _SEED_DIR.match(self.path.name)
        return int(m.group(1)) if m else None

    @property
    def key(self) -> str:
        return f"{self.task}/{self.model}/{self.adapt}/seed{self.seed}"

    @property
    def metrics(self) -> dict[str, Any]:
        return self._doc["metrics"]

    @property
    def predictions(self) -> Path:
        return self.predictions_file or self.path / PREDICTIONS

    @property
    def _doc(self) -> dict[str, Any]:
        if self.doc is None:
            raise ResultsError(f"{self.name}: no {METRICS}")
        return self.doc

    def identity(self) -> dict[str, Any]:
        """Who this side of a comparison is (compare's JSON)."""
        doc = self.doc or {}
        return {"path": self.name, "predictions": str(self.predictions),
                "model": (doc.get("model") or {}).get("name"), "adapter": (doc.get("adapt") or {}).get("name"),
                "seed": self.seed, "params": (doc.get("adapt") or {}).get("params"),
                **({"train_task": self.train_task} if self.train_task else {})}


def adapt_label(adapt: str) -> str:
    """How tables name an adapter: ``linear_probe@A`` (a cross-dataset cell's :attr:`ResultCell.adapt`) reads
    ``linear_probe (trained on A)``; any other name is itself."""
    name, sep, train = adapt.partition(TRAINED_ON_SEP)
    return f"{name} (trained on {train})" if sep and train else adapt


def is_cell_dir(path: Path) -> bool:
    return any((path / m).exists() for m in CELL_MARKERS)


def find_cell_dirs(root: Path) -> Iterator[Path]:
    """Every cell folder at or below ``root`` (hidden folders skipped), in sorted order."""
    root = Path(root)
    if is_cell_dir(root):
        yield root
        return
    for child in sorted(root.iterdir()):
        if child.is_dir() and not child.name.startswith("."):
            yield from find_cell_dirs(child)


def _doc_beside(predictions: Path) -> dict[str, Any] | None:
    beside = predictions.parent / METRICS
    if not beside.is_file():
        return None
    try:
        return read_metrics(beside)
    except ResultsError:
        return None


def _cell(label: str, predictions: Path) -> ResultCell:
    if not predictions.is_file():
        raise FairbenchError(f"{label}: no {PREDICTIONS} (a comparison needs each cell's per-sample predictions)")
    return ResultCell(path=predictions.parent, doc=_doc_beside(predictions), label=label,
                      predictions_file=predictions)


def resolve_side(path: Path | str) -> tuple[dict[int | None, ResultCell], bool]:
    """``({seed: cell}, is_folder_of_seeds)``: one entry for a cell, a predictions file or a metrics.json; one per
    ``seed<N>`` folder for a folder of seeds."""
    p = Path(path)
    label = str(path)
    if not p.exists():
        raise FairbenchError(f"{label}: no such file or folder")
    if p.is_file():
        if p.name == METRICS:
            p = p.parent / PREDICTIONS
        elif p.suffix != ".parquet":
            raise FairbenchError(f"{label}: expected a result cell, a {PREDICTIONS} or a {METRICS}")
        cell = _cell(label, p)
        return {cell.seed: cell}, False
    if is_cell_dir(p):
        cell = _cell(label, p / PREDICTIONS)
        return {cell.seed: cell}, False
    seeds = sorted((int(m.group(1)), d) for d in p.iterdir() if d.is_dir() and (m := _SEED_DIR.match(d.name)))
    if not seeds:
        raise FairbenchError(f"{label}: neither a result cell (no {PREDICTIONS}) nor a folder of seed<N> cells")
    return {s: _cell(f"{label.rstrip('/')}/{d.name}", d / PREDICTIONS) for s, d in seeds}, True


def resolve_cells(path: Path | str) -> dict[int | None, ResultCell]:
    """{seed: cell} (see :func:`resolve_side`)."""
    return resolve_side(path)[0]
