"""`fairbench data check`, the run-time screen and `--allow-skip-unreadable` (never a silent drop)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fixtures_data import nih_rows, not_an_image, truncate, write_fairvlmed, write_nih_images, write_nih_metadata
from typer.testing import CliRunner

from fairbench.cli import app
from fairbench.data.check import check_task
from fairbench.data.prepare import PreparedLoader
from fairbench.data.task import get_task
from fairbench.errors import DataError

CARD = """\
name: {name}
version: 1
dataset:
  loader: nih
  options:
    metadata: meta.csv
    patient_split: {{train: 0.5, val: 0.25, test: 0.25, salt: check}}
classes: [no_finding, finding]
label: {{column: finding, map: {{"No Finding": no_finding, "*": finding}}}}
prompts:
  templates: ["a chest x-ray showing {{}}"]
  classnames: {{no_finding: [no finding], finding: [disease]}}
attributes:
  sex: {{map: {{M: M, F: F}}}}
  age: {{bins: [0, 60, .inf], labels: ["<60", ">=60"]}}
evaluation: {{n_boot: 0, min_group_size: 2}}
"""


def make_nih(tmp_path: Path, name: str, *, rows=None) -> tuple[Path, Path, list[dict]]:
    rows = rows or nih_rows(n_patients=16)
    root = tmp_path / "nih"
    write_nih_metadata(root / "meta.csv", rows)
    write_nih_images(root, [r["Image Index"] for r in rows])
    tasks = tmp_path / "tasks"
    (tasks / name).mkdir(parents=True)
    (tasks / name / f"{name}.yaml").write_text(CARD.format(name=name))
    return root, tasks, rows


def break_files(root: Path, rows: list[dict]) -> dict[str, str]:
    """One image of each kind of damage; returns {image index: expected reason}."""
    names = [r["Image Index"] for r in rows]
    img = root / "images"
    (img / names[0]).unlink()
    truncate(img / names[4])
    not_an_image(img / names[8])
    (img / names[12]).write_bytes(b"")
    return {names[0]: "missing", names[4]: "truncated", names[8]: "not an image", names[12]: "empty"}


def run_check(*args: str):
    return CliRunner().invoke(app, ["data", "check", *args])


def test_clean_data_passes_with_counts(tmp_path):
    root, tasks, rows = make_nih(tmp_path, "chk_clean")
    result = run_check("--task", "chk_clean", "--data-root", str(root), "--tasks-dir", str(tasks),
                       "--json", str(tmp_path / "report.json"))
    assert result.exit_code == 0, result.output
    assert "ok" in result.output and "no_finding" in result.output and ">=60" in result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert sum(s["n"] for s in report["splits"]) == len(rows)
    for s in report["splits"]:
        assert sum(sum(c.values()) for c in s["groups"]["sex"].values()) == s["n"]


@pytest.mark.parametrize("quick", [False, True])
def test_missing_truncated_and_non_images_are_errors(tmp_path, quick):
    name = f"chk_broken_{int(quick)}"
    root, tasks, rows = make_nih(tmp_path, name)
    expected = break_files(root, rows)
    args = ["--task", name, "--data-root", str(root), "--tasks-dir", str(tasks)] + (["--quick"] if quick else [])
    result = run_check(*args)
    assert result.exit_code == 1
    out = result.output.replace("\n", " ")
    for image, reason in expected.items():
        assert f"{reason}: " in out and image in out, (image, reason)
    report = check_task(get_task(name, [tasks]), root, quick=quick)
    found = {Path(p).name: r for s in report.splits for _, p, r in s.bad_images}
    assert found == expected


def test_values_outside_the_encoding_are_errors(tmp_path):
    rows = nih_rows(n_patients=16)
    rows[3]["Patient Gender"] = "O"
    root, tasks, _ = make_nih(tmp_path, "chk_values", rows=rows)
    result = run_check("--task", "chk_values", "--data-root", str(root), "--tasks-dir", str(tasks))
    assert result.exit_code == 1
    assert "attribute 'sex'" in result.output and "outside the card's encoding: 'O'" in result.output.replace("\n", " ")
    assert "(outside encoding)" in result.output


def test_one_label_outside_the_map_counts_the_valid_rows_and_names_the_bad_one(tmp_path):
    """issue 21 item 6: one label value outside the card's map made the whole split count as empty."""
    rows = nih_rows(n_patients=16)
    rows[5]["Finding Labels"] = "Bogus"
    root, tasks, _ = make_nih(tmp_path, "chk_label", rows=rows)
    card = tasks / "chk_label" / "chk_label.yaml"
    card.write_text(card.read_text().replace('"*": finding', 'Effusion: finding, Mass: finding, "Effusion|Mass": finding'))
    report = check_task(get_task("chk_label", [tasks]), root)
    by_split = {s.split: s for s in report.splits}
    bad = [s for s in report.splits if s.errors]
    assert len(bad) == 1, [s.errors for s in report.splits]
    s = bad[0]
    # independent count: the fixture's rows in that split, by their finding
    expected = {"no_finding": 0, "finding": 0}
    split_rows = [r for r in rows if r["Image Index"] in _split_ids(get_task("chk_label", [tasks]), root, s.split)]
    for r in split_rows:
        if r["Finding Labels"] != "Bogus":
            expected["no_finding" if r["Finding Labels"] == "No Finding" else "finding"] += 1
    assert s.class_counts["no_finding"] == expected["no_finding"] and s.class_counts["finding"] == expected["finding"]
    assert expected["no_finding"] + expected["finding"] == s.n - 1
    assert s.class_counts["(outside encoding)"] == 1
    assert rows[5]["Image Index"].removesuffix(".png") in s.errors[0] or rows[5]["Image Index"] in s.errors[0]
    assert "'Bogus'" in s.errors[0]
    assert not any("no sample of class" in w for w in s.warnings), s.warnings
    assert all(not x.errors for k, x in by_split.items() if k != s.split)
    result = run_check("--task", "chk_label", "--data-root", str(root), "--tasks-dir", str(tasks))
    assert result.exit_code == 1
    assert "no sample of class" not in result.output and "Bogus" in result.output


def _split_ids(task, root, split):
    raw = task.loader().load(task.splits[split], root)
    return {str(i) for i in raw.sample_ids} | {str(i) + ".png" for i in raw.sample_ids}


def test_unreadable_npz_is_reported_by_check(tmp_path):
    write_fairvlmed(tmp_path)
    bad = tmp_path / "Validation" / "data_00014.npz"
    bad.write_bytes(b"PK\x03\x04 broken")
    report = check_task(get_task("fairvlmed"), tmp_path, splits=["val"])
    assert not report.ok
    assert [sid for sid, _, _ in report.splits[0].bad_images] == ["data_00014"]


def test_check_without_data_root_is_an_error():
    report = check_task(get_task("nih6x200"), None, splits=["test"])
    assert not report.ok and "--data-root" in report.splits[0].errors[0]


@pytest.mark.parametrize("cache", [None, 64])
def test_run_stops_on_unreadable_unless_allowed(tmp_path, cache):
    name = f"chk_prep_{cache}"
    root, tasks, rows = make_nih(tmp_path, name)
    expected = break_files(root, rows)
    task = get_task(name, [tasks])
    strict = PreparedLoader(task.loader(), split_names=task.splits, image_cache=cache,
                            cache_root=tmp_path / "cache")
    with pytest.raises(DataError, match=r"cannot be read .*--allow-skip-unreadable"):
        for s in ("train", "val", "test"):
            task.load_split(s, root, loader=strict)
    lenient = PreparedLoader(task.loader(), split_names=task.splits, image_cache=cache, allow_skip=True,
                             cache_root=tmp_path / "cache")
    kept = {s: task.load_split(s, root, loader=lenient) for s in ("train", "val", "test")}
    skipped = {d["sample_id"]: d["reason"] for d in lenient.report()["skipped"]}
    if cache is None:  # without the cache, the screen checks headers and checksums (no full decode)
        assert set(skipped) == set(expected)
    else:
        assert skipped == expected
    assert sum(len(v) for v in kept.values()) == len(rows) - len(expected)
    for v in kept.values():
        assert not set(v.sample_ids) & set(expected)
        assert len(v.images.load(np.arange(len(v)))) == len(v)  # every kept image loads


def test_pipeline_records_skipped_ids_in_metrics_json(tmp_path):
    root, tasks, rows = make_nih(tmp_path, "chk_run")
    expected = break_files(root, rows)
    common = ["run", "--task", "chk_run", "--model", "tinyclip", "--weights", "random", "--device", "cpu",
              "--data-root", str(root), "--tasks-dir", str(tasks), "--out", str(tmp_path / "results"),
              "--n-boot", "0"]
    stopped = CliRunner().invoke(app, common)
    assert stopped.exit_code != 0 and isinstance(stopped.exception, DataError)
    assert "--allow-skip-unreadable" in str(stopped.exception)
    result = CliRunner().invoke(app, [*common, "--allow-skip-unreadable"])
    assert result.exit_code == 0, result.output
    cell = tmp_path / "results" / "chk_run" / "tinyclip" / "zeroshot" / "seed0"
    doc = json.loads((cell / "metrics.json").read_text())
    skipped = {d["sample_id"]: d["reason"] for d in doc["data"]["skipped"]}
    evaluated = {d["sample_id"] for d in doc["data"]["skipped"] if d["split"] in ("val", "test")}
    assert set(skipped) <= set(expected) and evaluated  # only the splits the adapter loaded
    caches = doc["data"]["image_cache"]
    assert caches["setting"] == "auto" and caches["model_input"] == 64
    assert {c["size"] for c in caches["splits"].values()} == {64}  # NIH images are square: cached at the input
    import pandas as pd

    frame = pd.read_parquet(cell / "predictions.parquet")
    assert not set(frame["sample_id"]) & set(expected)


# -- --data-root one level too deep (issue #14 item 16) ------------------------------------------------------------
def _check_output(*args: str) -> tuple[int, list[str]]:
    result = run_check(*args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, [ln for ln in result.output.splitlines() if ln.strip()]


@pytest.mark.parametrize("layout, sub", [("batches", "images_001"), ("batches", "images_002/images"),
                                         ("flat", "images")])
def test_nih_subfolder_as_data_root_is_one_message(tmp_path, layout, sub):
    rows = nih_rows(n_patients=16)
    root = tmp_path / "nih"
    write_nih_metadata(root / "meta.csv", rows)
    write_nih_images(root, [r["Image Index"] for r in rows], layout=layout)
    tasks, name = tmp_path / "tasks", "chk_deep_" + sub.replace("/", "_")  # task names are process-wide
    (tasks / name).mkdir(parents=True)
    (tasks / name / f"{name}.yaml").write_text(CARD.format(name=name).replace(
        "metadata: meta.csv", f"metadata: {root / 'meta.csv'}"))  # the images decide, not the metadata
    code, lines = _check_output("--task", name, "--data-root", str(root / sub), "--tasks-dir", str(tasks))
    assert code == 1, lines
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, lines  # one message, not one line per missing file, nor one per split
    assert f"is a subfolder of the dataset: pass --data-root {root}" in errors[0]
    assert "images_001/images/ ... images_012/images/" in errors[0]
    assert len(lines) <= 3, lines


def test_nih_metadata_beside_the_real_root_names_it(tmp_path):
    root, tasks, _ = make_nih(tmp_path, "chk_meta")
    task = get_task("chk_meta", [tasks])
    report = check_task(task, root / "images", splits=["test"])
    (err,) = report.splits[0].errors
    assert f"pass --data-root {root}" in err and "meta.csv and images_001/images/" in err


def test_fairvlmed_split_folder_as_data_root(tmp_path):
    write_fairvlmed(tmp_path / "fv")
    report = check_task(get_task("fairvlmed"), tmp_path / "fv" / "Training", splits=["test"])
    (err,) = report.splits[0].errors
    assert f"pass --data-root {tmp_path / 'fv'}" in err and "Training/, Validation/ and Test/" in err


def test_chexpert_image_folder_as_data_root(tmp_path):
    from fixtures_data import write_chexpert

    write_chexpert(tmp_path / "cx")
    report = check_task(get_task("chexpert_no_finding"), tmp_path / "cx" / "CheXpert-v1.0-small" / "train",
                        splits=["test"])
    (err,) = report.splits[0].errors
    assert "is a subfolder of the dataset: pass --data-root" in err and "train.csv" in err


def test_run_with_a_subfolder_as_data_root_is_a_one_line_error(tmp_path):
    from test_cli import assert_one_line_error, fairbench

    rows = nih_rows(n_patients=16)
    root = tmp_path / "nih"
    write_nih_metadata(root / "meta.csv", rows)
    write_nih_images(root, [r["Image Index"] for r in rows], layout="batches")
    tasks = tmp_path / "tasks"
    (tasks / "chk_deep_run").mkdir(parents=True)
    (tasks / "chk_deep_run" / "chk_deep_run.yaml").write_text(CARD.format(name="chk_deep_run").replace(
        "metadata: meta.csv", f"metadata: {root / 'meta.csv'}"))
    proc = fairbench("run", "--task", "chk_deep_run", "--tasks-dir", str(tasks),
                     "--data-root", str(root / "images_001"), "--weights", "random", "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, f"pass --data-root {root} (the dataset root holds images_001/images/")


@pytest.mark.parametrize("where", ["deep", "shallow"])
def test_a_data_root_one_level_off_is_found_before_the_model_is_built(tmp_path, monkeypatch, where):
    """issue 21 item 14: a --data-root one level too deep or too shallow was found only after the model was built
    (6.5 s for MedCLIP). Building the model here fails the test; the one-line error names the right folder."""
    from fairbench import pipeline
    from fairbench.pipeline import RunConfig, run_cell

    rows = nih_rows(n_patients=16)
    parent = tmp_path / "datasets"
    root = parent / "nih"
    write_nih_metadata(root / "meta.csv", rows)
    write_nih_images(root, [r["Image Index"] for r in rows], layout="batches")
    name = f"chk_level_{where}"
    tasks = tmp_path / "tasks"
    (tasks / name).mkdir(parents=True)
    (tasks / name / f"{name}.yaml").write_text(CARD.format(name=name))

    def no_build(*args, **kwargs):
        raise AssertionError("the model was built before --data-root was checked")

    monkeypatch.setattr(pipeline, "build_model", no_build)
    given = root / "images_001" if where == "deep" else parent
    with pytest.raises(DataError) as err:
        run_cell(RunConfig(task=name, model="tinyclip", weights="random", data_root=given, out=tmp_path / "out",
                           tasks_dirs=(tasks,)))
    msg = str(err.value)
    assert "\n" not in msg
    assert f"pass --data-root {root}" in msg, msg
    assert f"--data-root {given} " in msg
