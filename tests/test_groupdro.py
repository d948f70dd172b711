"""GroupDRO beyond the per-step update (tests/test_adapters_mitigation.py checks that by hand): the same ``q``
on every process under data parallelism (two gloo processes against one process on the same global batches),
and the released recipe (``recipe=released``: SGD with momentum 0.9, the epoch with the best worst-cell
validation accuracy)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train_dist import _free_port  # the one free-port helper of the gloo tests

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


# -- the released recipe ----------------------------------------------------------------------------------------
VAL_LABELS = np.array([0, 0, 1, 1, 0, 0, 1, 1])
VAL_GROUPS = np.array(["A"] * 4 + ["B"] * 4, dtype=object)
#: validation P(abnormal) per epoch: epoch 0 ranks every positive above every negative (AUC 1) but calls both
#: of B's negatives positive (B x 0 accuracy 0); epoch 1 ranks worse but gets every cell at least half right
SCRIPT = [np.array([.1, .2, .8, .9, .6, .65, .7, .75]), np.array([.4, .6, .45, .9, .3, .4, .6, .7]),
          np.array([.9, .8, .2, .1, .9, .8, .2, .1])]


class _Scripted(FeatureHead):
    """A head that trains for real but reports the scripted validation probabilities, one epoch after another."""

    calls = 0

    def predict(self, split: str) -> np.ndarray:
        p = SCRIPT[min(self.calls, len(SCRIPT) - 1)]
        if split == "val":
            self.calls += 1
        return np.stack([1 - p, p], axis=1).astype(np.float32)


def _scripted_run(tmp_path: Path, select_on: str) -> dict:
    rng = np.random.default_rng(0)
    features = {s: rng.normal(size=(8, 3)).astype(np.float32) for s in ("train", "val", "test")}
    labels = {s: VAL_LABELS for s in features}
    objective = _Scripted(features, labels["train"], 2, hidden=[4], dropout=0.0, device=torch.device("cpu"))
    cfg = TrainConfig.from_params("test", {**LOOP_DEFAULTS, "epochs": 3, "patience": 0, "select_on": select_on})
    return Trainer(cfg, objective, name="test", seed=0, labels=labels, store=CheckpointStore(tmp_path / select_on, "f"),
                   groups=VAL_GROUPS).run().record


def test_worst_cell_accuracy_selects_another_epoch_than_auc(tmp_path: Path) -> None:
    from sklearn.metrics import accuracy_score, roc_auc_score

    aucs = [roc_auc_score(VAL_LABELS, p) for p in SCRIPT]
    worst = [min(accuracy_score(VAL_LABELS[m], (p[m] > 0.5).astype(int))
                 for g in ("A", "B") for c in (0, 1) for m in [(VAL_GROUPS == g) & (VAL_LABELS == c)])
             for p in SCRIPT]
    assert int(np.argmax(aucs)) != int(np.argmax(worst))  # the toy separates the two rules
    by_auc = _scripted_run(tmp_path, "val")
    by_cell = _scripted_run(tmp_path, "val_worst_cell_acc")
    assert by_auc["best_epoch"] == int(np.argmax(aucs)) == 0
    assert by_cell["best_epoch"] == int(np.argmax(worst)) == 1
    assert by_cell["select_metric"] == "worst_cell_accuracy" and by_cell["selected_on"] == "val"
    assert [e["val_worst_cell_acc"] for e in by_cell["history"]] == pytest.approx(worst)


def test_released_recipe_trains_with_sgd_and_selects_on_worst_cell_accuracy(tmp_path: Path, micro_task_dir) -> None:
    import pandas as pd
    from sklearn.metrics import accuracy_score

    from fairbench.pipeline import RunConfig, run_cell

    tasks = micro_task_dir("synth_micro_dro", n=(64, 48, 48))
    result = run_cell(RunConfig(task="synth_micro_dro", model="tinyclip", adapt="groupdro", seed=0,
                                out=tmp_path / "results", weights="random", device="cpu", tasks_dirs=(tasks,),
                                n_boot=0, adapt_args={"recipe": "released", "epochs": "4"}))
    adapt = result.metrics["adapt"]
    assert adapt["params"]["recipe"] == "released" and adapt["fitted"]["recipe"]["name"] == "released"
    train = adapt["fitted"]["train"]
    assert train["optimizer"]["class"] == "SGD" and train["optimizer"]["momentum"] == 0.9  # the optimiser built
    assert train["optimizer"]["weight_decay"] == 1e-4 and train["optimizer"]["schedule"] == "constant"
    assert train["select_metric"] == "worst_cell_accuracy" and train["epochs_run"] == 4  # no early stop
    history = [e["val_worst_cell_acc"] for e in adapt["fitted"]["epochs"]]
    assert train["best_epoch"] == int(np.argmax(history))
    val = pd.read_parquet(result.path / "predictions.parquet").query("split == 'val'")
    pred = (val["prob_abnormal"] > val["prob_normal"]).astype(int)
    accs = [accuracy_score(val["label"][m], pred[m]) for _, cell in val.groupby(["attr_race", "label"])
            for m in [val.index.isin(cell.index)]]
    assert train["best_score"] == pytest.approx(min(accs))  # the kept epoch's predictions score the best epoch's


def test_default_recipe_is_fairbench_and_a_bad_recipe_is_one_line() -> None:
    from fairbench.adapters.base import ADAPTERS
    from fairbench.errors import FairbenchError

    default = ADAPTERS.get("groupdro")({})
    assert default.params["recipe"] == "fairbench" and default.config.optimizer == "adamw"
    assert default.config.select_on == "val"
    released = ADAPTERS.get("groupdro")({"recipe": "released", "lr": "0.01"})
    assert released.config.optimizer == "sgd" and released.config.lr == 0.01  # explicit parameters still win
    with pytest.raises(FairbenchError, match=r"^adapter 'groupdro': recipe must be one of fairbench, released"):
        ADAPTERS.get("groupdro")({"recipe": "sagawa"})


# -- the GroupDRO control task ----------------------------------------------------------------------------------
def test_dro_control_cells_are_equal_sized_and_the_marker_points_opposite_ways() -> None:
    """What docs/adapters.md says of synth_cxr_dro_control, counted on the generated training split."""
    from fairbench.data.synth import SynthConfig, generate_split
    from fairbench.data.task import get_task

    options = {k: v for k, v in get_task("synth_cxr_dro_control").dataset_options.items() if k != "seed"}
    split = generate_split(SynthConfig.from_options(options), "train", seed=0)
    race = np.asarray(split.attributes["race"])
    abnormal = np.asarray(split.label_finding) != "normal"
    marker = np.asarray(split.marker)
    counts = [int(np.sum((race == g) & (abnormal == y))) for g in ("Asian", "Black", "White") for y in (0, 1)]
    assert len(race) == 1200 and min(counts) > 0.8 * 200 and max(counts) < 1.2 * 200  # six cells of ~200
    rate = {(g, y): marker[(race == g) & (abnormal == y)].mean() for g in ("Asian", "Black", "White") for y in (0, 1)}
    assert rate[("White", 1)] > 0.8 and rate[("White", 0)] < 0.2  # marker => abnormal for White patients
    assert rate[("Black", 1)] < 0.2 and rate[("Black", 0)] > 0.8  # marker => normal for Black patients
    assert rate[("Asian", 0)] == rate[("Asian", 1)] == 0
    # with equal cell weights the marker carries (almost) nothing about the label
    assert abs(np.mean([rate[g, 1] for g in ("Asian", "Black", "White")])
               - np.mean([rate[g, 0] for g in ("Asian", "Black", "White")])) < 0.05
