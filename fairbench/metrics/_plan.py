"""Precomputed layout of one evaluation pass, shared by the point estimate and every resample.

A pass looks at all evaluated rows once, split into *blocks* (the groups of one attribute, plus one block
for rows whose group is unknown). It reports slice 0 (all rows) and one slice per known group. Rows are
sorted once so that

* each stratum (true class x block) is contiguous: resampling draws within strata;
* each cell (true class x block x predicted class x confidence bin) is contiguous: confusion and
  calibration sums are one ``reduceat``;
* for binary tasks the negatives are already in (block, score) order: the weighted-rank AUC needs no
  gather, only a cumulative sum and index lookups computed here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["AucPlan", "PassData", "Plan", "SegmentSum", "build_plan"]


@dataclass(frozen=True)
class PassData:
    """Row-level inputs of a pass (all evaluated rows, in any order)."""

    y: np.ndarray  # (n,) true class index
    yhat: np.ndarray  # (n,) predicted class index
    probs: np.ndarray  # (n, K) probabilities, NaN replaced by 0
    bad: np.ndarray  # (n,) row had a NaN probability
    conf: np.ndarray  # (n,) calibration confidence (binary: P(positive); multiclass: max probability)
    target: np.ndarray  # (n,) calibration target (binary: y; multiclass: yhat == y)
    bins: np.ndarray  # (n,) confidence bin index
    row_key: np.ndarray  # (n,) orders rows by probabilities (binary: P(positive); multiclass: a rank of
    # the probability rows, tied only between identical rows): with it the sorted order does not depend on
    # the input order
    group: np.ndarray  # (n,) group index in [0, G), -1 = unknown
    n_groups: int
    n_bins: int
    #: (n,) binary tasks with randomised decisions: each row's probability of a positive decision (NaN replaced
    #: by 0; ``yhat`` is then 1 everywhere and the confusion counts are expected counts); None: ``yhat`` decides
    decide: np.ndarray | None = None


@dataclass(frozen=True)
class AucPlan:
    """Weighted Mann-Whitney AUC of class ``k`` one vs rest, per block and on all rows.

    With ``CN`` the cumulative weight of the negatives in (block, score) order (leading zero) and ``h`` the
    block of row ``r``, ``CN[lo[r, i]] - CN[neg_start[h]]`` is the weight of block ``h``'s negatives scoring
    below positive ``i``; ``hi`` (kept only where it differs, i.e. for ties) gives the weight at or below it.
    """

    k: int  # the positive class (one vs rest)
    pos: slice  # positions of the positives (contiguous: the true class is the primary sort key)
    own: tuple[tuple[int, int, int], ...]  # (block, start, stop) of each block's positives within ``pos``
    neg: slice | np.ndarray  # positions of the negatives in (block, score) order
    neg_start: np.ndarray  # (n_blocks,) index into CN where each block's negatives start
    neg_end: np.ndarray  # (n_blocks,)
    lookup_blocks: np.ndarray  # cross mode: the block of each row of ``lo`` (the blocks with negatives)
    lo: np.ndarray  # (rows, n_pos); without cross mode one row: each positive against its own block
    own_row: dict[int, int]  # block -> row of ``lo`` holding its positives' own-block lookups
    ties: tuple[tuple[int, np.ndarray, np.ndarray, np.ndarray], ...]  # (row of lo, columns, lo, hi)
    cross: bool  # all-rows AUC from the per-block lookups; otherwise from ``all_rows``
    all_rows: AucPlan | None = None  # single-block plan for the all-rows AUC when there are many blocks


@dataclass(frozen=True)
class SegmentSum:
    """Sums cells into targets in a fixed order: ``out[:, targets] = reduceat(x[:, src], starts)``.

    Within a target, cells are added in cell order, which for a group's own slice does not depend on group
    names, so results are bit-identical whatever the groups are called.
    """

    src: np.ndarray
    starts: np.ndarray
    targets: np.ndarray
    size: int

    @classmethod
    def build(cls, cell: np.ndarray, target: np.ndarray, size: int) -> SegmentSum:
        order = np.lexsort((cell, target))
        src, tgt = cell[order], target[order]
        starts = _runs(tgt)
        return cls(src=src, starts=starts, targets=tgt[starts], size=size)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = np.zeros((x.shape[0], self.size))
        if len(self.src):
            out[:, self.targets] = np.add.reduceat(x[:, self.src], self.starts, axis=1)
        return out


@dataclass(frozen=True)
class Plan:
    n: int
    order: np.ndarray  # (n,) input row of each sorted position
    n_classes: int
    n_groups: int
    n_blocks: int
    n_bins: int
    strata: tuple[tuple[int, int, bytes], ...]  # (start, size, seed key from content) in sorted order
    cell_starts: np.ndarray
    cell_target: np.ndarray  # (C,) calibration target of each cell
    conf_sum: SegmentSum  # cells -> confusion entries of each slice, (S*K*K)
    cal_sum: SegmentSum  # cells -> calibration bin of each slice, (S*M)
    conf_sorted: np.ndarray  # (n,) calibration confidence in sorted order
    auc: tuple[AucPlan, ...]
    slice_bad: np.ndarray  # (S,) number of rows with NaN probabilities per slice
    #: randomised decisions: (n,) probability of a positive decision in sorted order; ``conf_sum`` then takes
    #: 2C columns, each cell's expected weight decided positive, then its weight decided negative
    decide_sorted: np.ndarray | None = None


def _runs(*keys: np.ndarray) -> np.ndarray:
    """Start positions of runs of equal key tuples in already sorted arrays."""
    n = len(keys[0])
    change = np.zeros(n, dtype=bool)
    if n:
        change[0] = True
    for k in keys:
        change[1:] |= k[1:] != k[:-1]
    return np.flatnonzero(change)


def _as_slice(idx: np.ndarray) -> slice | np.ndarray:
    if len(idx) == 0:
        return slice(0, 0)
    if idx[-1] - idx[0] == len(idx) - 1 and np.all(np.diff(idx) == 1):
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx


_MAX_CROSS_BLOCKS = 6  # above this, the all-rows AUC sorts all negatives instead of one lookup per block


def _auc_plan(k: int, y: np.ndarray, block: np.ndarray, score: np.ndarray, n_blocks: int) -> AucPlan | None:
    is_pos = y == k
    pos_idx = np.flatnonzero(is_pos)
    if len(pos_idx) == 0 or len(pos_idx) == len(y):
        return None  # AUC undefined on every slice; the suite reports why
    pos = slice(int(pos_idx[0]), int(pos_idx[-1]) + 1)
    neg_idx = np.flatnonzero(~is_pos)
    neg_idx = neg_idx[np.lexsort((score[neg_idx], block[neg_idx]))]
    nb, ns = block[neg_idx], score[neg_idx]
    neg_start = np.searchsorted(nb, np.arange(n_blocks), side="left")
    neg_end = np.searchsorted(nb, np.arange(n_blocks), side="right")
    pb, ps = block[pos], score[pos]
    seg = _runs(pb)
    stops = np.append(seg[1:], len(pb))
    own = tuple((int(pb[a]), int(a), int(b)) for a, b in zip(seg, stops, strict=True))
    has_neg = neg_end > neg_start
    lookup_blocks = np.flatnonzero(has_neg)
    cross = len(lookup_blocks) <= _MAX_CROSS_BLOCKS
    # cross: one row per block with negatives, for every positive (their sum gives the all-rows AUC);
    # otherwise a single row holding each positive's lookup into its own block
    lo = np.zeros((len(lookup_blocks) if cross else 1, len(ps)), dtype=np.intp)
    hi = lo.copy()
    own_row: dict[int, int] = {}
    for r, h in enumerate(lookup_blocks if cross else []):
        scores_h = ns[neg_start[h]:neg_end[h]]
        lo[r] = neg_start[h] + np.searchsorted(scores_h, ps, side="left")
        hi[r] = neg_start[h] + np.searchsorted(scores_h, ps, side="right")
        own_row[int(h)] = r
    if not cross:
        for h, a, z in own:
            if has_neg[h]:
                scores_h = ns[neg_start[h]:neg_end[h]]
                lo[0, a:z] = neg_start[h] + np.searchsorted(scores_h, ps[a:z], side="left")
                hi[0, a:z] = neg_start[h] + np.searchsorted(scores_h, ps[a:z], side="right")
                own_row[h] = 0
    ties = []
    for r in range(lo.shape[0]):
        cols = np.flatnonzero(hi[r] != lo[r])
        if len(cols):
            ties.append((r, cols, lo[r, cols], hi[r, cols]))
    all_rows = None if cross else _auc_plan(k, y, np.zeros_like(block), score, 1)
    return AucPlan(k=k, pos=pos, own=own, neg=_as_slice(neg_idx), neg_start=neg_start, neg_end=neg_end,
                   lookup_blocks=lookup_blocks if cross else lookup_blocks[:0], lo=lo, own_row=own_row,
                   ties=tuple(ties), cross=cross, all_rows=all_rows)


def build_plan(d: PassData) -> Plan:
    n, k_classes = d.probs.shape
    g_count = d.n_groups
    block = np.where(d.group >= 0, d.group, g_count)
    n_blocks = g_count + 1
    binary = k_classes == 2
    if binary:  # yhat and bin are monotone in P(positive): sorting by it keeps cells contiguous
        keys = (d.probs[:, 0], d.bad, d.probs[:, 1], block, d.y)  # ties only between identical rows
        if d.decide is not None:  # yhat is constant; the decision probability breaks the remaining ties
            keys = (d.decide, *keys)
    else:
        keys = (d.row_key, d.bad, d.bins, d.yhat, block, d.y)
    order = np.lexsort(keys)
    y, yhat, blk, bins = d.y[order], d.yhat[order], block[order], d.bins[order]
    probs, bad, target = d.probs[order], d.bad[order], d.target[order]
    decide = None if d.decide is None else d.decide[order].astype(np.float64)

    starts = _runs(y, blk)
    sizes = np.diff(np.append(starts, n))
    digests = []
    for a, m in zip(starts, sizes, strict=True):
        h = hashlib.blake2b(digest_size=16)
        h.update(np.int64(y[a]).tobytes())
        h.update(np.ascontiguousarray(probs[a:a + m]).tobytes())
        h.update(bad[a:a + m].tobytes())
        if decide is not None:
            h.update(decide[a:a + m].tobytes())
        digests.append(h.digest())
    # a stratum's key: its own content and its group's content (names and row order play no part)
    group_digest: dict[int, Any] = {}
    for a, dig in sorted(zip(starts, digests, strict=True), key=lambda t: (int(blk[t[0]]), t[1])):
        group_digest.setdefault(int(blk[a]), hashlib.blake2b(digest_size=16)).update(dig)
    strata = tuple(
        (int(a), int(m), hashlib.blake2b(dig + group_digest[int(blk[a])].digest(), digest_size=16).digest())
        for a, m, dig in zip(starts, sizes, digests, strict=True)
    )

    cells = _runs(y, blk, yhat, bins)
    cy, cb, chat, cbin = y[cells], blk[cells], yhat[cells], bins[cells]
    n_slices = g_count + 1
    kk, m_bins = k_classes * k_classes, d.n_bins
    rows = np.arange(len(cells))
    known = cb < g_count
    cell_ids = np.concatenate([rows, rows[known]])  # every cell counts for slice 0 and, if known, its group
    slice_ids = np.concatenate([np.zeros(len(cells), dtype=np.int64), cb[known] + 1])
    entry = cy * k_classes + chat
    if d.decide is not None:  # columns 0..C-1: expected weight decided positive (chat = 1); C..2C-1: negative
        c = len(cells)
        conf_sum = SegmentSum.build(np.concatenate([cell_ids, cell_ids + c]), np.concatenate(
            [slice_ids * kk + np.concatenate([entry, entry[known]]),
             slice_ids * kk + np.concatenate([entry - 1, (entry - 1)[known]])]), n_slices * kk)
    else:
        conf_sum = SegmentSum.build(cell_ids, slice_ids * kk + np.concatenate([entry, entry[known]]),
                                    n_slices * kk)
    cal_sum = SegmentSum.build(cell_ids, slice_ids * m_bins + np.concatenate([cbin, cbin[known]]), n_slices * m_bins)

    auc_classes = [1] if binary else range(k_classes)
    plans = tuple(p for p in (_auc_plan(k, y, blk, probs[:, k], n_blocks) for k in auc_classes) if p is not None)
    slice_bad = np.concatenate([[bad.sum()], np.bincount(blk[bad], minlength=n_blocks)[:g_count]])
    return Plan(n=n, order=order, n_classes=k_classes, n_groups=g_count, n_blocks=n_blocks, n_bins=m_bins,
                strata=strata,
                cell_starts=cells, cell_target=target[cells].astype(np.float64), conf_sum=conf_sum,
                cal_sum=cal_sum, conf_sorted=d.conf[order].astype(np.float64), auc=plans,
                slice_bad=slice_bad.astype(np.int64),
                decide_sorted=decide)
