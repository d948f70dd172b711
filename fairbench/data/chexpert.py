"""The ``chexpert`` dataset family: CheXpert (Irvin et al., AAAI 2019) in its CSV layout.

``--data-root`` is the folder holding ``CheXpert-v1.0-small/`` (or ``CheXpert-v1.0/``), or that folder
itself. The card's ``csv`` (default ``train.csv``) lists images by ``Path`` (e.g.
``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``), with ``Sex``, ``Age``,
``Frontal/Lateral``, ``AP/PA`` and the 14 observations coded 1 (positive), 0 (negative), -1 (uncertain) or
blank (not mentioned, read as 0). Only frontal images are used.

Card options:

- ``patient_split`` (required): fractions and salt; patients are hashed into train/val/test (CheXpert's own
  validation set is tiny, so tasks split the training CSV by patient).
- ``findings`` (default ``["No Finding"]``): observation columns handed to the card as 0/1.
- ``uncertain``: ``zeros`` (U-Zeros), ``ones`` (U-Ones) or ``drop`` (leave out images with -1 in any listed
  finding); required, so every card states its policy.
- ``single_label`` (default false): keep images positive for exactly one listed finding and add a ``finding``
  column naming it (multi-class cards).
- ``demographics``: the CHEXPERT DEMO file (relative to ``--data-root``; CSV, or xlsx when ``openpyxl`` is
  installed; a CSV of the same stem is preferred) adding ``race`` (``PRIMARY_RACE``) and ``ethnicity``.

Columns: ``sex`` (Male/Female/Unknown), ``age``, ``view`` (AP/PA), ``patient_id``, each listed finding,
``finding`` (single-label cards), ``race`` and ``ethnicity`` (with demographics).
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
from fairbench.data.patient_split import PatientSplit
from fairbench.errors import DataError

__all__ = ["OBSERVATIONS", "CheXpertLoader"]

LOADER_VERSION = "1"
OBTAIN = "https://stanfordmlgroup.github.io/competitions/chexpert/ (Stanford AIMI, registration required)"
OBSERVATIONS = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
                "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
                "Pleural Other", "Fracture", "Support Devices")
_FOLDERS = ("", "CheXpert-v1.0-small", "CheXpert-v1.0")
#: what --data-root holds
LAYOUT = "CheXpert-v1.0-small/ (or CheXpert-v1.0/) with train.csv, valid.csv, train/ and valid/"
_PATIENT = re.compile(r"(patient\d+)")


class CheXpertLoader:
    needs_data_root = True

    def __init__(self, options: dict[str, Any], *, source: str) -> None:
        f = Fields(dict(options), source=source)
        self.source = source
        self.csv = f.get("csv", str, "train.csv")
        self.patient_split = PatientSplit.parse(f.sub("patient_split"))
        self.findings = tuple(f.str_list("findings", ["No Finding"]))
        if not self.findings:
            f.fail("findings", "must list at least one observation column")
        for i, name in enumerate(self.findings):
            if name not in OBSERVATIONS:
                f.fail(f"findings[{i}]", f"must be a CheXpert observation ({', '.join(OBSERVATIONS)}), "
                                         f"got {name!r}")
        self.uncertain = f.get("uncertain", str, choices=("zeros", "ones", "drop"))
        self.single_label = f.get("single_label", bool, False)
        self.demographics = f.get("demographics", str, None)
        f.no_unknown()
        self.options = dict(options)

    def fingerprint(self) -> str:
        return card_sha256({"loader": "chexpert", "version": LOADER_VERSION, "options": self.options})

    # -- files ----------------------------------------------------------------------------------
    def check_root(self, data_root: Path) -> None:
        """The data root's layout, before anything heavy runs (the CheXpert folder and its CSV); raises a
        DataError."""
        self.csv_path(data_root)

    def csv_path(self, data_root: Path) -> Path:
        tried = [Path(data_root) / d / self.csv for d in _FOLDERS]
        for p in tried:
            if p.is_file():
                return p
        if root := root_above(data_root, *(f"{d}/{self.csv}".lstrip("/") for d in _FOLDERS)):
            raise subfolder_error(data_root, root, LAYOUT)
        raise DataError(f"CheXpert CSV not found: tried {', '.join(map(str, tried))} (--data-root must hold "
                        f"CheXpert-v1.0-small/ or CheXpert-v1.0/ from {OBTAIN})")

    def frame(self, data_root: Path) -> pd.DataFrame:
        """Every usable image (frontal, uncertain policy applied) with its split, before choosing one."""
        path = self.csv_path(data_root)
        try:
            df = pd.read_csv(path, dtype={"Path": str, "Sex": str, "Frontal/Lateral": str, "AP/PA": str})
        except (ValueError, OSError, pd.errors.ParserError) as exc:
            raise DataError(f"{path}: cannot read the CheXpert CSV: {exc}") from None
        need = ["Path", "Sex", "Age", "Frontal/Lateral", *self.findings]
        if missing := [c for c in need if c not in df.columns]:
            raise DataError(f"{path}: column(s) {', '.join(repr(c) for c in missing)} missing (expected "
                            f"CheXpert's train.csv/valid.csv columns)")
        df = df[df["Frontal/Lateral"] == "Frontal"].reset_index(drop=True)
        labels = df[list(self.findings)].apply(pd.to_numeric, errors="coerce").fillna(0.0)
        if bad := sorted(set(np.unique(labels.to_numpy())) - {-1.0, 0.0, 1.0}):
            raise DataError(f"{path}: finding values must be 1, 0, -1 or blank; found {bad[:5]}")
        uncertain = (labels == -1.0).any(axis=1)
        if self.uncertain == "drop":
            keep = ~uncertain
            df, labels = df[keep].reset_index(drop=True), labels[keep].reset_index(drop=True)
        labels = labels.replace(-1.0, 1.0 if self.uncertain == "ones" else 0.0).astype(np.int64)
        for c in self.findings:
            df[c] = labels[c].to_numpy()
        if self.single_label:
            positives = labels.to_numpy().sum(axis=1)
            df = df[positives == 1].reset_index(drop=True)
            hot = df[list(self.findings)].to_numpy().argmax(axis=1)
            df["finding"] = [self.findings[j] for j in hot]
        pid = df["Path"].str.extract(_PATIENT, expand=False)
        if pid.isna().any():
            raise DataError(f"{path}: cannot find a patient id (patientNNNNN) in Path {df['Path'][pid.isna()].iloc[0]!r}")
        df["patient_id"] = pid
        df["split"] = self.patient_split.assign(pid)
        df["Age"] = pd.to_numeric(df["Age"], errors="coerce")
        if self.demographics:
            df = self._add_demographics(df, Path(data_root))
        # Path is relative to the folder above the CSV's when it starts with the CSV folder's name
        root = path.parent
        first = df["Path"].str.split("/", n=1).str[0]
        base = np.where(first == root.name, str(root.parent) + os.sep, str(root) + os.sep)
        df["file"] = base + df["Path"].to_numpy(dtype=object)
        return df

    def _add_demographics(self, df: pd.DataFrame, data_root: Path) -> pd.DataFrame:
        path = data_root / self.demographics  # type: ignore[operator]
        csv_twin = path.with_suffix(".csv")
        if path.suffix.lower() == ".xlsx" and csv_twin.is_file():
            path = csv_twin
        if not path.is_file():
            demo = Path(str(self.demographics))
            if root := root_above(data_root, str(demo), str(demo.with_suffix(".csv"))):
                raise subfolder_error(data_root, root, f"{self.demographics} and {LAYOUT}")
            raise DataError(f"CheXpert demographics file not found: {path} (CHEXPERT DEMO from {OBTAIN}; "
                            f"an xlsx may be saved as CSV with the same name)")
        try:
            if path.suffix.lower() in (".xlsx", ".xls"):
                try:
                    import openpyxl  # noqa: F401
                except ImportError:
                    raise DataError(f"{path}: reading xlsx needs openpyxl (pip install openpyxl), or save the "
                                    f"sheet as {csv_twin.name}") from None
                demo = pd.read_excel(path, dtype=str)
            else:
                demo = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (ValueError, OSError, pd.errors.ParserError) as exc:
            raise DataError(f"{path}: cannot read the demographics file: {exc}") from None
        if missing := [c for c in ("PATIENT", "PRIMARY_RACE") if c not in demo.columns]:
            raise DataError(f"{path}: column(s) {', '.join(missing)} missing (expected PATIENT, PRIMARY_RACE, "
                            f"ETHNICITY)")
        demo = demo.drop_duplicates("PATIENT").set_index("PATIENT")
        race = demo["PRIMARY_RACE"].where(demo["PRIMARY_RACE"].str.strip() != "", None)
        eth = (demo["ETHNICITY"].where(demo["ETHNICITY"].str.strip() != "", None)
               if "ETHNICITY" in demo.columns else None)
        df["race"] = df["patient_id"].map(race).astype(object).where(df["patient_id"].isin(race.index), None)
        df["ethnicity"] = (df["patient_id"].map(eth).astype(object).where(df["patient_id"].isin(eth.index), None)
                           if eth is not None else None)
        return df

    # -- loading --------------------------------------------------------------------------------
    def load(self, split: str, data_root: Path | None) -> RawSplit:
        if data_root is None:
            raise DataError("the CheXpert loader needs --data-root (the folder holding CheXpert-v1.0-small/)")
        df = self.frame(Path(data_root))
        part = df[df["split"] == split]
        if part.empty:
            raise DataError(f"{self.source}: no CheXpert images in split {split!r}")
        ids = part["Path"].tolist()
        columns: dict[str, np.ndarray] = {
            "sex": part["Sex"].to_numpy(dtype=object),
            "age": np.asarray([None if pd.isna(a) else int(a) for a in part["Age"]], dtype=object),
            "view": part["AP/PA"].fillna("").to_numpy(dtype=object) if "AP/PA" in part else
                    np.full(len(part), "", dtype=object),
            "patient_id": part["patient_id"].to_numpy(dtype=object),
            **{c: part[c].to_numpy(dtype=np.int64) for c in self.findings},
        }
        if self.single_label:
            columns["finding"] = part["finding"].to_numpy(dtype=object)
        if self.demographics:
            columns["race"] = part["race"].to_numpy(dtype=object)
            columns["ethnicity"] = part["ethnicity"].to_numpy(dtype=object)
        images = FileImages(part["file"].tolist(), prefix=f"chexpert:{self.fingerprint()[:16]}:{split}",
                            sample_ids=ids, mode="L")
        extra = {"patient_id": columns["patient_id"], "view": columns["view"]}
        return RawSplit(sample_ids=np.asarray(ids, dtype=object), columns=columns, images=images, extra=extra)
