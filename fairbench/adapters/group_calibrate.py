"""``group_calibrate``: per-group recalibration of a base adapter's scores, fitted on the validation split only.

The base adapter (``base``, default ``linear_probe``, ``base_params`` ``KEY=VALUE`` items) gives validation and
test probabilities of the positive class; with ``L = logit(p)`` (p clipped to [1e-6, 1 - 1e-6]), per group ``g``
of ``attribute`` (``auto``: race when the task has it, else its first attribute; ``a*b`` an intersection;
unknown is a group of its own):

- ``method=platt`` (default): Platt scaling, ``p' = sigmoid(a_g + b_g L)``, ``(a_g, b_g)`` the unpenalised
  logistic-regression fit of the validation labels on ``L`` (Platt 1999, on the model's logit);
- ``method=temperature``: temperature scaling, ``p' = sigmoid(L / T_g)``, ``T_g`` minimising the validation
  negative log-likelihood (Guo et al., ICML 2017), one temperature per group.

Only the validation split is used to fit; test scores are transformed with the fitted parameters.

**It needs the protected attribute at prediction time**: every test sample's group chooses its calibration map.
That is recorded in metrics.json (``adapt.fitted.needs_attribute_at_prediction``), said in the run summary, and
rules the method out wherever the attribute may not be used to decide. Binary tasks only.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import expit, log_expit

from fairbench.adapters._trainable import resolve_attribute
from fairbench.adapters.base import AdaptContext, Adapter
from fairbench.adapters.fair_threshold import base_adapter
from fairbench.errors import FairbenchError
from fairbench.train.groups import group_labels

__all__ = ["METHODS", "GroupCalibrate", "apply_calibration", "fit_calibration", "logit"]

METHODS = ("platt", "temperature")
_EPS = 1e-6


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def _nll(z: np.ndarray, y: np.ndarray) -> float:
    return float(-np.sum(y * log_expit(z) + (1 - y) * log_expit(-z)))


def fit_calibration(score: np.ndarray, y: np.ndarray, method: str) -> dict[str, float]:
    """Calibration parameters of one group from its validation probabilities ``score`` and 0/1 labels ``y``."""
    x, y = logit(score), np.asarray(y, dtype=np.float64)
    if method == "temperature":
        res = minimize_scalar(lambda log_t: _nll(x / np.exp(log_t), y), bounds=(-5.0, 5.0), method="bounded",
                              options={"xatol": 1e-10})
        return {"temperature": float(np.exp(res.x))}
    res = minimize(lambda w: _nll(w[0] + w[1] * x, y), np.array([0.0, 1.0]), method="BFGS",
                   jac=lambda w: np.array([np.sum(expit(w[0] + w[1] * x) - y),
                                           np.sum((expit(w[0] + w[1] * x) - y) * x)]),
                   options={"gtol": 1e-10})
    return {"intercept": float(res.x[0]), "slope": float(res.x[1])}


def apply_calibration(score: np.ndarray, params: dict[str, float]) -> np.ndarray:
    x = logit(score)
    if "temperature" in params:
        return expit(x / params["temperature"])
    return expit(params["intercept"] + params["slope"] * x)


class GroupCalibrate(Adapter):
    name = "group_calibrate"
    description = ("Post-processing: Platt or temperature scaling per group (fitted on validation) of a base "
                   "adapter's scores; NEEDS THE PROTECTED ATTRIBUTE AT PREDICTION TIME; binary tasks")
    defaults = {"base": "linear_probe", "base_params": [""], "method": "platt", "attribute": "auto"}
    post_processor: ClassVar[bool] = True

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        super().__init__(params)
        p = self.params
        if p["method"] not in METHODS:
            raise FairbenchError(f"adapter '{self.name}': method must be one of {', '.join(METHODS)}, "
                                 f"got {p['method']!r}")
        self.base: Adapter = base_adapter(self.name, str(p["base"]), list(p["base_params"]))

    def run(self, ctx: AdaptContext) -> dict[str, np.ndarray]:
        if len(ctx.task.classes) != 2:
            raise FairbenchError(f"adapter '{self.name}': task '{ctx.task.name}' has {len(ctx.task.classes)} "
                                 f"classes; per-group Platt/temperature scaling is for binary tasks")
        attribute = resolve_attribute(ctx, self.name, str(self.params["attribute"]), intersections=True)
        groups = {s: np.asarray(group_labels(ctx.split(s).attributes, attribute)) for s in ("val", "test")}
        unseen = sorted(set(groups["test"]) - set(groups["val"]))
        if unseen:
            raise FairbenchError(f"adapter '{self.name}': group(s) {', '.join(unseen)} of '{attribute}' are in the "
                                 f"test split but not in validation, so they have no fitted calibration")
        y_val = ctx.split("val").labels
        for g in sorted(set(groups["val"])):
            if len(np.unique(y_val[groups["val"] == g])) < 2:
                raise FairbenchError(f"adapter '{self.name}': group {g} of '{attribute}' has one class only in the "
                                     f"validation split; its calibration cannot be fitted")
        base_probs = self.base.run(ctx)
        method = str(self.params["method"])
        fitted = {g: fit_calibration(base_probs["val"][groups["val"] == g, 1], y_val[groups["val"] == g], method)
                  for g in sorted(set(groups["val"]))}
        out = {}
        for s in ("val", "test"):
            p1 = np.empty(len(groups[s]))
            for g, params in fitted.items():
                m = groups[s] == g
                p1[m] = apply_calibration(base_probs[s][m, 1], params)
            out[s] = np.column_stack([1.0 - p1, p1])
        self.fitted.update({
            "needs_attribute_at_prediction": True, "attribute": attribute, "fitted_on": "val", "method": method,
            "uses": "per-group calibration maps",
            "groups": {g: int((groups["val"] == g).sum()) for g in fitted}, "params": fitted,
            "base": {"name": self.base.name, "params": self.base.params, "fitted": self.base.fitted}})
        return out

    def finish(self, ctx: AdaptContext) -> None:
        self.base.finish(ctx)
