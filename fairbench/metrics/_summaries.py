"""Fairness summaries of one protected attribute: functions of the per-group values.

``groups[name]`` holds a slice metric per group (group axis last, or before the class axis for per-class
metrics); ``overall[name]`` holds it on all evaluated rows. Groups where an input is undefined are left out
(the suite records which in ``notes``); differences need at least two defined groups. Where the sources
disagree each variant has its own name (see docs/metrics.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from fairbench.metrics._spec import BINARY, MULTICLASS, register_metric
from fairbench.metrics._stats import nanmax, nanmean, nanmin, nanrange, nansum

__all__: list[str] = []  # everything here is reached through the METRICS registry

Arrays = Mapping[str, np.ndarray]
_FAIRCLIP = "FairCLIP (Luo et al. CVPR 2024), modules.py evalute_comprehensive_perf"


def _equity_scaled(metric: str) -> Callable[[Arrays, Arrays], np.ndarray]:
    def es(groups: Arrays, overall: Arrays) -> np.ndarray:
        o = overall[metric]
        deviation = nansum(np.abs(groups[metric] - o[..., None]))
        return o / (1.0 + deviation)  # alpha = 1; NaN when o or every group is undefined

    es.__name__ = f"es_{metric}"
    return es


for _m in ("auc", "acc"):
    register_metric(
        f"es_{_m}", kind="summary", higher_is_better=True, needs_scores=_m == "auc", inputs=(_m,),
        uses_overall=True, source=_FAIRCLIP, label=f"ES-{_m.upper()}",
        description=f"equity-scaled {_m.upper()}: {_m.upper()} / (1 + sum_g |{_m.upper()} - {_m.upper()}_g|), "
        "unweighted sum over groups, alpha = 1",
    )(_equity_scaled(_m))


@register_metric(
    "worst_group_auc", kind="summary", label="worst-group AUC", higher_is_better=True, needs_scores=True, inputs=("auc",),
    source="min_g AUC_g (MEDFAIR, FairMedFM worst-auc)", description="lowest group AUC",
)
def worst_group_auc(groups: Arrays, overall: Arrays) -> np.ndarray:
    return nanmin(groups["auc"])


def _gap(metric: str, name: str, label: str, hib: bool, scores: bool, source: str, description: str,
         **meta: object) -> None:
    def gap(groups: Arrays, overall: Arrays) -> np.ndarray:
        return nanrange(groups[metric])

    gap.__name__ = name
    register_metric(
        name, kind="summary", higher_is_better=hib, needs_scores=scores, inputs=(metric,), min_groups=2,
        source=source, description=description, label=label, **meta,
    )(gap)


_gap("auc", "auc_gap", "AUC gap", False, True, "max_g AUC_g - min_g AUC_g (FairMedFM auc-gap)", "largest minus smallest group AUC")
_gap("macro_f1", "f1_delta", "F1 Δ", False, False, "Sun et al. 2025 (code not found; this definition is fairbench's)",
     "largest minus smallest group macro F1")
_gap("ece", "ece_delta", "ECE Δ", False, True, "max_g ECE_g - min_g ECE_g (FairMedFM ece-gap)",
     "largest minus smallest group ECE")
_gap("underdiagnosis_rate", "underdiagnosis_gap", "underdiagnosis gap", False, False, "Seyyed-Kalantari et al. 2021",
     "largest minus smallest group underdiagnosis rate", needs_no_finding=True)


@register_metric(
    "worst_group_underdiagnosis", kind="summary", label="worst-group underdiagnosis", higher_is_better=False, needs_scores=False,
    inputs=("underdiagnosis_rate",), needs_no_finding=True, source="Seyyed-Kalantari et al. 2021",
    description="highest group underdiagnosis rate",
)
def worst_group_underdiagnosis(groups: Arrays, overall: Arrays) -> np.ndarray:
    return nanmax(groups["underdiagnosis_rate"])


# -- threshold-based group fairness; multiclass: one vs rest per class, and the mean over classes ------
def _dpd(sel: np.ndarray, axis: int) -> np.ndarray:
    return nanrange(sel, axis)


def _deodds(tpr: np.ndarray, fpr: np.ndarray, axis: int) -> np.ndarray:
    return np.maximum(nanrange(tpr, axis), nanrange(fpr, axis))  # NaN if either difference is undefined


def _eqodds(tpr: np.ndarray, fpr: np.ndarray, axis: int) -> np.ndarray:
    return 1.0 - 0.5 * (nanrange(tpr, axis) + nanrange(fpr, axis))


def _eqodds_fairmedfm(tpr: np.ndarray, tnr: np.ndarray, axis: int) -> np.ndarray:
    return 1.0 - 0.5 * (nanrange(tpr, axis) + nanrange(tnr, axis))


_FAMILY = (
    ("dpd", _dpd, ("selection_rate",), False,
     "fairlearn demographic_parity_difference (between_groups)",
     "demographic parity difference: max_g P(yhat=1|g) - min_g P(yhat=1|g)"),
    ("deodds", _deodds, ("tpr", "fpr"), False,
     "fairlearn equalized_odds_difference (between_groups, agg='worst_case')",
     "equalized odds difference: max(TPR range, FPR range) over groups"),
    ("eqodds", _eqodds, ("tpr", "fpr"), True,
     "MEDFAIR utils/evaluation.py cal_eqodd (two groups; ranges over groups here)",
     "equalized-odds score 1 - 0.5 (|dTPR| + |dFPR|), d = max - min over groups; higher is fairer"),
    ("eqodds_fairmedfm", _eqodds_fairmedfm, ("tpr", "tnr"), True,
     "FairMedFM utils/metrics.py organize_results 'eod'",
     "FairMedFM equalized-odds score 1 - 0.5 ((max-min TPR) + (max-min TNR)); higher is fairer"),
)


def _binary(fn, inputs):  # type: ignore[no-untyped-def]
    return lambda groups, overall: fn(*(groups[i] for i in inputs), axis=-1)


def _per_class(fn, inputs):  # type: ignore[no-untyped-def]
    return lambda groups, overall: fn(*(groups[f"{i}_per_class"] for i in inputs), axis=-2)


def _mean_ovr(fn, inputs):  # type: ignore[no-untyped-def]
    return lambda groups, overall: nanmean(fn(*(groups[f"{i}_per_class"] for i in inputs), axis=-2))


#: each family member's (label, label of its one-vs-rest mean)
_FAMILY_LABELS = {"dpd": ("DPD", "DPD (mean OvR)"), "deodds": ("DEOdds", "DEOdds (mean OvR)"),
                  "eqodds": ("EqOdds", "EqOdds (mean OvR)"),
                  "eqodds_fairmedfm": ("EqOdds (FairMedFM)", "EqOdds FairMedFM (mean OvR)")}

for _name, _f, _inputs, _hib, _source, _desc in _FAMILY:
    _pc = tuple(f"{i}_per_class" for i in _inputs)
    _label, _ovr_label = _FAMILY_LABELS[_name]
    register_metric(_name, kind="summary", higher_is_better=_hib, needs_scores=False, tasks=BINARY,
                    inputs=_inputs, min_groups=2, source=_source, description=_desc, label=_label)(
                        _binary(_f, _inputs))
    register_metric(f"{_name}_per_class", kind="summary", higher_is_better=_hib, needs_scores=False,
                    tasks=MULTICLASS, per_class=True, inputs=_pc, min_groups=2, source=_source,
                    description=f"{_desc}; one vs rest, per class", label=f"{_label} per class")(
                        _per_class(_f, _inputs))
    register_metric(f"{_name}_mean_ovr", kind="summary", higher_is_better=_hib, needs_scores=False,
                    tasks=MULTICLASS, inputs=_pc, min_groups=2, source=_source, label=_ovr_label,
                    description=f"{_desc}; one vs rest, mean over classes with a defined value")(
                        _mean_ovr(_f, _inputs))
