"""Paired bootstrap: the difference B - A of every metric of two prediction sets on the same samples.

Both sets are evaluated on the same resamples. Each pass (overall, then one per attribute) resamples exactly
as the suite does (:mod:`fairbench.metrics._bootstrap`): within every stratum of true class x group (true
class alone for the overall pass), as many rows with replacement as the stratum holds. The strata are made
of samples, not of predictions: rows are aligned by sample id, so a resample picks the same samples, with
the same multiplicities, for A and for B. Each set keeps its own threshold.

For every path the suite reports (``("overall", "auc")``, ``("attributes", "age", "es_auc")``, per-group and
per-class paths too) the result holds ``a``, ``b``, ``delta = b - a`` (point estimates on all rows), the 95%
percentile interval of the resampled deltas and a two-sided bootstrap p-value,
``min(1, 2 (min(#{d* <= 0}, #{d* >= 0}) + 1) / (B + 1))``: the smallest attainable is ``2 / (B + 1)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from fairbench.metrics._bootstrap import CHUNK_ELEMENTS, CI_LEVEL, _threads, percentile_intervals
from fairbench.metrics._kernels import ones_weights, pass_stats
from fairbench.metrics._passes import Pass, Path
from fairbench.metrics._plan import PassData, Plan, build_plan

__all__ = ["PairedValue", "paired_pass", "bootstrap_p_value", "shared_strata", "draw_shared_weights",
           "SharedStrata"]


@dataclass(frozen=True)
class PairedValue:
    a: float | None
    b: float | None
    delta: float | None
    ci: list[float] | None
    p: float | None
    n_undefined: int = 0  # resamples on which the delta was undefined (left out of the interval and p)


def bootstrap_p_value(deltas: np.ndarray) -> float | None:
    """Two-sided bootstrap p-value of ``delta = 0`` from the finite resampled deltas."""
    d = deltas[np.isfinite(deltas)]
    if not len(d):
        return None
    k = min(int((d <= 0).sum()), int((d >= 0).sum()))
    return float(min(1.0, 2.0 * (k + 1) / (len(d) + 1)))


@dataclass(frozen=True)
class SharedStrata:
    """The strata true class x block of a pass over the aligned rows: ``order`` lists the rows stratum by
    stratum (in (class, block) order; rows of a stratum in aligned order, i.e. by sample id), ``bounds`` the
    (start, size) of each stratum within ``order``."""

    order: np.ndarray
    bounds: tuple[tuple[int, int], ...]

    def position(self) -> np.ndarray:
        """For each aligned row, its position in ``order``."""
        pos = np.empty(len(self.order), dtype=np.int64)
        pos[self.order] = np.arange(len(self.order))
        return pos


def shared_strata(data: PassData) -> SharedStrata:
    block = np.where(data.group >= 0, data.group, data.n_groups)
    key = data.y.astype(np.int64) * (data.n_groups + 1) + block
    order = np.argsort(key, kind="stable")
    starts = np.flatnonzero(np.diff(key[order])) + 1 if len(order) else np.zeros(0, dtype=np.int64)
    edges = np.concatenate([[0], starts, [len(order)]]).astype(np.int64)
    return SharedStrata(order=order, bounds=tuple((int(a), int(b - a)) for a, b in zip(edges[:-1], edges[1:],
                                                                                          strict=True) if b > a))


def draw_shared_weights(strata: SharedStrata, b: int, seed: int, pass_index: int, chunk: int) -> np.ndarray:
    """Bootstrap counts (b, n) laid out as ``strata.order``: within each stratum, as many draws with
    replacement as rows."""
    w = np.empty((b, len(strata.order)), dtype=np.int64)
    for s, (start, size) in enumerate(strata.bounds):
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, pass_index, chunk, s])))
        draws = rng.integers(0, size, size=(b, size))
        for r in range(b):  # one row at a time: the counters stay in cache
            w[r, start:start + size] = np.bincount(draws[r], minlength=size)
    return w


def _point(p: Pass, plan: Plan, bad: np.ndarray, nf: int | None) -> dict[Path, float | None]:
    v = p.evaluate(pass_stats(ones_weights(plan), plan, nf), bad)
    return {path: (float(x[0]) if np.isfinite(x[0]) else None) for path, x in v.items()}


def paired_pass(p: Pass, data_a: PassData, data_b: PassData, no_finding: int | None, n_boot: int, seed: int,
                pass_index: int) -> dict[Path, PairedValue]:
    """Every path of one pass for A and B on shared resamples. ``data_a`` and ``data_b`` must hold the same
    samples in the same row order with the same labels and groups."""
    if not (np.array_equal(data_a.y, data_b.y) and np.array_equal(data_a.group, data_b.group)):
        raise ValueError("paired passes need the same labels and groups row for row")
    plan_a, plan_b = build_plan(data_a), build_plan(data_b)
    bad_a, bad_b = plan_a.slice_bad > 0, plan_b.slice_bad > 0
    va, vb = _point(p, plan_a, bad_a, no_finding), _point(p, plan_b, bad_b, no_finding)
    paths = [path for path in va if va[path] is not None and vb.get(path) is not None]
    deltas = np.full((n_boot, len(paths)), np.nan)
    if n_boot > 0 and paths:
        n = plan_a.n
        strata = shared_strata(data_a)
        position = strata.position()
        take_a, take_b = position[plan_a.order], position[plan_b.order]  # drawn layout -> each plan's order
        size = max(1, min(n_boot, CHUNK_ELEMENTS // max(n, 1)))
        chunks = [(c, c * size, min(n_boot, (c + 1) * size)) for c in range((n_boot + size - 1) // size)]

        def run(chunk: tuple[int, int, int]) -> None:
            c, lo, hi = chunk
            w = draw_shared_weights(strata, hi - lo, seed, pass_index, c)
            xa = p.evaluate(pass_stats(np.take(w, take_a, axis=1), plan_a, no_finding), bad_a)
            xb = p.evaluate(pass_stats(np.take(w, take_b, axis=1), plan_b, no_finding), bad_b)
            for j, path in enumerate(paths):
                deltas[lo:hi, j] = xb[path] - xa[path]

        with ThreadPoolExecutor(max_workers=min(_threads(), len(chunks))) as pool:
            for _ in pool.map(run, chunks):
                pass
    bounds, n_undefined = percentile_intervals(deltas, CI_LEVEL) if n_boot > 0 and paths else (None, None)
    column = {path: j for j, path in enumerate(paths)}
    out: dict[Path, PairedValue] = {}
    for path in sorted(va.keys() | vb.keys()):
        a, b = va.get(path), vb.get(path)
        if path not in column:
            out[path] = PairedValue(a=a, b=b, delta=None, ci=None, p=None)
            continue
        j = column[path]
        ci = None
        if bounds is not None and not np.isnan(bounds[j, 0]):
            ci = [float(bounds[j, 0]), float(bounds[j, 1])]
        out[path] = PairedValue(a=a, b=b, delta=float(b - a), ci=ci,  # type: ignore[operator]
                                p=bootstrap_p_value(deltas[:, j]) if n_boot > 0 else None,
                                n_undefined=int(n_undefined[j]) if n_undefined is not None else 0)
    return out
