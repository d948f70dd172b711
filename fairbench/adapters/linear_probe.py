"""Linear probe: frozen probe features, scikit-learn logistic regression.

Features are standardised with statistics of the training split. The inverse regularisation strength ``C``
is chosen on the validation split only (by validation AUC, macro one-vs-rest for multiclass; ties go to
the stronger regularisation), and the chosen model, fitted on the training split, predicts val and test.

Each fit is solved to its optimum, not stopped early: an L2-regularised logistic regression has one minimum,
and a solver stopped at a loose tolerance stops at a point that depends on the floating-point kernels (BLAS,
vector width) of the machine, so the probe's numbers would too (lbfgs at its default tolerance 1e-4 moved the
committed CI baseline's probe cells by up to 0.02 between OpenBLAS kernel sets, docs/ci.md). Features are float64 and the solver is Newton's method with conjugate-gradient
steps (scikit-learn's ``newton-cg``: Hessian-vector products, no Hessian in memory, quadratic convergence near
the optimum) at tolerance 1e-10. Measured on correlated 64-d features, 2000 samples, C from 1e-3 to 100:
probabilities under OpenBLAS Haswell vs Sandybridge kernels differ by at most 2e-11 (lbfgs at its default
tolerance, as before: up to 0.048; lbfgs at 1e-10: 2.4e-5, it stops on its relative-decrease test). A fit that
does not converge is recorded (``fitted.converged``) and said.
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
from fairbench.progress import track, warn

__all__ = ["SOLVER", "LinearProbe"]

#: the solver every fit uses: Newton-CG reaches the unique optimum (to ``tol``) whatever the BLAS kernels
SOLVER = "newton-cg"


def _val_auc(y: np.ndarray, probs: np.ndarray) -> float:
    if len(np.unique(y)) < 2:
        return float("nan")
    if probs.shape[1] == 2:
        return float(roc_auc_score(y, probs[:, 1]))
    return float(roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=np.arange(probs.shape[1])))


class LinearProbe(Adapter):
    name = "linear_probe"
    description = "Linear probe: frozen probe features, logistic regression with C chosen on validation"
    defaults = {"c_grid": [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0], "max_iter": 1000, "tol": 1e-10}

    def run(self, ctx: AdaptContext) -> dict[str, np.ndarray]:
        n_classes = len(ctx.task.classes)
        x_tr = np.asarray(ctx.encode("train")["feature"], dtype=np.float64)
        y_tr = ctx.split("train").labels
        missing = sorted(set(range(n_classes)) - set(np.unique(y_tr).tolist()))
        if missing:
            names = [ctx.task.classes[i] for i in missing]
            raise DataError(f"task '{ctx.task.name}': the training split has no sample of class(es) {names}; "
                            f"a linear probe cannot learn them")
        x_val = np.asarray(ctx.encode("val")["feature"], dtype=np.float64)
        y_val = ctx.split("val").labels
        scaler = StandardScaler().fit(x_tr)
        x_tr_s, x_val_s = scaler.transform(x_tr), scaler.transform(x_val)
        scores: dict[float, float] = {}
        unconverged: list[float] = []
        best = None
        solver = SOLVER
        for c in track(sorted(float(c) for c in self.params["c_grid"]), "linear probe: C on validation"):
            clf, converged = self._fit(x_tr_s, y_tr, c, solver)
            if not converged:
                unconverged.append(c)
            score = _val_auc(y_val, clf.predict_proba(x_val_s))
            scores[c] = score
            if best is None or (not np.isnan(score) and (np.isnan(best[1]) or score > best[1])):
                best = (c, score, clf)
        assert best is not None
        c, score, clf = best
        if unconverged:
            warn(f"linear probe: the {solver} solver did not reach tolerance {self.params['tol']:g} within "
                 f"max_iter={self.params['max_iter']} for C={', '.join(f'{u:g}' for u in unconverged)}; those "
                 f"fits may depend on the machine's floating-point kernels (raise max_iter)")
        self.fitted.update({"C": c, "val_auc": score, "val_auc_by_C": {str(k): v for k, v in scores.items()},
                            "selected_on": "val", "solver": solver, "tol": float(self.params["tol"]),
                            "n_iter": int(np.max(clf.n_iter_)), "converged": c not in unconverged,
                            "unconverged_C": unconverged})
        out = {"val": clf.predict_proba(x_val_s)}
        x_te = np.asarray(ctx.encode("test")["feature"], dtype=np.float64)
        out["test"] = clf.predict_proba(scaler.transform(x_te))
        return out

    def _fit(self, x: np.ndarray, y: np.ndarray, c: float, solver: str) -> tuple[LogisticRegression, bool]:
        clf = LogisticRegression(C=c, solver=solver, tol=float(self.params["tol"]),
                                 max_iter=int(self.params["max_iter"]))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            clf.fit(x, y)
        converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
        return clf, converged
