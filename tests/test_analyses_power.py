"""Statistical power (fairbench/analyses/power.py): at the reported MDE a simulated test has 80% +- 5 points power.

The reference is a simulation built here: binormal scores (negatives N(0, 1), positives N(mu, 1), so the AUC is
Phi(mu / sqrt(2))), the two groups' AUCs estimated by ranks, and the two-sided z-test the MDE assumes run on every
replicate. Nothing here reuses the module's variance or solver except to obtain the MDE under test.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm, rankdata

from fairbench.analyses.power import (
    mde_auc,
    mde_rate,
    power_for_attribute,
    underpowered,
)

R = 4000  # replicates: Monte Carlo SE of a power near 0.8 is about 0.6 points


def _sim_auc(rng: np.random.Generator, auc: float, n_pos: int, n_neg: int) -> np.ndarray:
    mu = np.sqrt(2) * norm.ppf(auc)
    s = np.concatenate([rng.normal(mu, 1, (R, n_pos)), rng.normal(0, 1, (R, n_neg))], axis=1)
    ranks = rankdata(s, axis=1)
    return (ranks[:, :n_pos].sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _hm_var(a: np.ndarray, n_pos: int, n_neg: int) -> np.ndarray:
    # Hanley & McNeil 1982, written out here from the paper's formula (not imported)
    q1, q2 = a / (2 - a), 2 * a**2 / (1 + a)
    return (a * (1 - a) + (n_pos - 1) * (q1 - a**2) + (n_neg - 1) * (q2 - a**2)) / (n_pos * n_neg)


@pytest.mark.parametrize(("ref", "better", "worse"), [
    (0.80, (60, 90), (40, 120)),
    (0.85, (150, 150), (100, 300)),
    (0.75, (40, 40), (40, 40)),
])
def test_auc_mde_has_80_percent_power(ref: float, better: tuple[int, int], worse: tuple[int, int]) -> None:
    mde = mde_auc(ref, better, worse)
    assert mde is not None and 0 < mde < ref - 0.5
    rng = np.random.default_rng(1)
    a1 = _sim_auc(rng, ref, *better)
    a2 = _sim_auc(rng, ref - mde, *worse)
    z = (a1 - a2) / np.sqrt(_hm_var(a1, *better) + _hm_var(a2, *worse))
    empirical = float((np.abs(z) > norm.ppf(0.975)).mean())
    assert abs(empirical - 0.80) <= 0.05, (mde, empirical)
    # and at no gap the test keeps its level (so the power above is not bought with false positives)
    b2 = _sim_auc(rng, ref, *worse)
    z0 = (a1 - b2) / np.sqrt(_hm_var(a1, *better) + _hm_var(b2, *worse))
    assert float((np.abs(z0) > norm.ppf(0.975)).mean()) <= 0.07


@pytest.mark.parametrize(("ref", "n1", "n2"), [(0.5, 200, 100), (0.3, 400, 400), (0.8, 120, 60)])
def test_rate_mde_has_80_percent_power(ref: float, n1: int, n2: int) -> None:
    mde = mde_rate(ref, n1, n2)
    assert mde is not None
    rng = np.random.default_rng(2)
    p1, p2 = rng.binomial(n1, ref, 20000) / n1, rng.binomial(n2, ref - mde, 20000) / n2
    se = np.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    with np.errstate(divide="ignore", invalid="ignore"):
        reject = np.abs(p1 - p2) / se > norm.ppf(0.975)
    assert abs(float(reject.mean()) - 0.80) <= 0.05, (mde, reject.mean())


def test_mde_solves_the_stated_equation() -> None:
    # analyses.md worked value: AUC 0.80, (100, 100) per group with both variances at 0.80 -> 0.12; the worse group
    # anchored at 0.80 - MDE has a larger variance, so the MDE is larger, and it solves the stated equation
    z = norm.ppf(0.975) + norm.ppf(0.80)
    assert z * np.sqrt(2 * _hm_var(np.float64(0.8), 100, 100)) == pytest.approx(0.12, abs=0.005)
    d = mde_auc(0.80, (100, 100), (100, 100))
    assert d == pytest.approx(z * np.sqrt(_hm_var(0.8, 100, 100) + _hm_var(0.8 - d, 100, 100)), abs=1e-9)
    assert d > 0.12


def test_attribute_record_cell_and_planning() -> None:
    groups = {"a": {"n_pos": 50, "n_neg": 150, "auc": 0.9, "selection_rate": 0.3, "tpr": 0.8, "fpr": 0.1},
              "b": {"n_pos": 20, "n_neg": 60, "auc": 0.7, "selection_rate": 0.4, "tpr": 0.6, "fpr": 0.3},
              "c": {"n_pos": 0, "n_neg": 10, "auc": None}}
    rec = power_for_attribute(groups)
    assert rec["pair"] == ["a", "b"] and rec["mde_auc_gap"] == mde_auc(0.9, (50, 150), (20, 60))
    assert rec["mde_dpd"] == mde_rate(0.4, 80, 200) and rec["dpd_pair"] == ["b", "a"]
    assert rec["mde_deodds"] == min(rec["mde_tpr_gap"], rec["mde_fpr_gap"])
    assert rec["observed_gap"] == pytest.approx(0.2)
    plan = power_for_attribute({g: {k: v[k] for k in ("n_pos", "n_neg")} for g, v in groups.items()},
                               planning_auc=0.8)
    assert plan["mde_auc_gap"] == max(mde_auc(0.8, (50, 150), (20, 60)), mde_auc(0.8, (20, 60), (50, 150)))
    assert power_for_attribute({"a": groups["a"]})["mde_auc_gap"] is None


def test_underpowered_rule() -> None:
    assert underpowered(0.03, [-0.01, 0.07], 0.10)
    assert not underpowered(0.03, [0.01, 0.07], 0.10)  # interval excludes 0: the gap was seen
    assert not underpowered(0.12, [-0.01, 0.25], 0.10)  # above the MDE
    assert not underpowered(None, [-0.01, 0.07], 0.10)


def test_power_command_and_summary_lines() -> None:
    from typer.testing import CliRunner

    from fairbench.cli import app
    from fairbench.data.task import get_task
    from fairbench.report.summary import analyses_lines

    res = CliRunner().invoke(app, ["power", "--task", "synth_cxr", "--n-test", "240", "--auc", "0.8"])
    assert res.exit_code == 0, res.output
    # the sex groups of the generated test split, counted here and rescaled to 240 samples
    s = get_task("synth_cxr").load_split("test")
    sex = np.asarray(s.attributes["sex"], dtype=object)
    counts = {g: (round(int(((sex == g) & (s.labels == 1)).sum()) * 240 / len(s)),
                  round(int(((sex == g) & (s.labels == 0)).sum()) * 240 / len(s))) for g in ("F", "M")}
    expected = max(mde_auc(0.8, counts["F"], counts["M"]), mde_auc(0.8, counts["M"], counts["F"]))
    line = next(ln for ln in res.output.splitlines() if ln.strip().startswith("sex "))
    assert f"{100 * expected:.1f}" in line
    bad = CliRunner().invoke(app, ["power", "--task", "synth_cxr", "--auc", "0.4"])
    assert bad.exit_code != 0 and "--auc must be a number in (0.5, 1)" in str(bad.exception)

    lines = analyses_lines({"power": {"sex": {"mde_auc_gap": 0.1, "observed_gap": 0.03,
                                              "observed_gap_ci": [-0.01, 0.07]},
                                      "age": {"mde_auc_gap": 0.1, "observed_gap": 0.2, "observed_gap_ci": [0.1, 0.3]}}})
    assert any("sex" in ln and "underpowered: gaps below 10.0 could not be seen" in ln for ln in lines)
    assert not any("age" in ln and "underpowered" in ln for ln in lines)


def test_groups_with_equal_observed_aucs_still_get_a_pair():
    """A random-weight model can give every group the same AUC (constant scores): best and worst must still be two
    groups (the run crashed with StopIteration when max and min named the same one)."""
    from fairbench.analyses.power import power_for_attribute

    groups = {"F": {"n_pos": 40, "n_neg": 60, "auc": 0.5}, "M": {"n_pos": 50, "n_neg": 50, "auc": 0.5}}
    rec = power_for_attribute(groups)
    assert [{p["better"], p["worse"]} for p in rec["pairs"]] == [{"F", "M"}]
    assert "mde_auc_gap" in rec  # None here: below an AUC of 0.5 no smaller AUC is defined for the worse group
    groups = {"F": {"n_pos": 40, "n_neg": 60, "auc": 0.8}, "M": {"n_pos": 50, "n_neg": 50, "auc": 0.8}}
    assert power_for_attribute(groups)["mde_auc_gap"] > 0
