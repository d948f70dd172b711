"""Linear probe: frozen probe features, scikit-learn logistic regression.

Features are standardised with statistics of the training split. The inverse regularisation strength ``C``
is chosen on the validation split only (by validation AUC, macro one-vs-rest for multiclass; ties go to
the stronger regularisation), and the chosen model, fitted on the training split, predicts val and test.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from fairbench.adapters.base import AdaptContext, Adapter
from fairbench.errors import DataError
from fairbench.progress import track

__all__ = ["LinearProbe"]


def _val_auc(y: np.ndarray, probs: np.ndarray) -> float:
    if len(np.unique(y)) < 2:
        return float("nan")
    if probs.shape[1] == 2:
        return float(roc_auc_score(y, probs[:, 1]))
    return float(roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=np.arange(probs.shape[1])))


class LinearProbe(Adapter):
    name = "linear_probe"
    description = "Linear probe: frozen probe features, logistic regression with C chosen on validation"
    defaults = {"c_grid": [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0], "max_iter": 1000}

    def run(self, ctx: AdaptContext) -> dict[str, np.ndarray]:
        n_classes = len(ctx.task.classes)
        x_tr = ctx.encode("train")["feature"]
        y_tr = ctx.split("train").labels
        missing = sorted(set(range(n_classes)) - set(np.unique(y_tr).tolist()))
        if missing:
            names = [ctx.task.classes[i] for i in missing]
            raise DataError(f"task '{ctx.task.name}': the training split has no sample of class(es) {names}; "
                            f"a linear probe cannot learn them")
        x_val = ctx.encode("val")["feature"]
        y_val = ctx.split("val").labels
        scaler = StandardScaler().fit(x_tr)
        x_tr_s, x_val_s = scaler.transform(x_tr), scaler.transform(x_val)
        scores: dict[float, float] = {}
        best = None
        for c in track(sorted(float(c) for c in self.params["c_grid"]), "linear probe: C on validation"):
            clf = self._fit(x_tr_s, y_tr, c)
            score = _val_auc(y_val, clf.predict_proba(x_val_s))
            scores[c] = score
            if best is None or (not np.isnan(score) and (np.isnan(best[1]) or score > best[1])):
                best = (c, score, clf)
        assert best is not None
        c, score, clf = best
        self.fitted.update({"C": c, "val_auc": score, "val_auc_by_C": {str(k): v for k, v in scores.items()},
                            "selected_on": "val"})
        out = {"val": clf.predict_proba(x_val_s)}
        out["test"] = clf.predict_proba(scaler.transform(ctx.encode("test")["feature"]))
        return out

    def _fit(self, x: np.ndarray, y: np.ndarray, c: float) -> LogisticRegression:
        clf = LogisticRegression(C=c, max_iter=int(self.params["max_iter"]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(x, y)
        return clf
