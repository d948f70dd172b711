"""Paired statistics of two prediction sets on the same samples: the paired bootstrap of every metric the
suite computes (:func:`paired_metrics`, :func:`paired_pass`) and DeLong's test of the AUCs. ``fairbench compare``
and the leaderboard's "versus" tables use these public names.

Both sets are evaluated on the same resamples. Rows are aligned by sample id (same samples, labels and
groups). Each pass (overall, then one per attribute) draws A's resamples with the suite's own function
(:func:`fairbench.metrics._kernels.draw_weights`, drawn and evaluated in bounded blocks: within every stratum of true class x group, true class alone
for the overall pass, as many rows with replacement as the stratum holds, seeded by the stratum's content),
so with the same seed they are exactly the resamples A's own metrics.json intervals came from; B gets the
same counts on the same samples, moved into its own row order. Each set keeps its own threshold.

For every path the suite reports (``("overall", "auc")``, ``("attributes", "age", "es_auc")``, per-group and
per-class paths too) the result holds ``a``, ``b``, ``delta = b - a`` (point estimates on all rows), the 95%
percentile interval of the resampled deltas, their standard deviation ``se`` and a two-sided bootstrap p-value,
``min(1, 2 (min(#{d* <= 0}, #{d* >= 0}) + 1) / (B + 1))``: the smallest attainable is ``2 / (B + 1)``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fairbench.metrics._bootstrap import CI_LEVEL, _threads, block_rows, chunks, percentile_intervals
from fairbench.metrics._delong import DeLong, delong_paired
from fairbench.metrics._inputs import read_predictions as parse_predictions
from fairbench.metrics._kernels import draw_weight_blocks, ones_weights, pass_stats
from fairbench.metrics._passes import Pass, Path
from fairbench.metrics._plan import PassData, Plan, build_plan
from fairbench.metrics._suite import _resolve_threshold, build_passes

__all__ = [
    "CI_LEVEL",
    "DeLong",
    "PairedValue",
    "b_layout",
    "bootstrap_p_value",
    "bootstrap_se",
    "delong_paired",
    "paired_metrics",
    "paired_pass",
    "paired_predictions",
    "parse_predictions",
    "rule_threshold",
]


@dataclass(frozen=True)
class PairedValue:
    a: float | None
    b: float | None
    delta: float | None
    ci: list[float] | None
    p: float | None
    n_undefined: int = 0  # resamples on which the delta was undefined (left out of the interval and p)
    se: float | None = None  # standard deviation of the finite resampled deltas (the bootstrap standard error)


def bootstrap_p_value(deltas: np.ndarray) -> float | None:
    """Two-sided bootstrap p-value of ``delta = 0`` from the finite resampled deltas."""
    d = deltas[np.isfinite(deltas)]
    if not len(d):
        return None
    k = min(int((d <= 0).sum()), int((d >= 0).sum()))
    return float(min(1.0, 2.0 * (k + 1) / (len(d) + 1)))


def bootstrap_se(deltas: np.ndarray) -> float | None:
    """Standard deviation (ddof 1) of the finite resampled deltas: the paired bootstrap's standard error."""
    d = deltas[np.isfinite(deltas)]
    return float(np.std(d, ddof=1)) if len(d) >= 2 else None


def b_layout(plan_a: Plan, plan_b: Plan) -> np.ndarray:
    """For each position of ``plan_b``'s row order, the position of the same row in ``plan_a``'s order. Both
    plans sort by true class, then group block, so their strata occupy the same positions and a stratum of A
    maps into the same stratum of B."""
    pos_a = np.empty(plan_a.n, dtype=np.int64)
    pos_a[plan_a.order] = np.arange(plan_a.n)
    return pos_a[plan_b.order]


def _point(p: Pass, plan: Plan, bad: np.ndarray, nf: int | None) -> dict[Path, float | None]:
    v = p.evaluate(pass_stats(ones_weights(plan), plan, nf), bad)
    return {path: (float(x[0]) if np.isfinite(x[0]) else None) for path, x in v.items()}


def paired_pass(p: Pass, data_a: PassData, data_b: PassData, no_finding: int | None, n_boot: int,
                seed: int) -> dict[Path, PairedValue]:
    """Every path of one pass for A and B on shared resamples. ``data_a`` and ``data_b`` must hold the same
    samples in the same row order with the same labels and groups."""
    if not (np.array_equal(data_a.y, data_b.y) and np.array_equal(data_a.group, data_b.group)):
        raise ValueError("paired passes need the same labels and groups row for row")
    plan_a, plan_b = build_plan(data_a), build_plan(data_b)
    bad_a, bad_b = plan_a.slice_bad > 0, plan_b.slice_bad > 0
    va, vb = _point(p, plan_a, bad_a, no_finding), _point(p, plan_b, bad_b, no_finding)
    paths = [path for path in va if va[path] is not None and vb.get(path) is not None]
    deltas = np.full((n_boot, len(paths)), np.nan)
    if n_boot > 0 and paths:
        take_b = b_layout(plan_a, plan_b)
        todo = chunks(n_boot, plan_a.n)
        rows = block_rows(plan_a.n)

        def run(chunk: tuple[int, int, int]) -> None:
            c, lo, hi = chunk
            # the suite's own resamples of A, a bounded block of them at a time
            for w in draw_weight_blocks(plan_a, hi - lo, seed, c, rows):
                xa = p.evaluate(pass_stats(w, plan_a, no_finding), bad_a)
                xb = p.evaluate(pass_stats(np.take(w, take_b, axis=1), plan_b, no_finding), bad_b)
                for j, path in enumerate(paths):
                    deltas[lo:lo + len(w), j] = xb[path] - xa[path]
                lo += len(w)

        with ThreadPoolExecutor(max_workers=min(_threads(), len(todo))) as pool:
            for _ in pool.map(run, todo):
                pass
    bounds, n_undefined = percentile_intervals(deltas, CI_LEVEL) if n_boot > 0 and paths else (None, None)
    column = {path: j for j, path in enumerate(paths)}
    out: dict[Path, PairedValue] = {}
    for path in sorted(va.keys() | vb.keys()):
        a, b = va.get(path), vb.get(path)
        if path not in column:
            out[path] = PairedValue(a=a, b=b, delta=None, ci=None, p=None)
            continue
        j = column[path]
        ci = None
        if bounds is not None and not np.isnan(bounds[j, 0]):
            ci = [float(bounds[j, 0]), float(bounds[j, 1])]
        out[path] = PairedValue(a=a, b=b, delta=float(b - a), ci=ci,  # type: ignore[operator]
                                p=bootstrap_p_value(deltas[:, j]) if n_boot > 0 else None,
                                n_undefined=int(n_undefined[j]) if n_undefined is not None else 0,
                                se=bootstrap_se(deltas[:, j]) if n_boot > 0 else None)
    return out


# -- two prediction tables ------------------------------------------------------------------------------------
def rule_threshold(frame: pd.DataFrame, classes: list[str], attributes: list[str], rule: str | float,
                   eval_split: str) -> tuple[float | None, dict[str, Any]]:
    """The threshold a task card's rule (a number, ``val_youden``, ``val_f1``; argmax for multiclass) gives on
    this prediction table, as the suite chooses it: ``(value, record)``."""
    pred = parse_predictions(frame, classes, attributes, None)
    task = "binary" if len(classes) == 2 else "multiclass"
    return _resolve_threshold(rule, pred, task, eval_split, {})


def _nest(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _entry(v: PairedValue) -> dict[str, Any]:
    out: dict[str, Any] = {"a": v.a, "b": v.b, "delta": v.delta, "ci": v.ci, "p": v.p, "se": v.se}
    if v.ci is not None and v.delta is not None and not v.ci[0] <= v.delta <= v.ci[1]:
        out["ci_excludes_delta"] = True  # percentile interval of a gap-like statistic's delta (docs/metrics.md)
    if v.n_undefined:
        out["n_undefined"] = v.n_undefined
    return out


def _delong_entry(y: np.ndarray, sa: np.ndarray, sb: np.ndarray) -> dict[str, Any] | None:
    d = delong_paired(y, sa, sb)
    if d is None:
        return None
    return {"a": d.auc_a, "b": d.auc_b, "delta": d.delta, "se": d.se, "ci": d.ci, "p": d.p,
            "n_pos": d.n_pos, "n_neg": d.n_neg}


def _delong(pa: Any, pb: Any, ev_a: np.ndarray, ev_b: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """DeLong per AUC the suite reports: binary: P(positive); multiclass: each class one vs rest."""
    y, probs_a, probs_b = pa.y[ev_a], pa.probs[ev_a], pb.probs[ev_b]

    def scores(mask: np.ndarray) -> dict[str, Any] | None:
        if len(classes) == 2:
            return _delong_entry(y[mask] == 1, probs_a[mask, 1], probs_b[mask, 1])
        return {c: _delong_entry(y[mask] == k, probs_a[mask, k], probs_b[mask, k]) for k, c in enumerate(classes)}

    out: dict[str, Any] = {"overall": {"auc": scores(np.ones(len(y), dtype=bool))}, "attributes": {}}
    for attr, labels in pa.attributes.items():
        labels = labels[ev_a]
        groups = sorted({g for g in labels if g is not None})
        out["attributes"][attr] = {g: {"auc": scores(labels == g)} for g in groups}
    return out


def paired_metrics(ea: pd.DataFrame, eb: pd.DataFrame, *, classes: list[str], attributes: list[str],
                   intersections: list[list[str]] | None, eval_split: str, threshold_a: float | None,
                   threshold_b: float | None, ece_bins: int, no_finding_class: str | None, n_boot: int,
                   seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(paired bootstrap tree, DeLong tree) of two prediction tables whose evaluated rows are the same samples
    in the same order."""
    pa = parse_predictions(ea, classes, attributes, intersections)
    pb = parse_predictions(eb, classes, attributes, intersections)
    return paired_predictions(pa, pb, classes=classes, eval_split=eval_split, threshold_a=threshold_a,
                              threshold_b=threshold_b, ece_bins=ece_bins, no_finding_class=no_finding_class,
                              n_boot=n_boot, seed=seed)


def paired_predictions(pa: Any, pb: Any, *, classes: list[str], eval_split: str, threshold_a: float | None,
                       threshold_b: float | None, ece_bins: int, no_finding_class: str | None, n_boot: int,
                       seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """:func:`paired_metrics` of two parsed tables (``fairbench.metrics._inputs.Predictions``), so that a caller
    can let the frames go first. DeLong runs before the passes are built: its sorts' work arrays and the passes'
    arrays are not held at once."""
    ev_a, ev_b = pa.split == eval_split, pb.split == eval_split
    delong = _delong(pa, pb, ev_a, ev_b, classes)
    del ev_a, ev_b
    nf = classes.index(str(no_finding_class)) if no_finding_class is not None else None
    passes_a = build_passes(pa, eval_split=eval_split, threshold=threshold_a, ece_bins=ece_bins, no_finding=nf)
    passes_b = build_passes(pb, eval_split=eval_split, threshold=threshold_b, ece_bins=ece_bins, no_finding=nf)
    metrics: dict[str, Any] = {"overall": {}, "attributes": {}}
    for (p, da), (_, db) in zip(passes_a, passes_b, strict=True):
        for path, value in paired_pass(p, da, db, nf, n_boot, seed).items():
            _nest(metrics, path, _entry(value))
    return metrics, delong
