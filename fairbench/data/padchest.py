"""The ``padchest`` dataset family: PadChest (Bustos et al., Medical Image Analysis 2020) in its download layout.

Metadata is PadChest's ``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv(.gz)`` (``metadata:
torchxrayvision``, the default, reads the copy packaged in ``torchxrayvision``; or a path, relative paths read
from ``--data-root``). Images are the 16-bit PNGs ``<ImageID>`` under ``--data-root``, in the numbered folders
the download ships (``<ImageDir>/<ImageID>``, ``ImageDir`` 0-54) or in one flat folder (torchxrayvision's layout).
16-bit pixels are scaled to 8 bits by each image's own range (fairbench's decoder for integer images).

Recipe (card options):

- ``views`` (default ``[PA]``): ``Projection`` values to keep (PA, L, AP, AP_horizontal, COSTAL, ...);
  ``ViewPosition_DICOM`` is blank on 69k rows, so ``Projection`` is the usable view field.
- rows whose ``Labels`` is empty (null or ``['']``) or contains ``exclude`` are left out (no usable label).
- ``finding``: ``normal`` when the label list, tokens stripped, is exactly ``['normal']``; otherwise the
  findings joined by ``|`` (a list that mixes ``normal`` with findings counts as a finding).
- ``patient_split`` (required): patients hashed into train/val/test.

Columns: ``finding``, ``sex`` (``PatientSex_DICOM``: M, F, O; blank = missing), ``age`` (study year from
``StudyDate_DICOM`` minus ``PatientBirth``; blank birth year = missing), ``view`` (``Projection``), ``patient_id``.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fairbench.cards import Fields, card_sha256
from fairbench.data.base import RawSplit
from fairbench.data.files import FileImages, root_above, subfolder_error, torchxrayvision_data
from fairbench.data.patient_split import PatientSplit
from fairbench.errors import DataError

__all__ = ["PadChestLoader", "packaged_padchest_metadata", "parse_labels", "read_padchest_metadata"]

LOADER_VERSION = "1"
METADATA_NAME = "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv"
OBTAIN = "https://bimcv.cipf.es/bimcv-projects/padchest/ (BIMCV, registration required)"
LAYOUT = "the PadChest PNGs in its numbered folders 0/ ... 54/ (or in one flat folder)"
COLUMNS = ("ImageID", "ImageDir", "StudyDate_DICOM", "PatientID", "PatientBirth", "PatientSex_DICOM", "Projection",
           "Labels")


def packaged_padchest_metadata() -> Path:
    """``torchxrayvision``'s copy of PadChest's label file, located without importing the (heavy) package."""
    return torchxrayvision_data(f"{METADATA_NAME}.gz", f"the PadChest label file ({METADATA_NAME})")


def parse_labels(text: Any) -> list[str] | None:
    """PadChest's ``Labels`` cell (a Python list as text) as stripped, non-empty tokens; None if unreadable."""
    if text is None or (isinstance(text, float) and np.isnan(text)) or str(text).strip() in ("", "nan"):
        return []
    try:
        value = ast.literal_eval(str(text))
    except (ValueError, SyntaxError):
        return None
    if not isinstance(value, (list, tuple)):
        return None
    return [str(t).strip() for t in value if str(t).strip()]


def read_padchest_metadata(path: Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"PadChest label file not found: {path} ({METADATA_NAME} from {OBTAIN}, or the copy in "
                        f"torchxrayvision)")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, usecols=lambda c: c in COLUMNS)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read the PadChest label file: {exc}") from None
    if missing := [c for c in COLUMNS if c not in df.columns]:
        raise DataError(f"{path}: not the PadChest label file: column(s) {', '.join(map(repr, missing))} missing")
    return df


class PadChestLoader:
    needs_data_root = True

    def __init__(self, options: dict[str, Any], *, source: str) -> None:
        f = Fields(dict(options), source=source)
        self.source = source
        self.metadata = f.get("metadata", str, "torchxrayvision")
        self.views = tuple(f.str_list("views", ["PA"]))
        self.patient_split = PatientSplit.parse(f.sub("patient_split"))
        f.no_unknown()
        self.options = dict(options)
        self._frame: pd.DataFrame | None = None

    def fingerprint(self) -> str:
        return card_sha256({"loader": "padchest", "version": LOADER_VERSION, "options": self.options})

    def metadata_path(self, data_root: Path | None) -> Path:
        if self.metadata == "torchxrayvision":
            return packaged_padchest_metadata()
        p = Path(self.metadata)
        if not p.is_absolute() and data_root is not None:
            p = Path(data_root) / p
        return p

    def frame(self, data_root: Path | None = None) -> pd.DataFrame:
        """Every usable row (views kept, labelled) with finding, sex, age, patient_id and split; no image paths."""
        if self._frame is not None:
            return self._frame
        path = self.metadata_path(data_root)
        df = read_padchest_metadata(path)
        df = df[df["Projection"].isin(self.views)].reset_index(drop=True)
        memo = {t: parse_labels(t) for t in df["Labels"].unique()}  # label lists repeat: parse each once
        tokens = [memo[t] for t in df["Labels"]]
        if any(t is None for t in tokens):
            i = next(i for i, t in enumerate(tokens) if t is None)
            raise DataError(f"{path}: image {df['ImageID'].iloc[i]}: Labels {df['Labels'].iloc[i]!r} is not a list")
        keep = np.asarray([bool(t) and "exclude" not in t for t in tokens])
        df = df[keep].reset_index(drop=True)
        tokens = [t for t, k in zip(tokens, keep) if k]
        df["finding"] = ["normal" if t == ["normal"] or set(t) == {"normal"} else
                         "|".join(x for x in dict.fromkeys(t) if x != "normal") for t in tokens]
        birth = pd.to_numeric(df["PatientBirth"], errors="coerce")
        year = pd.to_numeric(df["StudyDate_DICOM"].str[:4], errors="coerce")
        df["age"] = year - birth
        df["sex"] = df["PatientSex_DICOM"].where(df["PatientSex_DICOM"].str.strip() != "", None)
        df["patient_id"] = df["PatientID"]
        df["split"] = self.patient_split.assign(df["patient_id"])
        self._frame = df
        return df

    def image_paths(self, data_root: Path, part: pd.DataFrame) -> list[str]:
        root = Path(data_root)
        if not root.is_dir():
            raise DataError(f"--data-root {root}: not a directory (expected {LAYOUT}, from {OBTAIN})")
        dirs = {d: (root / d).is_dir() for d in part["ImageDir"].unique()}
        if not any(dirs.values()) and not any(root.glob("*.png")):
            if up := root_above(root, "[0-9]", "[0-9][0-9]", levels=1):
                raise subfolder_error(data_root, up, LAYOUT)
        return [f"{root}{os.sep}{d}{os.sep}{i}" if dirs[d] else f"{root}{os.sep}{i}"
                for d, i in zip(part["ImageDir"], part["ImageID"])]

    def load(self, split: str, data_root: Path | None) -> RawSplit:
        if data_root is None:
            raise DataError(f"the PadChest loader needs --data-root (the folder holding {LAYOUT})")
        df = self.frame(data_root)
        part = df[df["split"] == split]
        if part.empty:
            raise DataError(f"{self.source}: no PadChest images in split {split!r}")
        ids = part["ImageID"].tolist()
        columns = {
            "finding": part["finding"].to_numpy(dtype=object),
            "sex": part["sex"].to_numpy(dtype=object),
            "age": np.asarray([None if pd.isna(a) else float(a) for a in part["age"]], dtype=object),
            "view": part["Projection"].to_numpy(dtype=object),
            "patient_id": part["patient_id"].to_numpy(dtype=object),
        }
        images = FileImages(self.image_paths(Path(data_root), part), prefix=f"padchest:{self.fingerprint()[:16]}:{split}",
                            sample_ids=ids, mode="L")
        return RawSplit(sample_ids=np.asarray(ids, dtype=object), columns=columns, images=images,
                        extra={"patient_id": columns["patient_id"], "view": columns["view"]})
