"""Sufficient statistics of a slice of predictions, and warning-free NaN arithmetic.

Every metric in the suite is a function of a :class:`SliceStats`: weighted confusion counts, one-vs-rest
ROC AUCs from a weighted rank statistic, and calibration sums per confidence bin. Weights are 1 for the
point estimate and bootstrap counts for a resample; leading axes are (resample, slice).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SliceStats", "nanmax", "nanmean", "nanmin", "nanrange", "nansum", "nanvar", "safe_div"]


@dataclass(frozen=True)
class SliceStats:
    """Statistics of one or many slices; every array has the same leading (batch) shape."""

    conf: np.ndarray  # (..., K, K) weighted counts, conf[..., true class, predicted class]
    auc: np.ndarray  # (..., K) one-vs-rest ROC AUC per class; NaN where undefined or not computed
    cal_n: np.ndarray  # (..., M) weight per confidence bin
    cal_d: np.ndarray  # (..., M) weighted sum of (target - confidence) per bin
    no_finding: int | None = None  # class index of "No Finding", if the task has one

    @property
    def n_classes(self) -> int:
        return int(self.conf.shape[-1])

    @property
    def total(self) -> np.ndarray:
        return self.conf.sum(axis=(-2, -1))

    @property
    def true_counts(self) -> np.ndarray:  # (..., K) samples per true class
        return self.conf.sum(axis=-1)

    @property
    def pred_counts(self) -> np.ndarray:  # (..., K) samples per predicted class
        return self.conf.sum(axis=-2)

    def ovr(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One-vs-rest (tp, fp, tn, fn) per class, each (..., K)."""
        tp = np.diagonal(self.conf, axis1=-2, axis2=-1)
        fn = self.true_counts - tp
        fp = self.pred_counts - tp
        tn = self.total[..., None] - tp - fn - fp
        return tp, fp, tn, fn

    def __getitem__(self, index: object) -> SliceStats:
        """Select along the leading (batch) axes, e.g. ``stats[0, 2]`` is one slice of one resample."""
        idx = index if isinstance(index, tuple) else (index,)
        return SliceStats(
            conf=self.conf[idx], auc=self.auc[idx], cal_n=self.cal_n[idx], cal_d=self.cal_d[idx],
            no_finding=self.no_finding,
        )


def safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with NaN (and no warning) where ``den == 0``."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _count(x: np.ndarray, axis: int) -> np.ndarray:
    return np.sum(~np.isnan(x), axis=axis)


def _sum_defined(x: np.ndarray, axis: int) -> np.ndarray:
    # sorted first: the rounding of the sum does not depend on the order of groups or classes
    return np.sort(np.where(np.isnan(x), 0.0, x), axis=axis).sum(axis=axis)


def nansum(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Sum of the defined entries; NaN when none is defined."""
    return np.where(_count(x, axis) > 0, _sum_defined(x, axis), np.nan)


def nanmean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return safe_div(_sum_defined(x, axis), _count(x, axis))


def nanvar(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Population variance (ddof=0) of the defined entries."""
    mean = np.expand_dims(nanmean(x, axis), axis)
    return nanmean((x - mean) ** 2, axis)


def nanmin(x: np.ndarray, axis: int = -1) -> np.ndarray:
    m = np.where(np.isnan(x), np.inf, x).min(axis=axis, initial=np.inf)
    return np.where(_count(x, axis) > 0, m, np.nan)


def nanmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    m = np.where(np.isnan(x), -np.inf, x).max(axis=axis, initial=-np.inf)
    return np.where(_count(x, axis) > 0, m, np.nan)


def nanrange(x: np.ndarray, axis: int = -1, min_count: int = 2) -> np.ndarray:
    """max - min over the defined entries; NaN with fewer than ``min_count`` of them."""
    r = nanmax(x, axis) - nanmin(x, axis)
    return np.where(_count(x, axis) >= min_count, r, np.nan)
