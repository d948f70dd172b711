"""Underdiagnosis by group (fairbench/analyses/underdiagnosis.py), recorded by metrics_document.

Reference: the rate counted here with numpy from the predictions table (Seyyed-Kalantari et al.'s FPR of
'No Finding': among rows whose true class is not 'normal', the share predicted 'normal' at the threshold).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fairbench.data.task import get_task
from fairbench.pipeline import metrics_document


def _frame(n: int = 900, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sex = rng.choice(["F", "M"], n)
    age = rng.choice(["<60", ">=60"], n)
    y = rng.integers(0, 2, n)
    # older patients' findings are missed more often: lower scores for their positives
    p = 1 / (1 + np.exp(-(2.0 * y * np.where(age == ">=60", 0.4, 1.0) - 0.8 + rng.normal(size=n))))
    return pd.DataFrame({"sample_id": [str(i) for i in range(n)], "split": "test", "label": y,
                         "prob_normal": 1 - p, "prob_abnormal": p, "attr_sex": pd.array(sex, dtype="string"),
                         "attr_age": pd.array(age, dtype="string"),
                         "attr_race": pd.array(rng.choice(["A", "B"], n), dtype="string")})


def test_underdiagnosis_per_group_and_intersection() -> None:
    card = get_task("synth_cxr")
    assert card.evaluation.no_finding_class == "normal"
    frame = _frame()
    doc = metrics_document(frame, card, n_boot=100, seed=0, samples_sha256="x")
    ud = doc["analyses"]["underdiagnosis"]
    called_normal = frame["prob_abnormal"].to_numpy() < card.evaluation.threshold
    finding = frame["label"].to_numpy() == 1
    for attr, cols in (("age", ["attr_age"]), ("sex*age", ["attr_sex", "attr_age"])):
        key = frame[cols].astype(str).agg("*".join, axis=1).to_numpy()
        expected = {g: float((called_normal & finding & (key == g)).sum() / (finding & (key == g)).sum())
                    for g in np.unique(key)}
        got = ud[attr]["groups"]
        assert set(got) == set(expected)
        best = min(expected.values())
        for g, rate in expected.items():
            assert got[g]["rate"] == pytest.approx(rate, abs=1e-12)
            assert got[g]["gap_to_best"] == pytest.approx(rate - best, abs=1e-12)
            assert got[g]["n_finding"] == int((finding & (key == g)).sum())
            lo, hi = got[g]["ci"]
            assert lo <= rate <= hi and hi - lo > 0
        assert ud[attr]["best_group"] == min(expected, key=expected.get)
    assert ud["age"]["worst_group"] == ">=60"  # the planted bias shows


def test_no_analysis_without_no_finding_class() -> None:
    card = get_task("synth_cxr")
    from dataclasses import replace
    card = replace(card, evaluation=replace(card.evaluation, no_finding_class=None))
    doc = metrics_document(_frame(200), card, n_boot=0, seed=0, samples_sha256="x")
    assert "underdiagnosis" not in doc["analyses"] and "power" in doc["analyses"]


def _close_groups_frame(seed: int = 1) -> pd.DataFrame:
    """Two race groups whose underdiagnosis rates are close (the best group small, so its rate is the noisier):
    a gap interval that is paired with the best group's own resampled rate must reach below 0."""
    rng = np.random.default_rng(seed)
    parts = []
    for group, n_find, n_norm, miss in (("A", 70, 70, 0.20), ("B", 320, 200, 0.24)):
        y = np.r_[np.ones(n_find, int), np.zeros(n_norm, int)]
        called_normal = np.r_[rng.random(n_find) < miss, rng.random(n_norm) < 0.7]
        p = np.where(called_normal, rng.uniform(0.05, 0.45, len(y)), rng.uniform(0.55, 0.95, len(y)))
        parts.append(pd.DataFrame({"label": y, "prob_abnormal": p, "attr_race": group}))
    f = pd.concat(parts, ignore_index=True)
    n = len(f)
    f["prob_normal"] = 1 - f["prob_abnormal"]
    f["sample_id"] = [str(i) for i in range(n)]
    f["split"] = "test"
    f["attr_sex"] = rng.choice(["F", "M"], n)
    f["attr_age"] = rng.choice(["<60", ">=60"], n)
    for c in ("attr_race", "attr_sex", "attr_age"):
        f[c] = pd.array(f[c], dtype="string")
    return f


def _numpy_gap_bootstrap(frame: pd.DataFrame, col: str, best: str, n_boot: int, seed: int) -> dict[str, list[float]]:
    """Independent reference: resample each group's finding rows with replacement (the stratum that the rate
    reads; the suite stratifies by true class x group), the rate = share called normal at 0.5, the gap = the
    group's resampled rate minus the best group's resampled rate on the same resample, 95% percentile interval."""
    rng = np.random.default_rng(seed)
    finding = frame["label"].to_numpy() == 1
    called = frame["prob_abnormal"].to_numpy() < 0.5
    key = frame[col].astype(str).to_numpy()
    rows = {g: called[finding & (key == g)] for g in np.unique(key)}
    rates = {g: np.array([r[rng.integers(0, len(r), len(r))].mean() for _ in range(n_boot)]) for g, r in rows.items()}
    return {g: np.percentile(rates[g] - rates[best], [2.5, 97.5]).tolist() for g in rows}


def test_gap_to_best_interval_is_paired_with_the_rates_resamples() -> None:
    from fairbench.analyses.underdiagnosis import gap_to_best_samples

    card = get_task("synth_cxr")
    frame = _close_groups_frame()
    n_boot = 3000
    doc = metrics_document(frame, card, n_boot=n_boot, seed=5, samples_sha256="x")
    ud = doc["analyses"]["underdiagnosis"]["race"]
    assert ud["best_group"] == "A"
    ev = card.evaluation
    # the same resamples as the rates' intervals: the rates' percentiles reproduce the suite's recorded ones
    samples = gap_to_best_samples(frame, classes=list(card.classes), attributes=list(card.attributes),
                                  intersections=[list(i) for i in ev.intersections], eval_split="test",
                                  threshold=0.5, no_finding_class="normal", ece_bins=ev.ece_bins, n_boot=n_boot,
                                  seed=5)
    names, rates = samples["race"]
    for j, g in enumerate(names):
        recorded = doc["metrics"]["ci"]["attributes"]["race"]["groups"][g]["underdiagnosis_rate"]
        assert np.quantile(rates[:, j], [0.025, 0.975]) == pytest.approx(recorded, abs=1e-12)
    # against an independent numpy bootstrap (Monte Carlo error of each endpoint about 0.003 at B = 3000)
    ref = _numpy_gap_bootstrap(frame, "attr_race", "A", n_boot, seed=11)
    got = {g: v["gap_to_best_ci"] for g, v in ud["groups"].items()}
    assert got["A"] == [0.0, 0.0]  # the best group against itself, paired: exactly 0 on every resample
    assert got["B"] == pytest.approx(ref["B"], abs=0.015)
    assert got["B"][0] < 0 < got["B"][1]  # close groups: the paired interval cannot tell them apart
    point = ud["groups"]["B"]["gap_to_best"]
    assert got["B"][0] < point < got["B"][1]
    # every attribute and intersection carries one; the method is recorded
    for rec in doc["analyses"]["underdiagnosis"].values():
        assert all(v["gap_to_best_ci"] is not None for v in rec["groups"].values())
        assert "not per resample" in rec["gap_to_best_ci_method"]


def test_gap_to_best_has_no_interval_without_bootstrap() -> None:
    doc = metrics_document(_frame(200), get_task("synth_cxr"), n_boot=0, seed=0, samples_sha256="x")
    ud = doc["analyses"]["underdiagnosis"]["age"]
    assert all(v["gap_to_best_ci"] is None for v in ud["groups"].values())
    assert all(v["gap_to_best"] is not None for v in ud["groups"].values())


def test_summary_line_gives_the_worst_groups_gap_with_its_interval() -> None:
    from fairbench.report.summary import analyses_lines

    doc = metrics_document(_frame(), get_task("synth_cxr"), n_boot=100, seed=0, samples_sha256="x")
    rec = doc["analyses"]["underdiagnosis"]["age"]
    worst = rec["groups"][rec["worst_group"]]
    lo, hi = worst["gap_to_best_ci"]
    line = next(ln for ln in analyses_lines(doc["analyses"]) if ln.startswith("underdiagnosis (age,"))
    assert line.endswith(f"; worst >=60, +{100 * worst['gap_to_best']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] over "
                         f"best <60")
