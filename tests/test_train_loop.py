"""The shared training loop: resume after an interrupted epoch, validation-only selection, early stopping."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from fairbench.pipeline import RunConfig, run_cell
from fairbench.train import loop

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def micro_tasks(micro_task_dir) -> Path:
    return micro_task_dir("synth_micro_loop")


def _config(out: Path, tasks: Path, model: str, adapt: str, **args: str) -> RunConfig:
    return RunConfig(task="synth_micro_loop", model=model, adapt=adapt, seed=0, out=out, weights="random", device="cpu",
                     tasks_dirs=(tasks,), n_boot=0, adapt_args={"batch_size": "16", "eval_batch_size": "64", **args})


class Interrupt(KeyboardInterrupt):
    pass


def _interrupt_at(epoch: int, step: int):  # type: ignore[no-untyped-def]
    def hook(e: int, s: int) -> None:
        if (e, s) == (epoch, step):
            raise Interrupt

    return hook


def _without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


@pytest.mark.parametrize("model,adapt,args", [
    # DBPM memory, per-group draws and Adam state must survive; batch-norm statistics too (ResNet)
    ("tiny_medclip_resnet", "robust_fair", {"epochs": "3", "fair_batch_size": "8", "beta_np": "1", "beta_fp": "1"}),
    ("tiny_medclip_vit", "full_ft", {"epochs": "3", "patience": "0"}),
])
def test_resume_after_an_interrupted_epoch_matches_an_uninterrupted_run(
        tmp_path: Path, micro_tasks: Path, monkeypatch: pytest.MonkeyPatch, model: str, adapt: str,
        args: dict[str, str]) -> None:
    whole = run_cell(_config(tmp_path / "whole", micro_tasks, model, adapt, **args))

    cfg = _config(tmp_path / "broken", micro_tasks, model, adapt, **args)
    monkeypatch.setattr(loop, "STEP_HOOKS", [_interrupt_at(epoch=1, step=0)])  # mid-epoch: 2 steps per epoch
    with pytest.raises(Interrupt):
        run_cell(cfg)
    ckpt = tmp_path / "broken" / "synth_micro_loop" / model / adapt / "seed0.ckpt"
    assert (ckpt / "last.pt").is_file() and not (ckpt.parent / "seed0" / "metrics.json").exists()
    assert torch.load(ckpt / "last.pt", weights_only=True)["epoch"] == 1

    monkeypatch.setattr(loop, "STEP_HOOKS", [])
    resumed = run_cell(cfg)
    assert resumed.metrics["adapt"]["fitted"]["train"]["resumed_from_epoch"] == 1
    assert whole.metrics["adapt"]["fitted"]["train"]["resumed_from_epoch"] is None
    assert resumed.metrics["metrics"] == whole.metrics["metrics"]
    a, b = whole.metrics["adapt"]["fitted"], resumed.metrics["adapt"]["fitted"]
    assert _without_timing(a["epochs"]) == _without_timing(b["epochs"])
    assert a.get("dbpm") == b.get("dbpm")
    assert not ckpt.exists()


def test_a_checkpoint_from_other_settings_is_not_resumed(tmp_path: Path, micro_tasks: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop, "STEP_HOOKS", [_interrupt_at(epoch=1, step=0)])
    with pytest.raises(Interrupt):
        run_cell(_config(tmp_path, micro_tasks, "tiny_medclip_vit", "mlp", epochs="3", keep_checkpoints="true"))
    monkeypatch.setattr(loop, "STEP_HOOKS", [])
    messages: list[str] = []
    monkeypatch.setattr("fairbench.train.checkpoint.warn", messages.append)
    other = run_cell(_config(tmp_path, micro_tasks, "tiny_medclip_vit", "mlp", epochs="3", lr="0.002",
                             keep_checkpoints="true"))
    assert other.metrics["adapt"]["fitted"]["train"]["resumed_from_epoch"] is None
    assert any("other settings" in m for m in messages)
    ckpt = other.path.with_name("seed0.ckpt")
    assert (ckpt / "last.pt").is_file() and other.metrics["adapt"]["fitted"]["checkpoints"]["kept"] is True
    # --overwrite starts afresh even from a matching checkpoint
    fresh = run_cell(dataclasses.replace(_config(tmp_path, micro_tasks, "tiny_medclip_vit", "mlp", epochs="3",
                                                 lr="0.002", keep_checkpoints="true"), overwrite=True))
    assert fresh.metrics["adapt"]["fitted"]["train"]["resumed_from_epoch"] is None
    assert fresh.metrics["metrics"] == other.metrics["metrics"]


def _spy_predictions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    from fairbench.train.objectives import FeatureHead

    calls: list[str] = []
    original = FeatureHead.predict

    def spy(self, split):  # type: ignore[no-untyped-def]
        calls.append(split)
        return original(self, split)

    monkeypatch.setattr(FeatureHead, "predict", spy)
    return calls


def test_selection_and_early_stopping_use_validation_only(tmp_path: Path, micro_tasks: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _spy_predictions(monkeypatch)
    # a learning rate too small to change the validation AUC: no epoch after the first improves on it
    result = run_cell(_config(tmp_path, micro_tasks, "tiny_medclip_vit", "mlp", epochs="20", patience="2", lr="1e-12"))
    train = result.metrics["adapt"]["fitted"]["train"]
    assert train["selected_on"] == "val" and "warning" not in train
    assert train["best_epoch"] == 0 and train["epochs_run"] == 3 and train["early_stopped"] is True
    assert [h["val_auc"] for h in result.metrics["adapt"]["fitted"]["epochs"]] == [train["best_score"]] * 3
    # the test split is predicted once, after training, never during it
    assert calls == ["val", "val", "val", "val", "test"]


def test_select_on_test_is_explicit_warned_and_recorded(tmp_path: Path, micro_tasks: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from fairbench.cli import app

    calls = _spy_predictions(monkeypatch)
    messages: list[str] = []
    monkeypatch.setattr(loop, "warn", messages.append)
    out = tmp_path / "r"
    res = CliRunner().invoke(app, ["run", "--task", "synth_micro_loop", "--model", "tiny_medclip_vit", "--adapt", "mlp",
                                   "--weights", "random", "--device", "cpu", "--out", str(out), "--n-boot", "0",
                                   "--tasks-dir", str(micro_tasks), "--select-on", "test",
                                   "--adapt-arg", "epochs=2", "--adapt-arg", "batch_size=16"])
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "synth_micro_loop" / "tiny_medclip_vit" / "mlp" / "seed0" / "metrics.json").read_text())
    train = doc["adapt"]["fitted"]["train"]
    assert doc["adapt"]["params"]["select_on"] == "test" and train["selected_on"] == "test"
    assert "optimistically biased" in train["warning"] and any("TEST AUC" in m for m in messages)
    epochs = doc["adapt"]["fitted"]["epochs"]
    assert "test_auc" in epochs[0] and "val_auc" not in epochs[0]
    assert calls == ["test", "test", "val", "test"]
    # an adapter without epochs to select rejects the option instead of ignoring it
    res = CliRunner().invoke(app, ["run", "--task", "synth_micro_loop", "--model", "tiny_medclip_vit", "--adapt",
                                   "zeroshot", "--weights", "random", "--device", "cpu", "--out", str(out),
                                   "--tasks-dir", str(micro_tasks), "--select-on", "test"])
    assert res.exit_code != 0 and "select_on" in str(res.exception or res.output)


def test_selection_score_is_sklearn_auc() -> None:
    import numpy as np
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    for n_classes in (2, 3, 4):
        y = np.tile(np.arange(n_classes), 8)
        p = rng.random((len(y), n_classes)).round(1) + 0.01  # ties included
        p /= p.sum(axis=1, keepdims=True)
        ref = roc_auc_score(y, p[:, 1]) if n_classes == 2 else roc_auc_score(y, p, multi_class="ovr")
        assert loop.selection_score(y, p) == pytest.approx(ref, abs=1e-12)
    assert np.isnan(loop.selection_score(np.zeros(4, dtype=int), np.full((4, 2), 0.5)))
