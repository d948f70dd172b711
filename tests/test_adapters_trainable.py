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


def released_counts(card: str) -> dict[str, int]:
    """{top-level prefix: tensors} of the released parameter set, from the model as built."""
    import torch

    from fairbench.models.base import get_model_card
    from fairbench.models.build import build_model
    from fairbench.train.towers import released_names

    names, _ = released_names(build_model(get_model_card(card), "random", torch.device("cpu")))
    out: dict[str, int] = {}
    for n in names:
        out[n.split(".")[0]] = out.get(n.split(".")[0], 0) + 1
    return dict(sorted(out.items()))


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
    epochs = adapt_doc["fitted"]["epochs"]
    assert len(epochs) == 1 and np.isfinite(epochs[0]["train_loss"]) and "history" not in train
    assert not (result.path.parent / "seed0.ckpt").exists()  # removed once the cell is complete
    assert sorted(p.name for p in result.path.iterdir()) == ["metrics.json", "predictions.parquet"]
    fitted = adapt_doc["fitted"]
    trained = fitted["trained_parameters"]
    assert trained and all(isinstance(v, int) and v > 0 for v in trained.values())
    if adapt == "mlp":
        assert trained == {"head": 4}  # Linear(256) + Linear(classes): weight and bias each
    if adapt == "lora":
        assert fitted["lora"]["n_adapted_modules"] > 0 and fitted["lora"]["n_text_modules"] == 0
        assert trained["head"] == 2 and sum(trained.values()) - 2 >= 2 * fitted["lora"]["n_adapted_modules"]
    if adapt == "full_ft":
        assert 0 < fitted["full_ft"]["n_trainable_parameters"] < fitted["full_ft"]["n_parameters"]  # vision only
        assert trained["head"] == 2 and "logit_scale" not in trained
    if adapt in ("fairclip", "robust_fair"):
        assert fitted["attribute"] == "race" and fitted["texts"] == "reports"
        assert fitted["parameters"]["trainable"] == "released"
        assert trained == released_counts(model)
        entry = epochs[0]
        for key in ("clip_loss", "fair_term", "lambda_x_fair", "grad_norm_clip", "grad_norm_fair", "grad_ratio"):
            assert entry[key] is not None and np.isfinite(entry[key]), key
        assert entry["lambda_x_fair"] == pytest.approx(entry["lambda_fair"] * entry["fair_term"])
        assert entry["grad_ratio"] == pytest.approx(entry["grad_norm_fair"] / entry["grad_norm_clip"])
        assert entry["grad_norm_clip"] > 0 and entry["grad_norm_fair"] > 0


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
                                   mode=mode, beta_np="1", beta_fp="1", warm_epochs="1"))
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
    epochs = fitted["epochs"]
    assert epochs[0]["n_reweighted"] == 0 and epochs[0]["n_flagged"] == 0 and "n_noisy" not in epochs[0]
    for entry, decision in zip(epochs[1:], dbpm["epochs"], strict=True):
        flagged = decision["n_bad_slots"] if mode == "code" else decision["n_noisy"] + decision["n_faulty"]
        assert entry["n_flagged"] == flagged
        # per pair: every flagged pair of the epoch is reweighted once; per slot: once per bad slot
        assert entry["n_reweighted"] == flagged
        assert (entry["mean_weight"] is None) == (flagged == 0)
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


RELEASED_RECIPE = {"optimizer": "adam", "betas": "0.1,0.1", "eps": "1e-6", "weight_decay": "6e-5",
                   "schedule": "constant", "patience": "0", "lr": "1e-3", "epochs": "2"}


def _probs(result) -> np.ndarray:  # type: ignore[no-untyped-def]
    frame = pd.read_parquet(result.path / "predictions.parquet")
    return frame[["prob_normal", "prob_abnormal"]].to_numpy()


def test_lambda_zero_turns_the_term_off_exactly(tmp_path: Path, micro_tasks: Path) -> None:
    def run(name: str, adapt: str, **args: str):  # type: ignore[no-untyped-def]
        return run_cell(micro_config(tmp_path / name, micro_tasks, "tinyclip", adapt, **RELEASED_RECIPE, **args))

    # the released CLIP fine-tuning baseline: the CLIP loss alone on the released parameter set
    baseline = run("ft", "full_ft", objective="clip", texts="reports", trainable="released")
    runs = {
        "fairclip code": run("fc", "fairclip", lambda_fair="0"),
        "fairclip paper": run("fp", "fairclip", lambda_fair="0", mode="paper"),
        # DBPM never reweights before warm_epochs, so with lambda 0 these are the CLIP loss alone too
        "robust_fair loss term": run("rl", "robust_fair", lambda_fair="0", warm_epochs="2"),
        "robust_fair similarity term": run("rs", "robust_fair", lambda_fair="0", warm_epochs="2", mode="code"),
    }
    for name, result in runs.items():
        assert np.array_equal(_probs(result), _probs(baseline)), name
        epochs = result.metrics["adapt"]["fitted"]["epochs"]
        assert all(e["fair_term"] is None and e["lambda_x_fair"] == 0.0 and e["grad_norm_fair"] == 0.0
                   for e in epochs), name
        assert result.metrics["adapt"]["fitted"]["trained_parameters"] == \
            baseline.metrics["adapt"]["fitted"]["trained_parameters"]
    # with the term on, the same recipe gives other predictions (the comparison above can fail)
    acting = run("fc1", "fairclip", lambda_fair="1e-3")
    assert not np.array_equal(_probs(acting), _probs(baseline))
    assert acting.metrics["adapt"]["fitted"]["epochs"][0]["grad_ratio"] > 0


def test_released_parameter_set_leaves_logit_scale_and_embeddings_frozen(tmp_path: Path, micro_tasks: Path) -> None:
    result = run_cell(micro_config(tmp_path, micro_tasks, "tiny_openai_clip", "fairclip"))
    trained = result.metrics["adapt"]["fitted"]["trained_parameters"]
    assert set(trained) == {"visual", "transformer"}  # optim.Adam([model.transformer, model.visual])
    everything = run_cell(micro_config(tmp_path / "all", micro_tasks, "tiny_openai_clip", "fairclip", trainable="all"))
    trained_all = everything.metrics["adapt"]["fitted"]["trained_parameters"]
    assert {"logit_scale", "token_embedding", "positional_embedding", "ln_final", "text_projection"} <= set(trained_all)
    ft = run_cell(micro_config(tmp_path / "ft", micro_tasks, "tiny_openai_clip", "full_ft", objective="clip"))
    assert ft.metrics["adapt"]["fitted"]["trained_parameters"] == trained_all  # full_ft clip: trainable=all


def test_robust_fair_auto_values() -> None:
    from fairbench.adapters.base import ADAPTERS

    def resolved(**params: str) -> dict:
        return ADAPTERS.get("robust_fair")(params).resolved

    assert resolved()["lambda_fair"] == 1.0 and resolved(mode="code")["lambda_fair"] == 1e-7
    assert resolved(fair_term="similarity")["lambda_fair"] == 1e-7 and resolved(lambda_fair="0")["lambda_fair"] == 0
    # DBPM's warm-up is 50 of its 80 epochs; the released batch-slot variant reweights from the second epoch
    assert resolved()["warm_epochs"] == 6 and resolved(epochs="3")["warm_epochs"] == 2
    assert resolved(epochs="80")["warm_epochs"] == 50 and resolved(epochs="1")["warm_epochs"] == 1
    assert resolved(mode="code")["warm_epochs"] == 1 and resolved(warm_epochs="4")["warm_epochs"] == 4
    for bad in ("-1", "nan", "inf", "lots"):
        with pytest.raises(FairbenchError, match="lambda_fair"):
            resolved(lambda_fair=bad)
    with pytest.raises(FairbenchError, match="lambda_fair"):
        ADAPTERS.get("fairclip")({"lambda_fair": "-1e-7"})
    with pytest.raises(FairbenchError, match="trainable must be one of"):
        ADAPTERS.get("fairclip")({"trainable": "towers"})
    with pytest.raises(FairbenchError, match="warm_epochs"):
        resolved(warm_epochs="soon")
    with pytest.raises(FairbenchError, match="do not apply to objective=head"):
        ADAPTERS.get("full_ft")({"trainable": "released"})


def test_group_batches_leave_batch_norm_statistics_alone(tmp_path: Path, micro_tasks: Path) -> None:
    def run(name: str, adapt: str, **args: str):  # type: ignore[no-untyped-def]
        return run_cell(micro_config(tmp_path / name, micro_tasks, "tinyclip", adapt, **RELEASED_RECIPE, **args))

    baseline = run("ft", "full_ft", objective="clip", texts="reports", trainable="released")
    # a term far below float32 resolution: the extra group forwards are all that could change the run
    keep = run("keep", "fairclip", lambda_fair="1e-30")
    update = run("update", "fairclip", lambda_fair="1e-30", group_bn="update")
    assert keep.metrics["adapt"]["fitted"]["group_bn"] == "keep"
    assert np.array_equal(_probs(keep), _probs(baseline))
    # tinyclip is a ResNet: letting single-group batches move the running statistics changes evaluation
    assert not np.array_equal(_probs(update), _probs(baseline))


def test_keep_norm_statistics_restores_running_buffers() -> None:
    import torch
    from torch import nn

    from fairbench.train.towers import keep_norm_statistics

    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.ReLU()).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(4, 1, 3, 3) * 5 + 2
    with keep_norm_statistics(net) as n:
        y = net(x)
    assert n == 1 and all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    y.sum().backward()  # the forward's graph is intact
    assert net[0].weight.grad is not None
    net(x)  # outside, the statistics move as usual
    assert not torch.equal(before["1.running_mean"], net.state_dict()["1.running_mean"])


@pytest.mark.parametrize("adapt, key, value", [
    ("mlp", "lr", "nan"), ("mlp", "lr", float("inf")), ("mlp", "lr", "0"), ("lora", "head_lr", "nan"),
    ("mlp", "weight_decay", "-1"), ("mlp", "eps", "-1"), ("mlp", "epochs", "0"), ("mlp", "epochs", 2.5),
    ("mlp", "dropout", "1"), ("mlp", "betas", "0.9,1.5"), ("mlp", "hidden", "0"), ("mlp", "max_grad_norm", "-1"),
    ("lora", "lora_dropout", "-0.1"), ("lora", "alpha", "nan"), ("lora", "r", "0"), ("linear_probe", "c_grid", "1,0"),
    ("linear_probe", "max_iter", "0"), ("groupdro", "eta", "inf"), ("fairclip", "sinkhorn_scaling", "1"),
    ("fairclip", "blur", "0"), ("robust_fair", "beta_np", "nan"), ("robust_fair", "lambda_fair", "inf"),
    ("robust_fair", "warm_epochs", "0"), ("fair_threshold", "grid_size", "1"),
])
def test_numeric_parameters_are_checked_when_the_adapter_is_built(adapt: str, key: str, value: object) -> None:
    from fairbench.adapters.base import ADAPTERS

    with pytest.raises(FairbenchError, match=rf"^adapter '{adapt}': parameter '{key}' must be .*, got "):
        ADAPTERS.get(adapt)({key: value})


def test_a_base_adapter_s_numbers_are_checked_too() -> None:
    from fairbench.adapters.base import ADAPTERS

    with pytest.raises(FairbenchError, match=r"^adapter 'mlp': parameter 'lr' must be a finite number > 0"):
        ADAPTERS.get("fair_threshold")({"base": "mlp", "base_params": ["lr=nan"]})
    for name in ADAPTERS.names():  # every default passes its own check
        ADAPTERS.get(name)({})
