"""FairMedFM's binary-classification fairness summary (Jin et al., NeurIPS 2024 D&B), under its own names.

Definitions as in FairMedFM's ``utils/metrics.py`` and the ``fairmedfm`` package 0.4.2 (``metrics.py``,
``evaluation.py``); /work/shared/reference/analyses.md section 8 and docs/metrics.md, "FairMedFM variants":

- per attribute, on the evaluated rows whose attribute is known; groups lacking one of the two labels are skipped
  (listed under ``skipped``) and left out of every gap;
- ``overall-auc``/``-bce``/``-ece`` on those rows; ``overall-acc`` at the best-F1 threshold;
- best-F1 threshold: from ``precision_recall_curve`` on those rows (all groups together, the final recall-0 point
  dropped), F1 = 2PR / (P + R + 1e-8), the first maximum; predictions are ``prob > threshold`` (strict).
  THIS THRESHOLD IS CHOSEN ON THE EVALUATED (TEST) LABELS, as FairMedFM does: it leaks the labels;
- ECE: 10 equal-width bins over the observed range of the probabilities (``pandas.cut``), bin-size weighted mean of
  |mean prob - fraction positive| over non-empty bins; BCE: mean binary cross-entropy, log terms clamped at -100;
- ``worst-auc`` = min group AUC; ``auc-gap``, ``acc-gap``, ``bce-gap``, ``ece-gap`` = max - min over groups;
  ``eod`` = 1 - (TPR gap + TNR gap) / 2 and ``eo`` = TPR gap, at the best-F1 threshold.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve, roc_auc_score

__all__ = ["NAMES", "best_f1_threshold", "fairmedfm_variants", "fmfm_bce", "fmfm_ece"]

NAMES = ("overall-auc", "overall-acc", "overall-bce", "overall-ece", "worst-auc", "auc-gap", "acc-gap", "bce-gap",
         "ece-gap", "eod", "eo")
NOTE = ("FairMedFM definitions; accuracy, eod and eo use the best-F1 threshold chosen on the evaluated samples "
        "themselves (their labels included), as FairMedFM does: optimistic, not comparable to fairbench's own "
        "thresholded metrics")


def best_f1_threshold(prob: np.ndarray, label: np.ndarray) -> float:
    precision, recall, thresholds = precision_recall_curve(label, prob)
    p, r = precision[:-1], recall[:-1]
    return float(thresholds[int(np.argmax(2 * p * r / (p + r + 1e-8)))])


def fmfm_bce(prob: np.ndarray, label: np.ndarray) -> float:
    with np.errstate(divide="ignore"):
        lp, lq = np.maximum(np.log(prob), -100.0), np.maximum(np.log(1 - prob), -100.0)
    return float(-np.mean(label * lp + (1 - label) * lq))


def fmfm_ece(prob: np.ndarray, label: np.ndarray, n_bins: int = 10) -> float:
    bins = pd.cut(prob, n_bins, labels=False)
    ids, inverse, sizes = np.unique(bins, return_inverse=True, return_counts=True)
    mean_p = np.bincount(inverse, weights=prob, minlength=len(ids)) / sizes
    mean_y = np.bincount(inverse, weights=label, minlength=len(ids)) / sizes
    return float(np.sum(np.abs(mean_p - mean_y) * sizes) / sizes.sum())


def _rates(prob: np.ndarray, label: np.ndarray, t: float) -> tuple[float, float, float]:
    yhat = prob > t
    pos, neg = label == 1, label == 0
    tpr = float((yhat & pos).sum() / pos.sum())
    tnr = float((~yhat & neg).sum() / neg.sum())
    return float((yhat == pos).mean()), tpr, tnr


def _one(prob: np.ndarray, label: np.ndarray, group: np.ndarray) -> dict[str, Any]:
    present = np.array([g is not None for g in group], dtype=bool)
    p, y, g = prob[present], label[present], group[present]
    order = sorted({str(v) for v in g})
    valid, skipped = [], {}
    for v in order:
        lab = np.unique(y[g == v])
        if len(lab) < 2:
            skipped[v] = f"only label {int(lab[0])}"
        else:
            valid.append(v)
    rec: dict[str, Any] = {"n": len(y), "n_groups": len(valid), "n_unknown": int((~present).sum())}
    if skipped:
        rec["skipped"] = skipped
    if len(np.unique(y)) < 2 or len(valid) < 2:
        rec["reason"] = "fewer than two groups with both labels" if len(valid) < 2 else "one label only"
        return rec
    t = best_f1_threshold(p, y)
    acc, _, _ = _rates(p, y, t)
    per: dict[str, dict[str, float]] = {}
    for v in valid:
        m = g == v
        gacc, tpr, tnr = _rates(p[m], y[m], t)
        per[v] = {"n": int(m.sum()), "auc": float(roc_auc_score(y[m], p[m])), "acc": gacc, "tpr": tpr, "tnr": tnr,
                  "bce": fmfm_bce(p[m], y[m]), "ece": fmfm_ece(p[m], y[m])}

    def gap(k: str) -> float:
        vals = [per[v][k] for v in valid]
        return float(max(vals) - min(vals))

    rec.update({
        "overall-auc": float(roc_auc_score(y, p)), "overall-acc": acc, "overall-bce": fmfm_bce(p, y),
        "overall-ece": fmfm_ece(p, y), "worst-auc": float(min(per[v]["auc"] for v in valid)),
        "auc-gap": gap("auc"), "acc-gap": gap("acc"), "bce-gap": gap("bce"), "ece-gap": gap("ece"),
        "eod": float(1 - (gap("tpr") + gap("tnr")) / 2), "eo": gap("tpr"), "threshold_best_f1": t, "groups": per,
    })
    return rec


def fairmedfm_variants(prob: np.ndarray, label: np.ndarray, attributes: dict[str, np.ndarray]) -> dict[str, Any]:
    """``variants.fairmedfm``: one record per attribute, from positive-class probabilities and 0/1 labels."""
    prob = np.asarray(prob, dtype=np.float64)
    label = np.asarray(label, dtype=np.float64)
    out: dict[str, Any] = {}
    for attr, groups in attributes.items():
        out[attr] = _one(prob, label, np.asarray(groups, dtype=object))
    return out
