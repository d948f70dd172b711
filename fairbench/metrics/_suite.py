"""``compute_metrics``: the whole suite on one predictions table, as a JSON-ready dict."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import pandas as pd

from fairbench.errors import DataError
from fairbench.metrics._bootstrap import CI_LEVEL
from fairbench.metrics._calibration import bin_index
from fairbench.metrics._inputs import DECISION_COLUMN, Predictions, group_codes, read_predictions
from fairbench.metrics._passes import Pass, PassResult, run_pass
from fairbench.metrics._plan import PassData
from fairbench.metrics._spec import METRICS, MetricSpec
from fairbench.metrics._threshold import THRESHOLD_RULES, choose_threshold

__all__ = ["build_passes", "compute_metrics"]

CI_METHOD = "percentile; resampled within strata of true class x group (per attribute; true class for overall)"
#: how the threshold metrics are computed when the predictions carry randomised decisions
RANDOMISED_RULE = (f"expected rates of the randomised rule in column {DECISION_COLUMN} (each row decided positive "
                   "with that probability): TPR_g = mean of p over g's positives, FPR_g over g's negatives, "
                   "selection rate = mean p, accuracy = mean of p y + (1 - p)(1 - y), F1 from the expected "
                   "TP, FP, FN; no threshold is applied")


def _specs(kind: str, task: str, has_nf: bool) -> list[MetricSpec]:
    specs = (METRICS.get(name) for name in METRICS.names())
    return [s for s in specs if s.kind == kind and s.applies(task, has_nf)]


def _resolve_threshold(
    threshold: str | float, pred: Predictions, task: str, eval_split: str, notes: dict[str, str],
) -> tuple[float | None, dict[str, Any]]:
    if task == "multiclass":
        if isinstance(threshold, str) or threshold != 0.5:
            raise DataError(f"threshold={threshold!r} applies to binary tasks only; multiclass predictions use argmax")
        return None, {"value": None, "chosen_on": "argmax", "rule": "argmax"}
    if pred.decide is not None:
        return None, _randomised_record(threshold, pred, eval_split, notes)
    if isinstance(threshold, str):
        if threshold not in THRESHOLD_RULES:
            raise DataError(f"unknown threshold {threshold!r}; use a number or one of {list(THRESHOLD_RULES)}")
        val = pred.split == "val"
        if not val.any():
            raise DataError(f"threshold={threshold!r} is chosen on rows with split == 'val', and there are none")
        score, y = pred.probs[val, 1], pred.y[val]
        ok = ~np.isnan(pred.probs[val]).any(axis=1)
        if not ok.all():
            notes["threshold"] = f"{int((~ok).sum())} validation row(s) with NaN probabilities ignored"
        rule = threshold.removeprefix("val_")
        value = choose_threshold(y[ok], score[ok], rule)
        if eval_split == "val":
            notes["threshold"] = "chosen on the evaluated split itself: metrics are optimistic"
        return value, {"value": value, "chosen_on": "val", "rule": rule, "n_val": int(ok.sum())}
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not math.isfinite(threshold):
        raise DataError(f"threshold must be a finite number or one of {list(THRESHOLD_RULES)}, got {threshold!r}")
    return float(threshold), {"value": float(threshold), "chosen_on": "fixed", "rule": "fixed"}


def _randomised_record(
    threshold: str | float, pred: Predictions, eval_split: str, notes: dict[str, str],
) -> dict[str, Any]:
    """The threshold record of predictions with randomised decisions, and the note on their score."""
    ev = pred.split == eval_split
    score = pred.probs[ev, 1]
    distinct = len(np.unique(score[~np.isnan(score)]))
    notes["decisions"] = (f"threshold metrics are the expected rates of the randomised rule in column "
                          f"{DECISION_COLUMN}; AUC and ECE read prob_{pred.classes[1]}, which takes {distinct} "
                          f"distinct value(s) on the evaluated split (a coarse score when it is the rule's "
                          f"P(yhat = 1))")
    return {"value": None, "chosen_on": "predictions", "rule": "randomised", "column": DECISION_COLUMN,
            "decisions": RANDOMISED_RULE, "task_rule_not_applied": threshold}


def _set(tree: dict[str, Any], path: tuple[str, ...], value: object) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _check_args(n_boot: int, seed: int, ece_bins: int, min_group_size: int) -> None:
    checks = (("n_boot", n_boot, 0), ("seed", seed, 0), ("ece_bins", ece_bins, 1),
              ("min_group_size", min_group_size, 0))
    for name, value, low in checks:
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise DataError(f"{name} must be an integer >= {low}, got {value!r}")


def build_passes(
    pred: Predictions, *, eval_split: str, threshold: float | None, ece_bins: int, no_finding: int | None,
) -> list[tuple[Pass, PassData]]:
    """The overall pass, then one pass per attribute, on the rows of ``eval_split``."""
    ev = pred.split == eval_split
    if not ev.any():
        raise DataError(f"no rows with split == {eval_split!r}; splits present: {sorted(set(pred.split))}")
    task = "binary" if len(pred.classes) == 2 else "multiclass"
    y, raw = (pred.y, pred.probs) if ev.all() else (pred.y[ev], pred.probs[ev])  # no copy of all rows
    bad = np.isnan(raw).any(axis=1)
    probs = np.nan_to_num(raw, nan=0.0)
    decide = None
    if task == "binary" and pred.decide is not None:  # randomised decisions: expected counts, no threshold
        bad = bad | np.isnan(pred.decide[ev])
        decide = np.nan_to_num(pred.decide[ev], nan=0.0)
        yhat = np.ones(len(y), dtype=np.int64)
        conf, target = probs[:, 1], (y == 1).astype(np.float64)
    elif task == "binary":
        assert threshold is not None
        yhat = (probs[:, 1] >= threshold).astype(np.int64)
        conf, target = probs[:, 1], (y == 1).astype(np.float64)
    else:
        yhat = probs.argmax(axis=1)
        conf, target = probs.max(axis=1), (yhat == y).astype(np.float64)
    bins = bin_index(conf, ece_bins)
    if task == "binary":
        row_key = probs[:, 1]
    else:  # one lexicographic sort of the probability rows, shared by every pass
        row_key = np.empty(len(y), dtype=np.int64)
        row_key[np.lexsort(probs.T[::-1])] = np.arange(len(y))

    def data(group: np.ndarray, n_groups: int) -> PassData:
        return PassData(y=y, yhat=yhat, probs=probs, bad=bad, conf=conf, target=target, bins=bins,
                        row_key=row_key, group=group, n_groups=n_groups, n_bins=ece_bins, decide=decide)

    has_nf = no_finding is not None
    slice_specs, summary_specs = _specs("slice", task, has_nf), _specs("summary", task, has_nf)
    passes = [(Pass(None, [], pred.classes, slice_specs, summary_specs), data(np.full(len(y), -1), 0))]
    for attr, labels in pred.attributes.items():
        codes, names = group_codes(labels[ev])
        passes.append((Pass(attr, names, pred.classes, slice_specs, summary_specs), data(codes, len(names))))
    return passes


def compute_metrics(
    predictions: pd.DataFrame,
    *,
    classes: list[str],
    attributes: list[str] | None = None,
    eval_split: str = "test",
    threshold: str | float = 0.5,
    n_boot: int = 1000,
    seed: int = 0,
    ece_bins: int = 15,
    min_group_size: int = 30,
    intersections: list[list[str]] | None = None,
    no_finding_class: str | None = None,
) -> dict[str, Any]:
    """Utility and group-fairness metrics of one predictions table, with stratified bootstrap intervals.

    See docs/metrics.md for every formula and source. Values are fractions (tables show x100); an
    undefined value is ``None`` with its reason under ``notes[dotted.path]``.
    """
    _check_args(n_boot, seed, ece_bins, min_group_size)
    pred = read_predictions(predictions, classes, attributes, intersections)
    task = "binary" if len(pred.classes) == 2 else "multiclass"
    nf = None
    if no_finding_class is not None:
        if str(no_finding_class) not in pred.classes:
            raise DataError(f"no_finding_class {no_finding_class!r} is not one of the classes {pred.classes}")
        nf = pred.classes.index(str(no_finding_class))
    notes: dict[str, str] = dict(pred.notes)
    t, threshold_record = _resolve_threshold(threshold, pred, task, eval_split, notes)

    passes = build_passes(pred, eval_split=eval_split, threshold=t, ece_bins=ece_bins, no_finding=nf)
    first = passes[0][1]
    if first.bad.any():
        notes["overall"] = (f"{int(first.bad.sum())} evaluated row(s) have NaN probabilities: every metric of a "
                            "slice containing them is undefined")
    result: dict[str, Any] = {"overall": {}, "attributes": {}, "ci": {}}
    flags: dict[str, Any] = {"min_group_size": min_group_size, "small_groups": {}}
    results: list[PassResult] = []
    for p, d in passes:
        res = run_pass(p, d, nf, n_boot, seed)
        results.append(res)
        if p.attribute is None:
            continue
        attr = p.attribute
        n_unknown = int((d.group < 0).sum())
        _set(result, ("attributes", attr, "groups"), {})
        result["attributes"][attr]["n_unknown"] = n_unknown
        if n_unknown:
            notes[f"attributes.{attr}"] = f"{n_unknown} evaluated row(s) with unknown {attr} left out of its groups"
        small = {g: res.counts[("attributes", attr, "groups", g, "n")] for g in p.groups}
        small = {g: n for g, n in small.items() if n < min_group_size}
        if small:
            flags["small_groups"][attr] = small

    for res in results:
        for path, count in res.counts.items():
            _set(result, path, count)
        for path, value in res.values.items():
            _set(result, path, value)
        for path, interval in res.ci.items():
            _set(result["ci"], path, interval)
        notes.update({".".join(path): note for path, note in res.notes.items()})

    result.update({
        "n_boot": n_boot, "seed": seed, "ci_level": CI_LEVEL if n_boot else None,
        "ci_method": CI_METHOD if n_boot else None, "threshold": threshold_record, "ece_bins": ece_bins,
        "task": task, "classes": pred.classes, "eval_split": eval_split,
        "notes": dict(sorted(notes.items())), "flags": flags,
    })
    return result
