"""``--task-arg KEY=VALUE``: a task card's dataset options overridden where the loader allows it, recorded in
metrics.json (task.args) and the config hash, and never passing for the card's own task (issue #24 item 1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fairbench.data.task import get_task
from fairbench.errors import FairbenchError, ResultsError
from fairbench.pipeline import RunConfig, run_cell, stale_cell

SMALL = {"n.train": "40", "n.val": "30", "n.test": "50"}


def _cfg(out: Path, **kw) -> RunConfig:
    return RunConfig(task="synth_cxr", model="tinyclip", adapt="zeroshot", seed=0, out=out, weights="random",
                     device="cpu", n_boot=0, embedding_cache=False, **kw)


def fairbench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fairbench", *args], capture_output=True, text=True, check=False,
                          env={**os.environ, "CI": "true"}, timeout=600)


def test_task_args_override_nested_options_and_keep_the_card():
    card = get_task("synth_cxr")
    resized = card.with_args({"n.test": "50", "image_size": "64"})
    # the card's own options, read from the YAML file itself (not through the code under test)
    import yaml

    own = yaml.safe_load(card.path.read_text())["dataset"]["options"]
    assert resized.dataset_options["n"] == {**own["n"], "test": 50}
    assert resized.dataset_options["image_size"] == 64
    assert resized.dataset_options["bias"] == own["bias"]
    assert card.dataset_options["n"]["test"] == own["n"]["test"]  # the card itself is untouched
    assert resized.args == {"n.test": 50, "image_size": 64}
    assert resized.sha256 == card.sha256  # the card is the card; the overrides are recorded beside it
    split = resized.load_split("test")
    assert len(split) == 50 and np.asarray(split.images.load([0])[0]).shape == (64, 64)


def test_resized_cell_records_its_args_and_never_passes_for_the_cards_own(tmp_path):
    result = run_cell(_cfg(tmp_path, task_args=SMALL))
    frame = pd.read_parquet(result.path / "predictions.parquet")
    assert (frame["split"] == "test").sum() == 50
    doc = json.loads((result.path / "metrics.json").read_text())
    assert doc["task"]["args"] == {"n.train": 40, "n.val": 30, "n.test": 50}

    # the same cell with another size: another config hash, and the complete cell is not skipped
    with pytest.raises(ResultsError, match=r"--task-arg .*n\.test=50.*, not --task-arg .*n\.test=51"):
        run_cell(_cfg(tmp_path, task_args={**SMALL, "n.test": "51"}))
    with pytest.raises(ResultsError, match="not the card's own dataset options"):
        run_cell(_cfg(tmp_path))
    assert "the card's own" in (stale_cell(_cfg(tmp_path)) or "")
    assert stale_cell(_cfg(tmp_path, task_args=SMALL)) is None
    other = run_cell(_cfg(tmp_path / "b", task_args={**SMALL, "n.test": "51"}))
    assert other.metrics["config_sha256"] != doc["config_sha256"]
    assert (pd.read_parquet(other.path / "predictions.parquet")["split"] == "test").sum() == 51


@pytest.mark.parametrize("arg, fragments", [
    ("n.bogus=3", ["--task-arg n.bogus", "n.test", "n.train", "n.val", "image_size"]),
    ("bias=[]", ["--task-arg bias", "image_size"]),
    ("n.test=many", ["--task-arg n.test=many", "integer"]),
    ("n.test", ["--task-arg 'n.test'", "KEY=VALUE"]),
    ("image_size=33", ["image_size", "even"]),
])
def test_bad_task_arg_is_a_one_line_error(tmp_path, arg, fragments):
    proc = fairbench("run", "--weights", "random", "--n-boot", "0", "--out", str(tmp_path), "--task-arg", arg)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for frag in fragments:
        assert frag in lines[0], (frag, lines[0])
    assert not any(tmp_path.iterdir())  # nothing ran


def test_a_loader_without_task_args_refuses_them():
    from fairbench.data.task import apply_task_args

    with pytest.raises(FairbenchError, match=r"--task-arg n\.test: task 'chexpert5' .*accepts no --task-arg"):
        apply_task_args(get_task("chexpert5"), {"n.test": 5})


def test_sweep_file_task_args(tmp_path):
    from fairbench.sweep.grid import load_sweep_file

    f = tmp_path / "sweep.yaml"
    f.write_text("tasks: [synth_cxr]\nmodels: [tinyclip]\nadapts: [zeroshot]\nweights: random\nn_boot: 0\n"
                 "device: cpu\nout: res\ntask_args: {n: {test: 50, val: 30}, n.train: 40}\n")
    spec = load_sweep_file(f)
    assert spec.options["task_args"] == {"n.test": 50, "n.val": 30, "n.train": 40}
    spec.validate()
    cfg = RunConfig(**spec.run_config(spec.cells()[0]))
    assert cfg.task_args == {"n.test": 50, "n.val": 30, "n.train": 40}
    result = run_cell(cfg)
    assert (pd.read_parquet(result.path / "predictions.parquet")["split"] == "test").sum() == 50

    f.write_text("tasks: [synth_cxr]\nmodels: [tinyclip]\nadapts: [zeroshot]\ntask_args: {n: {tset: 5}}\n")
    with pytest.raises(FairbenchError, match=r"--task-arg n\.tset.*accepts image_size, n\.test"):
        load_sweep_file(f).validate()
