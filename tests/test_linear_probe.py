"""The linear probe reaches the unique optimum of its L2-regularised logistic regression (so its numbers do not
depend on where a solver stopped, which depends on the machine's floating-point kernels)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from fairbench.adapters.linear_probe import LinearProbe


def _data(seed: int = 0, n: int = 600, d: int = 24):
    """Correlated features built element-wise (no BLAS, so the same bytes on every machine)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, 4))
    mix = rng.normal(size=(4, d))
    x = sum(base[:, [i]] * mix[[i], :] for i in range(4)) + 0.3 * rng.normal(size=(n, d))
    y = (base[:, 0] + 0.5 * base[:, 1] + 0.7 * rng.normal(size=n) > 0).astype(int)
    return x.astype(np.float32), y


class _Ctx:
    """What LinearProbe.run reads of an AdaptContext: the task's classes, each split's features and labels."""

    def __init__(self, x, y):
        self.task = SimpleNamespace(name="toy", classes=["neg", "pos"])
        n = len(y)
        cut = {"train": slice(0, n // 2), "val": slice(n // 2, 3 * n // 4), "test": slice(3 * n // 4, n)}
        self._x = {k: x[s] for k, s in cut.items()}
        self._y = {k: y[s] for k, s in cut.items()}

    def encode(self, split):
        return {"feature": self._x[split], "embedding": self._x[split]}

    def split(self, split):
        return SimpleNamespace(labels=self._y[split])


def _optimum(x, y, c):
    """argmin 0.5 |w|^2 + C sum_i log(1 + exp(-s_i (x_i w + b))) (intercept unpenalised; scikit-learn's
    objective), by Newton's method with exact Hessians to a gradient of 1e-13."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    s = 2.0 * y - 1.0
    theta = np.zeros(xb.shape[1])
    reg = np.ones(xb.shape[1])
    reg[-1] = 0.0
    for _ in range(200):
        m = s * (xb @ theta)
        p = 0.5 * (1 + np.tanh(-m / 2))  # sigmoid(-m), stable
        grad = reg * theta - c * xb.T @ (s * p)
        if np.max(np.abs(grad)) < 1e-13:
            break
        hess = np.diag(reg) + c * (xb.T * (p * (1 - p))) @ xb
        theta = theta - np.linalg.solve(hess, grad)
    return theta


def test_probe_reaches_the_regularised_optimum():
    x, y = _data()
    ctx = _Ctx(x, y)
    c = 100.0  # weak regularisation: where a solver stopped early is farthest from the optimum
    probe = LinearProbe({"c_grid": [c]})
    out = probe.run(ctx)
    # the reference: the same standardisation (training statistics), then the optimum by hand
    x_tr = ctx.encode("train")["feature"].astype(np.float64)
    mu, sd = x_tr.mean(0), x_tr.std(0)
    theta = _optimum((x_tr - mu) / sd, ctx.split("train").labels, c)
    x_te = (ctx.encode("test")["feature"].astype(np.float64) - mu) / sd
    want = 1 / (1 + np.exp(-(x_te @ theta[:-1] + theta[-1])))
    got = out["test"][:, 1]
    assert np.max(np.abs(got - want)) <= 1e-8, np.max(np.abs(got - want))
    assert probe.fitted["converged"] is True and probe.fitted["unconverged_C"] == []
    assert probe.fitted["solver"] == "newton-cg" and probe.fitted["tol"] == 1e-10


def test_an_unconverged_fit_is_recorded_and_said(capsys):
    x, y = _data(1)
    probe = LinearProbe({"c_grid": [100.0], "max_iter": 1})
    probe.run(_Ctx(x, y))
    assert probe.fitted["converged"] is False and probe.fitted["unconverged_C"] == [100.0]
    assert "did not reach tolerance" in capsys.readouterr().err
