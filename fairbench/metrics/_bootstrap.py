"""Stratified bootstrap: chunks of resamples evaluated at once, percentile intervals.

Resampling draws, within every stratum (true class x group of the pass's attribute), as many rows with
replacement as the stratum holds, so every group keeps its size and class balance and no group vanishes
from a resample. A chunk of resamples is one (b, n) count matrix, drawn and evaluated a block of resamples at a
time (BLOCK_ELEMENTS bounds the memory of a block); chunks run on a few threads (numpy releases the GIL in the
heavy loops). Chunk seeds depend only on (seed, chunk index), so results do not depend on the number of threads
nor on the block size.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from fairbench.metrics._kernels import draw_weight_blocks, pass_stats
from fairbench.metrics._plan import Plan
from fairbench.metrics._stats import SliceStats

__all__ = ["BLOCK_ELEMENTS", "CHUNK_ELEMENTS", "CI_LEVEL", "OUTSIDE", "block_rows", "bootstrap_values", "chunks",
           "outside_note", "percentile_intervals"]

CI_LEVEL = 0.95
#: rows x resamples per chunk. A chunk is a unit of seeding (its resamples come from streams seeded by (seed, chunk
#: index)), so this constant fixes which resamples a seed gives: changing it changes every interval.
CHUNK_ELEMENTS = 1 << 21
#: rows x resamples evaluated at once: a chunk is drawn and evaluated in blocks of this many elements (2 MiB per
#: int64 array of a block; the kernels hold about ten such arrays), which bounds memory per thread to a few tens
#: of MiB whatever the split's size, without changing the resamples (docs/scale.md, "compare and metrics").
BLOCK_ELEMENTS = 1 << 18
#: how a note on an interval that does not contain its own point estimate begins (``notes["ci.<path>"]``)
OUTSIDE = "the percentile interval excludes the point estimate"
Evaluate = Callable[[SliceStats], dict[tuple[str, ...], np.ndarray]]


def _threads() -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, cpus))


def chunks(n_boot: int, n: int) -> list[tuple[int, int, int]]:
    """The seeding chunks of ``n_boot`` resamples of ``n`` rows: (chunk index, first resample, end)."""
    b = max(1, min(n_boot, CHUNK_ELEMENTS // max(n, 1)))
    return [(c, c * b, min(n_boot, (c + 1) * b)) for c in range((n_boot + b - 1) // b)]


def block_rows(n: int) -> int:
    """Resamples per evaluated block for ``n`` rows."""
    return max(1, BLOCK_ELEMENTS // max(n, 1))


def bootstrap_values(
    plan: Plan, evaluate: Evaluate, paths: list[tuple[str, ...]], n_boot: int, seed: int, no_finding: int | None,
) -> np.ndarray:
    """(n_boot, len(paths)) matrix: the value of every path on every resample (NaN where undefined)."""
    out = np.full((n_boot, len(paths)), np.nan)
    if n_boot <= 0 or not paths:
        return out
    todo = chunks(n_boot, plan.n)
    rows = block_rows(plan.n)

    def run(chunk: tuple[int, int, int]) -> None:
        c, lo, hi = chunk
        for w in draw_weight_blocks(plan, hi - lo, seed, c, rows):
            values = evaluate(pass_stats(w, plan, no_finding))
            for j, path in enumerate(paths):
                out[lo:lo + len(w), j] = values[path]
            lo += len(w)

    with ThreadPoolExecutor(max_workers=min(_threads(), len(todo))) as pool:
        for _ in pool.map(run, todo):
            pass
    return out


def percentile_intervals(samples: np.ndarray, level: float = CI_LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of each column over its finite entries, and the count of non-finite entries.

    Returns ``(bounds, n_undefined)`` with ``bounds`` of shape (len(columns), 2), NaN where no entry is finite.
    """
    tail = (1.0 - level) / 2.0
    finite = np.isfinite(samples)
    n_undefined = (~finite).sum(axis=0)
    bounds = np.full((samples.shape[1], 2), np.nan)
    full = n_undefined == 0
    if full.any():
        bounds[full] = np.quantile(samples[:, full], [tail, 1.0 - tail], axis=0).T
    for j in np.flatnonzero(~full & finite.any(axis=0)):
        bounds[j] = np.quantile(samples[finite[:, j], j], [tail, 1.0 - tail])
    return bounds, n_undefined


def outside_note(value: float, lo: float, hi: float) -> str | None:
    """The ``notes["ci.<path>"]`` entry for a percentile interval that does not contain its point estimate
    (gaps, DPD, DEOdds, ECE...: statistics built from absolute values or maxima, which resampling inflates), else
    None. docs/metrics.md, "Which interval", says why fairbench marks these instead of moving the interval."""
    if lo <= value <= hi:
        return None
    side = "above" if lo > value else "below"
    return (f"{OUTSIDE}: [{lo:.4g}, {hi:.4g}] lies {side} {value:.4g} (resampling inflates this statistic; read the "
            f"interval as its spread, not as centred on it)")
