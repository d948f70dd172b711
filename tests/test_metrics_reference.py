"""Every metric of the suite against an independent reference on many random cases.

References: scikit-learn (roc_auc_score, accuracy_score, f1_score, balanced_accuracy_score), fairlearn
(MetricFrame.by_group, demographic_parity_difference, equalized_odds_difference) and, where no library
has the formula, a direct implementation written here from docs/metrics.md (ES-AUC/ES-ACC as in FairCLIP,
ECE, the equalized-odds scores, underdiagnosis). Cases include ties (rounded scores), tiny groups, groups
with one class, unknown group labels and a chosen threshold.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_negative_rate,
    true_positive_rate,
)
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

from fairbench.metrics import compute_metrics

TOL = 1e-9


def random_case(seed: int) -> tuple[pd.DataFrame, list[str], float]:
    rng = np.random.default_rng(seed)
    k = int(rng.choice([2, 2, 2, 3, 4]))
    n = int(rng.integers(8, 400))
    classes = [f"c{j}" for j in range(k)]
    y = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k)) + 1.5 * np.eye(k)[y] * rng.random()
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    if rng.random() < 0.5:  # coarse scores: many ties
        probs = np.round(probs, 1)
        probs[:, 0] = np.clip(1 - probs[:, 1:].sum(axis=1), 0, 1)
    g_count = int(rng.choice([1, 2, 3, 4, 5, 9]))  # 9 groups: the all-rows AUC takes its many-block path
    weights = rng.dirichlet(np.full(g_count, 0.7))
    groups = rng.choice([f"g{j}" for j in range(g_count)], n, p=weights).astype(object)
    groups[rng.random(n) < 0.05] = None  # unknown
    sex = rng.choice(["F", "M"], n)
    df = pd.DataFrame({"sample_id": np.arange(n), "split": "test", "label": y})
    for j, c in enumerate(classes):
        df[f"prob_{c}"] = probs[:, j]
    df["attr_grp"] = pd.array(groups, dtype="string")
    df["attr_sex"] = sex
    threshold = float(rng.choice([0.5, 0.3, 0.65]))
    return df, classes, threshold


def hard_predictions(df: pd.DataFrame, classes: list[str], t: float) -> np.ndarray:
    probs = df[[f"prob_{c}" for c in classes]].to_numpy()
    if len(classes) == 2:
        return (probs[:, 1] >= t).astype(int)
    return probs.argmax(axis=1)


def auc_or_none(y: np.ndarray, s: np.ndarray) -> float | None:
    return float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else None


def ece_reference(conf: np.ndarray, target: np.ndarray, n_bins: int) -> float:
    edges = np.linspace(0, 1, n_bins + 1)
    total = 0.0
    for b in range(n_bins):
        lo, hi = edges[b], edges[b + 1]
        member = (conf > lo) & (conf <= hi) if b > 0 else (conf >= lo) & (conf <= hi)
        if member.any():
            total += member.sum() / len(conf) * abs(target[member].mean() - conf[member].mean())
    return total


def close(ours: float | None, ref: float | None) -> bool:
    if ours is None or ref is None:
        return ours is None and ref is None
    return math.isclose(ours, ref, rel_tol=0, abs_tol=TOL)


def es_reference(overall: float, per_group: list[float]) -> float:
    return overall / (1 + sum(abs(overall - v) for v in per_group))  # FairCLIP, alpha = 1


CASES = list(range(30))


@pytest.mark.parametrize("seed", CASES)
def test_against_sklearn_and_fairlearn(seed: int) -> None:
    df, classes, t = random_case(seed)
    k = len(classes)
    binary = k == 2
    threshold = t if binary else 0.5
    res = compute_metrics(df, classes=classes, n_boot=0, threshold=threshold, ece_bins=10,
                          no_finding_class=classes[0], min_group_size=30)
    y = df["label"].to_numpy()
    probs = df[[f"prob_{c}" for c in classes]].to_numpy()
    yhat = hard_predictions(df, classes, threshold)
    o = res["overall"]

    # -- overall utility --------------------------------------------------------------------------
    assert o["n"] == len(df)
    assert close(o["acc"], accuracy_score(y, yhat))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert close(o["balanced_accuracy"], balanced_accuracy_score(y, yhat))
        per_class_f1 = f1_score(y, yhat, labels=list(range(k)), average=None, zero_division=np.nan)
        assert close(o["macro_f1"], f1_score(y, yhat, average="macro"))
    for j, c in enumerate(classes):
        ref = None if np.isnan(per_class_f1[j]) else float(per_class_f1[j])
        assert close(o["f1_per_class"][c], ref), c
    defined_f1 = per_class_f1[~np.isnan(per_class_f1)]
    assert close(o["var_f1"], float(np.var(defined_f1)) if len(defined_f1) else None)
    if binary:
        assert close(o["auc"], auc_or_none(y, probs[:, 1]))
        assert close(o["ece"], ece_reference(probs[:, 1], (y == 1).astype(float), 10))
        n_pos, n_neg = int(y.sum()), int((y == 0).sum())
        assert (o["n_pos"], o["n_neg"]) == (n_pos, n_neg)
        assert close(o["tpr"], true_positive_rate(y, yhat) if n_pos else None)
        assert close(o["fnr"], 1 - true_positive_rate(y, yhat) if n_pos else None)
        assert close(o["fpr"], false_positive_rate(y, yhat) if n_neg else None)
        assert close(o["tnr"], true_negative_rate(y, yhat) if n_neg else None)
        assert close(o["selection_rate"], selection_rate(y, yhat))
        assert close(o["f1"], None if np.isnan(per_class_f1[1]) else float(per_class_f1[1]))
    else:
        per_class_auc = [auc_or_none((y == j).astype(int), probs[:, j]) for j in range(k)]
        for j, c in enumerate(classes):
            assert close(o["auc_per_class"][c], per_class_auc[j])
        macro = None if None in per_class_auc else float(np.mean(per_class_auc))
        assert close(o["auc"], macro)
        for j, c in enumerate(classes):
            hit, pos = yhat == j, y == j
            assert close(o["tpr_per_class"][c], float(hit[pos].mean()) if pos.any() else None)
            assert close(o["fpr_per_class"][c], float(hit[~pos].mean()) if (~pos).any() else None)
            assert close(o["selection_rate_per_class"][c], float(hit.mean()))
        assert close(o["ece"], ece_reference(probs.max(axis=1), (yhat == y).astype(float), 10))
    sick = y != 0
    assert close(o["underdiagnosis_rate"], float((yhat[sick] == 0).mean()) if sick.any() else None)

    # -- per group and summaries ------------------------------------------------------------------
    for attr in ("grp", "sex"):
        a = res["attributes"][attr]
        known = df[f"attr_{attr}"].notna().to_numpy()
        g = df[f"attr_{attr}"].to_numpy()[known].astype(str)
        yk, yhk, pk = y[known], yhat[known], probs[known]
        names = sorted(set(g))
        assert list(a["groups"]) == names
        assert a["n_unknown"] == int((~known).sum())
        by_group = None
        if binary:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                by_group = MetricFrame(
                    metrics={"acc": accuracy_score, "tpr": true_positive_rate, "fpr": false_positive_rate,
                             "tnr": true_negative_rate, "selection_rate": selection_rate},
                    y_true=yk, y_pred=yhk, sensitive_features=g).by_group
        check_groups(a, names, g, yk, yhk, pk, classes, by_group)
        check_summaries(a, names, g, yk, yhk, classes, o, by_group)
        small = {n: int((g == n).sum()) for n in names if (g == n).sum() < 30}
        assert res["flags"]["small_groups"].get(attr, {}) == small


def check_groups(a, names, g, y, yhat, probs, classes, by_group) -> None:  # type: ignore[no-untyped-def]
    binary = len(classes) == 2
    for name in names:
        m = g == name
        ours = a["groups"][name]
        assert ours["n"] == int(m.sum())
        ym, yhm, pm = y[m], yhat[m], probs[m]
        if binary:
            n_pos, n_neg = int(ym.sum()), int((ym == 0).sum())
            assert (ours["n_pos"], ours["n_neg"]) == (n_pos, n_neg)
            assert close(ours["auc"], auc_or_none(ym, pm[:, 1]))
            assert close(ours["acc"], by_group.loc[name, "acc"])
            assert close(ours["selection_rate"], by_group.loc[name, "selection_rate"])
            # fairlearn reports 0 for a rate with an empty denominator; fairbench reports None
            assert close(ours["tpr"], by_group.loc[name, "tpr"] if n_pos else None)
            assert close(ours["fnr"], 1 - by_group.loc[name, "tpr"] if n_pos else None)
            assert close(ours["fpr"], by_group.loc[name, "fpr"] if n_neg else None)
            assert close(ours["tnr"], by_group.loc[name, "tnr"] if n_neg else None)
            tp, fp, fn = ((yhm == 1) & (ym == 1)).sum(), ((yhm == 1) & (ym == 0)).sum(), ((yhm == 0) & (ym == 1)).sum()
            assert close(ours["f1"], f1_score(ym, yhm, zero_division=0) if tp + fp + fn else None)
            assert close(ours["ece"], ece_reference(pm[:, 1], ym.astype(float), 10))
        else:
            assert ours["n_per_class"] == {c: int((ym == j).sum()) for j, c in enumerate(classes)}
            assert close(ours["acc"], accuracy_score(ym, yhm))
            per_class_auc = [auc_or_none((ym == j).astype(int), pm[:, j]) for j in range(len(classes))]
            assert close(ours["auc"], None if None in per_class_auc else float(np.mean(per_class_auc)))
            for j, c in enumerate(classes):
                assert close(ours["auc_per_class"][c], per_class_auc[j])
                pos, neg = ym == j, ym != j
                hit = yhm == j
                assert close(ours["tpr_per_class"][c], float(hit[pos].mean()) if pos.any() else None)
                assert close(ours["fnr_per_class"][c], float(1 - hit[pos].mean()) if pos.any() else None)
                assert close(ours["fpr_per_class"][c], float(hit[neg].mean()) if neg.any() else None)
                assert close(ours["tnr_per_class"][c], float(1 - hit[neg].mean()) if neg.any() else None)
                assert close(ours["selection_rate_per_class"][c], float(hit.mean()))
            assert close(ours["ece"], ece_reference(pm.max(axis=1), (yhm == ym).astype(float), 10))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert close(ours["macro_f1"], f1_score(ym, yhm, average="macro"))
            assert close(ours["balanced_accuracy"], balanced_accuracy_score(ym, yhm))
            per_class_f1 = f1_score(ym, yhm, labels=list(range(len(classes))), average=None, zero_division=np.nan)
        for j, c in enumerate(classes):
            assert close(ours["f1_per_class"][c], None if np.isnan(per_class_f1[j]) else float(per_class_f1[j]))
        sick = ym != 0  # no_finding_class is classes[0]
        assert close(ours["underdiagnosis_rate"], float((yhm[sick] == 0).mean()) if sick.any() else None)
        assert "var_f1" not in ours  # an overall metric


def _range(values: list[float | None], min_count: int = 2) -> float | None:
    v = [x for x in values if x is not None]
    return max(v) - min(v) if len(v) >= min_count else None


def check_summaries(a, names, g, y, yhat, classes, overall, by_group) -> None:  # type: ignore[no-untyped-def]
    groups = a["groups"]
    aucs = [groups[n]["auc"] for n in names]
    defined_aucs = [v for v in aucs if v is not None]
    # ES-AUC / ES-ACC: FairCLIP's formula on the overall value of all evaluated rows
    ref_es_auc = (es_reference(overall["auc"], defined_aucs)
                  if overall["auc"] is not None and defined_aucs else None)
    assert close(a["es_auc"], ref_es_auc)
    accs = [float(accuracy_score(y[g == n], yhat[g == n])) for n in names]
    assert close(a["es_acc"], es_reference(overall["acc"], accs))
    assert close(a["worst_group_auc"], min(defined_aucs) if defined_aucs else None)
    assert close(a["auc_gap"], _range(aucs))
    assert close(a["f1_delta"], _range([groups[n]["macro_f1"] for n in names]))
    assert close(a["ece_delta"], _range([groups[n]["ece"] for n in names]))
    assert close(a["underdiagnosis_gap"], _range([groups[n]["underdiagnosis_rate"] for n in names]))
    if len(classes) == 2:
        check_binary_fairness(a, names, g, y, yhat, by_group)
    else:
        check_multiclass_fairness(a, names, g, y, yhat, classes)


def check_binary_fairness(a, names, g, y, yhat, by_group) -> None:  # type: ignore[no-untyped-def]
    n_pos = {n: int(y[g == n].sum()) for n in names}
    n_neg = {n: int((y[g == n] == 0).sum()) for n in names}
    if len(names) >= 2:
        assert close(a["dpd"], demographic_parity_difference(y, yhat, sensitive_features=g))
    else:
        assert a["dpd"] is None
    usable = [n for n in names if n_pos[n] and n_neg[n]]
    if len(usable) == len(names) and len(names) >= 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert close(a["deodds"], equalized_odds_difference(y, yhat, sensitive_features=g))
        diff = by_group.max() - by_group.min()
        assert close(a["eqodds"], 1 - 0.5 * (diff["tpr"] + diff["fpr"]))
        assert close(a["eqodds_fairmedfm"], 1 - 0.5 * (diff["tpr"] + diff["tnr"]))
    tpr_range = _range([a["groups"][n]["tpr"] for n in names])
    fpr_range = _range([a["groups"][n]["fpr"] for n in names])
    ref = None if tpr_range is None or fpr_range is None else max(tpr_range, fpr_range)
    assert close(a["deodds"], ref)


def check_multiclass_fairness(a, names, g, y, yhat, classes) -> None:  # type: ignore[no-untyped-def]
    per_class_dpd = []
    for j, c in enumerate(classes):
        yj, yhj = (y == j).astype(int), (yhat == j).astype(int)
        ref = demographic_parity_difference(yj, yhj, sensitive_features=g) if len(names) >= 2 else None
        assert close(a["dpd_per_class"][c], ref)
        per_class_dpd.append(ref)
        has_both = all(0 < yj[g == n].sum() < (g == n).sum() for n in names)
        if has_both and len(names) >= 2:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                assert close(a["deodds_per_class"][c], equalized_odds_difference(yj, yhj, sensitive_features=g))
    defined = [v for v in per_class_dpd if v is not None]
    assert close(a["dpd_mean_ovr"], float(np.mean(defined)) if defined else None)
    assert "dpd" not in a and "deodds" not in a
