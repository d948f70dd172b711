"""Vectorised statistics of a pass for a batch of weight vectors (ones, or bootstrap counts).

Weights are int64 counts of shape (b, n) in the plan's row order; every sum over them is exact.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from fairbench.metrics._plan import AucPlan, Plan
from fairbench.metrics._stats import SliceStats

__all__ = ["draw_weight_blocks", "draw_weights", "ones_weights", "pass_stats"]


def ones_weights(plan: Plan) -> np.ndarray:
    return np.ones((1, plan.n), dtype=np.int64)


def draw_weights(plan: Plan, b: int, seed: int, chunk: int) -> np.ndarray:
    """Bootstrap counts for ``b`` resamples: within each stratum, as many draws with replacement as rows.

    Each stratum's stream is seeded by (seed, chunk, the content of the stratum and of its group, its rank
    among strata with the same key), so results depend neither on row order nor on group names (only groups
    with identical rows are told apart by name order).
    """
    w = np.empty((b, plan.n), dtype=np.int64)
    seen: dict[bytes, int] = {}
    for start, size, key in plan.strata:
        dup = seen.get(key, 0)
        seen[key] = dup + 1
        words = np.frombuffer(key, dtype=np.uint32).tolist()
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, chunk, dup, *words])))
        draws = rng.integers(0, size, size=(b, size))
        for r in range(b):  # one row at a time: the counters stay in cache
            w[r, start:start + size] = np.bincount(draws[r], minlength=size)
    return w


def draw_weight_blocks(plan: Plan, b: int, seed: int, chunk: int, rows: int) -> Iterator[np.ndarray]:
    """``draw_weights(plan, b, seed, chunk)`` handed out ``rows`` resamples at a time: the same counts, row for row,
    with (rows, n) arrays alive instead of (b, n). Each stratum keeps its generator across blocks, and numpy's
    ``Generator.integers`` continues one stream whether a (b, size) draw is made at once or in row blocks
    (tests/test_bootstrap_blocks.py checks it against ``draw_weights``)."""
    rows = max(1, rows)
    gens = []
    seen: dict[bytes, int] = {}
    for start, size, key in plan.strata:
        dup = seen.get(key, 0)
        seen[key] = dup + 1
        words = np.frombuffer(key, dtype=np.uint32).tolist()
        gens.append((start, size, np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, chunk, dup,
                                                                                                *words])))))
    for lo in range(0, b, rows):
        m = min(rows, b - lo)
        w = np.empty((m, plan.n), dtype=np.int64)
        for start, size, rng in gens:
            draws = rng.integers(0, size, size=(m, size))
            for r in range(m):
                w[r, start:start + size] = np.bincount(draws[r], minlength=size)
        yield w


def _cumsum0(w: np.ndarray) -> np.ndarray:
    out = np.empty((w.shape[0], w.shape[1] + 1), dtype=w.dtype)
    out[:, 0] = 0
    np.cumsum(w, axis=1, out=out[:, 1:])
    return out


def _lookup(cn: np.ndarray, ap: AucPlan, r: int) -> np.ndarray:
    """2 x (negative weight below) + (tied negative weight) for every positive, against lookup row ``r``."""
    x = np.take(cn, ap.lo[r], axis=1)
    x *= 2
    for row, cols, lo, hi in ap.ties:
        if row == r:
            x[:, cols] += np.take(cn, hi, axis=1) - np.take(cn, lo, axis=1)
    return x


def _auc(w: np.ndarray, ap: AucPlan, n_blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """AUC of class ``ap.k`` on all rows (b,) and per block (b, n_blocks); NaN where undefined."""
    b = w.shape[0]
    cn = _cumsum0(w[:, ap.neg])
    wp = w[:, ap.pos]
    base = cn[:, ap.neg_start]  # (b, n_blocks)
    n_neg = cn[:, ap.neg_end] - base
    row_of = ap.own_row
    x_all = np.zeros(wp.shape, dtype=np.int64) if ap.cross and len(ap.lookup_blocks) > 1 else None
    u_blk = np.zeros((b, n_blocks))
    p_blk = np.zeros((b, n_blocks))
    lookups = {}
    for r in range(ap.lo.shape[0]):
        x = _lookup(cn, ap, r)
        if x_all is not None:
            x_all += x
        lookups[r] = x
    for h, a, z in ap.own:
        p = wp[:, a:z].sum(axis=1)
        p_blk[:, h] = p
        if h in row_of:
            s = np.einsum("ij,ij->i", wp[:, a:z], lookups[row_of[h]][:, a:z])
            u_blk[:, h] = s - 2 * p * base[:, h]
    with np.errstate(divide="ignore", invalid="ignore"):
        auc_blk = np.where(p_blk * n_neg > 0, u_blk / (2.0 * p_blk * n_neg), np.nan)
    if ap.cross:
        p_all = p_blk.sum(axis=1)
        x = x_all if x_all is not None else (lookups[0] if lookups else np.zeros(wp.shape, dtype=np.int64))
        u_all = np.einsum("ij,ij->i", wp, x) - 2 * p_all * base[:, ap.lookup_blocks].sum(axis=1)
        n_all = n_neg.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            auc_all = np.where(p_all * n_all > 0, u_all / (2.0 * p_all * n_all), np.nan)
    else:
        assert ap.all_rows is not None
        auc_all = _auc(w, ap.all_rows, 1)[0]
    return auc_all, auc_blk


def pass_stats(w: np.ndarray, plan: Plan, no_finding: int | None) -> SliceStats:
    """Statistics of slice 0 (all rows) and each known group, for every weight row: batch shape (b, S)."""
    b = w.shape[0]
    k, m, s = plan.n_classes, plan.n_bins, plan.n_groups + 1
    cell_w = np.add.reduceat(w, plan.cell_starts, axis=1).astype(np.float64)
    cell_wc = np.add.reduceat(w * plan.conf_sorted, plan.cell_starts, axis=1)
    if plan.decide_sorted is None:
        conf = plan.conf_sum(cell_w).reshape(b, s, k, k)
    else:  # randomised decisions: expected counts, each row decided positive with its probability
        cell_w1 = np.add.reduceat(w * plan.decide_sorted, plan.cell_starts, axis=1)
        conf = plan.conf_sum(np.concatenate([cell_w1, cell_w - cell_w1], axis=1)).reshape(b, s, k, k)
    cal_n = plan.cal_sum(cell_w).reshape(b, s, m)
    cal_d = plan.cal_sum(cell_w * plan.cell_target - cell_wc).reshape(b, s, m)
    auc = np.full((b, s, k), np.nan)
    for ap in plan.auc:
        auc_all, auc_blk = _auc(w, ap, plan.n_blocks)
        auc[:, 0, ap.k] = auc_all
        auc[:, 1:, ap.k] = auc_blk[:, : plan.n_groups]
    return SliceStats(conf=conf, auc=auc, cal_n=cal_n, cal_d=cal_d, no_finding=no_finding)
