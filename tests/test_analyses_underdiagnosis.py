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
