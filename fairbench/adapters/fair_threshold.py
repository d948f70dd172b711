"""``fair_threshold``: group-specific thresholds on a base adapter's scores, fitted with fairlearn's
``ThresholdOptimizer`` (Hardt, Price and Srebro, NeurIPS 2016) on the validation split and applied to test.

The base adapter (``base``, default ``linear_probe``, with ``base_params`` ``KEY=VALUE`` items) runs first and
gives validation and test probabilities of the positive class. ``ThresholdOptimizer(constraints=constraint,
objective=objective, prefit=True, predict_method="predict")`` is fitted on the validation scores, labels and
groups of ``attribute`` (``auto``: race when the task has it, else its first attribute; ``a*b`` an
intersection; unknown is a group of its own), and its randomised per-group thresholds are applied to the test
scores. fairlearn's rule is randomised: per group it mixes two thresholds (and, for equalized odds, a constant
prediction with weight ``p_ignore``). Each sample's probability of a positive decision under it, ``P(yhat = 1)``
(fairlearn's ``_pmf_predict``, whose ``predict(..., random_state=...)`` draws ``yhat = 1`` with exactly that
probability), is both the probability column and the ``p_decide_positive`` column of the predictions, so every
threshold metric (accuracy, F1, TPR, FPR, DPD, DEOdds, ...) is the fitted rule's expected rate, not a 0.5
threshold of ``P(yhat = 1)`` (which can drop a whole group). AUC and ECE read ``P(yhat = 1)``, a coarse score
with a handful of distinct values.

**It needs the protected attribute at prediction time**: every test sample's group chooses its threshold. That
is recorded in metrics.json (``adapt.fitted.needs_attribute_at_prediction``), said in the run summary, and
rules the method out wherever the attribute may not be used to decide. Binary tasks only.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from fairbench.adapters._trainable import resolve_attribute
from fairbench.adapters.base import ADAPTERS, AdaptContext, Adapter
from fairbench.errors import FairbenchError
from fairbench.kv import parse_kv
from fairbench.train.groups import group_labels

__all__ = ["CONSTRAINTS", "OBJECTIVES", "FairThreshold"]

CONSTRAINTS = ("equalized_odds", "demographic_parity", "true_positive_rate_parity")
OBJECTIVES = ("balanced_accuracy_score", "accuracy_score")


def _scores_estimator() -> Any:
    """A fitted scikit-learn estimator standing in for the base model: ``predict(X)`` is the score column
    (``ThresholdOptimizer(prefit=True)`` only calls ``predict``)."""
    from sklearn.base import BaseEstimator, ClassifierMixin

    class Scores(ClassifierMixin, BaseEstimator):
        def fit(self, x: Any, y: Any) -> Any:
            self.classes_ = np.array([0, 1])
            return self

        def predict(self, x: Any) -> np.ndarray:
            return np.asarray(x, dtype=np.float64)[:, 0]

    return Scores().fit(None, None)


def _parse_base_params(adapter: str, items: list[str]) -> dict[str, str]:
    return parse_kv((item for item in items if item), f"adapter '{adapter}': base_params item")


def base_adapter(adapter: str, base: str, base_params: list[str]) -> Adapter:
    """The scoring adapter a post-processor (``fair_threshold``, ``group_calibrate``) runs first: any adapter that
    produces scores, with its ``KEY=VALUE`` parameters; a post-processor as base is a one-line error."""
    base_cls = ADAPTERS.get(base)
    if getattr(base_cls, "post_processor", False):
        raise FairbenchError(f"adapter '{adapter}': base '{base}' is itself a post-processor; name an "
                             f"adapter that produces scores (e.g. linear_probe, mlp, zeroshot)")
    return base_cls(_parse_base_params(adapter, base_params))


class FairThreshold(Adapter):
    name = "fair_threshold"
    description = ("Post-processing: fairlearn ThresholdOptimizer (per-group thresholds, fitted on validation) on a "
                   "base adapter's scores; NEEDS THE PROTECTED ATTRIBUTE AT PREDICTION TIME; binary tasks")
    defaults = {"base": "linear_probe", "base_params": [""], "constraint": "equalized_odds",
                "objective": "balanced_accuracy_score", "attribute": "auto", "grid_size": 1000}
    #: a post-processor of another adapter's scores (never the base of another post-processor)
    post_processor: ClassVar[bool] = True
    #: its decisions are randomised (:attr:`decisions`): a cell scored otherwise (an older fairbench) is stale
    randomised_decisions: ClassVar[bool] = True

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        super().__init__(params)
        p = self.params
        if p["constraint"] not in CONSTRAINTS:
            raise FairbenchError(f"adapter '{self.name}': constraint must be one of {', '.join(CONSTRAINTS)}, "
                                 f"got {p['constraint']!r}")
        if p["objective"] not in OBJECTIVES:
            raise FairbenchError(f"adapter '{self.name}': objective must be one of {', '.join(OBJECTIVES)}, "
                                 f"got {p['objective']!r}")
        if int(p["grid_size"]) < 2:
            raise FairbenchError(f"adapter '{self.name}': grid_size must be at least 2, got {p['grid_size']!r}")
        self.base: Adapter = base_adapter(self.name, str(p["base"]), list(p["base_params"]))

    def run(self, ctx: AdaptContext) -> dict[str, np.ndarray]:
        from fairlearn.postprocessing import ThresholdOptimizer

        if len(ctx.task.classes) != 2:
            raise FairbenchError(f"adapter '{self.name}': task '{ctx.task.name}' has {len(ctx.task.classes)} "
                                 f"classes; ThresholdOptimizer is for binary tasks")
        attribute = resolve_attribute(ctx, self.name, str(self.params["attribute"]), intersections=True)
        groups = {s: group_labels(ctx.split(s).attributes, attribute) for s in ("val", "test")}
        unseen = sorted(set(groups["test"]) - set(groups["val"]))
        if unseen:
            raise FairbenchError(f"adapter '{self.name}': group(s) {', '.join(unseen)} of '{attribute}' are in the "
                                 f"test split but not in validation, so they have no fitted threshold")
        base_probs = self.base.run(ctx)
        scores = {s: base_probs[s][:, 1:2].astype(np.float64) for s in ("val", "test")}
        opt = ThresholdOptimizer(estimator=_scores_estimator(), constraints=self.params["constraint"],
                                 objective=self.params["objective"], grid_size=int(self.params["grid_size"]),
                                 prefit=True, predict_method="predict")
        opt.fit(scores["val"], ctx.split("val").labels, sensitive_features=groups["val"])
        out = {}
        for s in ("val", "test"):
            # P(yhat = 1) of fairlearn's randomised rule (private name; tests/test_adapters_mitigation.py checks
            # it against the mean of many public predict(..., random_state=k) draws)
            p1 = np.asarray(opt._pmf_predict(scores[s], sensitive_features=groups[s]), dtype=np.float64)[:, 1]
            out[s] = np.column_stack([1.0 - p1, p1])
            self.decisions[s] = p1
        self.fitted.update({
            "needs_attribute_at_prediction": True, "attribute": attribute, "fitted_on": "val",
            "constraint": self.params["constraint"], "objective": self.params["objective"],
            "groups": {g: int((groups["val"] == g).sum()) for g in sorted(set(groups["val"]))},
            "thresholds": _thresholds(opt), "output": "P(yhat = 1) under fairlearn's randomised group thresholds",
            "decision_rule": "fairlearn's randomised rule; threshold metrics are its expected rates (column "
                             "p_decide_positive), AUC and ECE read P(yhat = 1), a coarse score",
            "base": {"name": self.base.name, "params": self.base.params, "fitted": self.base.fitted}})
        return out

    def finish(self, ctx: AdaptContext) -> None:
        self.base.finish(ctx)


def _thresholds(opt: Any) -> dict[str, Any]:
    """Per group: fairlearn's interpolation (p0, operation0, p1, operation1) as plain values."""
    out: dict[str, Any] = {}
    for group, rule in getattr(opt, "interpolated_thresholder_", None).interpolation_dict.items():
        out[str(group)] = {k: (float(v) if isinstance(v, (int, float, np.floating)) else str(v))
                           for k, v in dict(rule).items()}
    return out
