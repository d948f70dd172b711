"""CheXpert: CSV layout, frontal only, uncertain-label policies, single-label selection, demographics."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from fixtures_data import write_chexpert

from fairbench.data.chexpert import CheXpertLoader
from fairbench.data.task import get_task
from fairbench.errors import CardError, DataError

SPLIT = {"train": 0.6, "val": 0.2, "test": 0.2, "salt": "t"}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("chexpert")
    write_chexpert(root, n_patients=30, demographics=True)
    return root


def _all(loader, root):
    return {s: loader.load(s, root) for s in ("train", "val", "test")}


def test_no_finding_card_frontal_only_patient_disjoint(root):
    card = get_task("chexpert_no_finding")
    splits = {s: card.load_split(s, root) for s in ("train", "val", "test")}
    ids = [i for s in splits.values() for i in s.sample_ids]
    assert len(ids) == 60 and all("frontal" in i for i in ids)  # 30 patients x 2 studies, laterals dropped
    patients = {s: set(v.extra["patient_id"]) for s, v in splits.items()}
    assert not (patients["train"] & patients["test"]) and not (patients["val"] & patients["test"])
    labels = np.concatenate([s.labels for s in splits.values()])
    assert set(labels.tolist()) == {0, 1}
    sexes = {g for s in splits.values() for g in s.attributes["sex"]}
    assert sexes == {"M", "F", None}  # "Unknown" is missing
    img = splits["test"].images.load(np.array([0]))[0]
    assert img.shape == (20, 16) and img.dtype == np.uint8


def test_uncertain_policies(root):
    def frame(policy):
        return CheXpertLoader({"patient_split": SPLIT, "findings": ["No Finding"], "uncertain": policy},
                              source="card").frame(root)
    zeros, ones, drop = frame("zeros"), frame("ones"), frame("drop")
    n_uncertain = int(ones["No Finding"].sum() - zeros["No Finding"].sum())
    assert n_uncertain > 0  # the fixture has No Finding = -1 rows
    assert len(zeros) == len(ones) == 60 and len(drop) == 60 - n_uncertain
    assert drop["No Finding"].sum() == zeros["No Finding"].sum()


def test_single_label_multi_finding_drops_uncertain_and_multi(root):
    card = get_task("chexpert5")
    loader = card.loader()
    frame = loader.frame(root)
    assert (frame[list(loader.findings)].sum(axis=1) == 1).all()
    assert set(frame["finding"]) <= set(card.classes)
    # a row with Atelectasis -1 and Edema 1 is dropped under uncertain: drop
    assert not frame["Path"].isin(frame["Path"][frame["Atelectasis"] == -1]).any()
    test = card.load_split("test", root)
    assert set(test.labels.tolist()) <= set(range(len(card.classes)))


def test_race_from_demographics(root):
    card = get_task("chexpert_no_finding_race")
    groups = set()
    for s in ("train", "val", "test"):
        groups |= set(card.load_split(s, root).attributes["race"])
    assert groups <= {"White", "Black", "Asian", "Other", None} and "White" in groups
    assert None in groups  # "Unknown" and the patient without a demographics row


def test_demographics_missing_and_xlsx_hint(tmp_path):
    write_chexpert(tmp_path, n_patients=4)
    loader = CheXpertLoader({"patient_split": SPLIT, "uncertain": "zeros", "demographics": "CHEXPERT DEMO.xlsx"},
                            source="card")
    with pytest.raises(DataError, match="demographics file not found"):
        loader.load("train", tmp_path)


def test_data_root_may_be_the_chexpert_folder_itself(root):
    loader = CheXpertLoader({"patient_split": SPLIT, "uncertain": "zeros"}, source="card")
    a = loader.load("train", root)
    b = loader.load("train", root / "CheXpert-v1.0-small")
    assert list(a.sample_ids) == list(b.sample_ids)
    assert [str(p) for p in a.images.paths] == [str(p) for p in b.images.paths]


def test_missing_csv_and_bad_options(tmp_path):
    loader = CheXpertLoader({"patient_split": SPLIT, "uncertain": "zeros"}, source="card")
    with pytest.raises(DataError, match="CheXpert CSV not found"):
        loader.load("train", tmp_path)
    with pytest.raises(CardError, match="field 'uncertain' is required"):
        CheXpertLoader({"patient_split": SPLIT}, source="card")
    with pytest.raises(CardError, match=r"field 'findings\[0\]' must be a CheXpert observation"):
        CheXpertLoader({"patient_split": SPLIT, "uncertain": "zeros", "findings": ["Effusion"]}, source="card")


@pytest.mark.skipif(importlib.util.find_spec("torchxrayvision") is None, reason="torchxrayvision not installed")
def test_real_chexpert_csv_parses(tmp_path):
    """torchxrayvision ships CheXpert's real train.csv: the loader reads it (no images needed to list samples)."""
    data = Path(list(importlib.util.find_spec("torchxrayvision").submodule_search_locations)[0]) / "data"
    loader = CheXpertLoader({"csv": "chexpert_train.csv.gz", "patient_split": SPLIT, "uncertain": "zeros"},
                            source="card")
    frame = loader.frame(data)
    assert len(frame) > 150_000 and (frame["Frontal/Lateral"] == "Frontal").all()
    assert set(frame["No Finding"]) == {0, 1}
    assert frame.groupby("patient_id")["split"].nunique().max() == 1
