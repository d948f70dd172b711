"""Every trainable adapter end to end on every tiny model family (one epoch, a few dozen images), plus the
objectives, DBPM logging and parameter checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fairbench.errors import FairbenchError
from fairbench.pipeline import RunConfig, run_cell

CARDS = ["tinyclip", "tiny_openai_clip", "tiny_biomedclip", "tiny_medclip_vit", "tiny_medclip_resnet", "tiny_gloria",
         "tiny_blip2"]
ADAPTERS = ["mlp", "lora", "full_ft", "fairclip", "robust_fair"]
FAST = {"epochs": "1", "batch_size": "16", "eval_batch_size": "64"}
FAIR = {"fair_batch_size": "8"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def micro_tasks(micro_task_dir) -> Path:
    return micro_task_dir("synth_micro")


def micro_config(tmp_path: Path, tasks: Path, model: str, adapt: str, **args: str) -> RunConfig:
    extra = {**FAST, **(FAIR if adapt in ("fairclip", "robust_fair") else {})}
    extra.update(args)
    return RunConfig(task="synth_micro", model=model, adapt=adapt, seed=0, out=tmp_path / "results", weights="random",
                     device="cpu", tasks_dirs=(tasks,), n_boot=0, adapt_args=extra)


@pytest.mark.parametrize("adapt", ADAPTERS)
@pytest.mark.parametrize("model", CARDS)
def test_every_adapter_runs_on_every_family(tmp_path: Path, micro_tasks: Path, model: str, adapt: str) -> None:
    result = run_cell(micro_config(tmp_path, micro_tasks, model, adapt))
    # the settings recorded are the settings asked for, so the same run again skips the complete cell
    assert run_cell(micro_config(tmp_path, micro_tasks, model, adapt)).skipped
    frame = pd.read_parquet(result.path / "predictions.parquet")
    assert (frame["split"] == "val").sum() == 24 and (frame["split"] == "test").sum() == 24
    probs = frame[["prob_normal", "prob_abnormal"]].to_numpy()
    assert np.isfinite(probs).all() and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    adapt_doc = result.metrics["adapt"]
    assert adapt_doc["params"]["epochs"] == 1 and adapt_doc["params"]["select_on"] == "val"
    train = adapt_doc["fitted"]["train"]
    assert train["selected_on"] == "val" and train["epochs_run"] == 1 and train["deterministic"] is True
    assert len(train["history"]) == 1 and np.isfinite(train["history"][0]["train_loss"])
    assert not (result.path.parent / "seed0.ckpt").exists()  # removed once the cell is complete
    assert sorted(p.name for p in result.path.iterdir()) == ["metrics.json", "predictions.parquet"]
    fitted = adapt_doc["fitted"]
    if adapt == "lora":
        assert fitted["lora"]["n_adapted_modules"] > 0 and fitted["lora"]["n_text_modules"] == 0
    if adapt == "full_ft":
        assert 0 < fitted["full_ft"]["n_trainable_parameters"] < fitted["full_ft"]["n_parameters"]  # vision only
    if adapt in ("fairclip", "robust_fair"):
        assert fitted["attribute"] == "race" and fitted["texts"] == "reports"


@pytest.mark.parametrize("adapt", ["lora", "full_ft"])
def test_clip_objective_with_prompts(tmp_path: Path, micro_tasks: Path, adapt: str) -> None:
    extra = {"objective": "clip", "lora_text": "true"} if adapt == "lora" else {"objective": "clip"}
    result = run_cell(micro_config(tmp_path, micro_tasks, "tiny_medclip_vit", adapt, **extra))
    fitted = result.metrics["adapt"]["fitted"]
    assert fitted["texts"] == "prompts"
    if adapt == "lora":
        assert fitted["lora"]["n_text_modules"] > 0
    else:
        assert fitted["full_ft"]["n_trainable_parameters"] == fitted["full_ft"]["n_parameters"]


def test_clip_objective_family_training_temperature(tmp_path: Path, micro_tasks: Path) -> None:
    result = run_cell(micro_config(tmp_path, micro_tasks, "tiny_gloria", "full_ft", objective="clip"))
    assert result.metrics["adapt"]["fitted"]["train_logit_scale"].startswith("10 (gloria")


@pytest.mark.parametrize("mode", ["paper", "code"])
def test_robust_fair_logs_bad_pairs_every_epoch(tmp_path: Path, micro_tasks: Path, mode: str) -> None:
    result = run_cell(micro_config(tmp_path, micro_tasks, "tiny_medclip_vit", "robust_fair", epochs="3",
                                   mode=mode, beta_np="1", beta_fp="1"))
    fitted = result.metrics["adapt"]["fitted"]
    dbpm = fitted["dbpm"]
    assert dbpm["variant"] == ("pair" if mode == "paper" else "slot")
    assert fitted["fair_term"] == ("loss" if mode == "paper" else "similarity")
    assert [e["epoch"] for e in dbpm["epochs"]] == [1, 2]  # one warm-up epoch, then every epoch
    ids = set(pd.read_parquet(result.path / "predictions.parquet")["sample_id"])
    for entry in dbpm["epochs"]:
        assert entry["low"] < entry["mu"] < entry["high"] and entry["sigma"] > 0
        if mode == "paper":
            assert entry["n_noisy"] == len(entry["noisy"]) and entry["n_faulty"] == len(entry["faulty"])
            assert entry["n_noisy"] + entry["n_faulty"] > 0  # beta 1 flags something among 32 pairs
            assert all(i.startswith("synth-train-") and i not in ids for i in entry["noisy"] + entry["faulty"])
        else:
            assert entry["n_bad_slots"] == len(entry["bad_slots"])
    history = fitted["train"]["history"]
    assert history[0]["n_reweighted"] == 0 and "n_noisy" not in history[0]
    assert result.metrics["adapt"]["params"]["beta_np"] == "1"


def test_parameter_mistakes_are_errors(tmp_path: Path, micro_tasks: Path) -> None:
    from fairbench.adapters.base import ADAPTERS

    with pytest.raises(FairbenchError, match="objective must be one of"):
        ADAPTERS.get("full_ft")({"objective": "contrastive"})
    with pytest.raises(FairbenchError, match="do not apply to objective=head"):
        ADAPTERS.get("lora")({"texts": "reports"})
    with pytest.raises(FairbenchError, match="select_on"):
        ADAPTERS.get("mlp")({"select_on": "train"})
    with pytest.raises(FairbenchError, match="mode must be one of"):
        ADAPTERS.get("fairclip")({"mode": "fast"})
    with pytest.raises(FairbenchError, match="dbpm must be"):
        ADAPTERS.get("robust_fair")({"dbpm": "sample"})
    with pytest.raises(FairbenchError, match="no parameter 'lambda'"):
        ADAPTERS.get("fairclip")({"lambda": "1"})
    with pytest.raises(FairbenchError, match="attribute 'ethnicity' is not an attribute"):
        run_cell(micro_config(tmp_path, micro_tasks, "tiny_medclip_vit", "fairclip", attribute="ethnicity"))
