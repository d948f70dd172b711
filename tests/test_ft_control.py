"""synth_cxr_ft_control is a control only if plain CLIP fine-tuning (full_ft, objective clip) itself learns a large
race gap there: issue #22 asks for at least 10 points of AUC gap on every seed. This runs the recipe of
docs/adapters.md ("Measured", the fine-tuning control: bench/bench_fairness_training.py's full_ft variant, 600/200/600
images, lr 1e-4, 4 epochs) and measures the gap from predictions.parquet with scikit-learn, not with fairbench's
metrics."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from fairbench.data.task import builtin_tasks_dir

RECIPE = {"batch_size": "32", "optimizer": "adam", "betas": "0.1,0.1", "eps": "1e-6", "weight_decay": "6e-5",
          "schedule": "constant", "patience": "0", "objective": "clip", "texts": "reports", "trainable": "released",
          "epochs": "4", "lr": "1e-4"}


def race_auc_gap(predictions: Path) -> float:
    frame = pd.read_parquet(predictions)
    test = frame[frame["split"] == "test"]  # label is the class index: 1 = abnormal (classes normal, abnormal)
    aucs = [roc_auc_score(g["label"] == 1, g["prob_abnormal"]) for _, g in test.groupby("attr_race")]
    assert len(aucs) == 3
    return max(aucs) - min(aucs)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_plain_clip_fine_tuning_learns_a_race_gap_of_ten_points(tmp_path: Path, seed: int) -> None:
    from fairbench.pipeline import RunConfig, run_cell

    tasks, name = tmp_path / "tasks", f"ftc_seed{seed}"  # one name per seed: task folders register per process
    (tasks / name).mkdir(parents=True)
    card = builtin_tasks_dir() / "synth_cxr_ft_control" / "synth_cxr_ft_control.yaml"
    (tasks / name / f"{name}.yaml").write_text(
        f"include: {card}\nname: {name}\ndataset:\n  options:\n    n: {{train: 600, val: 200, test: 600}}\n")
    res = run_cell(RunConfig(task=name, model="tinyclip", adapt="full_ft", seed=seed, out=tmp_path / "results",
                             device="cpu", tasks_dirs=(tasks,), n_boot=0, adapt_args=dict(RECIPE)))
    gap = race_auc_gap(res.path / "predictions.parquet")
    assert gap >= 0.10, f"seed {seed}: full_ft's race AUC gap {gap:.3f} is under the control's 10 points"
