import math
from pathlib import Path

import numpy as np
import pytest

from fairbench.data.task import AttributeSpec, discover_tasks, get_task, load_task_card
from fairbench.errors import CardError, DataError

MINIMAL = """
name: {name}
version: 1
dataset: {{loader: synth_cxr, options: {{n: {{train: 20, val: 20, test: 20}}, image_size: 32}}}}
classes: [normal, abnormal]
label: {{column: finding, map: {{normal: normal, "*": abnormal}}}}
attributes:
  sex: {{}}
  age: {{bins: [0, 60, .inf], labels: ["<60", ">=60"]}}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    d = tmp_path / name
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"{name}.yaml"
    p.write_text(text)
    return p


def test_minimal_card_parses_with_defaults(tmp_path):
    card = load_task_card(write(tmp_path, "mini", MINIMAL.format(name="mini")))
    assert card.name == "mini" and card.version == "1"
    assert card.classes == ("normal", "abnormal")
    assert card.splits == {"train": "train", "val": "val", "test": "test"}
    assert card.evaluation.threshold == 0.5 and card.evaluation.n_boot == 1000
    assert card.attributes["age"].bins == (0.0, 60.0, math.inf)


@pytest.mark.parametrize(
    "edit, field, problem",
    [
        (lambda t: t.replace("version: 1\n", ""), "version", "is required"),
        (lambda t: t.replace("classes: [normal, abnormal]", "classes: [normal]"), "classes", "at least two"),
        (lambda t: t.replace("loader: synth_cxr", "loader: synth_cx"), "dataset.loader", "Did you mean 'synth_cxr'"),
        (lambda t: t + "colour: blue\n", "colour", "is not a known field"),
        (lambda t: t.replace("bins: [0, 60, .inf]", "bins: [0, 60, 50]"), "attributes.age.bins", "increasing"),
        (lambda t: t.replace('labels: ["<60", ">=60"]', 'labels: ["young"]'), "attributes.age.labels", "one label per bin"),
        (lambda t: t.replace('"*": abnormal', '"*": sick'), "label.map.*", "not one of classes"),
        (lambda t: t + "evaluation: {threshold: 1.5}\n", "evaluation.threshold", "[0, 1]"),
        (lambda t: t + "evaluation: {intersections: [[sex, race]]}\n", "evaluation.intersections[0]", "declared"),
        (lambda t: t + "prompts: {templates: ['no placeholder']}\n", "prompts.templates", "'{}'"),
        (lambda t: t.replace("version: 1", "version: [1]"), "version", "must be a string or an integer"),
    ],
)
def test_invalid_cards_name_field_and_problem(tmp_path, edit, field, problem):
    path = write(tmp_path, "bad", edit(MINIMAL.format(name="bad")))
    with pytest.raises(CardError) as info:
        load_task_card(path)
    msg = str(info.value)
    assert str(path) in msg
    assert f"field '{field}'" in msg
    assert problem in msg


def test_name_must_match_stem(tmp_path):
    path = write(tmp_path, "stem", MINIMAL.format(name="other"))
    with pytest.raises(CardError, match="must equal the file name stem"):
        load_task_card(path)


def test_invalid_yaml_and_non_mapping(tmp_path):
    with pytest.raises(CardError, match="not valid YAML"):
        load_task_card(write(tmp_path, "broken", "name: [unclosed\n"))
    with pytest.raises(CardError, match="must be a YAML mapping"):
        load_task_card(write(tmp_path, "listy", "- a\n- b\n"))


def test_include_merges_and_overrides(tmp_path):
    base = tmp_path / "_base.yaml"
    base.write_text(MINIMAL.format(name="ignored").replace("name: ignored\n", "") + "description: base\n")
    child = write(tmp_path, "child", "include: ../_base.yaml\nname: child\nversion: 2\n"
                                     "dataset: {options: {image_size: 48}}\n")
    card = load_task_card(child)
    assert card.version == "2" and card.description == "base"
    # mappings merge key by key: n survives from the base, image_size is overridden
    assert card.dataset_options["image_size"] == 48
    assert card.dataset_options["n"] == {"train": 20, "val": 20, "test": 20}


def test_include_cycle_and_missing(tmp_path):
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text("include: b.yaml\n")
    b.write_text("include: a.yaml\n")
    with pytest.raises(CardError, match="include cycle"):
        load_task_card(a)
    c = write(tmp_path, "c", "include: nowhere.yaml\n")
    with pytest.raises(CardError, match="card file not found"):
        load_task_card(c)


@pytest.mark.parametrize("age, group", [(0, "<60"), (59, "<60"), (59.999, "<60"), (60, ">=60"), (95, ">=60")])
def test_age_binning_edges(age, group):
    spec = AttributeSpec("age", "age", bins=(0.0, 60.0, math.inf), labels=("<60", ">=60"))
    assert spec.apply(np.array([age], dtype=object), where="t")[0] == group


def test_binning_missing_and_out_of_range():
    spec = AttributeSpec("age", "age", bins=(0.0, 60.0, math.inf), labels=("<60", ">=60"), missing=("-1",))
    out = spec.apply(np.array([None, float("nan"), -1, 30], dtype=object), where="t")
    assert out.tolist() == [None, None, None, "<60"]
    with pytest.raises(DataError, match="attribute 'age'.*outside the card's encoding: '-5'"):
        spec.apply(np.array([-5], dtype=object), where="t")


def test_value_map_with_wildcard():
    spec = AttributeSpec("language", "language", map={"0": "English", "*": "Other"}, missing=("-1",))
    out = spec.apply(np.array([0, 1, 2, -1, 0.0], dtype=object), where="t")
    assert out.tolist() == ["English", "Other", "Other", None, "English"]


def test_user_tasks_dir_is_discovered_and_duplicates_rejected(tmp_path):
    write(tmp_path, "my_task", MINIMAL.format(name="my_task"))
    found = discover_tasks([tmp_path])
    assert "my_task" in found and "synth_cxr" in found
    assert get_task("my_task", [tmp_path]).name == "my_task"
    dup = tmp_path / "other"
    write(dup, "synth_cxr", MINIMAL.format(name="synth_cxr"))
    with pytest.raises(CardError, match="task 'synth_cxr' is defined twice"):
        discover_tasks([dup])


def test_tasks_dir_must_exist(tmp_path):
    with pytest.raises(CardError, match="not a directory"):
        discover_tasks([tmp_path / "nope"])
