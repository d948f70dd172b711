"""Properties of the suite on generated predictions (hypothesis)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fairbench.metrics import compute_metrics

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def predictions(draw, min_rows: int = 2, max_rows: int = 60, max_classes: int = 3):  # type: ignore[no-untyped-def]
    n = draw(st.integers(min_rows, max_rows))
    k = draw(st.integers(2, max_classes))
    labels = draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n))
    grid = draw(st.sampled_from([4, 10, 1000]))  # coarse grids give many ties
    raw = draw(st.lists(st.lists(st.integers(0, grid), min_size=k, max_size=k), min_size=n, max_size=n))
    probs = np.asarray(raw, dtype=float) + 1e-3
    if draw(st.booleans()):
        probs /= probs.sum(axis=1, keepdims=True)
    else:  # scores that do not sum to one (e.g. independent sigmoids)
        probs /= grid + 1e-3
    groups = draw(st.lists(st.sampled_from(["a", "b", "c", "d", None]), min_size=n, max_size=n))
    classes = [f"k{j}" for j in range(k)]
    df = pd.DataFrame({"sample_id": np.arange(n), "split": "test", "label": labels})
    for j, c in enumerate(classes):
        df[f"prob_{c}"] = probs[:, j]
    df["attr_grp"] = pd.Series(groups, dtype=object)
    return df, classes


def run(df: pd.DataFrame, classes: list[str], n_boot: int = 0) -> dict:
    return compute_metrics(df, classes=classes, n_boot=n_boot, no_finding_class=classes[0], min_group_size=5)


def values_of(a: dict) -> list[float]:
    return [v for v in a.values() if isinstance(v, float)]


@SETTINGS
@given(predictions(), st.randoms(use_true_random=False))
def test_invariant_to_row_order(case, rnd) -> None:  # type: ignore[no-untyped-def]
    df, classes = case
    perm = list(range(len(df)))
    rnd.shuffle(perm)
    assert run(df, classes, n_boot=15) == run(df.iloc[perm].reset_index(drop=True), classes, n_boot=15)


def _group_signatures(df: pd.DataFrame, classes: list[str]) -> list[tuple]:
    cols = ["label"] + [f"prob_{c}" for c in classes]
    return [tuple(sorted(map(tuple, g[cols].to_numpy().tolist()))) for _, g in df.groupby("attr_grp")]


@SETTINGS
@given(predictions(), st.permutations(["p", "q", "r", "s"]))
def test_invariant_to_renaming_groups(case, new_names) -> None:  # type: ignore[no-untyped-def]
    df, classes = case
    mapping = dict(zip(["a", "b", "c", "d"], new_names, strict=True))
    renamed = df.assign(attr_grp=df["attr_grp"].map(mapping))
    back = {v: k for k, v in mapping.items()}

    def restore(res: dict) -> dict:
        a = res["attributes"]["grp"]
        a["groups"] = {back[g]: v for g, v in sorted(a["groups"].items(), key=lambda kv: back[kv[0]])}
        ci = res["ci"].get("attributes", {}).get("grp")
        if ci and "groups" in ci:
            ci["groups"] = {back[g]: v for g, v in ci["groups"].items()}
        res["notes"] = {_rename_note_key(k, back): v for k, v in res["notes"].items()}
        res["flags"]["small_groups"] = {
            attr: {back[g]: n for g, n in groups.items()} for attr, groups in res["flags"]["small_groups"].items()
        }
        return res

    original, after = run(df, classes, n_boot=15), restore(run(renamed, classes, n_boot=15))
    sigs = _group_signatures(df, classes)
    if len(set(sigs)) < len(sigs):  # identical groups are told apart by name order only: compare points
        original.pop("ci"), after.pop("ci")
        original["notes"] = {k: v for k, v in original["notes"].items() if not k.startswith("ci.")}
        after["notes"] = {k: v for k, v in after["notes"].items() if not k.startswith("ci.")}
    original["notes"] = {k: _rename_note_text(v, back, mapping) for k, v in original["notes"].items()}
    after["notes"] = {k: _rename_note_text(v, back, mapping) for k, v in after["notes"].items()}
    assert original == after


def _rename_note_key(key: str, back: dict[str, str]) -> str:
    parts = key.split(".")
    if "groups" in parts:
        i = parts.index("groups") + 1
        parts[i] = back.get(parts[i], parts[i])
    return ".".join(parts)


def _rename_note_text(text: str, back: dict[str, str], mapping: dict[str, str]) -> str:
    # notes list left-out groups by name; compare them as sets of original names
    for new, old in back.items():
        text = text.replace(f"'{new}'", f"'{old}'")
    return text if "[" not in text else _sorted_lists(text)


def _sorted_lists(text: str) -> str:
    import re

    return re.sub(r"\[([^\]]*)\]", lambda m: "[" + ", ".join(sorted(m.group(1).split(", "))) + "]", text)


@SETTINGS
@given(predictions())
def test_bounds_of_summaries(case) -> None:  # type: ignore[no-untyped-def]
    df, classes = case
    res = run(df, classes)
    a = res["attributes"]["grp"]
    overall_auc = res["overall"]["auc"]
    if a["es_auc"] is not None:
        assert 0.0 <= a["es_auc"] <= overall_auc + 1e-12
    if a["es_acc"] is not None:
        assert 0.0 <= a["es_acc"] <= res["overall"]["acc"] + 1e-12
    binary = len(classes) == 2
    keys = ("dpd", "deodds") if binary else ("dpd_mean_ovr", "deodds_mean_ovr")
    for key in keys:
        if a[key] is not None:
            assert 0.0 <= a[key] <= 1.0
    if binary:
        for g in a["groups"].values():
            for rate in ("tpr", "fpr", "selection_rate", "acc", "auc", "ece", "f1"):
                assert g[rate] is None or 0.0 <= g[rate] <= 1.0
        if a["eqodds"] is not None:  # TNR = 1 - FPR: FairMedFM's TNR-based score equals MEDFAIR's
            assert abs(a["eqodds"] - a["eqodds_fairmedfm"]) < 1e-12
            assert abs(a["eqodds"] - (1 - 0.5 * (_range(a, "tpr") + _range(a, "fpr")))) < 1e-12
            assert a["deodds"] == max(_range(a, "tpr"), _range(a, "fpr"))
    else:
        for c in classes:
            v = a["dpd_per_class"][c]
            assert v is None or 0.0 <= v <= 1.0
    aucs = [g["auc"] for g in a["groups"].values() if g["auc"] is not None]
    if aucs:
        assert a["worst_group_auc"] == min(aucs)
    if len(aucs) >= 2:
        assert a["auc_gap"] == max(aucs) - min(aucs)


def _range(a: dict, key: str) -> float:
    v = [g[key] for g in a["groups"].values() if g[key] is not None]
    return max(v) - min(v)


@st.composite
def populated(draw):  # type: ignore[no-untyped-def]
    """Binary predictions with two or three groups of 150-300 rows and both classes in each."""
    seed = draw(st.integers(0, 2**32 - 1))
    n_groups = draw(st.integers(2, 3))
    rng = np.random.default_rng(seed)
    sizes = rng.integers(150, 300, n_groups)
    frames = []
    for j, m in enumerate(sizes):
        y = rng.integers(0, 2, m)
        y[:20], y[20:40] = 0, 1
        signal = draw(st.floats(0.0, 2.5))
        p = 1 / (1 + np.exp(-(signal * (2 * y - 1) + rng.normal(0, 1, m))))
        frames.append(pd.DataFrame({"label": y, "prob_pos": p, "attr_grp": f"g{j}"}))
    df = pd.concat(frames, ignore_index=True)
    df["prob_neg"] = 1 - df["prob_pos"]
    df["split"] = "test"
    df["sample_id"] = np.arange(len(df))
    return df


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(populated())
def test_intervals_contain_point_estimates_for_populated_groups(df) -> None:  # type: ignore[no-untyped-def]
    res = compute_metrics(df, classes=["neg", "pos"], n_boot=300, seed=1)
    checked = 0
    for g, gm in res["attributes"]["grp"]["groups"].items():
        ci = res["ci"]["attributes"]["grp"]["groups"][g]
        for metric in ("auc", "acc", "tpr", "fpr", "tnr", "selection_rate", "macro_f1"):
            assume(gm[metric] is not None)
            lo, hi = ci[metric]
            assert lo - 1e-12 <= gm[metric] <= hi + 1e-12, (g, metric, gm[metric], lo, hi)
            checked += 1
    assert checked >= 14
