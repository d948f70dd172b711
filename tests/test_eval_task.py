"""Cross-dataset evaluation (issue #20 item 3): train and select on one task, evaluate on another's test split.

Micro versions of the synthetic tasks: ``xe_train`` (synth_cxr), ``xe_eval`` (synth_cxr_fair, without the race
attribute and with its own min_group_size, so that its card visibly drives the metrics), ``xe_swapped`` (xe_eval
with its classes in the other order) and ``xe_other`` (other class names). tinyclip with random weights.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from fairbench.errors import FairbenchError, ResultsError
from fairbench.pipeline import RunConfig, run_cell, stale_cell

pytestmark = pytest.mark.usefixtures("one_torch_thread")

def _cards() -> dict[str, dict]:
    """The four cards, resolved from the shipped ones (written out whole: ``include:`` merges mappings key by
    key, so it cannot drop an attribute or a class)."""
    from fairbench.cards import read_yaml_with_includes
    from fairbench.data.task import builtin_tasks_dir

    def base(name: str) -> dict:
        return read_yaml_with_includes(builtin_tasks_dir() / name / f"{name}.yaml")

    def micro(card: dict, name: str) -> dict:
        card = copy.deepcopy(card)
        card["name"] = name
        card["dataset"]["options"].update(n={"train": 32, "val": 24, "test": 24}, image_size=64)
        card["evaluation"].update(n_boot=0, min_group_size=5)
        return card

    a = micro(base("synth_cxr"), "xe_train")
    # B: the unbiased twin, with attributes sex and age only (no race) and its own min_group_size
    b = micro(base("synth_cxr_fair"), "xe_eval")
    del b["attributes"]["race"]
    b["dataset"]["options"]["seed"] = 1  # other patients than A's, so B's test split is told from A's
    b["evaluation"].update(min_group_size=3, intersections=[["sex", "age"]])
    swapped = copy.deepcopy(b)
    swapped.update(name="xe_swapped", classes=["abnormal", "normal"])
    other = copy.deepcopy(b)
    other.update(name="xe_other", classes=["healthy", "sick"])
    other["label"]["map"] = {"normal": "healthy", "*": "sick"}
    other["prompts"]["classnames"] = {"healthy": ["a normal chest"], "sick": ["cardiomegaly"]}
    if "no_finding_class" in other["evaluation"]:
        other["evaluation"]["no_finding_class"] = "healthy"
    return {c["name"]: c for c in (a, b, swapped, other)}


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("xe-tasks")
    for name, card in _cards().items():
        (root / name).mkdir()
        (root / name / f"{name}.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    return root


def config(out: Path, tasks_dir: Path, **kw) -> RunConfig:
    base = {"task": "xe_train", "eval_task": "xe_eval", "model": "tinyclip", "adapt": "linear_probe", "seed": 0,
            "out": out, "weights": "random", "device": "cpu", "tasks_dirs": (tasks_dir,)}
    base.update(kw)
    return RunConfig(**base)


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("xe-results")


@pytest.fixture(scope="module")
def cross(out, tasks_dir):
    return run_cell(config(out, tasks_dir))


@pytest.fixture(scope="module")
def own(out, tasks_dir, cross):
    """xe_eval's own linear-probe cell (run after the cross cell, so its test split can hit the cache)."""
    return run_cell(config(out, tasks_dir, task="xe_eval", eval_task=None))


def _split(tasks_dir: Path, task: str, split: str):
    from fairbench.data.task import get_task

    return get_task(task, (tasks_dir,)).load_split(split)


def _names(frame: pd.DataFrame, classes: list[str]) -> list[str]:
    return [classes[i] for i in frame["label"]]


# -- the cell ------------------------------------------------------------------------------------------------
def test_cell_path_is_the_evaluated_tasks_with_the_training_task_in_the_adapter_folder(cross, out):
    assert cross.path == out / "xe_eval" / "tinyclip" / "linear_probe@xe_train" / "seed0"
    assert (cross.path / "metrics.json").is_file() and (cross.path / "predictions.parquet").is_file()
    assert not (out / "xe_train").exists()  # never in the training task's tree


def test_metrics_json_records_both_tasks(cross, tasks_dir):
    from fairbench.data.task import get_task

    doc = json.loads((cross.path / "metrics.json").read_text())
    a, b = get_task("xe_train", (tasks_dir,)), get_task("xe_eval", (tasks_dir,))
    assert doc["task"]["name"] == "xe_eval" and doc["task"]["card_sha256"] == b.sha256
    assert doc["train_task"] == {"name": "xe_train", "version": a.version, "card_sha256": a.sha256}
    assert doc["adapt"]["name"] == "linear_probe"
    # B's card drives the metrics: its attributes (no race) and its intersection
    assert set(doc["metrics"]["attributes"]) == {"sex", "age", "sex*age"}
    assert "race" not in json.dumps(doc["metrics"]["attributes"])
    assert "eval_data" in doc and "data" in doc


def test_predictions_are_b_test_and_a_val(cross, tasks_dir):
    frame = pd.read_parquet(cross.path / "predictions.parquet")
    test, val = frame[frame["split"] == "test"], frame[frame["split"] == "val"]
    b_test, a_val = _split(tasks_dir, "xe_eval", "test"), _split(tasks_dir, "xe_train", "val")
    assert test["sample_id"].tolist() == [str(s) for s in b_test.sample_ids]
    assert _names(test, ["normal", "abnormal"]) == [b_test.classes[i] for i in b_test.labels]
    assert val["sample_id"].tolist() == [str(s) for s in a_val.sample_ids]
    assert _names(val, ["normal", "abnormal"]) == [a_val.classes[i] for i in a_val.labels]
    assert "train" not in set(frame["split"])
    # the images differ between the tasks (synth_cxr injects a bias, synth_cxr_fair does not), so B's test
    # split is really B's: its attribute values are the ones B's loader gives
    assert test["attr_sex"].tolist() == list(b_test.attributes["sex"])


def test_overall_auc_is_sklearns_on_b_test_rows(cross):
    frame = pd.read_parquet(cross.path / "predictions.parquet")
    test = frame[frame["split"] == "test"]
    doc = json.loads((cross.path / "metrics.json").read_text())
    expected = roc_auc_score(test["label"], test["prob_abnormal"])
    assert doc["metrics"]["overall"]["auc"] == pytest.approx(expected, abs=1e-12)


def test_embedding_cache_keys_b_split_by_b(cross, own):
    """The cross cell's test split is stored under B's task: B's own cell then finds it (a hit, same key)."""
    events = {e["split"]: e for e in cross.metrics["embedding_cache"]["events"]}
    own_events = {e["split"]: e for e in own.metrics["embedding_cache"]["events"]}
    assert own_events["test"]["event"] == "hit"
    assert own_events["test"]["key"] == events["test"]["key"]
    assert own_events["val"]["key"] != events["val"]["key"]  # A's val is not B's


def test_compare_pairs_the_cross_cell_with_b_own_cell(cross, own, tasks_dir):
    from fairbench.compare import compare

    result = compare(own.path, cross.path, tasks_dirs=(tasks_dir,), n_boot=0)
    assert result["task"] == "xe_eval" and result["n"] == 24
    assert result["b"]["train_task"] == "xe_train" and "train_task" not in result["a"]


def test_recompute_keeps_the_training_task(cross, tasks_dir, tmp_path):
    from fairbench.report.recompute import recompute

    doc = recompute(cross.path / "predictions.parquet", task=None, n_boot=None, seed=None,
                    out=tmp_path / "m.json", tasks_dirs=(tasks_dir,))
    assert doc["train_task"]["name"] == "xe_train" and doc["task"]["name"] == "xe_eval"
    assert doc["metrics"]["overall"]["auc"] == cross.metrics["metrics"]["overall"]["auc"]


def test_class_order_is_remapped(cross, out, tasks_dir):
    swapped = run_cell(config(out, tasks_dir, eval_task="xe_swapped"))
    frame = pd.read_parquet(swapped.path / "predictions.parquet")
    ref = pd.read_parquet(cross.path / "predictions.parquet")
    assert [c for c in frame.columns if c.startswith("prob_")] == ["prob_abnormal", "prob_normal"]
    # the same model trained the same way: per class name, the same probabilities and the same label names
    np.testing.assert_allclose(frame["prob_abnormal"], ref["prob_abnormal"], rtol=0, atol=1e-6)
    assert _names(frame, ["abnormal", "normal"]) == _names(ref, ["normal", "abnormal"])
    b_test = _split(tasks_dir, "xe_swapped", "test")
    test = frame[frame["split"] == "test"]
    assert _names(test, ["abnormal", "normal"]) == [b_test.classes[i] for i in b_test.labels]
    auc = json.loads((swapped.path / "metrics.json").read_text())["metrics"]["overall"]["auc"]
    assert auc == pytest.approx(roc_auc_score(test["label"], test["prob_normal"]), abs=1e-12)


# -- refusals ------------------------------------------------------------------------------------------------
def test_class_mismatch_is_one_line_naming_the_classes(tmp_path, tasks_dir):
    with pytest.raises(FairbenchError, match=r"only in xe_train: normal, abnormal; only in xe_other: healthy, sick"):
        run_cell(config(tmp_path, tasks_dir, eval_task="xe_other"))
    assert not any(tmp_path.iterdir())  # nothing was made


def test_class_mismatch_on_the_command_line(tmp_path, tasks_dir):
    proc = subprocess.run([sys.executable, "-m", "fairbench", "run", "--task", "xe_train", "--eval-task",
                           "xe_other", "--adapt", "linear_probe", "--weights", "random", "--tasks-dir",
                           str(tasks_dir), "--out", str(tmp_path)], capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --eval-task xe_other: its classes"), proc.stderr


def test_zeroshot_has_no_training_task(tmp_path, tasks_dir):
    with pytest.raises(FairbenchError, match=r"run --task xe_eval \(without --eval-task\)"):
        run_cell(config(tmp_path, tasks_dir, adapt="zeroshot"))


def test_same_task_is_the_in_distribution_cell(tmp_path, tasks_dir):
    cfg = config(tmp_path, tasks_dir, eval_task="xe_train")
    assert not cfg.cross
    assert cfg.cell_path() == tmp_path / "xe_train" / "tinyclip" / "linear_probe" / "seed0"


def test_a_cell_from_another_training_card_is_stale(cross, tmp_path, tasks_dir):
    """A cell computed under another version of A's card (its recorded sha256 differs) is not skipped."""
    copy_out = tmp_path / "res"
    cell = copy_out / cross.path.relative_to(cross.path.parents[3])
    shutil.copytree(cross.path, cell)
    cfg = config(copy_out, tasks_dir)
    assert stale_cell(cfg) is None  # as written: current
    doc = json.loads((cell / "metrics.json").read_text())
    doc["train_task"]["card_sha256"] = "0" * 64
    (cell / "metrics.json").write_text(json.dumps(doc))
    assert "another version of the training task card 'xe_train'" in (stale_cell(cfg) or "")
    with pytest.raises(ResultsError, match="another version of the training task card 'xe_train'"):
        run_cell(cfg)


# -- sweeps, leaderboards ------------------------------------------------------------------------------------
def test_sweep_grid_with_eval_tasks(tmp_path, tasks_dir):
    from fairbench.sweep.grid import Cell, load_sweep_file

    f = tmp_path / "sweep.yaml"
    f.write_text(f"tasks: [xe_train]\neval_tasks: [xe_eval, xe_train]\nmodels: [tinyclip]\n"
                 f"adapts: [zeroshot, linear_probe]\nseeds: [0, 1]\ntasks_dir: {tasks_dir}\nout: res\n"
                 f"eval_data_root: data\n")
    spec = load_sweep_file(f)
    assert spec.eval_tasks == ["xe_eval", "xe_train"]
    assert spec.options["eval_data_root"] == (tmp_path / "data").resolve()
    cells = spec.cells()
    assert cells == [Cell("xe_train", "tinyclip", "zeroshot", 0), Cell("xe_train", "tinyclip", "zeroshot", 1),
                     Cell("xe_train", "tinyclip", "linear_probe", 0),
                     Cell("xe_train", "tinyclip", "linear_probe", 1),
                     Cell("xe_train", "tinyclip", "linear_probe", 0, "xe_eval"),
                     Cell("xe_train", "tinyclip", "linear_probe", 1, "xe_eval")]
    cross = cells[4]
    assert spec.cell_path(cross) == (tmp_path / "res" / "xe_eval" / "tinyclip" / "linear_probe@xe_train" / "seed0")
    assert spec.run_config(cross)["eval_task"] == "xe_eval" and "eval_task" not in spec.run_config(cells[0])
    assert any("zeroshot" in n for n in spec.notes())
    spec.validate()
    spec.eval_tasks = ["xe_other"]
    with pytest.raises(FairbenchError, match="only in xe_other: healthy, sick"):
        spec.validate()


def test_sweep_runs_cross_cells_and_the_leaderboard_labels_them(cross, own, out, tasks_dir, tmp_path):
    from fairbench.report.leaderboard import write_leaderboards
    from fairbench.sweep.driver import plan, run_sweep
    from fairbench.sweep.grid import SweepSpec

    spec = SweepSpec(tasks=["xe_train"], eval_tasks=["xe_eval"], models=["tinyclip"], adapts=["linear_probe"],
                     seeds=[0], tasks_dirs=(tasks_dir,), executor_options={"workers": 0},
                     options={"out": out, "weights": "random", "device": "cpu"})
    done, _todo = plan(spec)
    # the cross cell made by `run` is the sweep's: complete and current, skipped
    assert [c.key for c in done] == ["xe_eval/tinyclip/linear_probe@xe_train/seed0"]
    spec.seeds = [1]
    report = run_sweep(spec)
    assert report.ok
    assert (out / "xe_eval" / "tinyclip" / "linear_probe@xe_train" / "seed1" / "metrics.json").is_file()
    assert (out / "xe_train" / "tinyclip" / "linear_probe" / "seed1" / "metrics.json").is_file()

    write_leaderboards([out], tmp_path / "lb", tasks_dirs=(tasks_dir,))
    page = (tmp_path / "lb" / "xe_eval.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith("| tinyclip")]
    assert any("| linear_probe (trained on xe_train) | 2 |" in r for r in rows), rows  # seeds 0 and 1
    assert any("| linear_probe | 1 |" in r for r in rows), rows  # B's own cell, a row of its own
    assert "trained on" not in (tmp_path / "lb" / "xe_train.md").read_text()


def test_html_report_labels_cross_rows(cross, own, tasks_dir, tmp_path):
    from fairbench.report.html import write_site

    results = tmp_path / "results"  # the two cells only: fewer figures to draw
    for cell in (cross, own):
        shutil.copytree(cell.path, results / cell.path.relative_to(cell.path.parents[3]))
    write_site([results], tmp_path / "site", tasks_dirs=(tasks_dir,))
    page = (tmp_path / "site" / "tasks" / "xe_eval.html").read_text()
    assert "linear_probe (trained on xe_train)" in page
    assert page.count(">linear_probe<") >= 1  # B's own row keeps its plain label
    cell_pages = sorted(p.relative_to(tmp_path / "site").as_posix()
                        for p in (tmp_path / "site" / "cells").rglob("index.html"))
    assert len(cell_pages) == 2
    cross_page = next(p for p in cell_pages if "xe_train" in p)
    assert "linear_probe (trained on xe_train)" in (tmp_path / "site" / cross_page).read_text()
