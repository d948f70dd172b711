"""Benchmark: the fairbench metrics suite against fairlearn's MetricFrame bootstrap, same data, one process.

    python bench/bench_metrics.py [--n 100000] [--n-boot 1000] [--fairlearn-boot 10]

Data: binary predictions with three protected attributes (2, 3 and 4 groups). fairbench runs the whole
suite (every metric, every attribute, B resamples). fairlearn's MetricFrame computes per-group AUC, ACC,
TPR, FPR and selection rate for ONE attribute (the 3-group one); it is slow, so it runs at a small B and
the comparison is per resample: (time with B resamples - time without) / B. The ratio is conservative:
fairbench does far more work per resample (three attributes and all metrics, not five metrics on one).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fairbench.metrics import compute_metrics


def make_predictions(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sex = rng.choice(["F", "M"], n)
    race = rng.choice(["Asian", "Black", "White"], n, p=[0.2, 0.3, 0.5])
    age = rng.choice(["18-40", "40-60", "60-80", "80+"], n, p=[0.3, 0.3, 0.3, 0.1])
    shift = (race == "Black") * 0.3 + (age == "80+") * 0.2
    label = (rng.random(n) < 0.35).astype(int)
    logit = 1.2 * (2 * label - 1) + rng.normal(0, 1.3 + shift, n)
    p = (1 / (1 + np.exp(-logit))).astype(np.float32).astype(np.float64)  # float32 scores: realistic ties
    return pd.DataFrame({
        "sample_id": np.arange(n), "split": "test", "label": label, "prob_no": 1 - p, "prob_yes": p,
        "attr_sex": sex, "attr_race": race, "attr_age": age,
    })


CPU: dict[str, float] = {}


def run_suite(df: pd.DataFrame, n_boot: int, attributes: list[str] | None = None) -> float:
    """Wall time of the whole suite; its CPU time (all threads) goes to CPU[...]."""
    t0, c0 = time.perf_counter(), time.process_time()
    compute_metrics(df, classes=["no", "yes"], n_boot=n_boot, attributes=attributes)
    CPU[f"{n_boot}:{attributes}"] = time.process_time() - c0
    return time.perf_counter() - t0


def run_fairlearn(df: pd.DataFrame, n_boot: int) -> float:
    from fairlearn.metrics import MetricFrame, false_positive_rate, selection_rate, true_positive_rate
    from sklearn.metrics import accuracy_score, roc_auc_score

    def hard(fn):  # type: ignore[no-untyped-def]
        return lambda y_true, score: fn(y_true, (score >= 0.5).astype(int))

    metrics = {
        "auc": roc_auc_score, "acc": hard(accuracy_score), "tpr": hard(true_positive_rate),
        "fpr": hard(false_positive_rate), "selection_rate": hard(selection_rate),
    }
    kwargs = {"n_boot": n_boot, "ci_quantiles": [0.025, 0.975], "random_state": 0} if n_boot else {}
    t0 = time.perf_counter()
    MetricFrame(metrics=metrics, y_true=df["label"].to_numpy(), y_pred=df["prob_yes"].to_numpy(),
                sensitive_features=df["attr_race"].to_numpy(), **kwargs)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--fairlearn-boot", type=int, default=10)
    args = ap.parse_args()
    df = make_predictions(args.n)
    print(f"data: {args.n} binary predictions; attributes sex (2), race (3), age (4) groups")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (other jobs slow every timing)")

    run_suite(df, 20)  # warm-up (imports, first allocations)
    t_full = run_suite(df, args.n_boot)
    t_full0 = run_suite(df, 0)
    t_one = run_suite(df, args.n_boot, ["race"])
    t_one0 = run_suite(df, 0, ["race"])
    print(f"fairbench whole suite, B={args.n_boot}: {t_full:.2f} s wall, "
          f"{CPU[f'{args.n_boot}:None']:.2f} s CPU (target < 15 s; without bootstrap {t_full0:.2f} s)")
    print(f"fairbench one attribute (race), B={args.n_boot}: {t_one:.2f} s  (without bootstrap {t_one0:.2f} s)")

    tracemalloc.start()
    run_suite(df, args.n_boot)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"peak memory: {peak / 2**20:.0f} MiB traced allocations during the suite; process max RSS {rss:.0f} MiB "
          "(target < 2048 MiB)")

    f_b = run_fairlearn(df, args.fairlearn_boot)
    f_0 = run_fairlearn(df, 0)
    per_fl = (f_b - f_0) / args.fairlearn_boot
    per_full = (t_full - t_full0) / args.n_boot
    per_one = (t_one - t_one0) / args.n_boot
    print(f"fairlearn MetricFrame (race; auc, acc, tpr, fpr, selection_rate), n_boot={args.fairlearn_boot}: "
          f"{f_b:.1f} s (without bootstrap {f_0:.2f} s) -> {per_fl * 1000:.0f} ms per resample")
    print(f"fairbench per resample: whole suite {per_full * 1000:.1f} ms, one attribute {per_one * 1000:.1f} ms")
    print(f"speed-up per resample: {per_fl / per_full:.0f}x (whole suite vs fairlearn's one attribute; "
          f"target >= 50x), {per_fl / per_one:.0f}x (same attribute)")


if __name__ == "__main__":
    main()
