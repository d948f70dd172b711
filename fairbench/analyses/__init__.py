"""Analyses beyond the metric suite, computed from a cell's metrics and predictions (docs/metrics.md, "Analyses").

One module per analysis; :func:`compute_analyses` is the one entry the pipeline (``metrics_document``) calls, so
``fairbench run`` and ``fairbench metrics`` record the same ``analyses`` in metrics.json:

- ``power.<attribute>``: the minimum detectable AUC gap, DPD and DEOdds at 80% power (:mod:`.power`);
- ``underdiagnosis.<attribute>``: per-group underdiagnosis rates with intervals (:mod:`.underdiagnosis`), on tasks
  whose card names a ``no_finding_class``;
- ``calibration.<attribute>``: per-group calibration slope and intercept with Wald intervals (:mod:`.calibration`).

Two analyses need the model, not just predictions, and are added by the pipeline from the adapter's context:
``leakage.<attribute>`` (:mod:`.leakage`: how well the frozen image embeddings predict each attribute) and
``prompts`` (:mod:`.prompts`: zero-shot AUC and gaps per prompt template, ``--adapt-arg templates=all``).

:func:`compute_variants` gives other benchmarks' metric definitions on request (``--variants fairmedfm``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from fairbench.analyses.calibration import calibration_by_group
from fairbench.analyses.fairmedfm import NOTE as FAIRMEDFM_NOTE
from fairbench.analyses.fairmedfm import fairmedfm_variants
from fairbench.analyses.power import power_for_attribute
from fairbench.analyses.underdiagnosis import gap_to_best_samples, underdiagnosis
from fairbench.errors import DataError

__all__ = ["VARIANTS", "compute_analyses", "compute_variants"]

VARIANTS = ("fairmedfm",)


def compute_analyses(metrics: dict[str, Any], *, no_finding_class: str | None, frame: pd.DataFrame | None = None,
                     attributes: list[str] | None = None, intersections: list[list[str]] | None = None,
                     threshold: dict[str, Any] | None = None) -> dict[str, Any]:
    """``analyses`` of one cell from its :func:`fairbench.metrics.compute_metrics` result (and, for the
    calibration analysis and the underdiagnosis gaps' intervals, its predictions ``frame`` and the threshold
    record the suite returned, ``threshold``)."""
    out: dict[str, Any] = {}
    binary = metrics.get("task") == "binary"
    if binary:
        out["power"] = {attr: power_for_attribute(a.get("groups") or {})
                        for attr, a in (metrics.get("attributes") or {}).items()}
    if no_finding_class is not None:
        samples = None
        if frame is not None and threshold is not None and int(metrics.get("n_boot") or 0) > 0:
            samples = gap_to_best_samples(
                frame, classes=list(metrics["classes"]), attributes=list(attributes or []),
                intersections=[list(i) for i in intersections or []] or None, eval_split=metrics["eval_split"],
                threshold=threshold.get("value"), no_finding_class=no_finding_class,
                ece_bins=int(metrics["ece_bins"]), n_boot=int(metrics["n_boot"]), seed=int(metrics["seed"]))
        out["underdiagnosis"] = underdiagnosis(metrics, no_finding_class, samples)
    if binary and frame is not None:
        classes = list(metrics["classes"])
        ev = frame[frame["split"] == metrics["eval_split"]]
        prob = ev[f"prob_{classes[1]}"].to_numpy(dtype=np.float64)
        y = ev["label"].to_numpy(dtype=np.float64)
        if not np.isnan(prob).any():
            groups = {a: _group_column(ev, [a]) for a in attributes or []}
            groups.update({"*".join(i): _group_column(ev, list(i)) for i in intersections or []})
            out["calibration"] = calibration_by_group(prob, y, groups)
    return out


def _group_column(frame: pd.DataFrame, names: list[str]) -> np.ndarray:
    """Group label per row as str (intersections joined with '*'), None where any part is unknown."""
    parts = [frame[f"attr_{n}"] for n in names]
    known = np.logical_and.reduce([p.notna().to_numpy() for p in parts])
    joined = parts[0].astype(str)
    for p in parts[1:]:
        joined = joined + "*" + p.astype(str)
    out = joined.to_numpy(dtype=object)
    out[~known] = None
    return out


def compute_variants(frame: pd.DataFrame, *, classes: list[str], attributes: list[str],
                     intersections: list[list[str]], eval_split: str, variants: list[str]) -> dict[str, Any]:
    """``variants``: other benchmarks' definitions of the fairness summary, on the evaluated split."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise DataError(f"--variants: unknown {unknown}; known: {list(VARIANTS)}")
    if len(classes) != 2:
        raise DataError(f"--variants fairmedfm applies to binary tasks only; this task has {len(classes)} classes")
    ev = frame[frame["split"] == eval_split]
    prob = ev[f"prob_{classes[1]}"].to_numpy(dtype=np.float64)
    label = ev["label"].to_numpy(dtype=np.float64)
    if np.isnan(prob).any():
        raise DataError(f"--variants fairmedfm: {int(np.isnan(prob).sum())} evaluated row(s) have NaN "
                        f"prob_{classes[1]}; FairMedFM's definitions need every probability")
    groups = {a: _group_column(ev, [a]) for a in attributes}
    groups.update({"*".join(i): _group_column(ev, list(i)) for i in intersections})
    return {"fairmedfm": fairmedfm_variants(prob, label, groups), "notes": {"fairmedfm": FAIRMEDFM_NOTE}}
