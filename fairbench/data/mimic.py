"""The ``mimic_cxr`` dataset family: MIMIC-CXR-JPG with MIMIC-IV demographics, in PhysioNet's download layout.

``--data-root`` is the ``files/`` folder of a PhysioNet download (``wget -r ... physionet.org/files/``) holding

- ``mimic-cxr-jpg/<version>/``: ``mimic-cxr-2.0.0-chexpert.csv.gz``, ``mimic-cxr-2.0.0-metadata.csv.gz``,
  ``mimic-cxr-2.0.0-split.csv.gz`` and the JPEGs ``files/pXX/pSUBJECT/sSTUDY/DICOM_ID.jpg``;
- ``mimiciv/<version>/hosp/``: ``patients.csv.gz`` and ``admissions.csv.gz`` (``core/`` in MIMIC-IV 1.0).

``<version>`` is found on disk (one folder, or the card's ``cxr_version`` / ``mimiciv_version``).

Recipe (card options):

- ``views`` (default ``[PA, AP]``): ``ViewPosition`` values kept (frontal images).
- the official split file: ``train`` / ``validate`` (-> ``val``) / ``test``.
- ``findings``: CheXpert-labeller columns handed to the card, coded 1 (positive), 0 (negative), -1 (uncertain)
  or blank (not mentioned -> 0); ``uncertain``: ``zeros`` | ``ones`` | ``drop`` (required); ``single_label``
  keeps images positive for exactly one listed finding and adds a ``finding`` column, as the ``chexpert`` loader.
- ``sex`` from ``patients.gender``; ``age`` at the study = ``anchor_age + (study year - anchor_year)`` (MIMIC-IV
  shifts dates per patient, so this is approximate, as in Glocker et al. 2023).
- ``race`` and ``insurance`` per patient from ``admissions``: each admission's value is grouped first (race:
  White / Black / Asian / Hispanic / Other by the value's leading word, as below; insurance: Medicaid /
  Medicare / Other), unknown values (UNKNOWN, UNABLE TO OBTAIN, PATIENT DECLINED TO ANSWER, blank) are ignored,
  and the group recorded most often wins (a tie goes to the patient's earliest admission among the tied groups).
  A patient with no known value is missing for that attribute only. ``race_raw`` is the most frequent raw value.

Race grouping: values starting with WHITE or equal to PORTUGUESE -> White; BLACK -> Black; ASIAN -> Asian;
HISPANIC or SOUTH AMERICAN -> Hispanic; every other known value (AMERICAN INDIAN/ALASKA NATIVE, NATIVE HAWAIIAN
OR OTHER PACIFIC ISLANDER, MULTIPLE RACE/ETHNICITY, OTHER) -> Other.

Columns: ``sex`` (M/F), ``age``, ``race``, ``race_raw``, ``insurance``, ``view``, ``patient_id`` (subject_id),
``study_id``, each listed finding (0/1), ``finding`` (single-label cards). Sample ids are ``dicom_id``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fairbench.cards import Fields, card_sha256
from fairbench.data.base import RawSplit
from fairbench.data.files import FileImages, root_above, subfolder_error
from fairbench.errors import DataError

__all__ = ["FINDINGS", "MIMICLoader", "group_insurance", "group_race"]

LOADER_VERSION = "1"
OBTAIN = ("https://physionet.org/content/mimic-cxr-jpg/ and https://physionet.org/content/mimiciv/ (PhysioNet "
          "credentialed access)")
LAYOUT = "mimic-cxr-jpg/<version>/ and mimiciv/<version>/hosp/ (the files/ folder of a PhysioNet download)"
FINDINGS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
            "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
            "Pneumothorax", "Support Devices")
UNKNOWN_VALUES = {"", "UNKNOWN", "UNABLE TO OBTAIN", "PATIENT DECLINED TO ANSWER", "UNKNOWN/NOT SPECIFIED",
                  "DECLINED TO ANSWER"}
_VERSION = re.compile(r"^\d+(\.\d+)*$")


def group_race(value: Any) -> str | None:
    v = str(value).strip().upper() if value is not None else ""
    if v in UNKNOWN_VALUES or v == "NAN":
        return None
    if v.startswith("WHITE") or v == "PORTUGUESE":
        return "White"
    if v.startswith("BLACK"):
        return "Black"
    if v.startswith("ASIAN"):
        return "Asian"
    if v.startswith("HISPANIC") or v == "SOUTH AMERICAN":
        return "Hispanic"
    return "Other"


def group_insurance(value: Any) -> str | None:
    v = str(value).strip() if value is not None else ""
    if v.upper() in UNKNOWN_VALUES or v.upper() == "NAN":
        return None
    if v.lower() == "medicaid":
        return "Medicaid"
    if v.lower() == "medicare":
        return "Medicare"
    return "Other"


def _version_dir(parent: Path, wanted: str) -> Path | None:
    if wanted != "auto":
        return parent / wanted if (parent / wanted).is_dir() else None
    found = sorted((d for d in parent.glob("*") if d.is_dir() and _VERSION.match(d.name)),
                   key=lambda d: tuple(int(x) for x in d.name.split(".")))
    return found[-1] if found else None


def _read(path: Path, what: str, **kw: Any) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **kw)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read {what}: {exc}") from None


def _mode_per_patient(adm: pd.DataFrame, column: str, group) -> tuple[pd.Series, pd.Series]:  # type: ignore[no-untyped-def]
    """Per subject: the most frequent grouped value (ties: earliest admission) and the most frequent raw value."""
    df = adm[["subject_id", "admittime", column]].copy()
    df["g"] = df[column].map(group)
    df = df[df["g"].notna()]
    df = df.sort_values(["subject_id", "admittime"], kind="stable")
    df["order"] = np.arange(len(df))

    def pick(frame: pd.DataFrame, key: str) -> pd.Series:
        stats = frame.groupby(["subject_id", key], sort=False).agg(n=("order", "size"), first=("order", "min"))
        stats = stats.reset_index().sort_values(["subject_id", "n", "first"], ascending=[True, False, True],
                                                kind="stable")
        return stats.drop_duplicates("subject_id").set_index("subject_id")[key]

    return pick(df, "g"), pick(df, column)


class MIMICLoader:
    needs_data_root = True

    def __init__(self, options: dict[str, Any], *, source: str) -> None:
        f = Fields(dict(options), source=source)
        self.source = source
        self.cxr_version = f.get("cxr_version", str, "auto")
        self.mimiciv_version = f.get("mimiciv_version", str, "auto")
        self.views = tuple(f.str_list("views", ["PA", "AP"]))
        self.findings = tuple(f.str_list("findings", ["No Finding"]))
        for i, name in enumerate(self.findings):
            if name not in FINDINGS:
                f.fail(f"findings[{i}]", f"must be a MIMIC-CXR CheXpert label ({', '.join(FINDINGS)}), got {name!r}")
        self.uncertain = f.get("uncertain", str, choices=("zeros", "ones", "drop"))
        self.single_label = f.get("single_label", bool, False)
        f.no_unknown()
        self.options = dict(options)
        self._frames: dict[str, pd.DataFrame] = {}

    def fingerprint(self) -> str:
        return card_sha256({"loader": "mimic_cxr", "version": LOADER_VERSION, "options": self.options})

    # -- files ----------------------------------------------------------------------------------
    def folders(self, data_root: Path) -> tuple[Path, Path]:
        root = Path(data_root)
        cxr = _version_dir(root / "mimic-cxr-jpg", self.cxr_version) if (root / "mimic-cxr-jpg").is_dir() else None
        iv = _version_dir(root / "mimiciv", self.mimiciv_version) if (root / "mimiciv").is_dir() else None
        if cxr is None or iv is None:
            if up := root_above(root, "mimic-cxr-jpg", "mimiciv", levels=3):
                raise subfolder_error(data_root, up, LAYOUT)
            if (root / "files").is_dir() and (root / "files" / "mimic-cxr-jpg").is_dir():
                raise DataError(f"--data-root {root} holds files/: pass --data-root {root / 'files'} (it holds {LAYOUT})")
            what = "mimic-cxr-jpg/<version>/" if cxr is None else "mimiciv/<version>/"
            raise DataError(f"--data-root {root}: no {what} (expected {LAYOUT}, from {OBTAIN})")
        return cxr, iv

    def frame(self, data_root: Path) -> pd.DataFrame:
        key = str(data_root)
        if key in self._frames:
            return self._frames[key]
        cxr, iv = self.folders(Path(data_root))
        hosp = iv / "hosp" if (iv / "hosp").is_dir() else iv / "core"

        def need(folder: Path, name: str) -> Path:
            for cand in (folder / name, folder / name.removesuffix(".gz")):
                if cand.is_file():
                    return cand
            raise DataError(f"MIMIC file not found: {folder / name} (from {OBTAIN})")

        meta = _read(need(cxr, "mimic-cxr-2.0.0-metadata.csv.gz"), "the MIMIC-CXR metadata",
                     dtype={"dicom_id": str, "ViewPosition": str}, usecols=lambda c: c in (
                         "dicom_id", "subject_id", "study_id", "ViewPosition", "StudyDate"))
        split = _read(need(cxr, "mimic-cxr-2.0.0-split.csv.gz"), "the MIMIC-CXR split file", dtype={"dicom_id": str})
        labels = _read(need(cxr, "mimic-cxr-2.0.0-chexpert.csv.gz"), "the MIMIC-CXR CheXpert labels")
        patients = _read(need(hosp, "patients.csv.gz"), "MIMIC-IV patients", dtype={"gender": str},
                         usecols=lambda c: c in ("subject_id", "gender", "anchor_age", "anchor_year"))
        adm = _read(need(hosp, "admissions.csv.gz"), "MIMIC-IV admissions", dtype=str,
                    usecols=lambda c: c in ("subject_id", "admittime", "insurance", "race", "ethnicity"))
        for name, frame, cols in (("metadata", meta, ("dicom_id", "subject_id", "study_id", "ViewPosition",
                                                       "StudyDate")),
                                  ("split", split, ("dicom_id", "split")),
                                  ("chexpert", labels, ("subject_id", "study_id", *self.findings)),
                                  ("patients", patients, ("subject_id", "gender", "anchor_age", "anchor_year")),
                                  ("admissions", adm, ("subject_id", "admittime", "insurance"))):
            if missing := [c for c in cols if c not in frame.columns]:
                raise DataError(f"MIMIC {name} file: column(s) {', '.join(map(repr, missing))} missing")
        race_col = "race" if "race" in adm.columns else "ethnicity" if "ethnicity" in adm.columns else None
        if race_col is None:
            raise DataError("MIMIC-IV admissions: neither 'race' (v2+) nor 'ethnicity' (v1) column")

        df = meta[meta["ViewPosition"].isin(self.views)]
        df = df.merge(split[["dicom_id", "split"]], on="dicom_id", how="inner")
        df = df.merge(labels[["subject_id", "study_id", *self.findings]], on=["subject_id", "study_id"], how="inner")
        lab = df[list(self.findings)].apply(pd.to_numeric, errors="coerce").fillna(0.0)
        if bad := sorted(set(np.unique(lab.to_numpy())) - {-1.0, 0.0, 1.0}):
            raise DataError(f"MIMIC CheXpert labels must be 1, 0, -1 or blank; found {bad[:5]}")
        if self.uncertain == "drop":
            keep = ~(lab == -1.0).any(axis=1)
            df, lab = df[keep.to_numpy()], lab[keep]
        lab = lab.replace(-1.0, 1.0 if self.uncertain == "ones" else 0.0).astype(np.int64)
        df = df.reset_index(drop=True)
        lab = lab.reset_index(drop=True)
        for c in self.findings:
            df[c] = lab[c].to_numpy()
        if self.single_label:
            one = lab.to_numpy().sum(axis=1) == 1
            df = df[one].reset_index(drop=True)
            df["finding"] = [self.findings[j] for j in df[list(self.findings)].to_numpy().argmax(axis=1)]
        df["split"] = df["split"].replace({"validate": "val"})
        df = df.merge(patients, on="subject_id", how="left")
        year = pd.to_numeric(df["StudyDate"].astype(str).str[:4], errors="coerce")
        df["age"] = pd.to_numeric(df["anchor_age"], errors="coerce") + (year - pd.to_numeric(df["anchor_year"],
                                                                                              errors="coerce"))
        adm["subject_id"] = pd.to_numeric(adm["subject_id"])
        race, race_raw = _mode_per_patient(adm, race_col, group_race)
        insurance, _ = _mode_per_patient(adm, "insurance", group_insurance)
        df["race"] = df["subject_id"].map(race)
        df["race_raw"] = df["subject_id"].map(race_raw)
        df["insurance"] = df["subject_id"].map(insurance)
        sid = df["subject_id"].astype(np.int64).astype(str)
        df["file"] = (str(cxr / "files") + os.sep + "p" + sid.str[:2] + os.sep + "p" + sid + os.sep + "s"
                      + df["study_id"].astype(np.int64).astype(str) + os.sep + df["dicom_id"] + ".jpg")
        self._frames[key] = df
        return df

    def load(self, split: str, data_root: Path | None) -> RawSplit:
        if data_root is None:
            raise DataError(f"the MIMIC-CXR loader needs --data-root (the folder holding {LAYOUT})")
        df = self.frame(Path(data_root))
        part = df[df["split"] == split]
        if part.empty:
            raise DataError(f"{self.source}: no MIMIC-CXR images in split {split!r}")

        def obj(col: str) -> np.ndarray:
            return np.asarray([None if (v is None or (isinstance(v, float) and np.isnan(v))) else v
                               for v in part[col]], dtype=object)

        columns: dict[str, np.ndarray] = {
            "sex": obj("gender"), "race": obj("race"), "race_raw": obj("race_raw"), "insurance": obj("insurance"),
            "age": np.asarray([None if pd.isna(a) else float(a) for a in part["age"]], dtype=object),
            "view": part["ViewPosition"].to_numpy(dtype=object),
            "patient_id": part["subject_id"].astype(str).to_numpy(dtype=object),
            "study_id": part["study_id"].astype(str).to_numpy(dtype=object),
            **{c: part[c].to_numpy(dtype=np.int64) for c in self.findings},
        }
        if self.single_label:
            columns["finding"] = part["finding"].to_numpy(dtype=object)
        ids = part["dicom_id"].tolist()
        images = FileImages(part["file"].tolist(), prefix=f"mimic_cxr:{self.fingerprint()[:16]}:{split}",
                            sample_ids=ids, mode="L")
        return RawSplit(sample_ids=np.asarray(ids, dtype=object), columns=columns, images=images,
                        extra={"patient_id": columns["patient_id"], "view": columns["view"]})
