"""FairMedFM variants (fairbench/analyses/fairmedfm.py) against the ``fairmedfm`` package 0.4.x to 1e-12.

The reference is ``fairmedfm.evaluate`` (PyPI 0.4.2, the FairMedFM authors' package), run on the same rows.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from fairbench.analyses import compute_variants
from fairbench.analyses.fairmedfm import NAMES, fairmedfm_variants
from fairbench.errors import DataError

fairmedfm = pytest.importorskip("fairmedfm")


def _reference(prob: np.ndarray, label: np.ndarray, groups: dict[str, np.ndarray]) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = fairmedfm.evaluate(label.astype(int), prob, pd.DataFrame(groups), score_type="probability")
    return rep.summary


def _data(seed: int, n: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n).astype(np.float64)
    prob = 1 / (1 + np.exp(-(1.2 * label - 0.6 + rng.normal(size=n))))
    prob[:5] = np.round(prob[:5], 1)  # a few ties
    sex = rng.choice(["F", "M"], n).astype(object)
    race = rng.choice(["A", "B", "C", "D"], n).astype(object)
    race[race == "D"] = np.where(label[race == "D"] == 1, "C", "D")  # group D: negatives only -> skipped
    sex[:7] = None  # unknown attribute values
    return prob, label, {"sex": sex, "race": race}


@pytest.mark.parametrize(("seed", "n"), [(0, 300), (1, 1000), (2, 120)])
def test_matches_fairmedfm_package(seed: int, n: int) -> None:
    prob, label, groups = _data(seed, n)
    ours = fairmedfm_variants(prob, label, groups)
    ref = _reference(prob, label, groups)
    for attr in groups:
        row = ref.loc[attr]
        assert ours[attr]["n"] == row["n"] and ours[attr]["n_groups"] == row["n_groups"]
        for name in NAMES:
            assert ours[attr][name] == pytest.approx(float(row[name]), abs=1e-12, rel=0), (attr, name)
    assert ours["race"]["skipped"] == {"D": "only label 0"}


def test_compute_variants_reads_the_evaluated_split() -> None:
    prob, label, groups = _data(3, 400)
    frame = pd.DataFrame({"split": np.where(np.arange(400) < 300, "test", "val"), "label": label.astype(int),
                          "prob_no": 1 - prob, "prob_yes": prob,
                          "attr_sex": pd.array(groups["sex"], dtype="string"),
                          "attr_race": pd.array(groups["race"], dtype="string")})
    out = compute_variants(frame, classes=["no", "yes"], attributes=["sex", "race"], intersections=[["sex", "race"]],
                           eval_split="test", variants=["fairmedfm"])
    test = slice(0, 300)
    inter = np.array([None if s is None else f"{s}*{r}" for s, r in zip(groups["sex"][test], groups["race"][test])],
                     dtype=object)
    ref = _reference(prob[test], label[test], {"sex": groups["sex"][test], "sex*race": inter})
    assert out["fairmedfm"]["sex"]["auc-gap"] == pytest.approx(float(ref.loc["sex", "auc-gap"]), abs=1e-12)
    assert out["fairmedfm"]["sex*race"]["eod"] == pytest.approx(float(ref.loc["sex*race", "eod"]), abs=1e-12)
    assert "test labels" in out["notes"]["fairmedfm"] or "evaluated samples" in out["notes"]["fairmedfm"]
    with pytest.raises(DataError, match="unknown"):
        compute_variants(frame, classes=["no", "yes"], attributes=["sex"], intersections=[], eval_split="test",
                         variants=["medfair"])
