"""Bring your own data: the ``csv`` loader and ``fairbench tasks new`` on a folder of PNGs with a CSV."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from fixtures_data import write_csv
from PIL import Image

from fairbench.data.check import check_task
from fairbench.data.newtask import write_task_card
from fairbench.data.task import get_task, load_task_card
from fairbench.errors import CardError, DataError


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fairbench", *args], capture_output=True, text=True,
                          env={**os.environ, "CI": "true"}, cwd=cwd, timeout=600, check=False)


def _one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for frag in fragments:
        assert frag in lines[0], (frag, lines[0])


def make_dataset(root: Path, n: int = 120, *, split: bool = False) -> Path:
    """PNGs of several sizes in a subfolder and a manifest beside them (relative paths)."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (40 + i % 5, 48 + i % 3), dtype=np.uint8)).save(
            root / "images" / f"im{i:03d}.png")
        row = {"file": f"images/im{i:03d}.png", "diagnosis": ["benign", "malignant"][i % 2],
               "sex": ["F", "M", "Unknown"][i % 3], "age": str(18 + (i * 3) % 70), "patient": f"p{i // 2}"}
        if split:
            row["fold"] = ["train", "train", "validate", "test"][(i // 2) % 4]
        rows.append(row)
    path = root / "labels.csv"
    return write_csv(path, rows)


def test_tasks_new_writes_a_card_that_loads_every_split(tmp_path):
    manifest = make_dataset(tmp_path / "data")
    out = tmp_path / "mytasks"
    proc = _cli("tasks", "new", "skin", "--csv", str(manifest), "--image", "file", "--label", "diagnosis",
                "--attributes", "sex,age", "--patient", "patient", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and "attribute sex" in proc.stdout
    card = load_task_card(out / "skin" / "skin.yaml")
    assert card.classes == ("benign", "malignant") and card.dataset_loader == "csv"
    assert card.attributes["sex"].missing == ("Unknown",)
    assert card.attributes["age"].bins is not None
    # every row is in exactly one split; each split's labels and groups are the CSV's own (read independently)
    df = pd.read_csv(manifest, dtype=str)
    seen = []
    for split in ("train", "val", "test"):
        s = get_task("skin", [out]).load_split(split)  # no --data-root: paths resolve beside the manifest
        seen += list(s.sample_ids)
        rows = df.set_index("file").loc[list(s.sample_ids)]
        assert [card.classes[i] for i in s.labels] == rows["diagnosis"].tolist()
        expected_sex = [None if v == "Unknown" else v for v in rows["sex"]]
        assert list(s.attributes["sex"]) == expected_sex
        first = s.images.load(np.array([0]))[0]
        assert first.ndim == 3 and first.shape[2] == 3  # RGB by default
        assert np.array_equal(first[..., 0], np.asarray(Image.open(manifest.parent / s.sample_ids[0])))
    assert sorted(seen) == sorted(df["file"])
    # patients never straddle splits
    frame = card.loader().frame(None)
    assert (frame.groupby("patient_id")["split"].nunique() == 1).all()


def test_split_column_with_a_map_and_data_check(tmp_path):
    manifest = make_dataset(tmp_path / "data", split=True)
    made = write_task_card("folds", manifest, image="file", label="diagnosis", attributes=["sex"],
                           patient="patient", split="fold", out_dir=tmp_path / "t")
    doc = yaml.safe_load(made.path.read_text())
    assert doc["dataset"]["options"]["split_map"] == {"validate": "val"}
    card = get_task("folds", [tmp_path / "t"])
    df = pd.read_csv(manifest, dtype=str)
    for split, raw in (("train", "train"), ("val", "validate"), ("test", "test")):
        assert sorted(card.load_split(split).sample_ids) == sorted(df.loc[df["fold"] == raw, "file"])
    # a missing image is listed by data check, naming the file
    os.remove(manifest.parent / df.loc[df["fold"] == "test", "file"].iloc[0])
    report = check_task(card, None)
    bad = [b for s in report.splits for b in s.bad_images]
    assert len(bad) == 1 and bad[0][2] == "missing" and not report.ok


def _card(tmp_path: Path, manifest: Path, **options) -> Path:
    folder = tmp_path / "cards" / "t"
    folder.mkdir(parents=True, exist_ok=True)
    card = {"name": "t", "version": 1, "dataset": {"loader": "csv", "options": {
                "manifest": str(manifest), "image": "file", **options}},
            "classes": ["benign", "malignant"], "label": {"column": "diagnosis"},
            "attributes": {"sex": {"column": "sex", "missing": ["Unknown"]}}}
    (folder / "t.yaml").write_text(yaml.safe_dump(card))
    return folder / "t.yaml"


def _rewrite(manifest: Path, row: int, column: str, value: str) -> None:
    df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    df.loc[row, column] = value
    df.to_csv(manifest, index=False)


@pytest.mark.parametrize("column,value,fragments", [
    ("fold", "holdout", ["line 7", "'fold'", "'holdout'", "train, val, test"]),
    ("patient", "p0", ["patient 'p0'", "'patient'", "one split"]),  # p0's rows 0-1 are train; row 5 is val
    ("file", "images/im000.png", ["line 2 and line 7", "'file'", "unique"]),
    ("file", "", ["line 7", "'file'", "blank"]),
])
def test_bad_manifests_name_the_row_and_column(tmp_path, column, value, fragments):
    manifest = make_dataset(tmp_path / "data", n=24, split=True)
    _rewrite(manifest, 5, column, value)
    card = load_task_card(_card(tmp_path, manifest, patient="patient", split="fold",
                                split_map={"validate": "val"}))
    with pytest.raises(DataError) as err:
        card.load_split("train")
    message = str(err.value)
    assert "\n" not in message and str(manifest) in message
    for frag in fragments:
        assert frag in message, (frag, message)


def test_a_label_outside_the_map_names_the_value_and_the_sample(tmp_path):
    manifest = make_dataset(tmp_path / "data", n=24, split=True)
    _rewrite(manifest, 0, "diagnosis", "benign?")
    card = load_task_card(_card(tmp_path, manifest, patient="patient", split="fold",
                                split_map={"validate": "val"}))
    with pytest.raises(DataError, match=r"'diagnosis'.*benign\?.*images/im000\.png"):
        card.load_split("train")


def test_options_are_checked_when_the_card_loads(tmp_path):
    manifest = make_dataset(tmp_path / "data", n=12)
    with pytest.raises(CardError, match="patient_split"):
        load_task_card(_card(tmp_path, manifest)).loader()  # neither a split column nor a patient_split
    card = load_task_card(_card(tmp_path, manifest, patient="nope",
                                patient_split={"train": .5, "val": .25, "test": .25, "salt": "x"}))
    with pytest.raises(DataError, match="'nope'.*option 'patient'.*it has: file, diagnosis"):
        card.load_split("train")


def test_tasks_new_mistakes_are_one_line_errors(tmp_path):
    manifest = make_dataset(tmp_path / "data", n=30)
    base = ["tasks", "new", "x1", "--csv", str(manifest), "--image", "file", "--out", str(tmp_path / "t")]
    _one_line_error(_cli(*base, "--label", "diagnosis", "--attributes", "race"), "--attributes column 'race'",
                    "it has: file")
    _one_line_error(_cli(*base, "--label", "file", "--attributes", "sex"), "'file' has 30 distinct values")
    _one_line_error(_cli("tasks", "new", "synth_cxr", "--csv", str(manifest), "--image", "file", "--label",
                         "diagnosis", "--attributes", "sex"), "taken by a shipped task")
    ok = _cli(*base, "--label", "diagnosis", "--attributes", "sex")
    assert ok.returncode == 0, ok.stderr
    _one_line_error(_cli(*base, "--label", "diagnosis", "--attributes", "sex"), "exists", "--overwrite")


@pytest.mark.slow
def test_a_folder_of_pngs_runs_end_to_end_with_no_code(tmp_path):
    manifest = make_dataset(tmp_path / "data", n=160)
    out = tmp_path / "tasks"
    write_task_card("mine", manifest, image="file", label="diagnosis", attributes=["sex", "age"],
                    patient="patient", out_dir=out)
    proc = _cli("run", "--task", "mine", "--tasks-dir", str(out), "--model", "tinyclip", "--weights", "random",
                "--adapt", "linear_probe", "--n-boot", "20", "--out", str(tmp_path / "results"))
    assert proc.returncode == 0, proc.stderr
    cell = tmp_path / "results" / "mine" / "tinyclip" / "linear_probe" / "seed0"
    doc = json.loads((cell / "metrics.json").read_text())
    pred = pd.read_parquet(cell / "predictions.parquet")
    test = pred[pred["split"] == "test"]
    truth = pd.read_csv(manifest, dtype=str).set_index("file").loc[test["sample_id"]]
    assert (test["label"].to_numpy() == (truth["diagnosis"] == "malignant").to_numpy()).all()
    assert doc["metrics"]["overall"]["n"] == len(test)
    assert set(doc["metrics"]["attributes"]) >= {"sex", "age"}
