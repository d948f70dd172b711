"""`fairbench plot`: every figure for the cells under the given result folders: per cell the attribute figures
and training curves (fairbench/report/plots.py) and the analysis figures (fairbench/report/plots_analyses.py),
per task the fairness-utility trade-off and, with a reference adapter, the forest plot of paired differences.
A module of its own so that plots.py and plots_analyses.py need not import each other both ways."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fairbench.report.collect import Collection, collect
from fairbench.report.plots import (
    FORMATS,
    plot_cell,
    plot_tradeoff,
    plot_training,
    plot_versus,
    random_note,
)
from fairbench.report.plots_analyses import plot_analyses
from fairbench.report.summary import lookup
from fairbench.report.versus import check_reference, compute_versus

__all__ = ["plot_results"]


def plot_results(paths: Sequence[Path | str], out: Path, formats: Sequence[str] = FORMATS,
                 attributes: Sequence[str] | None = None, reference: str | None = None,
                 tasks_dirs: Sequence[Path] = ()) -> tuple[list[Path], Collection, list[str]]:
    """Every figure for the cells under ``paths``; returns (files, the collection, plotting problems).
    ``reference``: an adapter; each task also gets a forest plot of the paired differences against it."""
    from fairbench.errors import FairbenchError

    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise FairbenchError(f"unknown figure format '{bad[0]}' (known: {', '.join(FORMATS)})")
    col = collect(paths)
    if not col.cells:
        raise FairbenchError(f"no readable result cells under {', '.join(col.roots)}"
                             + (f" ({len(col.problems)} unreadable)" if col.problems else ""))
    if attributes:
        known = {a for c in col.cells for a in (c.metrics.get("attributes") or {})}
        unknown = sorted(set(attributes) - known)
        if unknown:
            raise FairbenchError(f"no protected attribute '{unknown[0]}' in the results "
                                 f"(they have: {', '.join(sorted(known))})")
    if reference is not None:
        check_reference(col.cells, reference)
    written: list[Path] = []
    problems: list[str] = []
    for cell in col.cells:
        files, probs = plot_cell(cell, Path(out), formats, attributes)
        written += files + plot_training(cell, Path(out), formats)
        problems += probs
        files, probs = plot_analyses(cell, Path(out), formats, attributes)
        written += files
        problems += probs
    for task, cells in sorted(col.by_task().items()):
        written += plot_tradeoff(task, cells, Path(out), formats, attributes)
        if reference is not None:
            v = compute_versus(task, cells, reference, tasks_dirs=tasks_dirs)
            problems += [f"{task} versus {reference}: {c}" for c in
                         ([v.unavailable] if v.unavailable else []) + v.cautions]
            files = plot_versus(v, Path(out), formats, attributes,
                                synthetic=any(lookup(c.doc, "task", "synthetic") for c in cells),
                                note=random_note(cells))
            if not files and not v.unavailable:
                problems.append(f"{task} versus {reference}: no (model, adapter) could be compared with the "
                                f"{reference} cells of the same model; no forest plot")
            written += files
    return written, col, problems
