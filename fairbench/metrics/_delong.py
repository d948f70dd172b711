"""DeLong's test for the difference of two correlated ROC AUCs on the same samples (DeLong, DeLong and
Clarke-Pearson, Biometrics 1988), with the midrank computation of Sun and Xu (IEEE SPL 2014).

For model ``r`` with scores on ``m`` positives and ``n`` negatives, the structural components are
``V10_r[i] = (1/n) sum_j psi(x_i, y_j)`` per positive and ``V01_r[j] = (1/m) sum_i psi(x_i, y_j)`` per
negative (``psi`` = 1 if the positive scores higher, 1/2 on a tie, 0 otherwise); ``AUC_r`` is their mean.
With ``S10`` and ``S01`` the 2 x 2 sample covariance matrices (denominator ``m - 1`` and ``n - 1``) of the
components across the two models,

    Var(AUC_B - AUC_A) = (S10_AA + S10_BB - 2 S10_AB) / m + (S01_AA + S01_BB - 2 S01_AB) / n,

``z = delta / sqrt(Var)``, the two-sided p-value ``2 (1 - Phi(|z|))`` and the 95% interval
``delta -/+ 1.95996 sqrt(Var)``. The test conditions on the class sizes, as the suite's bootstrap does
(resampling within true class).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["DeLong", "delong_paired", "midranks"]

Z975 = 1.959963984540054


@dataclass(frozen=True)
class DeLong:
    auc_a: float
    auc_b: float
    delta: float
    se: float
    ci: list[float]
    p: float
    n_pos: int
    n_neg: int


def midranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (one sort, then one pass over runs of equal values)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    new_run = np.empty(len(xs), dtype=bool)
    new_run[:1] = True
    np.not_equal(xs[1:], xs[:-1], out=new_run[1:])
    run = np.cumsum(new_run) - 1
    starts = np.flatnonzero(new_run)
    sizes = np.diff(np.append(starts, len(xs)))
    ranks = np.empty(len(xs), dtype=np.float64)
    ranks[order] = (starts + 0.5 * (sizes + 1))[run]
    return ranks


def _components(pos: np.ndarray, neg: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    m, n = len(pos), len(neg)
    tx, ty, tz = midranks(pos), midranks(neg), midranks(np.concatenate([pos, neg]))
    v10 = (tz[:m] - tx) / n  # per positive: share of negatives below (ties half)
    v01 = 1.0 - (tz[m:] - ty) / m  # per negative: share of positives above (ties half)
    return float(v10.mean()), v10, v01


def delong_paired(y: np.ndarray, score_a: np.ndarray, score_b: np.ndarray) -> DeLong | None:
    """DeLong's paired test of AUC(B) - AUC(A); ``y`` is 1 for positives. None when a class is missing."""
    y = np.asarray(y).astype(bool)
    m, n = int(y.sum()), int((~y).sum())
    if m == 0 or n == 0:
        return None
    auc_a, v10a, v01a = _components(np.asarray(score_a, dtype=np.float64)[y], np.asarray(score_a, dtype=np.float64)[~y])
    auc_b, v10b, v01b = _components(np.asarray(score_b, dtype=np.float64)[y], np.asarray(score_b, dtype=np.float64)[~y])
    var = 0.0
    for size, va, vb in ((m, v10a, v10b), (n, v01a, v01b)):
        if size > 1:
            d = vb - va  # Var(b - a) = Var(a) + Var(b) - 2 Cov(a, b), from the differences directly
            var += float(np.var(d, ddof=1)) / size
    delta = auc_b - auc_a
    se = math.sqrt(max(var, 0.0))
    if se > 0:
        p = math.erfc(abs(delta) / se / math.sqrt(2.0))
    else:
        p = 1.0 if delta == 0 else 0.0
    return DeLong(auc_a=auc_a, auc_b=auc_b, delta=delta, se=se, ci=[delta - Z975 * se, delta + Z975 * se],
                  p=float(p), n_pos=m, n_neg=n)
