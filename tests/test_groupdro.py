"""GroupDRO beyond the per-step update (tests/test_adapters_mitigation.py checks that by hand): the same ``q``
on every process under data parallelism (two gloo processes against one process on the same global batches),
and the released recipe (``recipe=released``: SGD with momentum 0.9, the epoch with the best worst-cell
validation accuracy)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from fairbench.train.checkpoint import CheckpointStore
from fairbench.train.config import LOOP_DEFAULTS, TrainConfig
from fairbench.train.groups import Cells, GroupDRO, GroupDROMitigation, group_labels
from fairbench.train.loop import Trainer
from fairbench.train.objectives import FeatureHead

N = 48


def _data() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(1)
    features = {s: rng.normal(size=(N, 6)).astype(np.float32) for s in ("train", "val", "test")}
    group = np.array(["A", "B", "C"] * (N // 3), dtype=object)
    # cells of unequal difficulty: group C's label is mostly noise, so its loss stays high and q moves to it
    noise = np.where(group == "C", 3.0, 0.3)
    labels = {s: (features[s][:, 0] + noise * rng.normal(size=N) > 0).astype(np.int64) for s in features}
    return features, labels, group


def _train(batch_size: int, ckpt: Path) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict]:
    features, labels, group = _data()
    torch.manual_seed(0)
    objective = FeatureHead(features, labels["train"], 2, hidden=[8], dropout=0.0, device=torch.device("cpu"))
    cells = Cells.build(group_labels({"g": group}, "g"), labels["train"], ["0", "1"], attribute="g",
                        adapter="groupdro")
    objective.mitigation = GroupDROMitigation(GroupDRO(cells, 0.5, 0.0, torch.device("cpu")), balanced=True)
    cfg = TrainConfig.from_params("test", {**LOOP_DEFAULTS, "epochs": 3, "batch_size": batch_size, "lr": 0.05,
                                           "schedule": "constant", "patience": 0})
    result = Trainer(cfg, objective, name="test", seed=0, labels=labels, store=CheckpointStore(ckpt, "f")).run()
    weights = {k: v.detach().clone() for k, v in objective.module.state_dict().items()}
    return weights, objective.mitigation.dro.q.clone(), result.record


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    try:
        weights, q, record = _train(batch_size=4, ckpt=Path(out) / f"ckpt{rank}")
        torch.save({"weights": weights, "q": q, "world": record["world_size"]}, Path(out) / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="torch.distributed with gloo is not available")
def test_two_gloo_processes_hold_the_one_process_q(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    single_weights, single_q, _ = _train(batch_size=8, ckpt=tmp_path / "single")
    # the one-process q moved well away from uniform (else equal q would prove nothing)
    assert float(single_q.max() / single_q.min()) > 1.5
    for r in ranks:
        assert torch.allclose(r["q"], single_q, atol=1e-5), (r["q"], single_q)
        for key, value in single_weights.items():  # and the gradients are the one-process ones
            assert torch.allclose(r["weights"][key], value, atol=1e-5), key
