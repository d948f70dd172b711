"""Equal-width confidence bins and reliability-curve data."""

from __future__ import annotations

import numpy as np

__all__ = ["bin_index", "reliability_curve"]


def bin_index(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin of each confidence in ``n_bins`` equal-width bins on [0, 1]: (lo, hi], with 0 in the first bin."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)


def reliability_curve(y_true: np.ndarray, y_prob: np.ndarray, *, n_bins: int = 15) -> dict[str, object]:
    """Data for a reliability diagram, in the same bins as the suite's ECE.

    ``y_prob`` is P(positive) of shape (n,) for a binary task (frequency = fraction positive per bin) or
    class probabilities of shape (n, K) (top-label confidence; frequency = accuracy per bin). Empty bins
    have ``None`` confidence and frequency. Rows with a NaN probability are left out and counted.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    y = np.asarray(y_true)
    p = np.asarray(y_prob, dtype=np.float64)
    if p.ndim == 1:
        ok = ~np.isnan(p)
        conf, target = p[ok], (y[ok] == 1).astype(np.float64)
    else:
        ok = ~np.isnan(p).any(axis=1)
        conf = p[ok].max(axis=1)
        target = (p[ok].argmax(axis=1) == y[ok]).astype(np.float64)
    bins = bin_index(conf, n_bins)
    count = np.bincount(bins, minlength=n_bins)
    sum_conf = np.bincount(bins, weights=conf, minlength=n_bins)
    sum_target = np.bincount(bins, weights=target, minlength=n_bins)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    mean_conf = [float(c / k) if k else None for c, k in zip(sum_conf, count, strict=True)]
    freq = [float(t / k) if k else None for t, k in zip(sum_target, count, strict=True)]
    total = int(count.sum())
    ece = float(np.abs(sum_target - sum_conf).sum() / total) if total else None
    return {
        "bin_lower": edges[:-1].tolist(),
        "bin_upper": edges[1:].tolist(),
        "count": count.astype(int).tolist(),
        "confidence": mean_conf,
        "frequency": freq,
        "ece": ece,
        "n_nan": int((~ok).sum()),
    }
