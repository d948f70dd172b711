"""Underdiagnosis by group (Seyyed-Kalantari et al., Nature Medicine 2021), arranged from the metric suite.

The suite already computes ``underdiagnosis_rate`` per group (the share of samples with a finding, true class !=
the card's ``no_finding_class``, that the model calls "no finding" at the cell's threshold) with its stratified
bootstrap interval, and ``underdiagnosis_gap`` per attribute. This module arranges them per attribute and
intersection as ``groups.<group>.{rate, ci, n_finding, gap_to_best, gap_to_best_ci}``.

``gap_to_best`` is the group's rate minus the rate of the best-served group (``best_group``: the lowest rate of
the point estimate). Its interval (:func:`gap_to_best_samples`) is paired: on each of the suite's own resamples
of the attribute (the same stratified draws, same seed, that gave the rates' intervals) the gap is the group's
resampled rate minus the *same* best group's resampled rate. The best group is chosen once, on the point
estimate, and is not re-chosen per resample: the interval is that of a signed paired difference, which can
contain 0 (and negative values) when the two groups cannot be told apart; re-choosing it would make every gap a
``rate - min`` (never negative, inflated by the minimum as the suite's ``underdiagnosis_gap`` interval is). The
price: the interval does not carry the uncertainty of which group is best. The best group's own gap is 0 with
interval [0, 0].
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["gap_to_best_samples", "underdiagnosis"]

SOURCE = "Seyyed-Kalantari et al., Nature Medicine 27:2176-2182, 2021 (FPR of 'No Finding' per subgroup)"
GAP_CI_METHOD = ("percentile over the suite's stratified resamples; per resample the group's rate minus the "
                 "best group's (chosen once on the point estimate, not per resample)")


def gap_to_best_samples(frame: pd.DataFrame, *, classes: list[str], attributes: list[str],
                        intersections: list[list[str]] | None, eval_split: str, threshold: float | None,
                        no_finding_class: str, ece_bins: int, n_boot: int, seed: int
                        ) -> dict[str, tuple[list[str], np.ndarray]]:
    """Per attribute (and intersection): its group names and the (n_boot, groups) underdiagnosis rates on the
    resamples :func:`fairbench.metrics.compute_metrics` draws for that attribute with this ``seed`` (NaN where a
    rate is undefined). ``threshold``: the cell's threshold value (None for argmax or randomised decisions)."""
    from fairbench.metrics import METRICS
    from fairbench.metrics._bootstrap import bootstrap_values
    from fairbench.metrics._inputs import read_predictions
    from fairbench.metrics._plan import build_plan
    from fairbench.metrics._suite import build_passes

    classes = [str(c) for c in classes]
    nf = classes.index(str(no_finding_class))
    pred = read_predictions(frame, classes, attributes, intersections)
    rate_fn = METRICS.get("underdiagnosis_rate").fn
    out: dict[str, tuple[list[str], np.ndarray]] = {}
    for p, data in build_passes(pred, eval_split=eval_split, threshold=threshold, ece_bins=ece_bins,
                                no_finding=nf)[1:]:
        # the rates need only the confusion counts: the AUC plans are dropped (the resamples depend only on
        # the strata, so they are the suite's)
        plan = dataclasses.replace(build_plan(data), auc=())
        bad = plan.slice_bad[1:] > 0
        paths = [(g,) for g in p.groups]

        def evaluate(stats: Any, bad: np.ndarray = bad, paths: list[tuple[str]] = paths) -> dict:
            rates = np.asarray(rate_fn(stats), dtype=np.float64)[:, 1:]
            rates = np.where(bad[None, :], np.nan, rates)
            return {path: rates[:, j] for j, path in enumerate(paths)}

        out[str(p.attribute)] = (list(p.groups), bootstrap_values(plan, evaluate, paths, n_boot, seed, nf))
    return out


def _gap_ci(samples: np.ndarray, j: int, best: int) -> list[float] | None:
    from fairbench.metrics._bootstrap import percentile_intervals

    d = samples[:, j] - samples[:, best]
    if not np.isfinite(d).any():
        return None
    bounds, _ = percentile_intervals(d[:, None])
    return [float(bounds[0, 0]), float(bounds[0, 1])]


def underdiagnosis(metrics: dict[str, Any], no_finding_class: str,
                   samples: dict[str, tuple[list[str], np.ndarray]] | None = None) -> dict[str, Any]:
    """``analyses.underdiagnosis`` (one record per attribute and intersection) from a
    :func:`fairbench.metrics.compute_metrics` result; ``samples`` (:func:`gap_to_best_samples`) gives the
    ``gap_to_best_ci`` of every group (None without it, e.g. at n_boot 0)."""
    out: dict[str, Any] = {}
    classes = list(metrics.get("classes") or [])
    finding_key = None  # binary: the count of the class that is not "no finding"
    if len(classes) == 2 and no_finding_class in classes:
        finding_key = "n_neg" if classes.index(no_finding_class) == 1 else "n_pos"
    ci_attrs = (metrics.get("ci") or {}).get("attributes") or {}
    for attr, a in (metrics.get("attributes") or {}).items():
        groups = a.get("groups") or {}
        rates = {g: v.get("underdiagnosis_rate") for g, v in groups.items()}
        known = {g: r for g, r in rates.items() if r is not None}
        best = min(known, key=lambda g: known[g]) if known else None
        names, boot = (samples or {}).get(attr, (None, None))
        rec_groups = {}
        for g, v in groups.items():
            rate = rates[g]
            n_finding = v.get(finding_key) if finding_key else None
            gap_ci = None
            if rate is not None and best is not None and boot is not None and names is not None \
                    and g in names and best in names and len(boot):
                gap_ci = _gap_ci(boot, names.index(g), names.index(best))
            rec_groups[g] = {
                "rate": rate,
                "ci": ((ci_attrs.get(attr) or {}).get("groups") or {}).get(g, {}).get("underdiagnosis_rate"),
                "n_finding": n_finding,
                "gap_to_best": None if rate is None or best is None else float(rate - known[best]),
                "gap_to_best_ci": gap_ci,
            }
        out[attr] = {"groups": rec_groups, "best_group": best,
                     "worst_group": max(known, key=lambda g: known[g]) if known else None,
                     "gap": a.get("underdiagnosis_gap"),
                     "gap_ci": (ci_attrs.get(attr) or {}).get("underdiagnosis_gap"),
                     "gap_to_best_ci_method": GAP_CI_METHOD if samples else None,
                     "no_finding_class": no_finding_class, "source": SOURCE}
    return out
