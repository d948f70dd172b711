"""The vectorised bootstrap: weighted statistics equal explicit resamples, strata are kept, seeds and
threads behave, memory stays bounded in the number of resamples."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pandas as pd
import pytest

import fairbench.metrics._bootstrap as bootstrap_module
from fairbench.metrics import compute_metrics
from fairbench.metrics._bootstrap import percentile_intervals
from fairbench.metrics._inputs import read_predictions
from fairbench.metrics._kernels import draw_weights, pass_stats
from fairbench.metrics._plan import build_plan
from fairbench.metrics._suite import build_passes


def frame(n: int, k: int, seed: int, n_groups: int = 3, ties: bool = True) -> tuple[pd.DataFrame, list[str]]:
    rng = np.random.default_rng(seed)
    classes = [f"c{j}" for j in range(k)]
    y = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k)) + np.eye(k)[y]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    if ties:
        probs = np.round(probs, 2)
    groups = rng.choice([f"g{j}" for j in range(n_groups)], n).astype(object)
    groups[rng.random(n) < 0.05] = None
    df = pd.DataFrame({"sample_id": np.arange(n), "split": "test", "label": y})
    for j, c in enumerate(classes):
        df[f"prob_{c}"] = probs[:, j]
    df["attr_grp"] = groups
    return df, classes


def flatten(tree: dict, prefix: tuple = ()) -> dict[tuple, object]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, prefix + (key,)))
        else:
            out[prefix + (key,)] = value
    return out


@pytest.mark.parametrize(("k", "n_groups", "seed"), [(2, 3, 0), (2, 8, 1), (3, 2, 2), (4, 4, 3)])
def test_weighted_statistics_equal_explicit_resamples(k: int, n_groups: int, seed: int) -> None:
    """Each row of a bootstrap count matrix gives the metrics of the data set it describes."""
    df, classes = frame(150, k, seed, n_groups)
    pred = read_predictions(df, classes, None, None)
    passes = build_passes(pred, eval_split="test", threshold=0.5 if k == 2 else None, ece_bins=10, no_finding=0)
    for p, data in passes:
        plan = build_plan(data)
        w = draw_weights(plan, 3, seed=11, chunk=0)
        values = p.evaluate(pass_stats(w, plan, 0), plan.slice_bad > 0)
        for r in range(w.shape[0]):
            rows = np.repeat(plan.order, w[r])
            resample = df.iloc[rows].assign(sample_id=np.arange(len(rows)))  # repeated rows, ids made distinct
            ref = compute_metrics(resample, classes=classes, n_boot=0, ece_bins=10, no_finding_class="c0",
                                  attributes=[p.attribute] if p.attribute else [])
            ref_flat = flatten({"overall": ref["overall"], "attributes": ref["attributes"]})
            checked = 0
            for path, v in values.items():
                expected = ref_flat[path]
                got = float(v[r])
                if expected is None:
                    assert math.isnan(got), path
                else:
                    assert math.isclose(got, expected, abs_tol=1e-9), (path, got, expected)
                checked += 1
            assert checked >= 15


def test_resampling_keeps_every_stratum_size() -> None:
    df, classes = frame(300, 3, 5, n_groups=4)
    pred = read_predictions(df, classes, None, None)
    _, data = build_passes(pred, eval_split="test", threshold=None, ece_bins=15, no_finding=None)[1]
    plan = build_plan(data)
    w = draw_weights(plan, 50, seed=0, chunk=0)
    y_sorted, g_sorted = data.y[plan.order], data.group[plan.order]
    for start, size, _ in plan.strata:
        block = slice(start, start + size)
        assert len(set(zip(y_sorted[block], g_sorted[block], strict=True))) == 1  # one (class, group) per stratum
        assert (w[:, block].sum(axis=1) == size).all()
    assert (w.sum(axis=1) == len(df)).all()
    assert w.std(axis=0).mean() > 0.5  # counts actually vary (multinomial with mean 1 has sd ~ 1)


def test_seeded_and_thread_count_independent(monkeypatch: pytest.MonkeyPatch) -> None:
    df, classes = frame(400, 2, 7)
    a = compute_metrics(df, classes=classes, n_boot=60, seed=3)
    b = compute_metrics(df, classes=classes, n_boot=60, seed=3)
    assert a == b
    c = compute_metrics(df, classes=classes, n_boot=60, seed=4)
    assert c["ci"]["overall"]["auc"] != a["ci"]["overall"]["auc"]
    assert {k: v for k, v in c.items() if k not in ("ci", "seed", "notes")} == \
           {k: v for k, v in a.items() if k not in ("ci", "seed", "notes")}  # point estimates ignore the seed
    monkeypatch.setattr(bootstrap_module, "_threads", lambda: 1)
    monkeypatch.setattr(bootstrap_module, "CHUNK_ELEMENTS", 400 * 7)  # many small chunks on one thread
    one = compute_metrics(df, classes=classes, n_boot=60, seed=3)
    monkeypatch.setattr(bootstrap_module, "_threads", lambda: 3)
    three = compute_metrics(df, classes=classes, n_boot=60, seed=3)
    assert one == three


def test_ci_paths_mirror_values_and_bracket_point_estimates() -> None:
    df, classes = frame(3000, 2, 9, ties=False)
    res = compute_metrics(df, classes=classes, n_boot=200, seed=0)
    values = flatten({"overall": res["overall"], "attributes": res["attributes"]})
    cis = flatten(res["ci"])
    assert cis, "no intervals"
    for path, interval in cis.items():
        assert path in values, path
        lo, hi = interval
        assert lo <= hi
    counts = {"n", "n_pos", "n_neg", "n_unknown"}
    for path, v in values.items():
        if path[-1] in counts:
            assert path not in cis  # fixed by the stratified design
        elif v is not None:
            assert path in cis, path
    # ECE and gaps are sums of absolute values, biased upward under resampling: their percentile interval
    # may miss a small point estimate (docs/metrics.md), so only unbiased-ish metrics are checked here
    for metric in ("auc", "acc", "tpr", "fpr", "selection_rate", "macro_f1"):
        lo, hi = res["ci"]["overall"][metric]
        assert lo <= res["overall"][metric] <= hi
        for g, gm in res["attributes"]["grp"]["groups"].items():
            lo, hi = res["ci"]["attributes"]["grp"]["groups"][g][metric]
            assert lo <= gm[metric] <= hi and hi - lo < 0.2


def test_interval_width_matches_binomial_theory() -> None:
    """Stratified by class, ACC's bootstrap sd is the binomial sd within each class, pooled."""
    rng = np.random.default_rng(0)
    n = 4000
    y = rng.integers(0, 2, n)
    correct = rng.random(n) < np.where(y == 1, 0.8, 0.6)
    p = np.where(correct == (y == 1), 0.9, 0.1)
    df = pd.DataFrame({"sample_id": range(n), "split": "test", "label": y, "prob_a": 1 - p, "prob_b": p})
    res = compute_metrics(df, classes=["a", "b"], n_boot=400, attributes=[])
    lo, hi = res["ci"]["overall"]["acc"]
    n1, n0 = y.sum(), n - y.sum()
    a1, a0 = correct[y == 1].mean(), correct[y == 0].mean()
    sd = math.sqrt(n1 * a1 * (1 - a1) + n0 * a0 * (1 - a0)) / n
    assert (hi - lo) / (2 * 1.96 * sd) == pytest.approx(1.0, abs=0.15)


def test_percentile_intervals_skip_undefined_resamples() -> None:
    rng = np.random.default_rng(1)
    samples = rng.normal(size=(500, 3))
    samples[:50, 1] = np.nan
    samples[:, 2] = np.nan
    bounds, n_undefined = percentile_intervals(samples, 0.9)
    assert list(n_undefined) == [0, 50, 500]
    assert np.allclose(bounds[0], np.quantile(samples[:, 0], [0.05, 0.95]))
    assert np.allclose(bounds[1], np.quantile(samples[50:, 1], [0.05, 0.95]))
    assert np.isnan(bounds[2]).all()


def test_memory_does_not_grow_with_resamples(monkeypatch: pytest.MonkeyPatch) -> None:
    # one thread: with T threads up to T chunks are alive at once, and when they overlap is up to the scheduler
    monkeypatch.setattr(bootstrap_module, "_threads", lambda: 1)
    df, classes = frame(20_000, 2, 4, ties=False)

    def peak(n_boot: int) -> int:
        tracemalloc.start()
        compute_metrics(df, classes=classes, n_boot=n_boot, attributes=["grp"])
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    few, many = peak(300), peak(1500)  # several chunks either way (about 100 resamples per chunk here)
    assert many < 1.1 * few, (few, many)
    assert many < 200 * 2**20


def _small_groups_frame(seed: int) -> pd.DataFrame:
    """Binary predictions, an attribute with 5 small groups and no true gap: where percentile intervals of
    ranges (DPD, DEOdds, AUC gap) most often lie above their point estimate."""
    rng = np.random.default_rng(seed)
    n = 150
    y = rng.integers(0, 2, n)
    p = np.clip(0.5 + 0.25 * (2 * y - 1) + rng.normal(0, 0.25, n), 0, 1)
    return pd.DataFrame({"sample_id": range(n), "split": "test", "label": y, "prob_a": 1 - p, "prob_b": p,
                         "attr_grp": rng.choice([f"g{j}" for j in range(5)], n)})


def test_gap_intervals_match_fairlearn_on_the_same_resamples() -> None:
    """The interval of DPD and DEOdds is the 2.5/97.5 percentile (numpy's linear rule) of fairlearn's own
    statistics on the very resamples the suite drew: an independent reference for statistic and interval."""
    from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

    df = _small_groups_frame(0)
    n_boot = 120
    res = compute_metrics(df, classes=["a", "b"], attributes=["grp"], n_boot=n_boot, seed=2)
    pred = read_predictions(df, ["a", "b"], ["grp"], None)
    _, data = build_passes(pred, eval_split="test", threshold=0.5, ece_bins=15, no_finding=None)[1]
    plan = build_plan(data)
    w = draw_weights(plan, n_boot, seed=2, chunk=0)  # one chunk at this size: the suite's resamples
    dpd, deo = [], []
    for r in range(n_boot):
        rows = np.repeat(plan.order, w[r])
        sample = df.iloc[rows]
        yhat = (sample["prob_b"].to_numpy() >= 0.5).astype(int)
        dpd.append(demographic_parity_difference(sample["label"], yhat, sensitive_features=sample["attr_grp"]))
        deo.append(equalized_odds_difference(sample["label"], yhat, sensitive_features=sample["attr_grp"]))
    for key, values in (("dpd", dpd), ("deodds", deo)):
        assert res["ci"]["attributes"]["grp"][key] == pytest.approx(np.percentile(values, [2.5, 97.5]), abs=1e-12)


def test_every_interval_contains_its_point_estimate_or_says_it_does_not() -> None:
    from fairbench.report.summary import OUTSIDE_MARK, fmt100

    outside = 0
    for seed in range(4):
        res = compute_metrics(_small_groups_frame(seed), classes=["a", "b"], attributes=["grp"], n_boot=200,
                              seed=seed)
        values = flatten({"overall": res["overall"], "attributes": res["attributes"]})
        for path, (lo, hi) in flatten(res["ci"]).items():
            v = values[path]
            note = res["notes"].get("ci." + ".".join(path), "")
            if lo <= v <= hi:
                assert "excludes the point estimate" not in note, path
                assert OUTSIDE_MARK not in fmt100(v, [lo, hi])
            else:
                outside += 1
                assert "excludes the point estimate" in note, (path, v, lo, hi)
                assert fmt100(v, [lo, hi]).endswith(OUTSIDE_MARK)
    assert outside >= 2  # the situation is real on such data, and every case was marked


def test_run_summary_marks_intervals_that_miss_their_estimate_and_says_why(tmp_path) -> None:
    import io

    from rich.console import Console

    from fairbench.report.summary import OUTSIDE_LEGEND, print_summary

    for seed in range(4):
        res = compute_metrics(_small_groups_frame(seed), classes=["a", "b"], attributes=["grp"], n_boot=200,
                              seed=seed)
        paths = [("overall", k) for k in ("auc", "acc", "macro_f1", "ece")]
        paths += [("attributes", "grp", k) for k in ("es_auc", "auc_gap", "dpd", "deodds")]
        paths += [("attributes", "grp", "groups", g, "auc") for g in res["attributes"]["grp"]["groups"]]
        values, cis = flatten({"overall": res["overall"], "attributes": res["attributes"]}), flatten(res["ci"])
        missed = sum(not cis[p][0] <= values[p] <= cis[p][1] for p in paths)  # among what the summary shows
        buf = io.StringIO()
        print_summary({"metrics": res, "task": {"name": "t"}, "seed": seed}, tmp_path,
                      Console(file=buf, width=300, highlight=False))
        text = buf.getvalue()
        assert text.count("‡") == missed + (1 if missed else 0), seed  # each marked entry, plus the legend's
        assert (OUTSIDE_LEGEND in text) == bool(missed)
        if missed:
            return
    raise AssertionError("no data set had a summary interval that misses its estimate")
