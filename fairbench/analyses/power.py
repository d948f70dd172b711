"""Statistical power: the smallest between-group gap a test set of these group sizes could detect.

Method (docs/metrics.md, "Statistical power"). Two independent groups, a two-sided Wald z-test at level ``alpha``
and power ``power``: a gap ``d`` is detectable when ``d = (z_{1-alpha/2} + z_{power}) * sqrt(V_1 + V_2)`` with the
variances taken under the alternative. The variance depends on the value itself, so the better group is anchored
at a reference value ``r`` and the other at ``r - d``, and ``d`` is solved by bisection (the equation has one root:
``d - z * sqrt(V_1(r) + V_2(r - d))`` is increasing in ``d`` over the search range).

- AUC gap: Hanley & McNeil (1982) variance of each group's AUC from its positives and negatives
  (``V(A) = [A(1-A) + (n1-1)(Q1-A^2) + (n2-1)(Q2-A^2)] / (n1 n2)``, ``Q1 = A/(2-A)``, ``Q2 = 2A^2/(1+A)``), the
  lower AUC searched down to 0.5 (chance).
- DPD: the two-proportion (unpooled Wald) test of the selection rates, ``V = p(1-p)/n`` with ``n`` the group size.
- DEOdds: the same test on the TPR gap (``n`` = the groups' positives) and on the FPR gap (``n`` = negatives); DEOdds
  is their maximum, so it is seen once either component is: ``mde_deodds`` is the smaller of the two MDEs (no
  multiplicity correction).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

from scipy.stats import norm

__all__ = [
    "ALPHA",
    "METHOD_AUC",
    "METHOD_RATE",
    "POWER",
    "hanley_mcneil_var",
    "mde_auc",
    "mde_rate",
    "plan_power",
    "power_for_attribute",
    "proportion_var",
    "solve_mde",
    "underpowered",
]

ALPHA = 0.05
POWER = 0.80
PLANNING_AUC = 0.80
#: reference rate for planning (no model yet): 0.5 has the largest binomial variance, so the MDE is conservative
PLANNING_RATE = 0.5
METHOD_AUC = ("Hanley-McNeil 1982 variance per group, independent groups, two-sided Wald z-test: "
              "MDE = (z_{1-alpha/2} + z_power) * sqrt(V(A_ref; n_pos1, n_neg1) + V(A_ref - MDE; n_pos2, n_neg2)), "
              "solved by bisection with the better group anchored at A_ref")
METHOD_RATE = ("two-proportion unpooled Wald z-test, independent groups: MDE = (z_{1-alpha/2} + z_power) * "
               "sqrt(p_ref(1-p_ref)/n_1 + (p_ref-MDE)(1-p_ref+MDE)/n_2), solved by bisection")


def z_sum(alpha: float = ALPHA, power: float = POWER) -> float:
    return float(norm.ppf(1 - alpha / 2) + norm.ppf(power))


def hanley_mcneil_var(auc: float, n_pos: int, n_neg: int) -> float:
    """Hanley & McNeil (1982) variance of an AUC estimated from ``n_pos`` positives and ``n_neg`` negatives."""
    a = auc
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    return (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)


def proportion_var(p: float, n: int) -> float:
    return p * (1 - p) / n


def solve_mde(var_hi: float, var_lo: Callable[[float], float], high: float, z: float) -> float | None:
    """The ``d`` in ``[0, high]`` with ``d = z * sqrt(var_hi + var_lo(d))``; None when even ``high`` is not enough."""
    f = lambda d: d - z * math.sqrt(max(var_hi + var_lo(d), 0.0))
    if high <= 0 or f(high) < 0:
        return None
    lo, hi = 0.0, high
    for _ in range(60):
        mid = (lo + hi) / 2
        if f(mid) < 0:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def mde_auc(ref_auc: float, better: tuple[int, int], worse: tuple[int, int], *, alpha: float = ALPHA,
            power: float = POWER) -> float | None:
    """Detectable AUC gap when the better group (``(n_pos, n_neg)``) has AUC ``ref_auc``; None if none above 0.5."""
    ref = min(max(ref_auc, 0.5), 1.0)
    return solve_mde(hanley_mcneil_var(ref, *better), lambda d: hanley_mcneil_var(ref - d, *worse), ref - 0.5,
                     z_sum(alpha, power))


def mde_rate(ref_rate: float, n_better: int, n_worse: int, *, alpha: float = ALPHA,
             power: float = POWER) -> float | None:
    """Detectable difference of two proportions when the higher one is ``ref_rate``; None if none in [0, 1]."""
    ref = min(max(ref_rate, 0.0), 1.0)
    return solve_mde(proportion_var(ref, n_better), lambda d: proportion_var(ref - d, n_worse), ref,
                     z_sum(alpha, power))


def _r(x: float | None) -> float | None:
    return None if x is None else float(x)


def _ordered(groups: dict[str, dict[str, Any]], key: str) -> tuple[str, str] | None:
    vals = {g: v.get(key) for g, v in groups.items() if isinstance(v.get(key), (int, float))}
    if len(vals) < 2:
        return None
    order = sorted(vals, key=lambda g: (vals[g], g))  # two distinct groups even when the values tie
    return order[-1], order[0]


def power_for_attribute(groups: dict[str, dict[str, Any]], *, planning_auc: float | None = None,
                        alpha: float = ALPHA, power: float = POWER) -> dict[str, Any]:
    """Power record of one attribute from its groups' ``n_pos``, ``n_neg`` and (in a cell) observed ``auc``,
    ``selection_rate``, ``tpr``, ``fpr``. With ``planning_auc`` (or no observed AUCs), every group is planned at
    that AUC, rates at :data:`PLANNING_RATE`, and each pair is taken in its harder order."""
    usable = {g: v for g, v in groups.items() if v.get("n_pos", 0) > 0 and v.get("n_neg", 0) > 0}
    rec: dict[str, Any] = {"alpha": alpha, "power": power, "two_sided": True, "method": METHOD_AUC,
                           "method_rates": METHOD_RATE,
                           "inputs": {g: {"n_pos": int(v["n_pos"]), "n_neg": int(v["n_neg"]),
                                          **({"auc": _r(v.get("auc"))} if v.get("auc") is not None else {})}
                                      for g, v in groups.items()}}
    if len(usable) < 2:
        rec.update(mde_auc_gap=None, reason="fewer than two groups with both positives and negatives")
        return rec
    observed = planning_auc is None and _ordered(usable, "auc") is not None
    pairs = []
    for g1, g2 in itertools.combinations(usable, 2):
        a, b = usable[g1], usable[g2]
        if observed and a.get("auc") is not None and b.get("auc") is not None:
            hi, lo = (g1, g2) if a["auc"] >= b["auc"] else (g2, g1)
            ref = usable[hi]["auc"]
            mde = mde_auc(ref, _np(usable[hi]), _np(usable[lo]), alpha=alpha, power=power)
        else:
            ref = planning_auc if planning_auc is not None else PLANNING_AUC
            m1 = mde_auc(ref, _np(a), _np(b), alpha=alpha, power=power)
            m2 = mde_auc(ref, _np(b), _np(a), alpha=alpha, power=power)
            hi, lo = (g1, g2) if (m1 or math.inf) >= (m2 or math.inf) else (g2, g1)
            mde = None if m1 is None or m2 is None else max(m1, m2)
        pairs.append({"better": hi, "worse": lo, "ref_auc": float(ref), "mde_auc_gap": _r(mde)})
    rec["pairs"] = pairs
    if observed:
        best, worst = _ordered(usable, "auc")  # type: ignore[misc]
        pick = next(p for p in pairs if {p["better"], p["worse"]} == {best, worst})
        rec.update(mde_auc_gap=pick["mde_auc_gap"], pair=[best, worst], ref_auc=pick["ref_auc"],
                   reference="observed AUC of the better group; MDE for the observed best vs worst group")
        b, w = usable[best], usable[worst]
        gap = float(b["auc"] - w["auc"])
        half = norm.ppf(1 - alpha / 2) * math.sqrt(hanley_mcneil_var(b["auc"], *_np(b))
                                                   + hanley_mcneil_var(w["auc"], *_np(w)))
        rec.update(observed_gap=gap, observed_gap_ci=[gap - half, gap + half],
                   observed_gap_ci_method="Wald interval of the best minus worst group AUC, Hanley-McNeil variances "
                                          "at the observed AUCs")
    else:
        known = [p for p in pairs if p["mde_auc_gap"] is not None]
        pick = max(known, key=lambda p: p["mde_auc_gap"]) if known else pairs[0]
        rec.update(mde_auc_gap=pick["mde_auc_gap"], pair=[pick["better"], pick["worse"]], ref_auc=pick["ref_auc"],
                   reference=f"planning AUC {pick['ref_auc']} for every group; the largest MDE over the pairs "
                             "(a gap below it may be missed between some pair)")
    rec.update(_rate_mdes(usable, observed, alpha, power))
    return rec


def _np(v: dict[str, Any]) -> tuple[int, int]:
    return int(v["n_pos"]), int(v["n_neg"])


def _rate_mde(usable: dict[str, dict[str, Any]], key: str, size: Callable[[dict[str, Any]], int], observed: bool,
              alpha: float, power: float) -> tuple[float | None, list[str], float]:
    order = _ordered(usable, key) if observed else None
    if order is not None:
        hi, lo = order
        ref = float(usable[hi][key])
        return _r(mde_rate(ref, size(usable[hi]), size(usable[lo]), alpha=alpha, power=power)), [hi, lo], ref
    # planning: the two smallest groups at the reference rate (the largest MDE of any pair)
    small = sorted(usable, key=lambda g: size(usable[g]))[:2]
    return (_r(mde_rate(PLANNING_RATE, size(usable[small[0]]), size(usable[small[1]]), alpha=alpha, power=power)),
            small, PLANNING_RATE)


def _rate_mdes(usable: dict[str, dict[str, Any]], observed: bool, alpha: float, power: float) -> dict[str, Any]:
    n_all = lambda v: int(v["n_pos"]) + int(v["n_neg"])
    dpd, dpd_pair, dpd_ref = _rate_mde(usable, "selection_rate", n_all, observed, alpha, power)
    tpr, tpr_pair, tpr_ref = _rate_mde(usable, "tpr", lambda v: int(v["n_pos"]), observed, alpha, power)
    fpr, fpr_pair, fpr_ref = _rate_mde(usable, "fpr", lambda v: int(v["n_neg"]), observed, alpha, power)
    parts = [m for m in (tpr, fpr) if m is not None]
    return {"mde_dpd": dpd, "dpd_pair": dpd_pair, "dpd_ref_rate": dpd_ref,
            "mde_tpr_gap": tpr, "tpr_pair": tpr_pair, "tpr_ref_rate": tpr_ref,
            "mde_fpr_gap": fpr, "fpr_pair": fpr_pair, "fpr_ref_rate": fpr_ref,
            "mde_deodds": min(parts) if parts else None}


def underpowered(gap: Any, ci: Any, mde: Any) -> bool:
    """An observed gap whose interval includes 0 and that lies below the MDE: the test could not have seen it."""
    return (isinstance(gap, (int, float)) and isinstance(mde, (int, float)) and isinstance(ci, (list, tuple))
            and len(ci) == 2 and None not in ci and ci[0] <= 0 <= ci[1] and gap < mde)


def _counts(labels: Any, groups: Any) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for y, g in zip(labels, groups):
        if g is None:
            continue
        rec = out.setdefault(str(g), {"n_pos": 0, "n_neg": 0})
        rec["n_pos" if int(y) == 1 else "n_neg"] += 1
    return dict(sorted(out.items()))


def _scaled(counts: dict[str, dict[str, int]], n_test: int) -> dict[str, dict[str, int]]:
    total = sum(v["n_pos"] + v["n_neg"] for v in counts.values())
    return {g: {k: max(round(c * n_test / total), 0) for k, c in v.items()} for g, v in counts.items()}


def plan_power(task: Any, *, data_root: Any = None, n_test: int | None = None,
               auc: float = PLANNING_AUC) -> dict[str, Any]:
    """``fairbench power``: the detectable gaps of a task's evaluated split before any model runs.

    Group sizes and prevalences come from the card's evaluated split (generated for synthetic tasks, read from
    ``data_root`` otherwise); ``n_test`` rescales them to ``n_test`` samples with the same group shares."""
    from fairbench.errors import DataError

    if len(task.classes) != 2:
        raise DataError(f"fairbench power: task '{task.name}' has {len(task.classes)} classes; the AUC-gap power "
                        "analysis is for binary tasks")
    if isinstance(auc, bool) or not 0.5 < float(auc) < 1:
        raise DataError(f"--auc must be a number in (0.5, 1), got {auc!r}")
    if n_test is not None and n_test < 4:
        raise DataError(f"--n-test must be an integer >= 4, got {n_test!r}")
    split = task.evaluation.split
    try:
        s = task.load_split(split, data_root)
    except DataError as e:
        raise DataError(f"fairbench power needs the group sizes and prevalences of the '{split}' split of task "
                        f"'{task.name}': {e} (with --n-test N the group shares still come from the data)") from None
    attrs: dict[str, Any] = dict(s.attributes)
    for combo in task.evaluation.intersections:
        cols = [s.attributes[a] for a in combo]
        attrs["*".join(combo)] = [None if any(c[i] is None for c in cols) else "*".join(str(c[i]) for c in cols)
                                  for i in range(len(s))]
    out: dict[str, Any] = {"task": task.name, "split": split, "n": len(s) if n_test is None else int(n_test),
                           "n_observed": len(s), "planning_auc": float(auc), "attributes": {}}
    for name, groups in attrs.items():
        counts = _counts(s.labels, groups)
        if n_test is not None:
            counts = _scaled(counts, n_test)
        out["attributes"][name] = power_for_attribute(counts, planning_auc=float(auc))
    return out
