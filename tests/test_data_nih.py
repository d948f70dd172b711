"""NIH: the nih6x200 recipe on the real metadata (determinism, balance, patient disjointness, byte-for-byte
rebuild of the committed file) and the ``nih`` loader on fake datasets in NIH's layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures_data import nih_rows, write_nih_images, write_nih_metadata
from typer.testing import CliRunner

from fairbench.cli import app
from fairbench.data.nih import NIHLoader, packaged_metadata, read_metadata, read_split_file
from fairbench.data.nih_recipe import AGE_GROUPS, Recipe, cell_counts, select
from fairbench.data.task import builtin_tasks_dir, get_task
from fairbench.errors import CardError, DataError

SPLIT_FILE = builtin_tasks_dir() / "nih6x200" / "nih6x200_splits.csv"


@pytest.fixture(scope="module")
def meta() -> pd.DataFrame:
    return read_metadata(packaged_metadata())


@pytest.fixture(scope="module")
def card():
    return get_task("nih6x200")


@pytest.fixture(scope="module")
def committed() -> pd.DataFrame:
    return read_split_file(SPLIT_FILE)


def test_build_reproduces_committed_file_byte_for_byte(tmp_path):
    result = CliRunner().invoke(app, ["tasks", "build", "nih6x200", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / SPLIT_FILE.name).read_bytes() == SPLIT_FILE.read_bytes()
    check = CliRunner().invoke(app, ["tasks", "build", "nih6x200", "--check"])
    assert check.exit_code == 0 and "up to date" in check.output


def test_build_from_users_own_metadata_file(tmp_path, meta):
    # the user's own (uncompressed) copy of the same metadata builds the same file
    own = tmp_path / "Data_Entry_2017_v2020.csv"
    pd.read_csv(packaged_metadata()).to_csv(own, index=False)
    result = CliRunner().invoke(app, ["tasks", "build", "nih6x200", "--metadata", str(own), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / SPLIT_FILE.name).read_bytes() == SPLIT_FILE.read_bytes()


def test_balance_per_finding_sex_age_cell(committed, card):
    counts = cell_counts(committed)
    per_cell = {"train": 20, "val": 10, "test": 20}
    assert len(counts) == 3 * 6 * 2 * 2
    for (split, finding, sex, age), n in counts.items():
        assert n == per_cell[split], (split, finding, sex, age)
    assert sorted(committed["finding"].unique()) == sorted(card.classes)
    assert committed.groupby("finding").size().eq(200).all()
    assert committed["split"].value_counts().to_dict() == {"train": 480, "test": 480, "val": 240}


def test_patient_disjoint_and_one_image_per_patient(committed):
    assert committed["patient_id"].is_unique  # at most one image per patient anywhere
    splits_per_patient = committed.groupby("patient_id")["split"].nunique()
    assert (splits_per_patient == 1).all()


def test_committed_rows_agree_with_metadata(committed, meta):
    m = meta.set_index("image_index").loc[committed["image_index"]]
    assert (m["finding"].to_numpy() == committed["finding"].to_numpy()).all()  # single-label rows only
    assert (m["patient_id"].to_numpy() == committed["patient_id"].to_numpy()).all()
    assert (m["sex"].to_numpy() == committed["sex"].to_numpy()).all()
    assert (m["age"].to_numpy() == committed["age"].to_numpy()).all()


def test_findings_follow_the_stated_rule(meta, card):
    """Top six findings by single-label images in their smallest sex x age cell (README, card comment)."""
    single = meta[~meta["finding"].str.contains("|", regex=False) & (meta["finding"] != "No Finding")]
    cells = single.assign(old=single["age"] >= 60).groupby(["finding", "sex", "old"]).size()
    smallest = cells.groupby(level="finding").min().sort_values(ascending=False)
    assert sorted(smallest.index[:6]) == sorted(card.classes)
    assert smallest["Mass"] == 196 and smallest["Pleural_Thickening"] == 142  # the documented margin


def test_selection_is_deterministic_and_row_order_free(meta, card):
    recipe = card.loader().recipe
    a = select(meta, recipe)
    b = select(meta.sample(frac=1.0, random_state=3).reset_index(drop=True), recipe)
    pd.testing.assert_frame_equal(a, b)


def test_recipe_that_cannot_be_filled_names_the_cell(meta, card):
    recipe = card.loader().recipe
    greedy = Recipe(recipe.findings, (("train", 20), ("val", 10), ("test", 500)), 60.0, recipe.patient_split,
                    source="card")
    with pytest.raises(DataError, match=r"cannot fill split test, \w+, sex [FM], age (young|old)"):
        select(meta, greedy)


def test_loader_reads_nih6x200_from_a_flat_image_folder(tmp_path, committed, card):
    names = committed.loc[committed["split"] == "test", "image_index"].tolist()
    write_nih_images(tmp_path, names, size=(8, 8))
    test = card.load_split("test", tmp_path)
    assert len(test) == 480 and list(test.sample_ids[:2]) == names[:2]
    assert set(test.attributes["age"]) == {"<60", ">=60"} and set(test.attributes["sex"]) == {"F", "M"}
    expected = committed.loc[committed["split"] == "test", "finding"].map(card.classes.index).to_numpy()
    assert (test.labels == expected).all()
    img = test.images.load(np.array([0, 5]))
    assert img[0].shape == (8, 8) and img[0].dtype == np.uint8
    assert set(test.extra) == {"patient_id", "view"}


def test_loader_finds_images_in_numbered_batch_folders(tmp_path, committed, card):
    names = committed.loc[committed["split"] == "val", "image_index"].tolist()
    written = write_nih_images(tmp_path, names, layout="batches")
    val = card.load_split("val", tmp_path)
    assert [str(p) for p in val.images.paths] == [str(written[n]) for n in names]
    assert val.images.load(np.array([1]))[0].shape == (12, 12)


def test_missing_image_folder_is_one_clear_error(tmp_path, card):
    with pytest.raises(DataError, match=r"no NIH image folder .*images_001/images"):
        card.load_split("test", tmp_path)
    with pytest.raises(DataError, match="--data-root"):
        card.load_split("test", None)


META_CARD = """\
name: {name}
version: 1
dataset:
  loader: nih
  options:
    metadata: meta.csv
    patient_split: {{train: 0.5, val: 0.25, test: 0.25, salt: t}}
    views: {views}
classes: [no_finding, finding]
label: {{column: finding, map: {{"No Finding": no_finding, "*": finding}}}}
attributes:
  sex: {{map: {{M: M, F: F}}}}
  age: {{bins: [0, 60, .inf], labels: ["<60", ">=60"]}}
"""


def _user_task(tmp_path: Path, name: str, views: str = "[PA, AP]"):
    """A user card in a --tasks-dir (task names are global per process: each test uses its own)."""
    d = tmp_path / "tasks" / name
    d.mkdir(parents=True)
    (d / f"{name}.yaml").write_text(META_CARD.format(name=name, views=views))
    return get_task(name, [tmp_path / "tasks"])


def test_metadata_mode_patient_split_labels_and_age_edges(tmp_path):
    rows = nih_rows(n_patients=40)
    rows[0]["Patient Age"], rows[1]["Patient Age"] = 59, 60
    root = tmp_path / "nih"
    write_nih_metadata(root / "meta.csv", rows)
    write_nih_images(root, [r["Image Index"] for r in rows])
    task = _user_task(tmp_path, "nih_user_meta")
    splits = {s: task.load_split(s, root) for s in ("train", "val", "test")}
    assert sum(len(s) for s in splits.values()) == len(rows)
    patients = {s: set(v.extra["patient_id"].tolist()) for s, v in splits.items()}
    assert not (patients["train"] & patients["val"]) and not (patients["train"] & patients["test"])
    assert not (patients["val"] & patients["test"])
    by_id = {r["Image Index"]: r for r in rows}
    for s in splits.values():
        for sid, y, age in zip(s.sample_ids, s.labels, s.attributes["age"]):
            r = by_id[sid]
            assert y == (0 if r["Finding Labels"] == "No Finding" else 1)
            assert age == ("<60" if r["Patient Age"] < 60 else ">=60")
    ages = {sid: a for s in splits.values() for sid, a in zip(s.sample_ids, s.attributes["age"])}
    assert ages[rows[0]["Image Index"]] == "<60" and ages[rows[1]["Image Index"]] == ">=60"


def test_views_filter(tmp_path):
    rows = nih_rows(n_patients=12)
    root = tmp_path / "nih"
    write_nih_metadata(root / "meta.csv", rows)
    write_nih_images(root, [r["Image Index"] for r in rows])
    task = _user_task(tmp_path, "nih_user_views", views="[PA]")
    got = np.concatenate([task.load_split(s, root).extra["view"] for s in ("train", "val", "test")])
    assert set(got) == {"PA"} and len(got) == sum(r["View Position"] == "PA" for r in rows)


@pytest.mark.parametrize("options, field", [
    ({"split_file": "x.csv", "patient_split": {"train": 1.0, "val": 0.0, "test": 0.0, "salt": "s"}}, "split_file"),
    ({}, "split_file"),
    ({"patient_split": {"train": 0.5, "val": 0.2, "test": 0.2, "salt": "s"}}, "patient_split"),
    ({"patient_split": {"train": 1.0, "val": 0.0, "test": 0.0, "salt": "s"}, "views": ["LL"]}, "views"),
    ({"patient_split": {"train": 1.0, "val": 0.0, "test": 0.0, "salt": "s"}, "colour": 1}, "colour"),
])
def test_bad_options_name_the_field(options, field):
    with pytest.raises(CardError, match=rf"card.yaml: dataset.options: field '{field}"):
        NIHLoader(options, source="card.yaml: dataset.options", card_dir=Path("."))


def test_age_groups_constant_matches_card_bins(card):
    # the recipe's young/old cut and the card's bins must agree
    assert card.loader().recipe.age_cut == card.attributes["age"].bins[1] == 60.0
    assert AGE_GROUPS == ("young", "old")
