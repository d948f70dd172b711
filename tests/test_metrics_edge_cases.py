"""Undefined values, thresholds chosen on validation only, input errors, intersections, output format."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, roc_curve

from fairbench.errors import DataError, FairbenchError
from fairbench.metrics import choose_threshold, compute_metrics, reliability_curve


def binary_frame(y, p, groups=None, split="test", **attrs) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    y = np.asarray(y)
    p = np.asarray(p, dtype=float)
    df = pd.DataFrame({"sample_id": np.arange(len(y)), "split": split, "label": y, "prob_neg": 1 - p, "prob_pos": p})
    if groups is not None:
        df["attr_grp"] = groups
    for name, values in attrs.items():
        df[f"attr_{name}"] = values
    return df


def random_binary(n: int, seed: int, n_groups: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(0.35 * y + 0.65 * rng.random(n), 0, 1)
    return binary_frame(y, p, rng.choice([f"g{j}" for j in range(n_groups)], n))


def only_json_types(obj: object) -> bool:
    if isinstance(obj, dict):
        return all(isinstance(k, str) and only_json_types(v) for k, v in obj.items())
    if isinstance(obj, list):
        return all(only_json_types(v) for v in obj)
    if isinstance(obj, float):
        return math.isfinite(obj)
    return obj is None or isinstance(obj, str | int | bool)


# -- undefined values ----------------------------------------------------------------------------------
def test_single_class_group_is_none_with_reason_and_left_out_of_summaries() -> None:
    df = random_binary(300, 0)
    df.loc[df["attr_grp"] == "g2", "label"] = 0
    res = compute_metrics(df, classes=["neg", "pos"], n_boot=30)
    a = res["attributes"]["grp"]
    assert a["groups"]["g2"]["auc"] is None and a["groups"]["g2"]["tpr"] is None
    assert a["groups"]["g2"]["fpr"] is not None  # negatives exist
    note = res["notes"]["attributes.grp.groups.g2.auc"]
    assert "only one class" in note and "n_pos=0" in note
    assert "no positives" in res["notes"]["attributes.grp.groups.g2.tpr"]
    aucs = [a["groups"][g]["auc"] for g in ("g0", "g1")]
    assert a["auc_gap"] == pytest.approx(max(aucs) - min(aucs))
    assert "g2" in res["notes"]["attributes.grp.auc_gap"] and "left out" in res["notes"]["attributes.grp.auc_gap"]
    assert a["es_auc"] is not None and "g2" in res["notes"]["attributes.grp.es_auc"]
    assert "auc" not in res["ci"]["attributes"]["grp"]["groups"]["g2"]
    assert len(res["ci"]["attributes"]["grp"]["auc_gap"]) == 2


def test_summaries_need_two_defined_groups() -> None:
    df = random_binary(200, 1, n_groups=1)
    res = compute_metrics(df, classes=["neg", "pos"], n_boot=0)
    a = res["attributes"]["grp"]
    for key in ("dpd", "deodds", "eqodds", "auc_gap", "f1_delta", "ece_delta"):
        assert a[key] is None, key
        assert "at least 2 group(s)" in res["notes"][f"attributes.grp.{key}"]
    assert a["worst_group_auc"] == pytest.approx(a["groups"]["g0"]["auc"])
    assert a["es_auc"] == pytest.approx(res["overall"]["auc"])  # one group equal to the whole


def test_attribute_with_every_value_unknown() -> None:
    df = random_binary(100, 2)
    df["attr_grp"] = None
    res = compute_metrics(df, classes=["neg", "pos"], n_boot=20)
    a = res["attributes"]["grp"]
    assert a["groups"] == {} and a["n_unknown"] == 100
    assert a["es_auc"] is None and a["dpd"] is None
    assert "100 evaluated row(s) with unknown grp" in res["notes"]["attributes.grp"]
    assert "0 of 0 have one" in res["notes"]["attributes.grp.es_auc"]


def test_nan_scores_make_their_slices_undefined_without_crashing() -> None:
    df = random_binary(300, 3)
    bad_rows = df.index[df["attr_grp"] == "g1"][:2]
    df.loc[bad_rows, "prob_pos"] = np.nan
    res = compute_metrics(df, classes=["neg", "pos"], n_boot=25)
    assert json.dumps(res, allow_nan=False)
    assert res["overall"]["auc"] is None and res["overall"]["acc"] is None
    assert res["overall"]["n"] == 300  # counts are still reported
    assert "NaN probabilities" in res["notes"]["overall.auc"]
    assert "2 evaluated row(s) have NaN" in res["notes"]["overall"]
    groups = res["attributes"]["grp"]["groups"]
    assert groups["g1"]["auc"] is None and groups["g0"]["auc"] is not None and groups["g2"]["acc"] is not None
    assert res["attributes"]["grp"]["es_auc"] is None  # needs the overall AUC
    assert res["attributes"]["grp"]["dpd"] is not None  # g0 and g2 remain
    assert "g1" in res["notes"]["attributes.grp.dpd"]


def test_ci_note_when_some_resamples_are_undefined() -> None:
    # g1 has only negatives and one false positive: its F1 is 0, or undefined when a resample drops that row
    rng = np.random.default_rng(4)
    y = np.r_[rng.integers(0, 2, 200), np.zeros(40, int)]
    p = np.r_[rng.random(200), np.full(39, 0.1), 0.9]
    df = binary_frame(y, p, ["g0"] * 200 + ["g1"] * 40)
    res = compute_metrics(df, classes=["neg", "pos"], n_boot=200)
    assert res["attributes"]["grp"]["groups"]["g1"]["f1"] == 0.0
    note = res["notes"]["ci.attributes.grp.groups.g1.f1"]
    k = int(note.split()[2])
    assert 0 < k < 200 and note.startswith("undefined on")
    assert k == pytest.approx(200 * (39 / 40) ** 40, rel=0.5)  # P(the false positive is not drawn)


# -- thresholds ----------------------------------------------------------------------------------------
def test_val_threshold_ignores_test_rows_entirely() -> None:
    rng = np.random.default_rng(5)
    n = 400
    yv = rng.integers(0, 2, n)
    pv = np.clip(0.2 + 0.3 * yv + 0.4 * rng.random(n), 0, 1)
    yt = rng.integers(0, 2, n)
    pt = rng.random(n)
    val = binary_frame(yv, pv, split="val")
    test = binary_frame(yt, pt, split="test")
    adversarial = test.copy()
    adversarial["label"] = (adversarial["prob_pos"] < np.median(pt)).astype(int)  # labels against the scores
    for rule in ("val_youden", "val_f1"):
        expected = choose_threshold(yv, pv, rule.removeprefix("val_"))
        a = compute_metrics(pd.concat([val, test]), classes=["neg", "pos"], threshold=rule, n_boot=0)
        b = compute_metrics(pd.concat([val, adversarial]), classes=["neg", "pos"], threshold=rule, n_boot=0)
        assert a["threshold"] == b["threshold"] == {"value": expected, "chosen_on": "val",
                                                     "rule": rule.removeprefix("val_"), "n_val": n}
        test_optimal = choose_threshold(adversarial["label"], adversarial["prob_pos"], rule.removeprefix("val_"))
        assert test_optimal != expected
        assert b["overall"]["n"] == n and b["overall"]["selection_rate"] == pytest.approx((pt >= expected).mean())


def test_val_threshold_needs_val_rows() -> None:
    df = random_binary(50, 6)
    with pytest.raises(DataError, match="split == 'val'"):
        compute_metrics(df, classes=["neg", "pos"], threshold="val_youden", n_boot=0)


def test_fixed_threshold_is_recorded_and_used() -> None:
    df = random_binary(200, 7)
    res = compute_metrics(df, classes=["neg", "pos"], threshold=0.7, n_boot=0)
    assert res["threshold"] == {"value": 0.7, "chosen_on": "fixed", "rule": "fixed"}
    assert res["overall"]["selection_rate"] == pytest.approx((df["prob_pos"] >= 0.7).mean())


@pytest.mark.parametrize("seed", range(6))
def test_choose_threshold_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 60)
    s = np.round(rng.random(60) * 0.6 + 0.4 * y, 1 + seed % 2)
    fpr, tpr, _thr = roc_curve(y, s)
    best_j = max(tpr - fpr)
    t = choose_threshold(y, s, "youden")
    yhat = s >= t
    assert yhat[y == 1].mean() - yhat[y == 0].mean() == pytest.approx(best_j)
    optimal = [c for c in np.unique(s) if (s >= c)[y == 1].mean() - (s >= c)[y == 0].mean() == pytest.approx(best_j)]
    assert t == max(optimal)  # ties go to the highest threshold
    f1s = {c: f1_score(y, s >= c) for c in np.unique(s)}
    t_f1 = choose_threshold(y, s, "f1")
    assert f1s[t_f1] == pytest.approx(max(f1s.values()))


def test_multiclass_rejects_thresholds() -> None:
    df = pd.DataFrame({"sample_id": [0, 1, 2], "split": "test", "label": [0, 1, 2], "prob_a": [0.8, 0.1, 0.1],
                       "prob_b": [0.1, 0.8, 0.1], "prob_c": [0.1, 0.1, 0.8]})
    with pytest.raises(DataError, match="binary tasks only"):
        compute_metrics(df, classes=["a", "b", "c"], threshold=0.3, n_boot=0)
    res = compute_metrics(df, classes=["a", "b", "c"], n_boot=0)
    assert res["threshold"] == {"value": None, "chosen_on": "argmax", "rule": "argmax"}
    assert res["overall"]["acc"] == 1.0


# -- input errors ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mutate", "kwargs", "message"),
    [
        (lambda d: d.drop(columns="prob_pos"), {}, "lack column"),
        (lambda d: d.assign(label=2), {}, "class index"),
        (lambda d: d.assign(prob_pos=1.5), {}, r"lie in \[0, 1\]"),
        (lambda d: d, {"attributes": ["race"]}, "no column for attribute"),
        (lambda d: d, {"eval_split": "holdout"}, "no rows with split"),
        (lambda d: d, {"no_finding_class": "healthy"}, "not one of the classes"),
        (lambda d: d, {"n_boot": -1}, "n_boot"),
        (lambda d: d, {"seed": -3}, "seed"),
        (lambda d: d, {"ece_bins": 0}, "ece_bins"),
        (lambda d: d, {"threshold": "best"}, "unknown threshold"),
        (lambda d: d, {"intersections": [["grp", "age"]]}, "without a column"),
        (lambda d: d, {"classes": ["only"]}, "at least two"),
        (lambda d: d.assign(sample_id=d["sample_id"].where(d.index != 3, 7)), {},
         r"^duplicate sample_id\(s\) in split\(s\) test: '7' \(2 rows for 1 id\(s\)\)"),
        (lambda d: pd.concat([d, d]), {}, r"duplicate sample_id.*: '0', '1', '2', '3', '4' and 25 more \(60 rows"),
    ],
)
def test_input_errors_are_fairbench_errors(mutate, kwargs, message) -> None:  # type: ignore[no-untyped-def]
    df = mutate(random_binary(30, 8))
    kwargs = {"classes": ["neg", "pos"], "n_boot": 0, **kwargs}
    with pytest.raises(FairbenchError, match=message):
        compute_metrics(df, **kwargs)


def test_probabilities_that_do_not_sum_to_one_are_warned_and_noted(capsys) -> None:
    df = random_binary(30, 8)
    df.loc[4, "prob_neg"] = 0.0  # this row sums to its prob_pos
    df.loc[9, ["prob_neg", "prob_pos"]] = [0.6, 0.6]
    res = compute_metrics(df, classes=["neg", "pos"], n_boot=0)
    expected = (f"2 row(s) have probabilities (prob_neg, prob_pos) that do not sum to 1 (within 0.001; their sums "
                f"range from {df.loc[4, 'prob_pos']:.6g} to 1.2); calibration metrics assume they do")
    assert res["notes"]["probabilities"] == expected
    warned = " ".join(capsys.readouterr().err.split())
    assert f"warning: {expected}; e.g. sample_id '4' (split 'test') sums to {df.loc[4, 'prob_pos']:.6g}" in warned
    assert "probabilities" not in compute_metrics(random_binary(30, 8), classes=["neg", "pos"], n_boot=0)["notes"]


def test_duplicates_across_splits_and_rounding_are_accepted() -> None:
    df = random_binary(30, 8)
    val = df.assign(split="val")  # the same ids in another split: each split counts each sample once
    rounded = df.assign(prob_neg=(df["prob_neg"] + 4e-4).clip(0, 1))  # e.g. probabilities written to 3 decimals
    for frame in (pd.concat([df, val]), rounded):
        assert compute_metrics(frame, classes=["neg", "pos"], n_boot=0)["overall"]["n"] == 30


# -- intersections, flags, format -------------------------------------------------------------------------
def test_intersection_equals_a_combined_column() -> None:
    rng = np.random.default_rng(9)
    df = random_binary(400, 9)
    df["attr_sex"] = rng.choice(["F", "M", None], 400, p=[0.45, 0.45, 0.1])
    res = compute_metrics(df, classes=["neg", "pos"], n_boot=20, intersections=[["sex", "grp"]])
    combined = df.copy()
    combined["attr_combo"] = [None if pd.isna(s) else f"{s}*{g}" for s, g in zip(df["attr_sex"], df["attr_grp"])]
    ref = compute_metrics(combined, classes=["neg", "pos"], n_boot=20, attributes=["combo"])
    assert res["attributes"]["sex*grp"] == ref["attributes"]["combo"]
    assert res["ci"]["attributes"]["sex*grp"] == ref["ci"]["attributes"]["combo"]
    assert sorted(res["attributes"]["sex*grp"]["groups"]) == [f"{s}*g{j}" for s in "FM" for j in range(3)]


def test_small_groups_are_flagged_but_computed() -> None:
    df = random_binary(300, 10)
    df.loc[df.index[:12], "attr_grp"] = "tiny"
    df.loc[df.index[:6], "label"] = [0, 1, 0, 1, 0, 1]
    res = compute_metrics(df, classes=["neg", "pos"], n_boot=0, min_group_size=30)
    assert res["flags"] == {"min_group_size": 30, "small_groups": {"grp": {"tiny": 12}}}
    assert res["attributes"]["grp"]["groups"]["tiny"]["n"] == 12
    assert res["attributes"]["grp"]["groups"]["tiny"]["acc"] is not None


def test_numeric_group_labels_become_strings() -> None:
    df = random_binary(120, 11)
    df["attr_age"] = np.where(np.arange(120) % 3 == 0, np.nan, (np.arange(120) % 2).astype(float))
    res = compute_metrics(df, classes=["neg", "pos"], n_boot=0, attributes=["age"])
    assert sorted(res["attributes"]["age"]["groups"]) == ["0", "1"]
    assert res["attributes"]["age"]["n_unknown"] == 40


def test_result_is_plain_json_and_records_settings() -> None:
    df = random_binary(200, 12)
    res = compute_metrics(df, classes=["neg", "pos"], n_boot=40, seed=5, ece_bins=7, no_finding_class="neg")
    assert only_json_types(res)
    assert json.loads(json.dumps(res, allow_nan=False)) == res
    assert (res["n_boot"], res["seed"], res["ece_bins"], res["ci_level"]) == (40, 5, 7, 0.95)
    assert res["task"] == "binary" and res["classes"] == ["neg", "pos"]
    assert "underdiagnosis_rate" in res["overall"] and "underdiagnosis_gap" in res["attributes"]["grp"]
    without = compute_metrics(df, classes=["neg", "pos"], n_boot=0)
    assert "underdiagnosis_rate" not in without["overall"] and without["ci"] == {}
    assert without["ci_level"] is None


def test_reliability_curve_matches_the_suite_ece() -> None:
    df = random_binary(500, 13)
    res = compute_metrics(df, classes=["neg", "pos"], n_boot=0, ece_bins=8)
    curve = reliability_curve(df["label"], df["prob_pos"], n_bins=8)
    assert curve["ece"] == pytest.approx(res["overall"]["ece"])
    assert sum(curve["count"]) == 500 and len(curve["bin_lower"]) == 8 and curve["bin_upper"][-1] == 1.0
    p = df["prob_pos"].to_numpy()
    first = (p <= 0.125)
    assert curve["count"][0] == first.sum()
    assert curve["confidence"][0] == pytest.approx(p[first].mean())
    assert curve["frequency"][0] == pytest.approx(df["label"].to_numpy()[first].mean())
    empty = reliability_curve([1, 0], [0.95, 0.9], n_bins=4)
    assert empty["confidence"][:3] == [None, None, None] and empty["frequency"][3] == 0.5
    probs = np.array([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.2, 0.2, 0.6]])
    multi = reliability_curve([0, 0, 2], probs, n_bins=5)
    assert multi["count"] == [0, 0, 2, 1, 0]  # top-label confidences 0.7 (right), 0.6 (wrong), 0.6 (right)
    assert multi["frequency"][2:4] == [0.5, 1.0]
    assert multi["ece"] == pytest.approx((2 * abs(0.5 - 0.6) + abs(1.0 - 0.7)) / 3)
