"""Memory of training (issue #24 item 1): nothing a step makes outlives it, no split's pixels are held whole, and
every cell records its peak memory (``provenance.resources``), which nothing that compares cells reads.

The first test counts tensors, not bytes of resident memory, so other jobs on the machine cannot move them:
after every optimizer step it lists the live tensors (``gc``) and checks that neither the tensors with an
autograd graph attached nor the bytes held outside the model's parameters grow from step to step."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from fairbench.pipeline import RunConfig, run_cell
from fairbench.resources import release_freed_memory
from fairbench.train import loop

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TRAIN, BATCH, PIXELS = 40, 4, 32  # the micro task's training split, the batch, tiny_medclip_vit's image size


@pytest.fixture(scope="module")
def micro_tasks(micro_task_dir) -> Path:
    return micro_task_dir("synth_micro_memory", n=(TRAIN, 24, 24))


def _config(out: Path, tasks: Path, adapt: str, **args: str) -> RunConfig:
    return RunConfig(task="synth_micro_memory", model="tiny_medclip_vit", adapt=adapt, seed=0, out=out,
                     weights="random", device="cpu", tasks_dirs=(tasks,), n_boot=0,
                     adapt_args={"epochs": "1", "batch_size": str(BATCH), "eval_batch_size": "8", **args})


def _census(before: set[int]) -> tuple[int, int]:
    """(tensors with an autograd graph attached, bytes of the other tensors), over the live tensors that are not
    in ``before`` (alive before the cell), nor a module's parameter or buffer, nor optimizer state."""
    gc.collect()
    objects = gc.get_objects()
    skip = set(before)
    for obj in objects:
        kind = type(obj)  # not isinstance: it reads __class__, which some module proxies warn about
        if issubclass(kind, torch.nn.Module):
            skip.update(id(t) for t in obj.parameters(recurse=False))
            skip.update(id(t) for t in obj.buffers(recurse=False))
        elif issubclass(kind, torch.optim.Optimizer):
            skip.update(id(v) for st in obj.state.values() for v in st.values() if isinstance(v, torch.Tensor))
    graphs, loose = 0, 0
    for obj in objects:
        if issubclass(type(obj), torch.Tensor) and id(obj) not in skip:
            graphs += obj.grad_fn is not None
            loose += obj.numel() * obj.element_size()
    return graphs, loose


def _steps(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    gc.collect()
    before = {id(o) for o in gc.get_objects() if issubclass(type(o), torch.Tensor)}
    seen: list[tuple[int, int]] = []
    monkeypatch.setattr(loop, "STEP_HOOKS", [lambda epoch, step: seen.append(_census(before))])
    return seen


@pytest.mark.parametrize("adapt", ["lora", "full_ft"])
def test_nothing_a_step_makes_outlives_it(tmp_path: Path, micro_tasks: Path, monkeypatch: pytest.MonkeyPatch,
                                          adapt: str) -> None:
    """After every optimizer step of one epoch (10 steps), the number of tensors carrying an autograd graph is at
    most one (the last loss) and the bytes of tensors outside the parameters are the same as after the second
    step: a loss, logits or features kept across batches (with their graph or without) fail it. Those bytes
    (labels, the last loss; parameters, buffers and optimizer state are left out) are also less than a quarter
    of the training split's preprocessed pixels (3 x 32 x 32 float32 per image): the split is read per batch,
    not kept whole as float32 (12 times the size of its 8-bit grey images)."""
    seen = _steps(monkeypatch)
    run_cell(_config(tmp_path, micro_tasks, adapt))
    assert len(seen) == TRAIN // BATCH
    graphs = [g for g, _ in seen[1:]]
    loose = [b for _, b in seen[1:]]
    assert max(graphs) <= 1, f"tensors with an autograd graph alive after each step: {graphs}"
    assert max(loose) - min(loose) == 0, f"bytes outside the parameters grow from step to step: {loose}"
    split_pixels = TRAIN * 3 * PIXELS * PIXELS * 4
    assert max(b for _, b in seen) < split_pixels / 4, (max(b for _, b in seen), split_pixels)


def test_each_cell_records_its_own_peak_memory(tmp_path: Path, micro_tasks: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """``provenance.resources.peak_rss_mb`` is the cell's peak: at least every resident-set reading taken during
    the cell, no more than the machine has, and not the 600 MiB the process held (and freed) before the cell;
    ``rss_scope`` says the mark was reset when the cell began (Linux)."""
    proc = psutil.Process()
    before = proc.memory_info().rss / 2**20
    ballast = np.ones(600 * 2**20 // 8)  # resident: every page written
    del ballast
    readings: list[float] = []
    monkeypatch.setattr(loop, "STEP_HOOKS", [lambda e, s: readings.append(proc.memory_info().rss / 2**20)])
    doc = run_cell(_config(tmp_path, micro_tasks, "mlp")).metrics
    res = doc["provenance"]["resources"]
    assert set(res) >= {"peak_rss_mb", "rss_scope"} and "peak_cuda_mb" not in res  # a CPU cell
    assert res["rss_scope"] == "cell"
    assert readings and res["peak_rss_mb"] >= max(readings) - 1.0  # MiB, rounded to 0.1 in the file
    assert res["peak_rss_mb"] <= psutil.virtual_memory().total / 2**20
    assert res["peak_rss_mb"] < before + 400, (res, before)
    on_disk = json.loads((tmp_path / "synth_micro_memory" / "tiny_medclip_vit" / "mlp" / "seed0" /
                          "metrics.json").read_text())
    assert on_disk["provenance"]["resources"] == res


def test_resource_figures_do_not_make_a_cell_stale_or_a_check_fail(tmp_path: Path, micro_tasks: Path) -> None:
    """Peak memory varies run to run like duration_s: a cell whose recorded figures differ is still complete
    (skipped, not refused as stale) and ``fairbench check`` compares the same numbers."""
    from fairbench.report.check import extract
    from fairbench.results import ResultCell

    cfg = _config(tmp_path, micro_tasks, "mlp")
    first = run_cell(cfg)
    path = first.path / "metrics.json"
    doc = json.loads(path.read_text())
    doc["provenance"]["resources"] = {"peak_rss_mb": 123456.7, "rss_scope": "process", "peak_cuda_mb": 9.9}
    path.write_text(json.dumps(doc))
    again = run_cell(cfg)
    assert again.skipped and again.metrics["provenance"]["resources"]["peak_rss_mb"] == 123456.7
    assert extract(ResultCell(first.path, doc)) == extract(ResultCell(first.path, first.metrics))


def test_freed_heap_pages_go_back() -> None:
    """glibc keeps freed small blocks resident; :func:`release_freed_memory` returns them (Linux)."""
    if not release_freed_memory():
        pytest.skip("no glibc malloc_trim here")
    proc = psutil.Process()
    blocks = [bytearray(64 * 1024) for _ in range(4000)]  # 250 MiB in heap-sized blocks (< the mmap threshold)
    keep = blocks[::50]  # every 50th block stays, so the heap cannot shrink from its top alone
    del blocks
    held = proc.memory_info().rss
    release_freed_memory()
    after = proc.memory_info().rss
    assert held - after > 150 * 2**20, ((held - after) / 2**20, len(keep))


def test_feature_head_scores_and_standardises_large_splits_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The MLP head's features are standardised and scored in chunks of rows (objectives.PREDICT_ROWS), so a
    100 000-row split's hidden activations (100 000 x 256 floats) and float64 copy are never held at once: the
    standardised features equal the whole-array formula bit for bit, and the chunked probabilities equal one
    pass over the split."""
    from fairbench.train import objectives

    rng = np.random.default_rng(0)
    feats = {s: rng.normal(3.0, 2.0, (n, 16)).astype(np.float32) for s, n in (("train", 60), ("val", 30), ("test", 50))}
    x_tr = feats["train"].astype(np.float64)
    mean, std = x_tr.mean(axis=0), x_tr.std(axis=0)
    monkeypatch.setattr(objectives, "PREDICT_ROWS", 7)
    torch.manual_seed(0)
    head = objectives.FeatureHead(feats, rng.integers(0, 2, 60), 2, hidden=[32], dropout=0.1,
                                  device=torch.device("cpu"))
    for s, f in feats.items():
        assert np.array_equal(head.x[s].numpy(), ((f - mean) / std).astype(np.float32))
    chunked = head.predict("test")
    with torch.no_grad():
        whole = torch.softmax(head.head(head.x["test"]).float(), dim=1).numpy()
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-6)
    assert head.predict("val").shape == (30, 2)

    # memory: no pass through the head sees more than PREDICT_ROWS rows, so scoring a 100 000-row split never
    # holds its 100 000 x 256 hidden activations (98 MiB) at once (in one pass, measured in a fresh process: the
    # peak grew by 140-195 MiB; chunked by 0-22 MiB)
    rows_seen: list[int] = []
    big = {"train": feats["train"], "val": feats["val"], "test": rng.normal(size=(20_000, 16)).astype(np.float32)}
    head = objectives.FeatureHead(big, rng.integers(0, 2, 60), 2, hidden=[256], dropout=0.1, device=torch.device("cpu"))
    head.head[0].register_forward_hook(lambda mod, inp, out: rows_seen.append(out.shape[0]))
    monkeypatch.setattr(objectives, "PREDICT_ROWS", 8192)
    assert head.predict("test").shape == (20_000, 2)
    assert rows_seen == [8192, 8192, 3616]
