"""--precision: bfloat16 autocast for frozen-encoder passes on CPU, recorded with its measured effect; fp16 on CPU
and unknown values refused with one line; a precision is part of the embedding-cache key and of a cell's identity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fairbench.errors import FairbenchError, ResultsError
from fairbench.pipeline import RunConfig, run_cell
from tests.test_cli import assert_one_line_error, fairbench


@pytest.fixture(scope="module")
def tasks_dir(micro_task_dir) -> Path:
    return micro_task_dir("synth_precision", n=(8, 24, 80))


def _cfg(tasks_dir: Path, out: Path, precision: str, **kw) -> RunConfig:
    return RunConfig(task="synth_precision", model="tiny_openai_clip", adapt="zeroshot", weights="random",
                     device="cpu", out=out, tasks_dirs=(tasks_dir,), n_boot=0, precision=precision, **kw)


def _probs(cell: Path) -> pd.DataFrame:
    frame = pd.read_parquet(cell / "predictions.parquet")
    return frame.set_index(["split", "sample_id"])[[c for c in frame.columns if c.startswith("prob_")]]


@pytest.fixture(scope="module")
def runs(tasks_dir: Path, tmp_path_factory: pytest.TempPathFactory, one_torch_thread) -> dict:
    out = tmp_path_factory.mktemp("precision")
    return {p: run_cell(_cfg(tasks_dir, out / p, p, embedding_cache=False)) for p in ("fp32", "bf16")}


def test_bf16_is_recorded_with_the_effect_it_had(runs: dict) -> None:
    fp32, bf16 = runs["fp32"], runs["bf16"]
    # the zero-shot cell's leakage probe (analyses.leakage) encodes the train split too
    assert fp32.metrics["precision"] == {"inference": "fp32", "encoded_splits": ["test", "train", "val"]}
    rec = bf16.metrics["precision"]
    assert rec["inference"] == "bf16" and rec["autocast_dtype"] == "bfloat16"
    effect = rec["effect"]
    assert effect["split"] == "test" and effect["n_images"] == 64
    # autocast really ran: the probabilities moved, a little
    a, b = _probs(fp32.path), _probs(bf16.path)
    delta = np.abs(a.to_numpy() - b.loc[a.index].to_numpy())
    assert 0 < delta.max() < 0.05
    # the recorded effect is what the two full runs show on the first 64 test images (an independent fp32 run)
    first = [f"synth-test-{i:06d}" for i in range(64)]
    test_delta = np.abs(a.loc["test"].loc[first].to_numpy() - b.loc["test"].loc[first].to_numpy()).max()
    assert effect["max_abs_delta_prob"] == pytest.approx(test_delta, abs=1e-6)
    assert 0 < effect["max_rel_error_embedding"] < 0.05
    agree = (a.loc["test"].loc[first].to_numpy().argmax(1) == b.loc["test"].loc[first].to_numpy().argmax(1)).mean()
    assert effect["argmax_agreement"] == pytest.approx(agree)
    # and the precision is part of the cell's configuration hash
    assert fp32.metrics["config_sha256"] != bf16.metrics["config_sha256"]


def test_a_cell_computed_at_another_precision_is_not_reused(runs: dict, tasks_dir: Path) -> None:
    out = runs["bf16"].path.parents[3]  # <out>/<task>/<model>/<adapt>/seed0
    with pytest.raises(ResultsError, match="--precision bf16, not fp32"):
        run_cell(_cfg(tasks_dir, out, "fp32", embedding_cache=False))


def test_embedding_cache_keys_keep_fp32_and_separate_bf16(tasks_dir: Path, tmp_path: Path, one_torch_thread,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from fairbench.cache import EmbeddingCache

    monkeypatch.setenv("FAIRBENCH_CACHE", str(tmp_path / "cache"))  # an empty cache, whatever ran before
    first = run_cell(_cfg(tasks_dir, tmp_path / "a", "fp32"))
    assert [e["event"] for e in first.metrics["embedding_cache"]["events"]] == ["miss", "miss", "miss"]
    second = run_cell(_cfg(tasks_dir, tmp_path / "b", "bf16"))
    events = [(e["split"], e["event"]) for e in second.metrics["embedding_cache"]["events"]]
    # the fp32 entries are not served to a bf16 run (train: the leakage probe's encode)
    assert events == [("val", "miss"), ("test", "miss"), ("train", "miss")]
    keys_fp32 = {e["key"] for e in first.metrics["embedding_cache"]["events"]}
    keys_bf16 = {e["key"] for e in second.metrics["embedding_cache"]["events"]}
    assert not keys_fp32 & keys_bf16
    # fp32 entries keep the key they had before --precision existed (no new part)
    root = Path(first.metrics["embedding_cache"]["root"])
    from safetensors import safe_open

    with safe_open(EmbeddingCache(root).path(sorted(keys_fp32)[0]), framework="np") as fh:
        manifest = json.loads(fh.metadata()["fairbench"])
    assert "precision" not in manifest["parts"]


def test_fp16_on_cpu_and_unknown_precisions_are_refused(tasks_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FairbenchError, match="fp16: float16 autocast is for CUDA"):
        run_cell(_cfg(tasks_dir, tmp_path, "fp16"))
    proc = fairbench("run", "--device", "cpu", "--precision", "fp16", "--out", str(tmp_path / "r"))
    assert_one_line_error(proc, "--precision fp16", "on CPU use bf16")
    proc = fairbench("run", "--device", "cpu", "--precision", "fp8", "--out", str(tmp_path / "r"))
    assert_one_line_error(proc, "--precision 'fp8'", "fp32, bf16, fp16")
    assert not (tmp_path / "r").exists()


def test_encoding_runs_under_autocast_and_outside_inference_mode(tasks_dir: Path, one_torch_thread) -> None:
    """bf16 autocast on CPU ran 2.3x slower under torch.inference_mode than under torch.no_grad (ViT-B/32, one
    thread: 4.15 vs 1.79 CPU s for 64 images), so the encoding loop uses no_grad."""
    import torch

    from fairbench.adapters.base import AdaptContext
    from fairbench.data.task import get_task
    from fairbench.models.base import get_model_card
    from fairbench.models.build import build_model

    model = build_model(get_model_card("tiny_openai_clip"), "random", torch.device("cpu"))
    seen: list[tuple[bool, bool, torch.dtype | None, bool]] = []
    model.module.visual.register_forward_hook(lambda mod, args, out: seen.append(
        (torch.is_inference_mode_enabled(), torch.is_grad_enabled(),
         torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None, out.dtype == torch.float32)))
    ctx = AdaptContext(task=get_task("synth_precision", (tasks_dir,)), model=model, seed=0, embedding_cache=None,
                       precision="bf16", batch_size=16)
    enc = ctx.encode("val")
    assert enc["embedding"].dtype == np.float32 and len(enc["embedding"]) == 24
    assert seen and all(s[:3] == (False, False, torch.bfloat16) for s in seen), seen
    assert not any(s[3] for s in seen)  # the tower itself computed in bfloat16; the context casts back
