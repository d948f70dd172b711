"""Hand-computed cases (tests/metrics_cases/*.json) and the metric registry's metadata."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fairbench.errors import UnknownNameError
from fairbench.metrics import METRICS, MetricSpec, compute_metrics
from fairbench.registry import DuplicateNameError

CASES = sorted((Path(__file__).parent / "metrics_cases").glob("*.json"))
COUNT_KEYS = {"n", "n_pos", "n_neg", "n_per_class", "n_unknown", "groups"}


def lookup(tree: dict, dotted: str) -> object:
    node: object = tree
    for key in dotted.split("."):
        assert isinstance(node, dict) and key in node, f"{dotted}: no {key!r}"
        node = node[key]
    return node


def test_cases_exist() -> None:
    assert len(CASES) >= 3


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_hand_computed_case(path: Path) -> None:
    case = json.loads(path.read_text())
    df = pd.DataFrame(case["rows"], columns=case["columns"])
    df.insert(0, "sample_id", np.arange(len(df)))
    df.insert(1, "split", "test")
    res = compute_metrics(df, classes=case["classes"], **case["kwargs"])
    for dotted, expected in case["expected"].items():
        got = lookup(res, dotted)
        if expected is None:
            assert got is None, dotted
            assert dotted in res["notes"], f"{dotted} is None without a note"
        else:
            assert got == pytest.approx(float(Fraction(str(expected))), abs=1e-12), dotted
    for dotted, fragments in case["notes_contain"].items():
        for fragment in fragments:
            assert fragment in res["notes"][dotted], (dotted, fragment, res["notes"][dotted])


def test_every_spec_is_complete() -> None:
    names = METRICS.names()
    assert len(names) >= 35
    for name in names:
        spec = METRICS.get(name)
        assert isinstance(spec, MetricSpec) and spec.name == name
        assert spec.description and spec.source, name
        assert spec.kind in ("slice", "summary") and spec.higher_is_better in (True, False, None)
        assert spec.tasks and spec.tasks <= {"binary", "multiclass"}
        if spec.kind == "summary":
            assert spec.inputs, name
            for inp in spec.inputs:  # summaries read slice metrics that exist for the same tasks
                source = METRICS.get(inp)
                assert source.kind == "slice" and spec.tasks <= source.tasks and "group" in source.scopes, name
        else:
            assert spec.undefined, name


@pytest.mark.parametrize("k", [2, 3])
def test_output_keys_are_exactly_the_registered_metrics(k: int) -> None:
    rng = np.random.default_rng(k)
    classes = [f"c{j}" for j in range(k)]
    probs = rng.dirichlet(np.ones(k), 200)
    df = pd.DataFrame({"sample_id": range(200), "split": "test", "label": rng.integers(0, k, 200),
                       "attr_grp": rng.choice(["u", "v"], 200)})
    for j, c in enumerate(classes):
        df[f"prob_{c}"] = probs[:, j]
    res = compute_metrics(df, classes=classes, n_boot=0, no_finding_class="c0")
    task = "binary" if k == 2 else "multiclass"
    applicable = {n for n in METRICS.names() if METRICS.get(n).applies(task, True)}
    slice_overall = {n for n in applicable if METRICS.get(n).kind == "slice" and "overall" in METRICS.get(n).scopes}
    slice_group = {n for n in applicable if METRICS.get(n).kind == "slice" and "group" in METRICS.get(n).scopes}
    summaries = {n for n in applicable if METRICS.get(n).kind == "summary"}
    assert set(res["overall"]) - COUNT_KEYS == slice_overall
    assert set(res["attributes"]["grp"]["groups"]["u"]) - COUNT_KEYS == slice_group
    assert set(res["attributes"]["grp"]) - COUNT_KEYS == summaries
    for name in applicable:
        spec = METRICS.get(name)
        where = res["overall"] if name in slice_overall else res["attributes"]["grp"]
        if name in where:
            assert isinstance(where[name], dict) == spec.per_class, name
            if spec.per_class:
                assert list(where[name]) == classes


def test_registry_guards_names() -> None:
    with pytest.raises(DuplicateNameError):
        METRICS.register("auc", METRICS.get("auc"))
    with pytest.raises(UnknownNameError, match="es_auc"):
        METRICS.get("es-auc")


def test_a_registered_metric_flows_everywhere() -> None:
    """The docs' extension example: one registration, and the metric is in overall, groups and the CIs."""
    from fairbench.metrics import BINARY, register_metric, safe_div

    @register_metric("ppv_test_only", kind="slice", higher_is_better=True, needs_scores=False, tasks=BINARY,
                     source="confusion counts", description="precision", undefined="no positive predictions")
    def ppv(s):  # type: ignore[no-untyped-def]
        tp, fp, _, _ = s.ovr()
        return safe_div(tp, tp + fp)[..., 1]

    try:
        rng = np.random.default_rng(0)
        y = rng.integers(0, 2, 300)
        p = np.clip(0.3 * y + 0.7 * rng.random(300), 0, 1)
        df = pd.DataFrame({"sample_id": range(300), "split": "test", "label": y, "prob_n": 1 - p, "prob_p": p,
                           "attr_g": rng.choice(["u", "v"], 300)})
        res = compute_metrics(df, classes=["n", "p"], n_boot=50)
        yhat = p >= 0.5
        assert res["overall"]["ppv_test_only"] == pytest.approx(y[yhat].mean())
        u = df["attr_g"].to_numpy() == "u"
        assert res["attributes"]["g"]["groups"]["u"]["ppv_test_only"] == pytest.approx(y[yhat & u].mean())
        lo, hi = res["ci"]["attributes"]["g"]["groups"]["u"]["ppv_test_only"]
        assert lo < hi
    finally:
        METRICS.unregister("ppv_test_only")
    assert "ppv_test_only" not in METRICS
