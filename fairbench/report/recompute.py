"""`fairbench metrics`: recompute a metrics document from a predictions file alone."""

from __future__ import annotations

import json
from pathlib import Path

from fairbench.errors import FairbenchError, ResultsError
from fairbench.results import METRICS, now_iso, read_metrics, read_predictions, write_json

__all__ = ["read_predictions", "recompute"]  # read_predictions: fairbench.results', kept importable from here


def recompute(predictions: Path, *, task: str | None, n_boot: int | None, seed: int | None, out: Path | None,
              tasks_dirs: tuple[Path, ...] = (), variants: list[str] | None = None) -> dict:
    from fairbench.data.task import get_task
    from fairbench.pipeline import _samples_sha256, metrics_document

    beside = predictions.parent / METRICS
    original = None
    if beside.is_file():
        try:
            original = read_metrics(beside)
        except ResultsError:
            original = None
    if task is None:
        if original is None:
            raise FairbenchError(f"{predictions}: no metrics.json beside it to name the task; pass --task")
        task = original["task"]["name"]
    card = get_task(task, tasks_dirs)
    frame = read_predictions(predictions, list(card.classes), list(card.attributes))
    if n_boot is None:
        n_boot = (original or {}).get("metrics", {}).get("n_boot", card.evaluation.n_boot)
    if seed is None:
        seed = int((original or {}).get("seed", 0))
    doc = metrics_document(frame, card, n_boot=int(n_boot), seed=seed,
                           samples_sha256=_samples_sha256(frame, card.evaluation.split), variants=variants)
    if original is not None:
        for key in ("model", "adapt", "config_sha256", "provenance"):
            doc[key] = original.get(key)
        if original.get("train_task"):  # a cross-dataset cell stays one (fairbench.pipeline, --eval-task)
            doc["train_task"] = original["train_task"]
    doc["recomputed"] = {"from": str(predictions), "at": now_iso()}
    if out is None:
        print(json.dumps(doc, indent=2))
    else:
        write_json(out, doc)
    return doc
