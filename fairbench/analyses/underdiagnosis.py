"""Underdiagnosis by group (Seyyed-Kalantari et al., Nature Medicine 2021), arranged from the metric suite.

The suite already computes ``underdiagnosis_rate`` per group (the share of samples with a finding, true class !=
the card's ``no_finding_class``, that the model calls "no finding" at the cell's threshold) with its stratified
bootstrap interval, and ``underdiagnosis_gap`` per attribute. This module only arranges them per attribute and
intersection as ``groups.<group>.{rate, ci, n_finding, gap_to_best}``; ``gap_to_best`` is the group's rate minus
the lowest group rate (the best-served group), a point estimate (its interval is not resampled here).
"""

from __future__ import annotations

from typing import Any

__all__ = ["underdiagnosis"]

SOURCE = "Seyyed-Kalantari et al., Nature Medicine 27:2176-2182, 2021 (FPR of 'No Finding' per subgroup)"


def underdiagnosis(metrics: dict[str, Any], no_finding_class: str) -> dict[str, Any]:
    """``analyses.underdiagnosis`` (one record per attribute and intersection) from a :func:`fairbench.metrics.compute_metrics` result."""
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
        rec_groups = {}
        for g, v in groups.items():
            rate = rates[g]
            n_finding = v.get(finding_key) if finding_key else None
            rec_groups[g] = {
                "rate": rate,
                "ci": ((ci_attrs.get(attr) or {}).get("groups") or {}).get(g, {}).get("underdiagnosis_rate"),
                "n_finding": n_finding,
                "gap_to_best": None if rate is None or best is None else float(rate - known[best]),
            }
        out[attr] = {"groups": rec_groups, "best_group": best,
                     "worst_group": max(known, key=lambda g: known[g]) if known else None,
                     "gap": a.get("underdiagnosis_gap"),
                     "gap_ci": (ci_attrs.get(attr) or {}).get("underdiagnosis_gap"),
                     "no_finding_class": no_finding_class, "source": SOURCE}
    return out
