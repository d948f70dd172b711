"""Dermatology datasets in their download layouts: HAM10000 (``ham10000``) and Fitzpatrick17k (``fitzpatrick17k``).

**HAM10000** (Tschandl et al., Sci Data 2018; ISIC 2018 task 3). ``--data-root`` holds
``HAM10000_metadata.csv`` (columns ``lesion_id, image_id, dx, dx_type, age, sex, localization[, dataset]``) and
the JPEGs ``<image_id>.jpg`` in ``HAM10000_images_part_1/`` and ``HAM10000_images_part_2/`` (the Kaggle/ISIC
folder names; ``HAM10000_images_part1/``, ``part2/``, MEDFAIR's single ``HAM10000_images/`` and a flat root are
found too). Images of one lesion share a ``lesion_id``; splits are by lesion (``lesion_split``), so no lesion
is in two splits. Columns: ``dx`` (akiec, bcc, bkl, df, mel, nv, vasc), ``dx_type``, ``age`` (blank =
missing), ``sex`` (male / female / unknown, as stored), ``localization``, ``lesion_id`` (also ``patient_id``).

**Fitzpatrick17k** (Groh et al., CVPR Workshops 2021). ``--data-root`` holds ``fitzpatrick17k.csv`` and the
downloaded images named by ``md5hash``: ``images/<md5hash>.jpg`` (MEDFAIR's layout), or ``<md5hash>.jpg`` /
``<md5hash>`` in ``images/`` or the root (Groh's ``train.py`` opens ``<root>/<md5hash>``). Splits are by
``md5hash`` (``image_split``): the dataset has no official split and no patient ids. Columns: ``label`` (114
conditions), ``three_partition_label`` (malignant / benign / non-neoplastic), ``nine_partition_label``,
``skin_type`` (``fitzpatrick_scale``, or ``fitzpatrick`` in the 2021 file: 1-6, -1 = unknown), ``skin_type_centaur``
(``fitzpatrick_centaur`` when present), ``qc``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fairbench.cards import Fields, card_sha256
from fairbench.data.base import RawSplit
from fairbench.data.files import FileImages, root_above, subfolder_error
from fairbench.data.patient_split import PatientSplit
from fairbench.errors import DataError

__all__ = ["Fitzpatrick17kLoader", "HAM10000Loader"]

LOADER_VERSION = "1"
HAM_OBTAIN = ("https://doi.org/10.7910/DVN/DBW86T (Harvard Dataverse: HAM10000_metadata, HAM10000_images_part1.zip "
              "and part2.zip) or the ISIC 2018 challenge task 3 training data")
HAM_LAYOUT = "HAM10000_metadata.csv with HAM10000_images_part_1/ and HAM10000_images_part_2/"
HAM_FOLDERS = ("HAM10000_images_part_1", "HAM10000_images_part_2", "HAM10000_images_part1", "HAM10000_images_part2",
               "HAM10000_images", "")
HAM_COLUMNS = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization")
FITZ_OBTAIN = "https://github.com/mattgroh/fitzpatrick17k (fitzpatrick17k.csv; images from its url column or by request)"
FITZ_LAYOUT = "fitzpatrick17k.csv with images/<md5hash>.jpg"


def _read_csv(path: Path, what: str, obtain: str) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read the {what}: {exc} (from {obtain})") from None


def _blank_to_none(values: pd.Series) -> np.ndarray:
    return np.asarray([None if str(v).strip() == "" else str(v).strip() for v in values], dtype=object)


def _index_folders(folders: list[Path]) -> dict[str, str]:
    """File name -> folder, first folder wins."""
    where: dict[str, str] = {}
    for d in folders:
        with os.scandir(d) as it:
            for e in it:
                where.setdefault(e.name, str(d))
    return where


class HAM10000Loader:
    needs_data_root = True

    def __init__(self, options: dict[str, Any], *, source: str) -> None:
        f = Fields(dict(options), source=source)
        self.source = source
        self.metadata = f.get("metadata", str, "HAM10000_metadata.csv")
        self.lesion_split = PatientSplit.parse(f.sub("lesion_split"))
        f.no_unknown()
        self.options = dict(options)

    def fingerprint(self) -> str:
        return card_sha256({"loader": "ham10000", "version": LOADER_VERSION, "options": self.options})

    def metadata_path(self, data_root: Path) -> Path:
        root = Path(data_root)
        for name in (self.metadata, Path(self.metadata).stem):  # the Dataverse file has no extension
            if (root / name).is_file():
                return root / name
        if up := root_above(root, self.metadata, Path(self.metadata).stem):
            raise subfolder_error(data_root, up, HAM_LAYOUT)
        raise DataError(f"HAM10000 metadata not found: {root / self.metadata} (--data-root must hold "
                        f"{HAM_LAYOUT}; from {HAM_OBTAIN})")

    def frame(self, data_root: Path) -> pd.DataFrame:
        path = self.metadata_path(data_root)
        df = _read_csv(path, "HAM10000 metadata", HAM_OBTAIN)
        if missing := [c for c in HAM_COLUMNS if c not in df.columns]:
            raise DataError(f"{path}: column(s) {', '.join(map(repr, missing))} missing (expected HAM10000's "
                            f"{', '.join(HAM_COLUMNS)})")
        if df["image_id"].duplicated().any():
            raise DataError(f"{path}: image {df.loc[df['image_id'].duplicated(), 'image_id'].iloc[0]} is listed twice")
        df["split"] = self.lesion_split.assign(df["lesion_id"])
        root = Path(data_root)
        folders = [root / d if d else root for d in HAM_FOLDERS if (root / d if d else root).is_dir()]
        where = _index_folders(folders)
        names = df["image_id"] + ".jpg"
        if not any(n in where for n in names[:1000]):
            if up := root_above(root, HAM_FOLDERS[0], HAM_FOLDERS[2], HAM_FOLDERS[4]):
                raise subfolder_error(data_root, up, HAM_LAYOUT)
        fallback = str(root / HAM_FOLDERS[0])
        df["file"] = [f"{where.get(n, fallback)}{os.sep}{n}" for n in names]
        return df

    def load(self, split: str, data_root: Path | None) -> RawSplit:
        if data_root is None:
            raise DataError(f"the HAM10000 loader needs --data-root (the folder holding {HAM_LAYOUT})")
        df = self.frame(Path(data_root))
        part = df[df["split"] == split]
        if part.empty:
            raise DataError(f"{self.source}: no HAM10000 images in split {split!r}")
        ages = pd.to_numeric(part["age"].replace("", np.nan), errors="coerce")
        columns = {c: _blank_to_none(part[c]) for c in ("dx", "dx_type", "sex", "localization", "lesion_id")}
        columns["age"] = np.asarray([None if pd.isna(a) else float(a) for a in ages], dtype=object)
        columns["patient_id"] = columns["lesion_id"]
        if "dataset" in part.columns:
            columns["dataset"] = _blank_to_none(part["dataset"])
        ids = part["image_id"].tolist()
        images = FileImages(part["file"].tolist(), prefix=f"ham10000:{self.fingerprint()[:16]}:{split}",
                            sample_ids=ids, mode="RGB")
        return RawSplit(sample_ids=np.asarray(ids, dtype=object), columns=columns, images=images,
                        extra={"lesion_id": columns["lesion_id"]})


class Fitzpatrick17kLoader:
    needs_data_root = True

    def __init__(self, options: dict[str, Any], *, source: str) -> None:
        f = Fields(dict(options), source=source)
        self.source = source
        self.csv = f.get("csv", str, "fitzpatrick17k.csv")
        self.image_split = PatientSplit.parse(f.sub("image_split"))
        f.no_unknown()
        self.options = dict(options)

    def fingerprint(self) -> str:
        return card_sha256({"loader": "fitzpatrick17k", "version": LOADER_VERSION, "options": self.options})

    def frame(self, data_root: Path) -> pd.DataFrame:
        root = Path(data_root)
        path = root / self.csv
        if not path.is_file():
            if up := root_above(root, self.csv):
                raise subfolder_error(data_root, up, FITZ_LAYOUT)
            raise DataError(f"Fitzpatrick17k CSV not found: {path} (--data-root must hold {FITZ_LAYOUT}; "
                            f"from {FITZ_OBTAIN})")
        df = _read_csv(path, "Fitzpatrick17k CSV", FITZ_OBTAIN)
        scale = "fitzpatrick_scale" if "fitzpatrick_scale" in df.columns else "fitzpatrick"
        need = ["md5hash", scale, "label", "three_partition_label", "nine_partition_label"]
        if missing := [c for c in need if c not in df.columns]:
            raise DataError(f"{path}: column(s) {', '.join(map(repr, missing))} missing (expected "
                            f"fitzpatrick17k.csv's md5hash, fitzpatrick_scale, label, three_partition_label, ...)")
        if df["md5hash"].duplicated().any():
            raise DataError(f"{path}: md5hash {df.loc[df['md5hash'].duplicated(), 'md5hash'].iloc[0]} is listed twice")
        df["skin_type"] = df[scale]
        df["split"] = self.image_split.assign(df["md5hash"])
        folders = [d for d in (root / "images", root) if d.is_dir()]
        where = _index_folders(folders)
        files = []
        for h in df["md5hash"]:
            for name in (f"{h}.jpg", h, f"{h}.png", f"{h}.jpeg"):
                if name in where:
                    files.append(f"{where[name]}{os.sep}{name}")
                    break
            else:
                files.append(str(root / "images" / f"{h}.jpg"))
        df["file"] = files
        return df

    def load(self, split: str, data_root: Path | None) -> RawSplit:
        if data_root is None:
            raise DataError(f"the Fitzpatrick17k loader needs --data-root (the folder holding {FITZ_LAYOUT})")
        df = self.frame(Path(data_root))
        part = df[df["split"] == split]
        if part.empty:
            raise DataError(f"{self.source}: no Fitzpatrick17k images in split {split!r}")
        columns = {c: _blank_to_none(part[c]) for c in ("label", "three_partition_label", "nine_partition_label",
                                                        "skin_type", "md5hash")}
        if "fitzpatrick_centaur" in part.columns:
            columns["skin_type_centaur"] = _blank_to_none(part["fitzpatrick_centaur"])
        columns["qc"] = _blank_to_none(part["qc"]) if "qc" in part.columns else np.full(len(part), None, object)
        ids = part["md5hash"].tolist()
        images = FileImages(part["file"].tolist(), prefix=f"fitzpatrick17k:{self.fingerprint()[:16]}:{split}",
                            sample_ids=ids, mode="RGB")
        return RawSplit(sample_ids=np.asarray(ids, dtype=object), columns=columns, images=images)
