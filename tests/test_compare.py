"""`fairbench compare`: paired bootstrap and DeLong on fabricated cells with known differences, checked
against the suite's own point estimates, hand computations, and each other."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures_results import fabricate_cell
from typer.testing import CliRunner

from fairbench.cli import app
from fairbench.compare import compare
from fairbench.errors import FairbenchError
from fairbench.metrics.paired import bootstrap_p_value, delong_paired


@pytest.fixture(scope="module")
def cells(tmp_path_factory) -> Path:
    """'biased' loses most of its separation for age >= 60; 'fixed' does not; same samples per seed."""
    root = tmp_path_factory.mktemp("compare") / "results"
    for seed in (0, 1, 2):
        fabricate_cell(root, model="m", adapt="biased", seed=seed, strength=0.8, bias=0.8, n_boot=0,
                       same_samples=True)
        fabricate_cell(root, model="m", adapt="fixed", seed=seed, strength=0.8, bias=0.0, n_boot=0,
                       same_samples=True)
    return root / "synth_cxr" / "m"


def _walk(tree: dict, path: tuple = ()) -> list[tuple[tuple, dict]]:
    out = []
    for k, v in tree.items():
        if isinstance(v, dict) and "delta" in v:
            out.append((path + (k,), v))
        elif isinstance(v, dict):
            out += _walk(v, path + (k,))
    return out


def _walk_across(tree: dict, path: tuple = ()) -> list[tuple[tuple, dict]]:
    out = []
    for k, v in tree.items():
        if isinstance(v, dict) and "mean_delta" in v:
            out.append((path + (k,), v))
        elif isinstance(v, dict):
            out += _walk_across(v, path + (k,))
    return out


def _get(tree: dict, path: tuple):  # type: ignore[no-untyped-def]
    for k in path:
        tree = tree[k]
    return tree


def test_point_values_are_each_cells_own_metrics(cells: Path) -> None:
    result = compare(cells / "biased" / "seed0", cells / "fixed" / "seed0", n_boot=50)
    doc_a = json.loads((cells / "biased" / "seed0" / "metrics.json").read_text())["metrics"]
    doc_b = json.loads((cells / "fixed" / "seed0" / "metrics.json").read_text())["metrics"]
    entries = _walk(result["metrics"])
    assert len(entries) > 60  # every metric the suite computes, overall, per attribute, per group
    for path, e in entries:
        assert e["a"] == _get(doc_a, path) and e["b"] == _get(doc_b, path), path
        if e["a"] is not None and e["b"] is not None:
            assert e["delta"] == pytest.approx(e["b"] - e["a"], abs=1e-15)
    assert result["n"] == 400 and result["thresholds"]["a"]["from"] == "metrics.json"


def test_known_improvement_is_found_where_it_is_and_not_elsewhere(cells: Path) -> None:
    r = compare(cells / "biased" / "seed0", cells / "fixed" / "seed0", n_boot=400, seed=1)
    age = r["metrics"]["attributes"]["age"]
    old, young = age["groups"][">=60"]["auc"], age["groups"]["<60"]["auc"]
    assert old["ci"][0] > 0.15 and old["p"] <= 2 / 401 + 1e-12  # the repaired group
    assert young["ci"][0] < 0 < young["ci"][1] and young["p"] > 0.2  # untouched group: no difference
    assert age["auc_gap"]["ci"][1] < 0 and age["es_auc"]["ci"][0] > 0
    inside = 0
    for path, e in _walk(r["metrics"]):
        if e["ci"] is not None:  # the interval holds its delta, or the entry says it does not
            if e["ci"][0] <= e["delta"] <= e["ci"][1]:
                inside += 1
                assert "ci_excludes_delta" not in e, path
            else:
                assert e.get("ci_excludes_delta") is True, (path, e)
            if path[-1] == "auc":  # no absolute values: the paired percentile interval must hold the delta
                assert e["ci"][0] <= e["delta"] <= e["ci"][1], path
    assert inside > 50


def test_a_cell_against_itself_differs_by_exactly_zero(cells: Path) -> None:
    r = compare(cells / "biased" / "seed0", cells / "biased" / "seed0" / "predictions.parquet", n_boot=100)
    for path, e in _walk(r["metrics"]):
        if e["delta"] is not None:
            assert e["delta"] == 0.0 and e["ci"] == [0.0, 0.0] and e["p"] == 1.0, path
    assert r["delong"]["overall"]["auc"]["delta"] == 0.0 and r["delong"]["overall"]["auc"]["p"] == 1.0


def test_pairing_narrows_the_interval_of_correlated_predictions(cells: Path, tmp_path: Path) -> None:
    """B = A plus a little noise: the marginal intervals overlap almost entirely, the paired one is narrow."""
    src = cells / "biased" / "seed0"
    dst = tmp_path / "synth_cxr" / "m" / "noisy" / "seed0"
    shutil.copytree(src, dst)
    frame = pd.read_parquet(dst / "predictions.parquet")
    rng = np.random.default_rng(0)
    p1 = np.clip(frame["prob_abnormal"].to_numpy() + rng.normal(0, 0.02, len(frame)), 0, 1)
    frame["prob_abnormal"], frame["prob_normal"] = p1, 1 - p1
    frame.to_parquet(dst / "predictions.parquet", index=False)
    r = compare(src, dst, n_boot=2000)
    auc = r["metrics"]["overall"]["auc"]
    paired_width = auc["ci"][1] - auc["ci"][0]
    from fairbench.metrics import compute_metrics

    marginal = compute_metrics(frame, classes=["normal", "abnormal"], attributes=["sex", "age", "race"],
                               n_boot=400)["ci"]["overall"]["auc"]
    assert paired_width < 0.2 * (marginal[1] - marginal[0])
    dl = r["delong"]["overall"]["auc"]
    # two methods, one answer: width ratios 0.97 at B = 1000 and 0.94-0.95 at B = 4000 here (bootstrap seeds
    # 0-2); 10% leaves room for the bootstrap's own noise, not for a wrong variance
    assert dl["ci"][1] - dl["ci"][0] == pytest.approx(paired_width, rel=0.1)
    assert dl["se"] == pytest.approx(auc["se"], rel=0.1)


def test_b_gets_as_resample_on_the_same_samples_in_its_own_row_order() -> None:
    from fairbench.metrics._kernels import draw_weights
    from fairbench.metrics._plan import PassData, build_plan
    from fairbench.metrics.paired import b_layout

    rng = np.random.default_rng(3)
    n = 300
    y = rng.integers(0, 2, n)
    group = rng.integers(-1, 3, n)  # -1 = unknown: its own block, as in the suite

    def data(score: np.ndarray) -> PassData:
        probs = np.column_stack([1 - score, score])
        yhat = (score >= 0.5).astype(np.int64)
        return PassData(y=y, yhat=yhat, probs=probs, bad=np.zeros(n, bool), conf=score, target=y.astype(float),
                        bins=np.minimum((score * 15).astype(np.int64), 14), row_key=score, group=group, n_groups=3,
                        n_bins=15)

    plan_a, plan_b = build_plan(data(rng.random(n))), build_plan(data(rng.random(n)))
    take_b = b_layout(plan_a, plan_b)
    assert np.array_equal(plan_a.order[take_b], plan_b.order)  # B's position q holds the same row as A's take_b[q]
    w_a = draw_weights(plan_a, 40, seed=0, chunk=0)  # the suite's resamples of A
    w_b = np.take(w_a, take_b, axis=1)
    counts_a, counts_b = np.zeros_like(w_a), np.zeros_like(w_b)
    counts_a[:, plan_a.order], counts_b[:, plan_b.order] = w_a, w_b
    assert np.array_equal(counts_a, counts_b)  # every sample drawn as often for B as for A
    for k in range(2):  # strata of true class x group keep their sizes in every resample
        for g in range(-1, 3):
            rows = (y == k) & (group == g)
            assert (counts_b[:, rows].sum(axis=1) == rows.sum()).all()


def test_row_order_of_the_files_does_not_matter(cells: Path, tmp_path: Path) -> None:
    shuffled = tmp_path / "shuffled" / "seed0"
    shutil.copytree(cells / "biased" / "seed0", shuffled)
    frame = pd.read_parquet(shuffled / "predictions.parquet")
    frame.sample(frac=1.0, random_state=4).to_parquet(shuffled / "predictions.parquet", index=False)
    r = compare(cells / "biased" / "seed0", shuffled, n_boot=100)
    for path, e in _walk(r["metrics"]):
        if e["delta"] is not None:
            assert e["delta"] == 0.0 and e["ci"] == [0.0, 0.0], path


def test_bootstrap_p_value_by_hand() -> None:
    assert bootstrap_p_value(np.array([0.1] * 99)) == pytest.approx(2 / 100)
    assert bootstrap_p_value(np.array([-1.0, 1.0, 2.0, 3.0])) == pytest.approx(min(1, 2 * 2 / 5))
    assert bootstrap_p_value(np.zeros(10)) == 1.0
    assert bootstrap_p_value(np.array([np.nan, np.nan])) is None


def _delong_by_definition(y, a, b):  # type: ignore[no-untyped-def]
    """DeLong 1988 written out with explicit loops over positive-negative pairs."""
    pos, neg = [i for i in range(len(y)) if y[i]], [i for i in range(len(y)) if not y[i]]
    m, n = len(pos), len(neg)

    def psi(x, z):  # type: ignore[no-untyped-def]
        return 1.0 if x > z else 0.5 if x == z else 0.0

    out = []
    for s in (a, b):
        v10 = [sum(psi(s[i], s[j]) for j in neg) / n for i in pos]
        v01 = [sum(psi(s[i], s[j]) for i in pos) / m for j in neg]
        out.append((sum(v10) / m, v10, v01))
    (auc_a, v10a, v01a), (auc_b, v10b, v01b) = out

    def cov(u, v):  # type: ignore[no-untyped-def]
        mu, mv = sum(u) / len(u), sum(v) / len(v)
        return sum((x - mu) * (z - mv) for x, z in zip(u, v, strict=True)) / (len(u) - 1)

    var = ((cov(v10a, v10a) + cov(v10b, v10b) - 2 * cov(v10a, v10b)) / m
           + (cov(v01a, v01a) + cov(v01b, v01b) - 2 * cov(v01a, v01b)) / n)
    return auc_a, auc_b, var


def test_delong_matches_the_definition_and_sklearn() -> None:
    from sklearn.metrics import roc_auc_score

    y = np.array([1, 1, 1, 0, 0, 0, 0, 1, 0])
    a = np.array([0.9, 0.4, 0.7, 0.3, 0.4, 0.1, 0.6, 0.8, 0.4])  # ties across and within classes
    b = np.array([0.8, 0.9, 0.35, 0.2, 0.5, 0.5, 0.1, 0.7, 0.3])
    d = delong_paired(y, a, b)
    auc_a, auc_b, var = _delong_by_definition(y, a, b)
    assert d is not None
    assert d.auc_a == pytest.approx(auc_a) == pytest.approx(roc_auc_score(y, a))
    assert d.auc_b == pytest.approx(auc_b) == pytest.approx(roc_auc_score(y, b))
    assert d.se == pytest.approx(math.sqrt(var))
    assert d.p == pytest.approx(math.erfc(abs(auc_b - auc_a) / math.sqrt(var) / math.sqrt(2)))
    assert d.ci == pytest.approx([d.delta - 1.959964 * d.se, d.delta + 1.959964 * d.se], rel=1e-6)
    assert delong_paired(np.zeros(4), a[:4], b[:4]) is None


def test_delong_and_paired_bootstrap_agree_on_group_aucs(cells: Path) -> None:
    r = compare(cells / "biased" / "seed0", cells / "fixed" / "seed0", n_boot=2000)
    for g in ("<60", ">=60"):
        boot = r["metrics"]["attributes"]["age"]["groups"][g]["auc"]
        dl = r["delong"]["attributes"]["age"][g]["auc"]
        assert dl["delta"] == pytest.approx(boot["delta"], abs=1e-12)
        # measured: width ratios 0.94-1.05 at B = 1000, 0.97-1.02 at B = 4000 (bootstrap seeds 0-2)
        assert (dl["ci"][1] - dl["ci"][0]) == pytest.approx(boot["ci"][1] - boot["ci"][0], rel=0.1)
        assert dl["se"] == pytest.approx(boot["se"], rel=0.1)
        assert (dl["p"] < 0.05) == (boot["p"] < 0.05)


def test_seeds_that_vary_combine_seed_and_test_sample_variation(cells: Path) -> None:
    from scipy import stats

    r = compare(cells / "biased", cells / "fixed", n_boot=200)
    assert r["seeds"] == [0, 1, 2] and set(r["per_seed"]) == {"0", "1", "2"}
    per = [r["per_seed"][s]["metrics"]["overall"]["auc"] for s in ("0", "1", "2")]
    deltas = [e["delta"] for e in per]
    summary = r["across_seeds"]["metrics"]["overall"]["auc"]
    assert summary["method"] == "combined" and summary["covers"] == "seeds and test samples"
    mean, sd = np.mean(deltas), np.std(deltas, ddof=1)
    # the t interval of the seeds alone, by hand (kept as t_ci / t_p)
    half = stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
    assert summary["deltas"] == deltas and summary["mean_delta"] == pytest.approx(mean)
    assert summary["t_ci"] == pytest.approx([mean - half, mean + half])
    assert summary["t_p"] == pytest.approx(stats.ttest_1samp(deltas, 0.0).pvalue)
    # each seed's bootstrap standard error is the spread of its resampled deltas (about width / 3.92)
    for e in per:
        assert e["se"] == pytest.approx((e["ci"][1] - e["ci"][0]) / (2 * 1.959964), rel=0.25)
    # the combined interval, by hand: SE^2 = s^2/k + mean(se_i^2), Welch-Satterthwaite df
    v_seeds, v_within = sd**2 / 3, np.mean([e["se"] ** 2 for e in per])
    v = v_seeds + v_within
    df = 2 * v**2 / v_seeds**2
    half = stats.t.ppf(0.975, df) * math.sqrt(v)
    assert summary["ci"] == pytest.approx([mean - half, mean + half])
    assert summary["p"] == pytest.approx(2 * stats.t.sf(abs(mean) / math.sqrt(v), df))
    assert summary["ci"][0] > 0  # the repair is real in every seed and survives both sources of variation


def _copy_seeds(src: Path, dst: Path, seeds=(0, 1, 2), noise: float = 0.0) -> Path:
    """A folder of seed cells whose predictions are all seed 0's (plus ``noise`` x a tiny per-seed jitter):
    what zero-shot or a linear probe on fixed weights gives."""
    for s in seeds:
        cell = dst / f"seed{s}"
        shutil.copytree(src / "seed0", cell)
        doc = json.loads((cell / "metrics.json").read_text())
        doc["seed"] = s
        (cell / "metrics.json").write_text(json.dumps(doc))
        if noise:
            frame = pd.read_parquet(cell / "predictions.parquet")
            jitter = np.random.default_rng(s).normal(0, noise, len(frame))
            p1 = np.clip(frame["prob_abnormal"].to_numpy() + jitter, 0, 1)
            frame["prob_abnormal"], frame["prob_normal"] = p1, 1 - p1
            frame.to_parquet(cell / "predictions.parquet", index=False)
    return dst


def test_seeds_with_identical_predictions_fall_back_to_one_seeds_bootstrap(cells: Path, tmp_path: Path) -> None:
    """Seeds that give identical predictions show no seed variation: no zero-width interval, no p = 0."""
    a = _copy_seeds(cells / "biased", tmp_path / "synth_cxr" / "m" / "zs_a")
    b = _copy_seeds(cells / "fixed", tmp_path / "synth_cxr" / "m" / "zs_b")
    r = compare(a, b, n_boot=200)
    one = compare(a / "seed0", b / "seed0", n_boot=200)
    n = 0
    for path, e in _walk_across(r["across_seeds"]["metrics"]):
        n += 1
        assert e["method"] == "same" and e["covers"] == "test samples", path
        ref = _get(one["metrics"], path)
        assert e["ci"] == ref["ci"] and e["p"] == ref["p"], path
        if e["ci"] is not None and ref["se"]:
            assert e["ci"][1] > e["ci"][0] and e["p"] > 0, path
    assert n > 60
    # the age-group AUC that the repair does not touch: a wide interval around 0, not certainty
    young = r["across_seeds"]["metrics"]["attributes"]["age"]["groups"]["<60"]["auc"]
    assert young["ci"][0] < 0 < young["ci"][1] and young["p"] > 0.05
    res = CliRunner().invoke(app, ["compare", str(a), str(b), "--n-boot", "200"])
    assert res.exit_code == 0, res.output
    assert "0.0e+00" not in res.output and "test only †" in res.output and "seeds show no variation" in res.output


def test_seeds_that_barely_vary_do_not_shrink_the_interval_to_nothing(cells: Path, tmp_path: Path) -> None:
    """Seeds that differ by float-noise-sized jitter: the seeds' own t interval is near zero width with p near
    0; the reported interval must still carry the test-sample variation of one seed's bootstrap."""
    a = _copy_seeds(cells / "biased", tmp_path / "synth_cxr" / "m" / "na", noise=1e-4)
    b = _copy_seeds(cells / "fixed", tmp_path / "synth_cxr" / "m" / "nb", noise=1e-4)
    r = compare(a, b, n_boot=200)
    e = r["across_seeds"]["metrics"]["attributes"]["age"]["groups"]["<60"]["auc"]
    one = r["per_seed"]["0"]["metrics"]["attributes"]["age"]["groups"]["<60"]["auc"]
    assert e["method"] == "combined"
    assert e["t_ci"][1] - e["t_ci"][0] < 0.2 * (one["ci"][1] - one["ci"][0])  # what the seeds alone would claim
    assert e["ci"][1] - e["ci"][0] >= 0.9 * (one["ci"][1] - one["ci"][0])
    assert e["ci"][0] < 0 < e["ci"][1] and e["p"] > 0.05


def test_a_cell_against_a_folder_of_seeds_uses_the_folders_matching_seed(cells: Path, tmp_path: Path) -> None:
    r = compare(cells / "biased" / "seed1", cells / "fixed", n_boot=100)
    direct = compare(cells / "biased" / "seed1", cells / "fixed" / "seed1", n_boot=100)
    assert "per_seed" not in r and r["matched_seed"] == {"side": "b", "folder": str(cells / "fixed"), "seed": 1}
    assert r["metrics"] == direct["metrics"] and r["b"]["seed"] == 1
    assert r["metrics"]["overall"]["auc"]["ci"] is not None  # a real interval, not n/a
    r = compare(cells / "biased", cells / "fixed" / "seed2", n_boot=20)
    assert r["matched_seed"]["side"] == "a" and r["a"]["seed"] == 2
    lone = tmp_path / "lone"
    _copy_seeds(cells / "fixed", lone, seeds=(7,))
    with pytest.raises(FairbenchError, match=r"seed-7 cell and .* a folder of seeds without seed7 \(seeds 0, 1, 2\)"):
        compare(cells / "biased", lone / "seed7", n_boot=10)
    res = CliRunner().invoke(app, ["compare", str(cells / "biased" / "seed1"), str(cells / "fixed"), "--n-boot", "50"])
    assert res.exit_code == 0 and "seed1 cell: the folder's seed matching the other cell's" in res.output


def test_p_at_the_bootstrap_floor_prints_as_an_upper_bound(cells: Path) -> None:
    from fairbench.report.comparison import fmt_p, p_floor

    assert fmt_p(2 / 1001, p_floor(1000)) == "<0.002"
    assert fmt_p(2 / 51, p_floor(50)) == "<0.04"  # 0.0392 rounds up, never down
    assert fmt_p(2 / 401, p_floor(400)) == "<0.005"
    assert fmt_p(0.0123, p_floor(1000)) == "0.012" and fmt_p(3e-5) == "3.0e-05"
    res = CliRunner().invoke(app, ["compare", str(cells / "biased" / "seed0"), str(cells / "fixed" / "seed0"),
                                   "--n-boot", "400", "--seed", "1"])
    assert res.exit_code == 0
    row = next(line for line in res.output.splitlines() if line.lstrip().startswith("age = >=60"))
    assert "<0.005" in row and "0.005 " not in row.replace("<0.005", "")


def test_cells_that_cannot_be_compared_are_one_clear_error(cells: Path, tmp_path: Path) -> None:
    other = tmp_path / "results"
    fabricate_cell(other, model="m", adapt="other", seed=0)  # its own samples
    with pytest.raises(FairbenchError, match="disagree on the label|different samples"):
        compare(cells / "biased" / "seed0", other / "synth_cxr" / "m" / "other" / "seed0", n_boot=10)
    fewer = tmp_path / "fewer" / "seed0"
    shutil.copytree(cells / "fixed" / "seed0", fewer)
    frame = pd.read_parquet(fewer / "predictions.parquet")
    frame.iloc[:-3].to_parquet(fewer / "predictions.parquet", index=False)
    with pytest.raises(FairbenchError, match=r"different samples \(0 only in A; 3 only in B, e.g. test-00397"):
        compare(fewer, cells / "biased" / "seed0", n_boot=10)
    fair = tmp_path / "fair"
    fabricate_cell(fair, task="synth_cxr_fair", model="m", adapt="x", seed=0, same_samples=True)
    with pytest.raises(FairbenchError, match="different tasks"):
        compare(cells / "biased" / "seed0", fair / "synth_cxr_fair" / "m" / "x" / "seed0", n_boot=10)
    lonely = tmp_path / "lonely" / "seed0"
    lonely.mkdir(parents=True)
    shutil.copy(cells / "fixed" / "seed0" / "metrics.json", lonely / "metrics.json")
    with pytest.raises(FairbenchError, match="no predictions.parquet"):
        compare(cells / "biased" / "seed0", lonely, n_boot=10)
    with pytest.raises(FairbenchError, match="neither a result cell"):
        compare(cells / "biased" / "seed0", tmp_path / "fair", n_boot=10)
    # the CLI: one line, exit 2, nothing written
    from test_cli import assert_one_line_error, fairbench

    out = tmp_path / "cmp.json"
    proc = fairbench("compare", str(fewer), str(cells / "biased" / "seed0"), "--out", str(out))
    assert_one_line_error(proc, "different samples")
    assert not out.exists()


def test_cli_prints_the_table_and_writes_the_documented_json(cells: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmp.json"
    res = CliRunner().invoke(app, ["compare", str(cells / "biased" / "seed0"), str(cells / "fixed" / "seed0"),
                                   "--n-boot", "200", "--out", str(out)])
    assert res.exit_code == 0, res.output
    for text in ("Δ (B−A)", "95% CI", "DeLong p", "age = >=60", "ES-AUC", "excludes 0"):
        assert text in res.output, text
    doc = json.loads(out.read_text())
    assert set(doc) >= {"a", "b", "n", "n_boot", "metrics", "delong"}
    assert doc["a"]["adapter"] == "biased" and doc["b"]["adapter"] == "fixed" and doc["n_boot"] == 200
    entry = doc["metrics"]["overall"]["auc"]
    assert set(entry) == {"a", "b", "delta", "ci", "p", "se"}
    assert set(doc["metrics"]["attributes"]["age"]) >= {"es_auc", "auc_gap", "worst_group_auc", "dpd", "deodds",
                                                        "eqodds", "groups"}
    assert set(doc["delong"]["attributes"]["age"][">=60"]["auc"]) >= {"delta", "ci", "p"}
    res = CliRunner().invoke(app, ["compare", str(cells / "biased"), str(cells / "fixed"), "--n-boot", "20"])
    assert res.exit_code == 0 and "mean Δ (B−A), 3 seeds" in res.output and "seeds + test" in res.output


def test_each_cell_keeps_its_recorded_threshold(cells: Path, tmp_path: Path) -> None:
    moved = tmp_path / "moved" / "seed0"
    shutil.copytree(cells / "fixed" / "seed0", moved)
    doc = json.loads((moved / "metrics.json").read_text())
    doc["threshold"] = {"value": 0.9, "chosen_on": "val", "rule": "youden"}
    (moved / "metrics.json").write_text(json.dumps(doc))
    r = compare(cells / "fixed" / "seed0", moved, n_boot=0)
    frame = pd.read_parquet(moved / "predictions.parquet")
    test = frame[frame["split"] == "test"]
    acc_at_09 = float(((test["prob_abnormal"] >= 0.9).astype(int) == test["label"]).mean())
    assert r["metrics"]["overall"]["acc"]["b"] == pytest.approx(acc_at_09)
    assert r["metrics"]["overall"]["auc"]["delta"] == 0.0  # the scores are the same
    assert r["thresholds"]["b"]["value"] == 0.9 and r["metrics"]["overall"]["acc"]["ci"] is None


def test_same_seed_same_numbers(cells: Path) -> None:
    one = compare(cells / "biased" / "seed1", cells / "fixed" / "seed1", n_boot=100, seed=5)
    two = compare(cells / "biased" / "seed1", cells / "fixed" / "seed1", n_boot=100, seed=5)
    assert one["metrics"] == two["metrics"]
    three = compare(cells / "biased" / "seed1", cells / "fixed" / "seed1", n_boot=100, seed=6)
    assert three["metrics"] != one["metrics"]


def test_one_home_for_result_cells() -> None:
    """compare reads cells through fairbench.results (no reach up into report/), and the cell type and finder
    are the same objects the leaderboard's collector uses."""
    from test_imports import _import_graph

    import fairbench.compare as cmp
    from fairbench import results
    from fairbench.report import collect

    graph = _import_graph()
    assert not [m for m in graph["fairbench.compare"] if m.startswith("fairbench.report")]
    assert collect.ResultCell is results.ResultCell and cmp.ResultCell is results.ResultCell
    for module in ("fairbench.compare", "fairbench.report.recompute", "fairbench.report.plots"):
        assert "fairbench.results.predictions" in graph[module] or "fairbench.results" in graph[module], module
    package = Path(results.__file__).parent.parent
    readers = sorted(str(p.relative_to(package)) for p in package.rglob("*.py") if "read_parquet(" in p.read_text()
                     and p.relative_to(package).parts[0] != "data")  # data/ reads input manifests, not results
    assert readers == ["results/predictions.py"]  # the one place that opens a predictions file


def test_compare_uses_public_metric_names_only() -> None:
    import ast

    import fairbench.compare as cmp

    tree = ast.parse(Path(cmp.__file__).read_text())
    private = [f"{node.module}.{a.name}" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
               and (node.module or "").startswith("fairbench.metrics") for a in node.names
               if "._" in node.module or a.name.startswith("_")]
    assert not private, private
