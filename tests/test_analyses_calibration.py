"""Calibration by group (fairbench/analyses/calibration.py) and the group_calibrate post-processing adapter.

References built here: scikit-learn's unpenalised LogisticRegression for the slope fit and for Platt scaling,
a scipy minimisation of the negative log-likelihood written out here for the intercept (offset) fit and for
temperature scaling, and a simulation of perfectly calibrated data for the intervals' coverage.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize_scalar
from sklearn.linear_model import LogisticRegression

from fairbench.analyses.calibration import calibration_by_group, calibration_fit
from fairbench.pipeline import RunConfig, run_cell

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _nll(z: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum(np.logaddexp(0, z) - y * z))


def _data(seed: int, n: int, a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1.5, n)
    p = 1 / (1 + np.exp(-x))
    y = (rng.random(n) < 1 / (1 + np.exp(-(a + b * x)))).astype(float)
    return p, y


def test_slope_and_intercept_match_references() -> None:
    p, y = _data(0, 800, 0.4, 0.6)
    rec = calibration_fit(p, y)
    lr = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10000).fit(_logit(p)[:, None], y)
    assert rec["slope"] == pytest.approx(float(lr.coef_[0, 0]), abs=1e-6)
    x = _logit(p)
    a = minimize_scalar(lambda a: _nll(a + x, y), bounds=(-5, 5), method="bounded", options={"xatol": 1e-12}).x
    assert rec["intercept"] == pytest.approx(a, abs=1e-6)
    assert rec["slope_ci"][0] < rec["slope"] < rec["slope_ci"][1] and rec["slope_ci"][1] < 1  # overconfident
    assert rec["intercept_ci"][0] > 0  # under-predicts


def test_intervals_cover_at_95_percent_on_calibrated_data() -> None:
    cover_s = cover_i = 0
    reps = 400
    for seed in range(reps):
        p, y = _data(100 + seed, 200, 0.0, 1.0)
        rec = calibration_fit(p, y)
        cover_s += rec["slope_ci"][0] <= 1 <= rec["slope_ci"][1]
        cover_i += rec["intercept_ci"][0] <= 0 <= rec["intercept_ci"][1]
    assert abs(cover_s / reps - 0.95) <= 0.035 and abs(cover_i / reps - 0.95) <= 0.035, (cover_s, cover_i)


def test_by_group_and_undefined_group() -> None:
    p, y = _data(1, 600, 0.0, 1.0)
    g = np.where(np.arange(600) < 300, "A", "B").astype(object)
    y[g == "B"] = 0  # one class only: undefined, with a reason
    g[:5] = None
    out = calibration_by_group(p, y, {"grp": g})
    a = out["grp"]["groups"]["A"]
    assert a["n"] == 295 and a["slope"] == pytest.approx(calibration_fit(p[5:300], y[5:300])["slope"])
    assert out["grp"]["groups"]["B"]["slope"] is None and "both classes" in out["grp"]["groups"]["B"]["reason"]


@pytest.fixture(scope="module")
def tasks(micro_task_dir) -> Path:
    return micro_task_dir("synth_micro_cal", n=(64, 48, 48))


def _config(tmp_path: Path, tasks: Path, adapt: str, **args: str) -> RunConfig:
    return RunConfig(task="synth_micro_cal", model="tinyclip", adapt=adapt, seed=0, out=tmp_path / "results",
                     weights="random", device="cpu", tasks_dirs=(tasks,), n_boot=0, adapt_args=args)


@pytest.mark.parametrize("method", ["platt", "temperature"])
def test_group_calibrate_fits_each_group_on_validation(tmp_path: Path, tasks: Path, method: str) -> None:
    result = run_cell(_config(tmp_path, tasks, "group_calibrate", attribute="sex", method=method))
    fitted = result.metrics["adapt"]["fitted"]
    assert fitted["needs_attribute_at_prediction"] is True and fitted["fitted_on"] == "val"
    base = run_cell(_config(tmp_path / "base", tasks, "linear_probe"))
    frame = pd.read_parquet(base.path / "predictions.parquet")
    ours = pd.read_parquet(result.path / "predictions.parquet")
    val, test = frame[frame["split"] == "val"], frame[frame["split"] == "test"]
    got = ours[ours["split"] == "test"]
    assert got["sample_id"].tolist() == test["sample_id"].tolist()
    for g in ("F", "M"):
        v, t = val[val["attr_sex"] == g], test[test["attr_sex"] == g]
        xv, yv, xt = _logit(v["prob_abnormal"].to_numpy()), v["label"].to_numpy(), _logit(t["prob_abnormal"].to_numpy())
        if method == "platt":
            lr = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10000).fit(xv[:, None], yv)
            expected = lr.predict_proba(xt[:, None])[:, 1]
        else:
            log_t = minimize_scalar(lambda s, xv=xv, yv=yv: _nll(xv / np.exp(s), yv), bounds=(-5, 5), method="bounded",
                                    options={"xatol": 1e-12}).x
            expected = 1 / (1 + np.exp(-xt / np.exp(log_t)))
        assert got.loc[got["attr_sex"] == g, "prob_abnormal"].to_numpy() == pytest.approx(expected, abs=1e-5)
