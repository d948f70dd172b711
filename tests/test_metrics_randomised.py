"""Randomised decisions (the ``p_decide_positive`` column, e.g. fairlearn's ThresholdOptimizer): every threshold
metric is the rule's expected rate, computed here by hand; the score's AUC is kept; ``fairbench metrics`` on the
saved file gives the same numbers; the bootstrap resamples the same rows; compare's paired pass scores each side
by its own rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from fairbench.errors import DataError
from fairbench.metrics import compute_metrics

CLASSES = ["neg", "pos"]


def _toy(seed: int = 0, n: int = 400) -> pd.DataFrame:
    """Two groups; group B's P(yhat = 1) never reaches 0.5 (as fairlearn's rule with p_ignore > 0 gives), so a
    0.5 threshold would never decide positive for it."""
    rng = np.random.default_rng(seed)
    group = np.where(rng.random(n) < 0.3, "B", "A")
    y = (rng.random(n) < 0.4).astype(np.int64)
    # a few distinct values per group, as a randomised threshold rule gives
    p = np.where(group == "A", rng.choice([0.1, 0.6, 0.9], n), rng.choice([0.05, 0.3, 0.45], n))
    p = np.where(y == 1, np.minimum(p + 0.04, 1.0), p)
    return pd.DataFrame({"sample_id": [f"s{i}" for i in range(n)], "split": "test", "label": y,
                         "prob_neg": 1 - p, "prob_pos": p, "p_decide_positive": p, "attr_g": group})


def _expected(frame: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Expected rates of the randomised rule, by hand: each row decided positive with probability p."""
    out = {}
    for name, rows in [("all", frame), *frame.groupby("attr_g")]:
        p, y = rows["p_decide_positive"].to_numpy(), rows["label"].to_numpy()
        tp, fp, fn = (p * y).sum(), (p * (1 - y)).sum(), ((1 - p) * y).sum()
        out[name] = {"tpr": p[y == 1].mean(), "fpr": p[y == 0].mean(), "selection_rate": p.mean(),
                     "acc": (p * y + (1 - p) * (1 - y)).mean(), "f1": 2 * tp / (2 * tp + fp + fn),
                     "tnr": 1 - p[y == 0].mean(), "fnr": 1 - p[y == 1].mean()}
    return out


def test_threshold_metrics_are_the_expected_rates_of_the_randomised_rule() -> None:
    frame = _toy()
    doc = compute_metrics(frame, classes=CLASSES, n_boot=0)
    hand = _expected(frame)
    for key in ("tpr", "fpr", "tnr", "fnr", "selection_rate", "acc", "f1"):
        assert doc["overall"][key] == pytest.approx(hand["all"][key], abs=1e-12), key
        for g in ("A", "B"):
            assert doc["attributes"]["g"]["groups"][g][key] == pytest.approx(hand[g][key], abs=1e-12), (g, key)
    a, b = hand["A"], hand["B"]
    g = doc["attributes"]["g"]
    assert g["deodds"] == pytest.approx(max(abs(a["tpr"] - b["tpr"]), abs(a["fpr"] - b["fpr"])), abs=1e-12)
    assert g["dpd"] == pytest.approx(abs(a["selection_rate"] - b["selection_rate"]), abs=1e-12)
    assert g["eqodds"] == pytest.approx(1 - 0.5 * (abs(a["tpr"] - b["tpr"]) + abs(a["fpr"] - b["fpr"])), abs=1e-12)
    # the 0.5 threshold of the same column would say group B is never decided positive
    assert b["tpr"] > 0.2 and compute_metrics(frame.drop(columns="p_decide_positive"), classes=CLASSES,
                                              n_boot=0)["attributes"]["g"]["groups"]["B"]["tpr"] == 0.0
    # the score's AUC is kept, and said to be coarse
    assert doc["overall"]["auc"] == pytest.approx(roc_auc_score(frame["label"], frame["prob_pos"]))
    assert doc["threshold"]["rule"] == "randomised" and doc["threshold"]["value"] is None
    assert doc["threshold"]["column"] == "p_decide_positive" and doc["threshold"]["task_rule_not_applied"] == 0.5
    assert "expected rates" in doc["threshold"]["decisions"]
    distinct = frame["prob_pos"].nunique()
    assert f"takes {distinct} distinct value(s)" in doc["notes"]["decisions"]


def test_hard_decisions_give_the_thresholded_numbers() -> None:
    """A randomised rule with probabilities 0 and 1 is the deterministic rule: the same numbers."""
    frame = _toy(1)
    hard = frame.assign(p_decide_positive=(frame["prob_pos"] >= 0.5).astype(float))
    ours, thresholded = (compute_metrics(f, classes=CLASSES, n_boot=0)
                         for f in (hard, frame.drop(columns="p_decide_positive")))
    for key in ("tpr", "fpr", "acc", "f1", "selection_rate"):
        assert ours["overall"][key] == pytest.approx(thresholded["overall"][key], abs=1e-12)
    for key in ("deodds", "dpd", "eqodds"):
        assert ours["attributes"]["g"][key] == pytest.approx(thresholded["attributes"]["g"][key], abs=1e-12)


def test_bootstrap_resamples_the_expected_rates() -> None:
    """Each resample's value is the expected rate on the resampled rows: the interval of a group's TPR is the
    percentile interval of mean(p) over resampled positives, which (within strata) lies inside [min p, max p]
    and around the point."""
    frame = _toy(2)
    doc = compute_metrics(frame, classes=CLASSES, n_boot=300, seed=1)
    for g in ("A", "B"):
        rows = frame[(frame["attr_g"] == g) & (frame["label"] == 1)]
        lo, hi = doc["ci"]["attributes"]["g"]["groups"][g]["tpr"]
        point = doc["attributes"]["g"]["groups"][g]["tpr"]
        assert lo < point < hi and rows["p_decide_positive"].min() <= lo and hi <= rows["p_decide_positive"].max()
        se = rows["p_decide_positive"].std(ddof=0) / np.sqrt(len(rows))
        assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.25)  # the spread of a mean of len(rows) draws
    again = compute_metrics(frame.sample(frac=1.0, random_state=3), classes=CLASSES, n_boot=300, seed=1)
    assert again["ci"] == doc["ci"]  # row order plays no part


def test_fairbench_metrics_recomputes_them_from_the_saved_file(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fairbench.cli import app

    frame = _toy(3)
    frame["split"] = np.where(np.arange(len(frame)) % 2 == 0, "test", "val")
    frame = frame.rename(columns={"prob_neg": "prob_normal", "prob_pos": "prob_abnormal", "attr_g": "attr_race"})
    frame["attr_sex"], frame["attr_age"] = "F", "<60"
    path = tmp_path / "predictions.parquet"
    frame.to_parquet(path, index=False)
    out = tmp_path / "m.json"
    res = CliRunner().invoke(app, ["metrics", str(path), "--task", "synth_cxr", "--n-boot", "0", "--out", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    test = frame[frame["split"] == "test"].rename(columns={"attr_race": "attr_g", "prob_abnormal": "prob_pos"})
    hand = _expected(test)
    assert doc["threshold"]["rule"] == "randomised"
    race = doc["metrics"]["attributes"]["race"]
    assert race["groups"]["B"]["tpr"] == pytest.approx(hand["B"]["tpr"], abs=1e-12)
    assert race["deodds"] == pytest.approx(max(abs(hand["A"]["tpr"] - hand["B"]["tpr"]),
                                               abs(hand["A"]["fpr"] - hand["B"]["fpr"])), abs=1e-12)


def test_bad_decision_columns_are_one_line_errors() -> None:
    frame = _toy()
    with pytest.raises(DataError, match="column 'p_decide_positive' must lie in \\[0, 1\\]"):
        compute_metrics(frame.assign(p_decide_positive=frame["prob_pos"] + 1.0), classes=CLASSES, n_boot=0)
    three = frame.assign(prob_x=0.0)
    with pytest.raises(DataError, match="'p_decide_positive' .* needs a binary task"):
        compute_metrics(three, classes=["neg", "pos", "x"], n_boot=0)


def test_paired_comparison_scores_each_side_by_its_own_rule() -> None:
    """fairbench compare's paired pass: the randomised side gets its expected rates, the other its threshold."""
    from fairbench.metrics._inputs import read_predictions
    from fairbench.metrics._suite import build_passes
    from fairbench.metrics.paired import paired_pass

    frame = _toy(4)
    plain = frame.drop(columns="p_decide_positive")
    pa, pb = (read_predictions(f, CLASSES, None, None) for f in (plain, frame))
    (pass_a, data_a), (_, data_b) = (build_passes(p, eval_split="test", threshold=t, ece_bins=15,
                                                       no_finding=None)[1] for p, t in ((pa, 0.5), (pb, None)))
    paired = paired_pass(pass_a, data_a, data_b, None, 50, 0)
    own_a, own_b = (compute_metrics(f, classes=CLASSES, n_boot=0) for f in (plain, frame))
    deodds = paired[("attributes", "g", "deodds")]
    assert deodds.a == pytest.approx(own_a["attributes"]["g"]["deodds"], abs=1e-12)
    assert deodds.b == pytest.approx(own_b["attributes"]["g"]["deodds"], abs=1e-12)
    assert deodds.b != pytest.approx(deodds.a) and deodds.ci is not None
