"""Public datasets in their download layouts (HAM10000, Fitzpatrick17k, PadChest), on fabricated files, and the
PadChest recipe on the real label file that ships in torchxrayvision."""

from __future__ import annotations

import csv
import gzip
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures_data import png

from fairbench.data.check import check_task
from fairbench.data.task import get_task
from fairbench.errors import DataError

HAM_DX = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def write_ham10000(root: Path, n: int = 90, folders=("HAM10000_images_part_1", "HAM10000_images_part_2")) -> pd.DataFrame:
    rows = []
    for i in range(n):
        image_id = f"ISIC_{24306 + i:07d}"
        rows.append({"lesion_id": f"HAM_{i // 2:07d}", "image_id": image_id, "dx": HAM_DX[(i // 2) % 7],
                     "dx_type": "histo", "age": "" if i % 17 == 0 else str(5 * (i % 18)),
                     "sex": ["male", "female", "unknown"][i % 3], "localization": "back", "dataset": "vidir_modern"})
        folder = folders[0] if i < n // 2 else folders[-1]
        png(root / folder / f"{image_id}.jpg", size=(30, 22), seed=i, mode="RGB")
    df = pd.DataFrame(rows)
    df.to_csv(root / "HAM10000_metadata.csv", index=False)
    return df


def test_ham10000_reads_its_layout_and_maps_malignancy_two_ways(tmp_path):
    meta = write_ham10000(tmp_path)
    medfair, clinical = get_task("ham10000"), get_task("ham10000_clinical")
    seen = []
    for split in ("train", "val", "test"):
        s = medfair.load_split(split, tmp_path)
        c = clinical.load_split(split, tmp_path)
        rows = meta.set_index("image_id").loc[list(s.sample_ids)]
        seen += list(s.sample_ids)
        assert [s.classes[i] == "malignant" for i in s.labels] == rows["dx"].isin(["akiec", "mel"]).tolist()
        assert [c.classes[i] == "malignant" for i in c.labels] == rows["dx"].isin(["akiec", "mel", "bcc"]).tolist()
        assert list(s.attributes["sex"]) == [{"male": "M", "female": "F"}.get(v) for v in rows["sex"]]
        ages = [None if a == "" else ("<60" if int(a) < 60 else ">=60") for a in rows["age"]]
        assert list(s.attributes["age"]) == ages
        img = s.images.load(np.array([0]))[0]
        assert img.shape == (22, 30, 3)
    assert sorted(seen) == sorted(meta["image_id"])
    # lesion-disjoint: both images of a lesion land in one split
    frame = medfair.loader().frame(tmp_path)
    assert (frame.groupby("lesion_id")["split"].nunique() == 1).all()
    assert check_task(medfair, tmp_path).ok


def test_ham10000_other_folder_names_and_a_root_one_level_off(tmp_path, tmp_path_factory):
    write_ham10000(tmp_path, n=30, folders=("HAM10000_images",))
    s = get_task("ham10000").load_split("train", tmp_path)
    assert all(Path(p).is_file() for p in s.images.paths)
    with pytest.raises(DataError, match=r"subfolder of the dataset: pass --data-root " + re.escape(str(tmp_path))):
        get_task("ham10000").load_split("train", tmp_path / "HAM10000_images")
    with pytest.raises(DataError, match="HAM10000 metadata not found.*HAM10000_metadata.csv"):
        get_task("ham10000").load_split("train", tmp_path_factory.mktemp("empty"))


def write_fitzpatrick(root: Path, n: int = 80, *, layout: str = "images/{}.jpg") -> pd.DataFrame:
    rows = []
    for i in range(n):
        h = f"{i:032x}"
        rows.append({"md5hash": h, "fitzpatrick_scale": str([1, 2, 3, 4, 5, 6, -1][i % 7]),
                     "fitzpatrick_centaur": str([2, 2, 3, 4, 5, 6, 1][i % 7]), "label": "psoriasis",
                     "nine_partition_label": "inflammatory",
                     "three_partition_label": ["malignant", "benign", "non-neoplastic"][i % 3], "qc": "",
                     "url": "", "url_alphanum": ""})
        target = root / layout.format(h)
        png(target.with_name(target.name + ".tmp.jpg"), size=(20, 16), seed=i, mode="RGB").rename(target)
    df = pd.DataFrame(rows)
    df.to_csv(root / "fitzpatrick17k.csv", index=False)
    return df


@pytest.mark.parametrize("layout", ["images/{}.jpg", "{}"])  # MEDFAIR's images/<md5>.jpg; Groh's <root>/<md5>
def test_fitzpatrick17k_skin_types_and_malignancy(tmp_path, layout):
    meta = write_fitzpatrick(tmp_path, layout=layout)
    card = get_task("fitzpatrick17k")
    seen = []
    for split in ("train", "val", "test"):
        s = card.load_split(split, tmp_path)
        seen += list(s.sample_ids)
        rows = meta.set_index("md5hash").loc[list(s.sample_ids)]
        assert [s.classes[i] for i in s.labels] == ["malignant" if v == "malignant" else "not_malignant"
                                                    for v in rows["three_partition_label"]]
        binary = {"1": "I-III", "2": "I-III", "3": "I-III", "4": "IV-VI", "5": "IV-VI", "6": "IV-VI"}
        assert list(s.attributes["skin_type"]) == [binary.get(v) for v in rows["fitzpatrick_scale"]]
        fine = {"1": "I-II", "2": "I-II", "3": "III-IV", "4": "III-IV", "5": "V-VI", "6": "V-VI"}
        assert list(s.attributes["skin_type3"]) == [fine.get(v) for v in rows["fitzpatrick_scale"]]
        assert all(Path(p).is_file() for p in s.images.paths)
    assert sorted(seen) == sorted(meta["md5hash"])
    assert check_task(card, tmp_path).ok


def test_fitzpatrick17k_2021_column_name_and_missing_images(tmp_path):
    meta = write_fitzpatrick(tmp_path, n=40)
    meta.rename(columns={"fitzpatrick_scale": "fitzpatrick"}).drop(columns=["fitzpatrick_centaur"]).to_csv(
        tmp_path / "fitzpatrick17k.csv", index=False)
    (tmp_path / "images" / f"{meta['md5hash'][0]}.jpg").unlink()
    report = check_task(get_task("fitzpatrick17k"), tmp_path)
    bad = [b for s in report.splits for b in s.bad_images]
    assert [(b[0], b[2]) for b in bad] == [(meta["md5hash"][0], "missing")]


PADCHEST_COLUMNS = ["Unnamed: 0", "ImageID", "ImageDir", "StudyDate_DICOM", "StudyID", "PatientID", "PatientBirth",
                    "PatientSex_DICOM", "ViewPosition_DICOM", "Projection", "Labels"]


def write_padchest(root: Path, n: int = 60) -> pd.DataFrame:
    labels = ["['normal']", "['cardiomegaly', 'normal']", "[' normal']", "['pleural effusion']", "['']",
              "['exclude']", "['scoliosis', 'kyphosis']"]
    rows = []
    for i in range(n):
        image = f"{1000 + i}_x.png"
        rows.append({"Unnamed: 0": str(i), "ImageID": image, "ImageDir": str(i % 3), "StudyDate_DICOM": "20150914",
                     "StudyID": f"s{i}", "PatientID": f"pat{i // 2}", "PatientBirth": "" if i == 7 else "1950.0",
                     "PatientSex_DICOM": ["M", "F", "O"][i % 3], "ViewPosition_DICOM": "",
                     "Projection": "L" if i % 10 == 9 else "PA", "Labels": labels[i % 7]})
        path = root / "images" / str(i % 3) / image
        path.parent.mkdir(parents=True, exist_ok=True)
        from PIL import Image
        Image.fromarray(np.arange(24 * 20, dtype=np.uint16).reshape(24, 20) * 8).save(path)  # 16-bit
    df = pd.DataFrame(rows, columns=PADCHEST_COLUMNS)
    with gzip.open(root / "padchest.csv.gz", "wt", newline="") as fh:
        df.to_csv(fh, index=False, quoting=csv.QUOTE_MINIMAL)
    return df


def test_padchest_recipe_on_fabricated_files(tmp_path, tmp_path_factory):
    meta = write_padchest(tmp_path)
    tasks = tmp_path_factory.mktemp("cards")
    src = get_task("padchest_no_finding").path.read_text()
    (tasks / "pc").mkdir()
    (tasks / "pc" / "pc.yaml").write_text(src.replace("name: padchest_no_finding", "name: pc").replace(
        "metadata: torchxrayvision", f"metadata: {tmp_path / 'padchest.csv.gz'}"))
    card = get_task("pc", [tasks])
    got = {}
    for split in ("train", "val", "test"):
        try:
            s = card.load_split(split, tmp_path / "images")
        except DataError as exc:
            assert "no PadChest images" in str(exc)
            continue
        for sid, y, age, sex in zip(s.sample_ids, s.labels, s.attributes["age"], s.attributes["sex"]):
            got[sid] = (s.classes[y], age, sex)
        assert all(Path(p).is_file() for p in s.images.paths)
        assert s.images.load(np.array([0]))[0].dtype == np.uint8
    expected = {}
    for _, r in meta.iterrows():  # the recipe, written out independently
        toks = [t.strip() for t in re.findall(r"'([^']*)'", r["Labels"]) if t.strip()]
        if r["Projection"] != "PA" or not toks or "exclude" in toks:
            continue
        age = None if not r["PatientBirth"] else 2015 - int(float(r["PatientBirth"]))
        expected[r["ImageID"]] = ("no_finding" if set(toks) == {"normal"} else "finding",
                                  None if age is None else ("<60" if age < 60 else ">=60"),
                                  {"M": "M", "F": "F"}.get(r["PatientSex_DICOM"]))
    assert got == expected


def test_padchest_recipe_on_the_real_label_file():
    """The shipped card on PadChest's own label file (the copy in torchxrayvision), checked against the recipe
    computed here with plain string handling, and against counts gathered from the file independently."""
    loader = get_task("padchest_no_finding").loader()
    frame = loader.frame(None)
    raw = pd.read_csv(loader.metadata_path(None), dtype=str, keep_default_na=False,
                      usecols=["ImageID", "Projection", "Labels", "PatientID"])
    assert len(raw) == 160_861 and (raw["Projection"] == "PA").sum() == 91_728  # /work/shared reference counts
    pa = raw[raw["Projection"] == "PA"]
    toks = pa["Labels"].map(lambda s: [t.strip() for t in re.findall(r"'([^']*)'", s) if t.strip()])
    usable = toks.map(lambda t: bool(t) and "exclude" not in t)
    normal = toks.map(lambda t: set(t) == {"normal"}) & usable
    assert len(frame) == int(usable.sum())
    assert set(frame.loc[frame["finding"] == "normal", "ImageID"]) == set(pa.loc[normal, "ImageID"])
    split = frame.groupby("patient_id")["split"].nunique()
    assert (split == 1).all()  # patient-disjoint
    shares = frame["split"].value_counts(normalize=True)
    assert abs(shares["train"] - 0.7) < 0.02 and abs(shares["test"] - 0.2) < 0.02


def write_mimic(root: Path) -> dict:
    """MIMIC-CXR-JPG 2.0.0 + MIMIC-IV 2.2 in PhysioNet's layout, with the cases the recipe must get right."""
    cxr, hosp = root / "mimic-cxr-jpg" / "2.0.0", root / "mimiciv" / "2.2" / "hosp"
    hosp.mkdir(parents=True)
    cxr.mkdir(parents=True)
    meta, split, labels, patients, adm = [], [], [], [], []
    expected = {}
    for p in range(12):
        subject = 10000032 + p * 1000
        patients.append({"subject_id": subject, "gender": "MF"[p % 2], "anchor_age": 40 + p * 3,
                         "anchor_year": 2150, "anchor_year_group": "2008 - 2010", "dod": ""})
        # admissions: p%4 == 0 -> WHITE twice, BLACK once (White wins); 1 -> tie ASIAN/HISPANIC (earliest wins);
        # 2 -> only UNKNOWN (missing); 3 -> WHITE - RUSSIAN + WHITE - OTHER EUROPEAN (both White)
        races = {0: ["BLACK/AFRICAN AMERICAN", "WHITE", "WHITE"], 1: ["HISPANIC/LATINO - PUERTO RICAN", "ASIAN"],
                 2: ["UNKNOWN", "UNABLE TO OBTAIN"], 3: ["WHITE - RUSSIAN", "WHITE - OTHER EUROPEAN"]}[p % 4]
        ins = ["Medicaid", "Medicare", "Other"][p % 3]
        for k, race in enumerate(races):
            adm.append({"subject_id": subject, "hadm_id": subject * 10 + k, "admittime": f"215{k}-01-01 10:00:00",
                        "insurance": ins, "race": race})
        race_group = {0: "White", 1: "Hispanic", 2: None, 3: "White"}[p % 4]
        for s in range(2):
            study = 50000000 + p * 10 + s
            nf = "1.0" if (p + s) % 3 == 0 else ""
            labels.append({"subject_id": subject, "study_id": study, "Atelectasis": "" if nf else "1.0",
                           "No Finding": nf})
            for view in ("PA", "LATERAL"):
                dicom = f"{p:08x}-{s:08x}-{len(meta):08x}-00000000-00000000"
                meta.append({"dicom_id": dicom, "subject_id": subject, "study_id": study, "ViewPosition": view,
                             "StudyDate": f"215{2 + s}0101"})
                split.append({"dicom_id": dicom, "study_id": study, "subject_id": subject,
                              "split": ["train", "validate", "test"][p % 3]})
                png(cxr / "files" / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg", seed=p)
                if view == "PA":
                    expected[dicom] = {"split": ["train", "val", "test"][p % 3],
                                       "label": "no_finding" if nf else "finding", "sex": "MF"[p % 2],
                                       "age": 40 + p * 3 + 2 + s, "race": race_group, "insurance": ins}
    for name, rows in (("mimic-cxr-2.0.0-metadata.csv.gz", meta), ("mimic-cxr-2.0.0-split.csv.gz", split),
                       ("mimic-cxr-2.0.0-chexpert.csv.gz", labels)):
        pd.DataFrame(rows).to_csv(cxr / name, index=False)
    pd.DataFrame(patients).to_csv(hosp / "patients.csv.gz", index=False)
    pd.DataFrame(adm).to_csv(hosp / "admissions.csv.gz", index=False)
    return expected


def test_mimic_cxr_recipe_on_its_download_layout(tmp_path):
    expected = write_mimic(tmp_path)
    card = get_task("mimic_no_finding")
    got = {}
    for split in ("train", "val", "test"):
        s = card.load_split(split, tmp_path)
        age_raw = card.loader().load(split, tmp_path).columns["age"]
        for i, sid in enumerate(s.sample_ids):
            got[sid] = {"split": split, "label": s.classes[s.labels[i]], "sex": s.attributes["sex"][i],
                        "age": age_raw[i], "race": s.attributes["race"][i], "insurance": s.attributes["insurance"][i]}
        assert all(Path(p).is_file() for p in s.images.paths)
    assert got == expected
    assert check_task(card, tmp_path).ok


def test_mimic_cxr_root_mistakes_are_one_message(tmp_path):
    write_mimic(tmp_path)
    card = get_task("mimic_no_finding")
    with pytest.raises(DataError, match="subfolder of the dataset: pass --data-root " + re.escape(str(tmp_path))):
        card.load_split("train", tmp_path / "mimic-cxr-jpg" / "2.0.0")
    above = tmp_path.parent / f"{tmp_path.name}-download"  # a PhysioNet download: <dir>/files/mimic-cxr-jpg/...
    above.mkdir()
    (above / "files").symlink_to(tmp_path)
    with pytest.raises(DataError, match="holds files/: pass --data-root " + re.escape(str(above / "files"))):
        card.load_split("train", above)
