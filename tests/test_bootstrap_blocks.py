"""The bootstrap draws and evaluates its resamples in bounded blocks (docs/scale.md, "compare and metrics"):
the same resamples as one full (B, N) draw, and memory that does not grow with B x N."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from fixtures_results import predictions
from sklearn.metrics import roc_auc_score

from fairbench.metrics import _bootstrap
from fairbench.metrics._inputs import read_predictions
from fairbench.metrics._kernels import draw_weights
from fairbench.metrics._plan import build_plan
from fairbench.metrics._suite import build_passes
from fairbench.metrics.paired import paired_metrics

CLASSES = ["normal", "abnormal"]
ATTRS = ["sex", "age", "race"]


def _frames(n: int):  # type: ignore[no-untyped-def]
    a = predictions("synth_cxr", strength=0.8, bias=0.8, seed=0, n_test=n, n_val=50, salt="a", same_samples=True)
    b = predictions("synth_cxr", strength=0.8, bias=0.0, seed=0, n_test=n, n_val=50, salt="b", same_samples=True)
    return a, b


def _paired(a, b, n_boot: int, seed: int):  # type: ignore[no-untyped-def]
    return paired_metrics(a, b, classes=CLASSES, attributes=ATTRS, intersections=[["sex", "age"]],
                          eval_split="test", threshold_a=0.5, threshold_b=0.5, ece_bins=15,
                          no_finding_class="normal", n_boot=n_boot, seed=seed)[0]


def test_blocks_give_the_full_draw_row_for_row() -> None:
    from fairbench.metrics._kernels import draw_weight_blocks

    a, _ = _frames(700)
    pred = read_predictions(a, CLASSES, ATTRS, None)
    for _, data in build_passes(pred, eval_split="test", threshold=0.5, ece_bins=15, no_finding=0)[:2]:
        plan = build_plan(data)
        full = draw_weights(plan, 23, seed=4, chunk=3)
        for rows in (1, 2, 5, 23, 40):
            blocks = list(draw_weight_blocks(plan, 23, 4, 3, rows))
            assert [len(x) for x in blocks[:-1]] == [rows] * (len(blocks) - 1)
            assert np.array_equal(np.concatenate(blocks), full), rows


def _reference_overall_auc(a, b, n_boot: int, seed: int, chunk_rows: int) -> dict:  # type: ignore[no-untyped-def]
    """A plain full-matrix paired bootstrap of the overall AUC: the suite's resamples of A (one (b, n) draw per
    seeding chunk of ``chunk_rows`` resamples, as main drew them), each resample's AUC of A and B by sklearn."""
    ev = (a["split"] == "test").to_numpy()
    y = a["label"].to_numpy()[ev]
    sa, sb = a["prob_abnormal"].to_numpy()[ev], b["prob_abnormal"].to_numpy()[ev]
    pred = read_predictions(a, CLASSES, ATTRS, None)
    plan = build_plan(build_passes(pred, eval_split="test", threshold=0.5, ece_bins=15, no_finding=0)[0][1])
    deltas = []
    for c, lo in enumerate(range(0, n_boot, chunk_rows)):
        w = draw_weights(plan, min(chunk_rows, n_boot - lo), seed, c)
        counts = np.zeros_like(w)
        counts[:, plan.order] = w  # back to the rows' own order
        for r in range(len(w)):
            deltas.append(roc_auc_score(y, sb, sample_weight=counts[r]) - roc_auc_score(y, sa, sample_weight=counts[r]))
    d = np.array(deltas)
    k = min(int((d <= 0).sum()), int((d >= 0).sum()))
    return {"delta": roc_auc_score(y, sb) - roc_auc_score(y, sa), "ci": list(np.quantile(d, [0.025, 0.975])),
            "se": float(np.std(d, ddof=1)), "p": min(1.0, 2.0 * (k + 1) / (len(d) + 1))}


def test_paired_bootstrap_in_blocks_equals_a_full_matrix_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    n, n_boot = 600, 60
    a, b = _frames(n)
    # several seeding chunks of 25 resamples, each evaluated in blocks of 3: the block edges fall inside chunks
    monkeypatch.setattr(_bootstrap, "CHUNK_ELEMENTS", 25 * n)
    monkeypatch.setattr(_bootstrap, "BLOCK_ELEMENTS", 3 * n)
    got = _paired(a, b, n_boot, seed=7)["overall"]["auc"]
    ref = _reference_overall_auc(a, b, n_boot, seed=7, chunk_rows=25)
    assert got["delta"] == pytest.approx(ref["delta"], abs=1e-12)
    assert got["ci"] == pytest.approx(ref["ci"], abs=1e-12)
    assert got["se"] == pytest.approx(ref["se"], abs=1e-12)
    assert got["p"] == pytest.approx(ref["p"], abs=1e-12)
    # and every number of every path is the same whatever the block size (one block per chunk = main's way)
    monkeypatch.setattr(_bootstrap, "BLOCK_ELEMENTS", 10**9)
    assert _paired(a, b, n_boot, seed=7) == _paired_blocks(a, b, n_boot, monkeypatch, 3 * n)


def _paired_blocks(a, b, n_boot, monkeypatch, block):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(_bootstrap, "BLOCK_ELEMENTS", block)
    return _paired(a, b, n_boot, seed=7)


def test_paired_bootstrap_memory_does_not_grow_with_resamples_times_rows() -> None:
    """N = 20 000, B = 200: main drew and evaluated (104, N) chunks on two threads, a traced peak of 147 MiB
    here; in blocks of 2^18 elements it is 30 MiB (most of it the parsed frames and plans, O(N))."""
    a, b = _frames(20_000)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        _paired(a, b, 200, seed=0)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 48 * 2**20, f"paired bootstrap peaked at {peak / 2**20:.1f} MiB"
