"""Utility metrics of one slice of rows (all evaluated rows, or one group).

Each function maps :class:`SliceStats` to an array over the stats' leading axes (plus a class axis for
per-class metrics). Binary tasks read the positive class (index 1); multiclass tasks report rates one
vs rest per class under ``<name>_per_class``. Values are fractions in [0, 1] (tables multiply by 100).
"""

from __future__ import annotations

import numpy as np

from fairbench.metrics._spec import BINARY, MULTICLASS, register_metric
from fairbench.metrics._stats import SliceStats, nanmean, nanvar, safe_div

__all__: list[str] = []  # everything here is reached through the METRICS registry

_SKLEARN = "scikit-learn"


# -- ranking ----------------------------------------------------------------------------------------
@register_metric(
    "auc", kind="slice", label="AUC", higher_is_better=True, needs_scores=True, source=f"ROC AUC ({_SKLEARN} roc_auc_score)",
    description="ROC AUC; binary: of P(positive); multiclass: macro mean of one-vs-rest AUCs",
    undefined="only one class present (ROC AUC needs positives and negatives)",
)
def auc(s: SliceStats) -> np.ndarray:
    if s.n_classes == 2:
        return s.auc[..., 1]
    per_class = s.auc
    return np.where(np.isnan(per_class).any(axis=-1), np.nan, per_class.mean(axis=-1))


@register_metric(
    "auc_per_class", kind="slice", label="AUC per class", higher_is_better=True, needs_scores=True, tasks=MULTICLASS, per_class=True,
    source=f"{_SKLEARN} roc_auc_score, one-vs-rest",
    description="one-vs-rest ROC AUC of each class (multiclass)",
    undefined="class absent from the slice, or the only class present",
)
def auc_per_class(s: SliceStats) -> np.ndarray:
    return s.auc


# -- hard predictions -------------------------------------------------------------------------------
@register_metric(
    "acc", kind="slice", label="ACC", higher_is_better=True, needs_scores=False, source="mean(yhat == y)",
    description="accuracy at the recorded threshold (binary) or argmax (multiclass)", undefined="empty slice",
)
def acc(s: SliceStats) -> np.ndarray:
    return safe_div(np.trace(s.conf, axis1=-2, axis2=-1), s.total)


@register_metric(
    "balanced_accuracy", kind="slice", label="bal. ACC", higher_is_better=True, needs_scores=False,
    source=f"{_SKLEARN} balanced_accuracy_score",
    description="mean recall over the classes present in y_true", undefined="empty slice",
)
def balanced_accuracy(s: SliceStats) -> np.ndarray:
    tp, _, _, fn = s.ovr()
    return nanmean(safe_div(tp, tp + fn))


@register_metric(
    "f1_per_class", kind="slice", label="F1 per class", higher_is_better=True, needs_scores=False, per_class=True,
    source=f"{_SKLEARN} f1_score(average=None)",
    description="F1 of each class, one vs rest",
    undefined="class neither present nor predicted (TP + FP + FN = 0)",
)
def f1_per_class(s: SliceStats) -> np.ndarray:
    tp, fp, _, fn = s.ovr()
    return safe_div(2 * tp, 2 * tp + fp + fn)


@register_metric(
    "f1", kind="slice", label="F1", higher_is_better=True, needs_scores=False, tasks=BINARY,
    source=f"{_SKLEARN} f1_score (binary, positive class)", description="F1 of the positive class (binary)",
    undefined="no positives and no positive predictions (TP + FP + FN = 0)",
)
def f1(s: SliceStats) -> np.ndarray:
    return f1_per_class(s)[..., 1]


@register_metric(
    "macro_f1", kind="slice", label="macro F1", higher_is_better=True, needs_scores=False,
    source=f"{_SKLEARN} f1_score(average='macro'): mean over classes present in y_true or y_pred",
    description="unweighted mean of per-class F1 over classes present or predicted", undefined="empty slice",
)
def macro_f1(s: SliceStats) -> np.ndarray:
    return nanmean(f1_per_class(s))


@register_metric(
    "var_f1", kind="slice", label="Var F1", higher_is_better=False, needs_scores=False, scopes=frozenset({"overall"}),
    source="Sun et al. 2025 (X-ray CLIP fairness): variance of F1 across disease classes",
    description="population variance (ddof=0) of per-class F1 across classes (fairness across diseases)",
    undefined="no class present or predicted",
)
def var_f1(s: SliceStats) -> np.ndarray:
    return nanvar(f1_per_class(s))


# -- calibration ------------------------------------------------------------------------------------
@register_metric(
    "ece", kind="slice", label="ECE", higher_is_better=False, needs_scores=True,
    source="Guo et al. 2017; equal-width bins on [0, 1] (count recorded as ece_bins)",
    description="expected calibration error: sum_b n_b/n |acc_b - conf_b|; binary: P(positive) vs y, "
    "multiclass: top-label confidence vs correctness",
    undefined="empty slice",
)
def ece(s: SliceStats) -> np.ndarray:
    return safe_div(np.abs(s.cal_d).sum(axis=-1), s.cal_n.sum(axis=-1))


# -- one-vs-rest rates: binary names read the positive class, multiclass gets <name>_per_class --------
def _tpr(s: SliceStats) -> np.ndarray:
    tp, _, _, fn = s.ovr()
    return safe_div(tp, tp + fn)


def _fpr(s: SliceStats) -> np.ndarray:
    _, fp, tn, _ = s.ovr()
    return safe_div(fp, fp + tn)


def _tnr(s: SliceStats) -> np.ndarray:
    _, fp, tn, _ = s.ovr()
    return safe_div(tn, tn + fp)


def _fnr(s: SliceStats) -> np.ndarray:
    tp, _, _, fn = s.ovr()
    return safe_div(fn, fn + tp)


def _selection_rate(s: SliceStats) -> np.ndarray:
    return safe_div(s.pred_counts, s.total[..., None])


_RATES = (
    ("tpr", _tpr, True, "true positive rate (sensitivity, recall): TP / (TP + FN)", "no positives (TP + FN = 0)"),
    ("fpr", _fpr, False, "false positive rate: FP / (FP + TN)", "no negatives (FP + TN = 0)"),
    ("tnr", _tnr, True, "true negative rate (specificity): TN / (TN + FP)", "no negatives (TN + FP = 0)"),
    ("fnr", _fnr, False, "false negative rate: FN / (FN + TP)", "no positives (FN + TP = 0)"),
    ("selection_rate", _selection_rate, None, "fraction predicted positive: P(yhat = 1)", "empty slice"),
)


def _positive_class(fn):  # type: ignore[no-untyped-def]
    def binary(s: SliceStats) -> np.ndarray:
        return fn(s)[..., 1]

    binary.__name__ = fn.__name__.lstrip("_")
    return binary


_RATE_LABELS = {"tpr": "TPR", "fpr": "FPR", "tnr": "TNR", "fnr": "FNR", "selection_rate": "selection rate"}

for _name, _fn, _hib, _desc, _undef in _RATES:
    register_metric(
        _name, kind="slice", higher_is_better=_hib, needs_scores=False, tasks=BINARY, source="confusion counts",
        description=f"{_desc} (binary, positive class)", undefined=_undef, label=_RATE_LABELS[_name],
    )(_positive_class(_fn))
    register_metric(
        f"{_name}_per_class", kind="slice", higher_is_better=_hib, needs_scores=False, tasks=MULTICLASS,
        per_class=True, source="confusion counts, one vs rest", description=f"{_desc}, one vs rest per class",
        undefined=_undef.replace("positives", "samples of the class"), label=f"{_RATE_LABELS[_name]} per class",
    )(_fn)


# -- underdiagnosis ---------------------------------------------------------------------------------
@register_metric(
    "underdiagnosis_rate", kind="slice", label="underdiagnosis", higher_is_better=False, needs_scores=False, needs_no_finding=True,
    source="Seyyed-Kalantari et al., Nature Medicine 2021",
    description="fraction of samples with a finding (true class != no_finding_class) predicted 'No Finding'",
    undefined="no samples with a finding",
)
def underdiagnosis_rate(s: SliceStats) -> np.ndarray:
    nf = s.no_finding
    if nf is None:
        raise ValueError("underdiagnosis_rate needs the no-finding class index")
    sick = np.ones(s.n_classes, dtype=bool)
    sick[nf] = False
    missed = s.conf[..., sick, nf].sum(axis=-1)
    return safe_div(missed, s.true_counts[..., sick].sum(axis=-1))
