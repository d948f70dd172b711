"""Benchmark: a paired comparison against one metrics-suite call on the same predictions, one process.

    python bench/bench_compare.py [--n 100000] [--n-boot 1000] [--repeats 2]

Data: ``bench_metrics.make_predictions`` (binary, attributes sex, race and age with 2, 3 and 4 groups) plus the
intersection sex*age; B is A's scores with extra noise on the same samples. One `fairbench metrics` call is
``compute_metrics`` on A (every metric, four attributes, B resamples); the comparison is
``fairbench.compare.paired_metrics`` on A and B (both cells' metrics on shared resamples, deltas, intervals,
p-values, DeLong). Target: the comparison costs at most 2x the metrics call (it evaluates two cells per
resample). Timings are back to back, wall and CPU seconds, each repeat printed; the ratio is per repeat.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_metrics import make_predictions

from fairbench.compare import paired_metrics
from fairbench.metrics import compute_metrics

ATTRS = ["sex", "race", "age"]
INTERSECTIONS = [["sex", "age"]]


def timed(fn) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    a = make_predictions(args.n)
    b = a.copy()
    rng = np.random.default_rng(1)
    p = np.clip(a["prob_yes"].to_numpy() + rng.normal(0, 0.05, args.n), 0, 1).astype(np.float32).astype(np.float64)
    b["prob_yes"], b["prob_no"] = p, 1 - p

    def metrics_call() -> None:
        compute_metrics(a, classes=["no", "yes"], attributes=ATTRS, intersections=INTERSECTIONS, n_boot=args.n_boot)

    def compare_call() -> None:
        paired_metrics(a, b, classes=["no", "yes"], attributes=ATTRS, intersections=INTERSECTIONS, eval_split="test",
                       threshold_a=0.5, threshold_b=0.5, ece_bins=15, no_finding_class=None, n_boot=args.n_boot,
                       seed=0)

    print(f"n={args.n}, B={args.n_boot}, attributes {ATTRS} + sex*age")
    print("| repeat | metrics wall s | metrics CPU s | compare wall s | compare CPU s | ratio wall | ratio CPU |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in range(args.repeats):
        mw, mc = timed(metrics_call)
        cw, cc = timed(compare_call)
        print(f"| {r + 1} | {mw:.1f} | {mc:.1f} | {cw:.1f} | {cc:.1f} | {cw / mw:.2f} | {cc / mc:.2f} |", flush=True)
    print("target: ratio <= 2")


if __name__ == "__main__":
    main()
