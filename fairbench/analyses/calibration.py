"""Calibration by group: logistic calibration slope and intercept per group with Wald intervals (binary tasks).

With ``L = logit(p)`` of the positive-class probability (p clipped to [1e-6, 1 - 1e-6]) on the evaluated rows
of a group (Cox 1958; Van Calster et al., J Clin Epidemiol 2016, "weak calibration"):

- ``slope``: ``b`` in the logistic fit ``logit P(y = 1) = a + b L`` (1 = well calibrated; < 1 overconfident);
- ``intercept``: calibration-in-the-large, ``a`` in ``logit P(y = 1) = a + 1 * L`` (slope fixed at 1 by an
  offset; 0 = well calibrated, > 0 the model under-predicts).

Both by Newton-Raphson maximum likelihood; intervals are Wald, estimate +- z_0.975 * SE with SE from the inverse
observed Fisher information. Groups whose labels are all one class, or whose fit does not converge (separable
data), get ``None`` with a reason. The per-group ECE is the suite's ``ece`` (``metrics.attributes.<a>.groups``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import expit
from scipy.stats import norm

__all__ = ["calibration_by_group", "calibration_fit"]

_EPS = 1e-6
_Z = float(norm.ppf(0.975))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def _newton(x: np.ndarray, y: np.ndarray, offset: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """MLE of ``w`` in ``logit P(y=1) = offset + x @ w`` and its covariance; None if it does not converge."""
    w = np.zeros(x.shape[1])
    for _ in range(100):
        mu = expit(offset + x @ w)
        info = x.T @ (x * (mu * (1 - mu))[:, None])
        try:
            step = np.linalg.solve(info, x.T @ (y - mu))
        except np.linalg.LinAlgError:
            return None
        w = w + step
        if not np.all(np.isfinite(w)) or np.abs(w).max() > 1e3:
            return None
        if np.abs(step).max() < 1e-10:
            mu = expit(offset + x @ w)
            info = x.T @ (x * (mu * (1 - mu))[:, None])
            try:
                return w, np.linalg.inv(info)
            except np.linalg.LinAlgError:
                return None
    return None


def calibration_fit(prob: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Slope and intercept (with Wald intervals) of one slice's probabilities ``prob`` against 0/1 labels ``y``."""
    y = np.asarray(y, dtype=np.float64)
    if len(y) < 3 or len(np.unique(y)) < 2:
        return {"slope": None, "intercept": None, "reason": "needs both classes (and 3+ samples)", "n": len(y)}
    x = _logit(prob)
    ones = np.ones((len(y), 1))
    out: dict[str, Any] = {"n": len(y)}
    fit = _newton(np.column_stack([ones, x]), y, np.zeros(len(y)))
    if fit is None:
        out.update(slope=None, slope_ci=None, reason="slope fit did not converge (separable scores)")
    else:
        w, cov = fit
        se = float(np.sqrt(cov[1, 1]))
        out.update(slope=float(w[1]), slope_ci=[float(w[1] - _Z * se), float(w[1] + _Z * se)], slope_se=se)
    fit = _newton(ones, y, x)
    if fit is None:
        out.update(intercept=None, intercept_ci=None, reason="intercept fit did not converge")
    else:
        w, cov = fit
        se = float(np.sqrt(cov[0, 0]))
        out.update(intercept=float(w[0]), intercept_ci=[float(w[0] - _Z * se), float(w[0] + _Z * se)],
                   intercept_se=se)
    return out


def calibration_by_group(prob: np.ndarray, y: np.ndarray, attributes: dict[str, np.ndarray]) -> dict[str, Any]:
    """``analyses.calibration``: ``overall`` and, per attribute, ``<attribute>.groups.<group>`` records."""
    out: dict[str, Any] = {"overall": calibration_fit(prob, y)}
    for attr, groups in attributes.items():
        g = np.asarray(groups, dtype=object)
        names = sorted({str(v) for v in g if v is not None})
        out[attr] = {"groups": {n: calibration_fit(prob[g == n], y[g == n]) for n in names}}
    return out
