"""Data parallelism on CPU: two gloo processes train like one process with the combined batch, and only rank 0
writes. (Multi-GPU runs through torchrun/accelerate launch use the same code with NCCL; no GPU here.)"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from fairbench.train.checkpoint import CheckpointStore
from fairbench.train.config import LOOP_DEFAULTS, TrainConfig
from fairbench.train.loop import Trainer
from fairbench.train.objectives import FeatureHead

N = 32


def _data() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    features = {s: rng.normal(size=(N, 6)).astype(np.float32) for s in ("train", "val", "test")}
    labels = {s: (features[s][:, 0] + 0.5 * rng.normal(size=N) > 0).astype(np.int64) for s in features}
    return features, labels


def _train(batch_size: int, ckpt: Path) -> tuple[dict[str, torch.Tensor], bool, dict]:
    features, labels = _data()
    torch.manual_seed(0)
    objective = FeatureHead(features, labels["train"], 2, hidden=[8], dropout=0.0, device=torch.device("cpu"))
    cfg = TrainConfig.from_params("test", {**LOOP_DEFAULTS, "epochs": 3, "batch_size": batch_size, "lr": 0.05,
                                           "schedule": "constant", "patience": 0})
    store = CheckpointStore(ckpt, "fingerprint")
    result = Trainer(cfg, objective, name="test", seed=0, labels=labels, store=store).run()
    return {k: v.detach().clone() for k, v in objective.module.state_dict().items()}, store.writer, result.record


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    try:
        weights, writer, record = _train(batch_size=4, ckpt=Path(out) / "ckpt")
        torch.save({"weights": weights, "writer": writer, "world": record["world_size"],
                    "global_batch": record["global_batch_size"], "best": record["best_epoch"]},
                   Path(out) / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_two_gloo_processes_match_one_process_with_the_combined_batch(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    # fork: the children inherit the imported modules (spawning two fresh interpreters costs ~20 s here)
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["writer"] for r in ranks] == [True, False]  # only rank 0 writes checkpoints
    assert ranks[0]["world"] == 2 and ranks[0]["global_batch"] == 8
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["best.pt", "last.pt"]
    single, _, record = _train(batch_size=8, ckpt=tmp_path / "single")
    assert record["best_epoch"] == ranks[0]["best"]
    for rank in ranks:  # both processes hold the same weights, equal to the one-process run's
        for key, value in single.items():
            assert torch.allclose(rank["weights"][key], value, atol=1e-5), key


def test_only_the_main_process_writes_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              tiny_tasks_dir: Path) -> None:
    from fairbench.pipeline import RunConfig, run_cell
    from fairbench.train import dist

    assert dist.is_main_process()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert not dist.is_main_process() and dist.world_size() == 2
    # a frozen-encoder cell needs no process group: rank 1 computes and returns without writing anything
    result = run_cell(RunConfig(task="synth_tiny", model="tiny_medclip_vit", adapt="zeroshot", weights="random",
                                device="cpu", out=tmp_path / "r", tasks_dirs=(tiny_tasks_dir,), n_boot=0))
    assert result.metrics == {} and not (result.path / "metrics.json").exists()
    assert not (result.path / "predictions.parquet").exists()
