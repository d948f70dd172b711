"""The classic mitigation baselines: cells and their checks, balanced batches, inverse-frequency weights and
GroupDRO's update by hand; resample / reweight / groupdro end to end on every backbone; worst-group selection;
fair_threshold against fairlearn called directly; one-line errors for bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from fairbench.errors import DataError, FairbenchError, ResultsError
from fairbench.pipeline import RunConfig, run_cell
from fairbench.train.groups import (
    UNKNOWN,
    Cells,
    GroupDRO,
    Reweight,
    balanced_batches,
    group_labels,
    inverse_frequency_weights,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLASSES = ["normal", "abnormal"]


@pytest.fixture(scope="module")
def tasks(micro_task_dir) -> Path:
    return micro_task_dir("synth_micro_mit", n=(64, 48, 48))


def config(tmp_path: Path, tasks: Path, adapt: str, model: str = "tinyclip", **args: str) -> RunConfig:
    return RunConfig(task="synth_micro_mit", model=model, adapt=adapt, seed=0, out=tmp_path / "results",
                     weights="random", device="cpu", tasks_dirs=(tasks,), n_boot=0, adapt_args=args)


def _cells(groups: list[str | None], labels: list[int]) -> Cells:
    return Cells.build(np.asarray(group_labels({"a": np.asarray(groups, dtype=object)}, "a")), np.asarray(labels),
                       CLASSES, attribute="a", adapter="test")


# -- units ----------------------------------------------------------------------------------------------------
def test_group_labels_intersections_and_unknown() -> None:
    attrs = {"sex": np.array(["F", "M", None, "F"], dtype=object), "age": np.array(["<60", ">=60", "<60", None],
                                                                                  dtype=object)}
    assert group_labels(attrs, "sex").tolist() == ["F", "M", UNKNOWN, "F"]
    assert group_labels(attrs, "sex*age").tolist() == ["F*<60", "M*>=60", UNKNOWN, UNKNOWN]


def test_cells_count_and_refuse_an_empty_cell() -> None:
    cells = _cells(["A", "A", "B", "B", "B", None, None], [0, 1, 0, 1, 1, 0, 1])
    assert cells.groups == ("A", "B", UNKNOWN) and cells.counts.tolist() == [1, 1, 1, 2, 1, 1]
    assert cells.cell.tolist() == [0, 1, 2, 3, 3, 4, 5]
    with pytest.raises(DataError,
                       match=r"no sample in \(group x label\) cell\(s\) unknown x abnormal of attribute 'a'"):
        _cells(["A", "A", "B", "B", "B", None], [0, 1, 0, 1, 1, 0])


def test_cell_sizes_and_inverse_frequency_weights() -> None:
    cells = _cells(["A"] * 6 + ["B"] * 4, [0, 0, 0, 0, 1, 1, 0, 1, 1, 1])
    assert cells.sizes() == {"A x normal": 4, "A x abnormal": 2, "B x normal": 1, "B x abnormal": 3}
    w = inverse_frequency_weights(cells)
    assert w.mean() == pytest.approx(1.0)
    assert w.tolist() == pytest.approx([10 / (4 * 4)] * 4 + [10 / (4 * 2)] * 2 + [10 / 4] + [10 / (4 * 3)] * 3)
    # every cell carries the same total weight
    totals = np.bincount(cells.cell, weights=w)
    assert totals == pytest.approx([2.5] * 4)
    per = torch.arange(10, dtype=torch.float32)
    idx = np.array([0, 4, 6])
    assert float(Reweight(cells, torch.device("cpu")).reduce(per[idx], idx)) == pytest.approx(
        float((torch.tensor(w[idx], dtype=torch.float32) * per[idx]).mean()))


def test_balanced_batches_draw_every_cell_equally_often_and_reproducibly() -> None:
    groups = ["A"] * 900 + ["B"] * 100
    labels = [0] * 800 + [1] * 100 + [0] * 90 + [1] * 10  # cells of 800, 100, 90 and 10
    cells = _cells(groups, labels)
    draws = np.concatenate([np.concatenate(balanced_batches(cells, 64, seed=3, epoch=e)) for e in range(20)])
    share = np.bincount(cells.cell[draws], minlength=4) / len(draws)
    assert share == pytest.approx([0.25] * 4, abs=0.02)  # plain shuffling would give 0.8, 0.1, 0.09, 0.01
    one = balanced_batches(cells, 64, seed=3, epoch=1)
    assert sum(len(b) for b in one) == 1000 and len(one) == 16
    assert all(np.array_equal(a, b) for a, b in zip(one, balanced_batches(cells, 64, seed=3, epoch=1), strict=True))
    assert not np.array_equal(np.concatenate(one), np.concatenate(balanced_batches(cells, 64, seed=3, epoch=2)))


def test_groupdro_update_by_hand() -> None:
    cells = _cells(["A", "A", "B", "B"], [0, 1, 0, 1])  # four cells of one sample each
    dro = GroupDRO(cells, eta=0.5, adjustment=0.0, device=torch.device("cpu"))
    per = torch.tensor([1.0, 2.0, 0.5, 3.0], requires_grad=True)
    idx = np.array([0, 1, 3])  # cell "B x normal" absent from the batch: loss 0 for it
    loss = dro.loss(per[idx], idx)
    group_loss = np.array([1.0, 2.0, 0.0, 3.0])
    q = 0.25 * np.exp(0.5 * group_loss)
    q /= q.sum()
    assert dro.q.tolist() == pytest.approx(q.tolist(), rel=1e-6)
    assert float(loss.detach()) == pytest.approx(float(q @ group_loss), rel=1e-6)
    loss.backward()  # q is a constant for the gradient: d loss / d l_i = q of i's cell / its count
    assert per.grad is not None and per.grad.tolist() == pytest.approx([q[0], q[1], 0.0, q[3]], rel=1e-6)
    # the size adjustment C / sqrt(n_g) enters only q's update, and only with C > 0
    adjusted = GroupDRO(_cells(["A", "A", "A", "B", "B"], [0, 0, 1, 0, 1]), eta=1.0, adjustment=2.0,
                        device=torch.device("cpu"))
    adjusted.loss(torch.zeros(2), np.array([0, 3]))
    expected = np.exp(2.0 / np.sqrt([2.0, 1.0, 1.0, 1.0]))
    assert adjusted.q.tolist() == pytest.approx((expected / expected.sum()).tolist(), rel=1e-6)
    state = dro.state_dict()
    fresh = GroupDRO(cells, eta=0.5, adjustment=0.0, device=torch.device("cpu"))
    fresh.load_state_dict(state)
    assert torch.equal(fresh.q, dro.q) and sum(dro.record().values()) == pytest.approx(1.0)
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(FairbenchError, match="eta must be a finite number > 0"):
            GroupDRO(cells, eta=bad, adjustment=0.0, device=torch.device("cpu"))


# -- end to end -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("adapt", ["resample", "reweight", "groupdro"])
def test_each_baseline_trains_a_head_and_records_its_cells(tmp_path: Path, tasks: Path, adapt: str) -> None:
    result = run_cell(config(tmp_path, tasks, adapt, epochs="3"))
    assert run_cell(config(tmp_path, tasks, adapt, epochs="3")).skipped  # recorded settings = requested ones
    fitted = result.metrics["adapt"]["fitted"]
    assert fitted["attribute"] == "race" and fitted["backbone"] == "head"
    assert fitted["trained_parameters"] == {"head": 4}
    frame = pd.read_parquet(result.path / "predictions.parquet")
    train_n = 64
    assert sum(fitted["cells"].values()) == train_n and set(fitted["groups"]) == {"Asian", "Black", "White"}
    assert fitted["mitigation"]["name"] == adapt
    if adapt == "groupdro":
        q = fitted["mitigation"]["q"]
        assert set(q) == set(fitted["cells"]) and sum(q.values()) == pytest.approx(1.0)
        assert fitted["mitigation"]["eta"] == 0.01 and fitted["mitigation"]["balanced_sampling"] is True
    if adapt == "reweight":
        w = fitted["mitigation"]["weights"]
        assert sum(w[c] * n for c, n in fitted["cells"].items()) == pytest.approx(train_n)
    probs = frame[["prob_normal", "prob_abnormal"]].to_numpy()
    assert np.isfinite(probs).all() and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("backbone", ["lora", "full"])
def test_end_to_end_backbones(tmp_path: Path, tasks: Path, backbone: str) -> None:
    result = run_cell(config(tmp_path, tasks, "groupdro", model="tiny_medclip_vit", backbone=backbone, epochs="1",
                             batch_size="16", attribute="sex*age"))
    fitted = result.metrics["adapt"]["fitted"]
    assert fitted["backbone"] == backbone and fitted["attribute"] == "sex*age" and len(fitted["cells"]) == 8
    trained = fitted["trained_parameters"]
    assert trained["head"] == 2 and set(trained) - {"head"} == {"vision_model"}
    params = result.metrics["adapt"]["params"]
    assert params["epochs"] == 1 and params["lr"] == (1e-4 if backbone == "lora" else 1e-5)


def test_worst_group_selection(tmp_path: Path, tasks: Path) -> None:
    result = run_cell(config(tmp_path, tasks, "groupdro", epochs="4", patience="0", select_on="val_worst_group"))
    fitted = result.metrics["adapt"]["fitted"]
    train = fitted["train"]
    assert train["select_metric"] == "worst_group_auc" and train["selected_on"] == "val"
    assert fitted["selection_groups"] == {"attribute": "race", "groups": ["Asian", "Black", "White"]}
    assert all("val_worst_group_auc" in e for e in fitted["epochs"])
    val = pd.read_parquet(result.path / "predictions.parquet").query("split == 'val'")
    aucs = [roc_auc_score(g["label"], g["prob_abnormal"]) for _, g in val.groupby("attr_race")
            if g["label"].nunique() == 2]
    assert train["best_score"] == pytest.approx(min(aucs))  # the best epoch's val predictions are the ones kept
    with pytest.raises(FairbenchError, match="select_on=val_worst_group needs an adapter with an 'attribute'"):
        run_cell(config(tmp_path, tasks, "mlp", select_on="val_worst_group"))


class _Identity:
    """The test's own stand-in for a fitted score model: ``predict(X)`` is the score column, unchanged."""

    def __new__(cls):  # type: ignore[no-untyped-def]
        from sklearn.base import BaseEstimator, ClassifierMixin

        class Identity(ClassifierMixin, BaseEstimator):
            def fit(self, x, y):  # type: ignore[no-untyped-def]
                self.classes_ = np.array([0, 1])
                return self

            def predict(self, x):  # type: ignore[no-untyped-def]
                return np.asarray(x, dtype=np.float64)[:, 0]

        return Identity().fit(None, None)


def _mean_of_draws(opt, x: np.ndarray, groups: np.ndarray, k: int = 4000) -> np.ndarray:  # type: ignore[no-untyped-def]
    """P(yhat = 1) per sample from fairlearn's public API: the mean of ``k`` seeded ``predict`` draws."""
    return np.mean([opt.predict(x, sensitive_features=groups, random_state=i) for i in range(k)], axis=0)


def _by_hand(opt, scores: np.ndarray, groups: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    """P(yhat = 1) from the fitted rule as fairlearn documents it (InterpolatedThresholder's
    ``interpolation_dict``): operation0 with probability p0, operation1 with p1, then, where present, the
    constant ``prediction_constant`` with probability ``p_ignore``. Each operation is ``score > t`` or
    ``score < t`` (its public ``operator`` and ``threshold``)."""
    def apply(op, s):  # type: ignore[no-untyped-def]
        return (s > op.threshold) if op.operator == ">" else (s < op.threshold)

    out = np.full(len(scores), np.nan)
    for g, rule in opt.interpolated_thresholder_.interpolation_dict.items():
        s = scores[groups == g]
        p = rule["p0"] * apply(rule["operation0"], s) + rule["p1"] * apply(rule["operation1"], s)
        if "p_ignore" in rule:
            p = rule["p_ignore"] * rule["prediction_constant"] + (1 - rule["p_ignore"]) * p
        out[groups == g] = p
    return out


def test_fair_threshold_is_fairlearns_threshold_optimizer(tmp_path: Path, tasks: Path) -> None:
    """The reference is built here, from fairlearn's public API on the base model's own scores: the test's own
    identity estimator, ``ThresholdOptimizer.fit`` and the mean of seeded ``predict`` draws. A score model that
    hands fairlearn anything but the scores (e.g. hard labels, which collapse the thresholds to 0.5 and +-inf)
    changes the predictions and fails. On validation, where it was fitted, the rule's expected TPR and FPR are
    equal across groups (equalized odds), and metrics.json reports the rule's expected rates, by hand, with
    p_ignore > 0 in play."""
    from fairlearn.postprocessing import ThresholdOptimizer

    result = run_cell(config(tmp_path, tasks, "fair_threshold", attribute="sex"))
    fitted = result.metrics["adapt"]["fitted"]
    assert fitted["needs_attribute_at_prediction"] is True and fitted["base"]["name"] == "linear_probe"
    assert set(fitted["thresholds"]) == {"F", "M"}
    assert result.metrics["threshold"]["rule"] == "randomised" and "expected rates" in fitted["decision_rule"]
    base = run_cell(config(tmp_path / "base", tasks, "linear_probe"))  # the same base model, run on its own
    frame = pd.read_parquet(base.path / "predictions.parquet")
    ours = pd.read_parquet(result.path / "predictions.parquet")
    assert ours["sample_id"].tolist() == frame["sample_id"].tolist()
    val = (frame["split"] == "val").to_numpy()
    opt = ThresholdOptimizer(estimator=_Identity(), constraints="equalized_odds",
                             objective="balanced_accuracy_score", prefit=True, predict_method="predict")
    opt.fit(frame.loc[val, ["prob_abnormal"]].to_numpy(), frame.loc[val, "label"].to_numpy(),
            sensitive_features=frame.loc[val, "attr_sex"].astype(str).to_numpy())
    rules = opt.interpolated_thresholder_.interpolation_dict
    assert max(float(r.get("p_ignore", 0.0)) for r in rules.values()) > 0.05  # the constant prediction is mixed in
    x, groups = frame[["prob_abnormal"]].to_numpy(), frame["attr_sex"].astype(str).to_numpy()
    drawn = _mean_of_draws(opt, x, groups)
    by_hand = _by_hand(opt, x[:, 0], groups)
    assert np.abs(drawn - by_hand).max() < 0.05  # 4000 draws: standard error <= 0.008
    decided = ours["p_decide_positive"].to_numpy()
    assert decided == pytest.approx(ours["prob_abnormal"].to_numpy())
    assert decided == pytest.approx(by_hand, abs=1e-9)
    assert np.abs(decided - drawn).max() < 0.05

    y = frame["label"].to_numpy()
    v = val
    rates = {g: (by_hand[v & (groups == g) & (y == 1)].mean(), by_hand[v & (groups == g) & (y == 0)].mean())
             for g in ("F", "M")}
    assert rates["F"] == pytest.approx(rates["M"], abs=1e-9)  # equalized odds on the data it was fitted on

    test = (frame["split"] == "test").to_numpy()
    reported = result.metrics["metrics"]["attributes"]["sex"]
    tpr = {g: by_hand[test & (groups == g) & (y == 1)].mean() for g in ("F", "M")}
    fpr = {g: by_hand[test & (groups == g) & (y == 0)].mean() for g in ("F", "M")}
    for g in ("F", "M"):
        assert reported["groups"][g]["tpr"] == pytest.approx(tpr[g], abs=1e-12)
        assert reported["groups"][g]["fpr"] == pytest.approx(fpr[g], abs=1e-12)
    assert reported["deodds"] == pytest.approx(max(abs(tpr["F"] - tpr["M"]), abs(fpr["F"] - fpr["M"])), abs=1e-12)
    acc = (by_hand * y + (1 - by_hand) * (1 - y))[test].mean()
    assert result.metrics["metrics"]["overall"]["acc"] == pytest.approx(acc, abs=1e-12)


def test_fair_threshold_is_named_in_the_summary(tmp_path: Path, tasks: Path) -> None:
    from rich.console import Console

    from fairbench.report.summary import print_summary

    result = run_cell(config(tmp_path, tasks, "fair_threshold", attribute="sex"))
    console = Console(record=True, width=200)
    print_summary(result.metrics, result.path, console)
    text = console.export_text()
    assert "used the protected attribute 'sex' of every test sample" in text
    assert "ACC, F1, DPD and DEOdds are the expected rates of that rule" in text
    # a cell written by an older fairbench (a 0.5 threshold of P(yhat = 1)) is not reused
    doc = json.loads((result.path / "metrics.json").read_text())
    doc["threshold"] = {"value": 0.5, "chosen_on": "fixed", "rule": "fixed"}
    (result.path / "metrics.json").write_text(json.dumps(doc))
    with pytest.raises(ResultsError, match="an older fairbench that scored this adapter's randomised rule"):
        run_cell(config(tmp_path, tasks, "fair_threshold", attribute="sex"))


def test_bad_input_is_one_clear_error_before_training(tmp_path: Path, tasks: Path) -> None:
    from fairbench.adapters.base import ADAPTERS

    for value in ("0", "-0.1", "nan", "inf"):
        with pytest.raises(FairbenchError, match="'eta' must be a finite number > 0"):
            ADAPTERS.get("groupdro")({"eta": value})
    with pytest.raises(FairbenchError, match="backbone must be one of head, lora, full"):
        ADAPTERS.get("resample")({"backbone": "vit"})
    with pytest.raises(FairbenchError, match="do not apply to backbone=head"):
        ADAPTERS.get("reweight")({"r": "4"})
    with pytest.raises(FairbenchError, match="base 'fair_threshold' is itself a post-processor"):
        ADAPTERS.get("fair_threshold")({"base": "fair_threshold"})
    with pytest.raises(FairbenchError, match="constraint must be one of"):
        ADAPTERS.get("fair_threshold")({"constraint": "calibration"})
    with pytest.raises(FairbenchError, match="attribute 'ethnicity' is not an attribute of task"):
        run_cell(config(tmp_path, tasks, "resample", attribute="ethnicity"))
    with pytest.raises(FairbenchError, match="attribute 'sex\\*sex' is not an attribute"):
        run_cell(config(tmp_path, tasks, "resample", attribute="sex*sex"))
    assert not list((tmp_path / "results").rglob("metrics.json"))  # nothing trained, nothing written
    doc = json.dumps(ADAPTERS.get("groupdro")({}).params)
    assert '"eta": 0.01' in doc and '"adjustment": 0.0' in doc
