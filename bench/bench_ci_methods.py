"""How often does a bootstrap interval of a gap statistic exclude its own point estimate? Percentile, basic and
BCa intervals from scipy.stats.bootstrap, on fabricated data with no true gap (docs/metrics.md, "Which interval").

Each data set: ``groups`` groups of ``n`` binary predictions with the same selection rate ``rate``; the
statistic is the range of the groups' selection rates (DPD). Groups are resampled separately (scipy's
multi-sample bootstrap), as the suite stratifies by group. Prints, per method, the fraction of data sets whose
95% interval excludes the point estimate and the mean interval.

    python bench/bench_ci_methods.py --datasets 200 --n-boot 999
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
from scipy import stats


def dpd(*groups: np.ndarray, axis: int = -1) -> np.ndarray:
    rates = np.stack([g.mean(axis=axis) for g in groups])
    return rates.max(axis=0) - rates.min(axis=0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", type=int, default=200)
    ap.add_argument("--n-boot", type=int, default=999)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    warnings.simplefilter("ignore")  # BCa on a degenerate resample distribution: NaN bounds, counted below
    print("| groups x n | rate | method | excludes the point estimate | mean point | mean interval | lower < 0 |")
    print("|---|---|---|---|---|---|---|")
    for n_groups, n, rate in ((2, 30, 0.3), (2, 200, 0.3), (4, 25, 0.1), (4, 50, 0.3), (6, 40, 0.2)):
        rows = {m: [0, [], [], 0] for m in ("percentile", "basic", "BCa")}
        points = []
        for _ in range(args.datasets):
            data = tuple((rng.random(n) < rate).astype(float) for _ in range(n_groups))
            point = float(dpd(*data))
            points.append(point)
            for method in rows:
                res = stats.bootstrap(data, dpd, n_resamples=args.n_boot, method=method, confidence_level=0.95,
                                      vectorized=True, random_state=rng)
                lo, hi = res.confidence_interval
                if np.isnan(lo) or np.isnan(hi):
                    rows[method][3] += 1
                    continue
                rows[method][0] += not (lo <= point <= hi)
                rows[method][1].append(lo)
                rows[method][2].append(hi)
        for method, (bad, lo, hi, undefined) in rows.items():
            print(f"| {n_groups} x {n} | {rate} | {method} | {bad}/{args.datasets - undefined}"
                  + (f" ({undefined} undefined)" if undefined else "") + f" | {100 * np.mean(points):.1f} | "
                  f"[{100 * np.mean(lo):.1f}, {100 * np.mean(hi):.1f}] | {100 * np.mean(np.less(lo, 0)):.0f}% |")


if __name__ == "__main__":
    main()
