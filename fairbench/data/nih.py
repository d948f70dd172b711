"""The ``nih`` dataset family: NIH ChestX-ray14 in its upstream layout.

Metadata is NIH's ``Data_Entry_2017_v2020.csv`` (the copy packaged in ``torchxrayvision``, or a user's own).
Images are the 1024 x 1024 PNGs under ``--data-root``, either in NIH's twelve folders
``images_001/images/ ... images_012/images/`` or in one flat ``images/``.

A card chooses its samples in one of two ways (``dataset.options``):

- ``split_file``: a committed CSV (relative to the task folder) listing every sample with its split, built
  from the metadata by the card's ``recipe`` with ``fairbench tasks build`` (see :mod:`fairbench.data.nih_recipe`).
  Nothing but this file and the images is read at run time.
- ``patient_split``: every metadata row (optionally ``views`` and ``single_label`` filtered), split by patient
  with :class:`~fairbench.data.patient_split.PatientSplit`. ``metadata`` says which file: ``torchxrayvision``
  (default) or a path (relative paths are read from ``--data-root``).

Columns handed to the task card: ``finding`` (NIH's ``Finding Labels``, e.g. ``Effusion``, ``No Finding``,
``Atelectasis|Effusion``), ``sex`` (M/F), ``age`` (years), ``view`` (PA/AP), ``patient_id``; ``patient_id``
and ``view`` also travel into the predictions.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fairbench.cards import Fields, card_sha256
from fairbench.data.base import RawSplit
from fairbench.data.files import FileImages, root_above, subfolder_error, torchxrayvision_data
from fairbench.data.patient_split import PatientSplit
from fairbench.errors import CardError, DataError

__all__ = [
    "OBTAIN",
    "SPLIT_COLUMNS",
    "NIHLoader",
    "packaged_metadata",
    "read_metadata",
    "read_split_file",
    "resolve_image_paths",
]

LOADER_VERSION = "1"
METADATA_NAME = "Data_Entry_2017_v2020.csv"
OBTAIN = "https://nihcc.app.box.com/v/ChestXray-NIHCC (images_001.tar.gz ... images_012.tar.gz)"
#: what --data-root holds
LAYOUT = "images_001/images/ ... images_012/images/ with the PNGs, or one flat images/"
_BATCH = "images_[0-9][0-9][0-9]/images"
#: the committed split file's columns, in order
SPLIT_COLUMNS = ("image_index", "patient_id", "finding", "sex", "age", "view", "split")
_META_COLUMNS = {"Image Index": "image_index", "Finding Labels": "finding", "Patient ID": "patient_id",
                 "Patient Age": "age", "Patient Gender": "sex", "View Position": "view"}


def packaged_metadata() -> Path:
    """``torchxrayvision``'s copy of the metadata, located without importing the (heavy) package."""
    return torchxrayvision_data(f"{METADATA_NAME}.gz", f"the NIH metadata ({METADATA_NAME})")


def read_metadata(path: Path) -> pd.DataFrame:
    """NIH metadata (``.csv`` or ``.csv.gz``) with columns renamed to image_index, finding, patient_id, age,
    sex, view."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"NIH metadata file not found: {path} (it is {METADATA_NAME} from {OBTAIN}, or the "
                        f"copy in torchxrayvision)")
    try:
        df = pd.read_csv(path, dtype={"Image Index": str, "Finding Labels": str, "Patient Gender": str,
                                      "View Position": str})
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read the NIH metadata CSV: {exc}") from None
    missing = [c for c in _META_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: not NIH metadata: column(s) {', '.join(repr(c) for c in missing)} missing "
                        f"(expected the columns of {METADATA_NAME})")
    df = df[list(_META_COLUMNS)].rename(columns=_META_COLUMNS)
    for col in ("patient_id", "age"):
        values = pd.to_numeric(df[col], errors="coerce")
        if values.isna().any():
            row = int(np.flatnonzero(values.isna().to_numpy())[0])
            raise DataError(f"{path}: column '{col}' has a non-numeric value {df[col].iloc[row]!r} "
                            f"(image {df['image_index'].iloc[row]})")
        df[col] = values.astype(np.int64)
    if df["image_index"].duplicated().any():
        dup = df.loc[df["image_index"].duplicated(), "image_index"].iloc[0]
        raise DataError(f"{path}: image {dup} is listed twice")
    return df


def read_split_file(path: Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"split file not found: {path} (regenerate it with `fairbench tasks build`)")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    if tuple(df.columns) != SPLIT_COLUMNS:
        raise DataError(f"{path}: columns must be {', '.join(SPLIT_COLUMNS)}; got {', '.join(df.columns)}")
    df["patient_id"] = df["patient_id"].astype(np.int64)
    df["age"] = df["age"].astype(np.int64)
    return df


def resolve_image_paths(data_root: Path, names: list[str]) -> list[str]:
    """Where each image is under ``data_root`` (flat ``images/`` or ``images_NNN/images/``). Images not
    found get the path where they were expected, so checks can name them."""
    data_root = Path(data_root)
    if not data_root.is_dir():
        raise DataError(f"--data-root {data_root}: not a directory (expected NIH ChestX-ray14 with images/ or "
                        f"images_001/images/ ... from {OBTAIN})")
    if re.fullmatch(r"images_\d{3}", data_root.name) and (root := root_above(data_root, _BATCH, levels=1)):
        raise subfolder_error(data_root, root, LAYOUT)  # its images/ would pass for the flat layout
    dirs = [d for d in [data_root / "images", *sorted(data_root.glob("images_*/images"))] if d.is_dir()]
    if not dirs:
        if root := root_above(data_root, _BATCH) or root_above(data_root, "images", levels=1):
            raise subfolder_error(data_root, root, LAYOUT)
        raise DataError(f"--data-root {data_root}: no NIH image folder (expected images/ or images_001/images/ "
                        f"... images_012/images/; download from {OBTAIN})")
    if len(dirs) == 1:
        return [f"{dirs[0]}{os.sep}{n}" for n in names]
    where: dict[str, str] = {}
    for d in dirs:
        for name in _listdir(d):
            where.setdefault(name, str(d))
    fallback = str(data_root / "images_???" / "images")
    return [f"{where.get(n, fallback)}{os.sep}{n}" for n in names]


def _listdir(d: Path) -> list[str]:
    with os.scandir(d) as it:
        return [e.name for e in it]


class NIHLoader:
    needs_data_root = True
    accepts_card_dir = True

    def __init__(self, options: dict[str, Any], *, source: str, card_dir: Path | None = None) -> None:
        f = Fields(dict(options), source=source)
        self.source = source
        self.card_dir = Path(card_dir) if card_dir is not None else None
        self.split_file = f.get("split_file", str, None)
        self.metadata = f.get("metadata", str, None)
        recipe = f.get("recipe", dict, None)
        self.patient_split = (PatientSplit.parse(f.sub("patient_split"))
                              if f.get("patient_split", dict, None) is not None else None)
        self.views = tuple(f.str_list("views", ["PA", "AP"]))
        self.single_label = f.get("single_label", bool, False)
        f.no_unknown()
        if (self.split_file is None) == (self.patient_split is None):
            f.fail("split_file", "or 'patient_split' must be given, not both and not neither (a committed "
                                 "split file, or a patient-level split of the whole metadata)")
        if bad := sorted(set(self.views) - {"PA", "AP"}):
            f.fail("views", f"must list PA and/or AP, got {bad}")
        if self.split_file is not None:
            if self.card_dir is None:
                raise CardError(f"{source}: 'split_file' needs the task folder (load the loader through its card)")
            for key in ("views", "single_label", "metadata"):
                if key in options:
                    f.fail(key, "applies to 'patient_split' only; a split file's recipe lists its own filters")
        elif recipe is not None:
            f.fail("recipe", "applies to 'split_file' only (it says how `fairbench tasks build` writes the file)")
        self.recipe = None
        if recipe is not None:
            from fairbench.data.nih_recipe import Recipe

            self.recipe = Recipe.parse(Fields(recipe, source=source, path="recipe"))
        self.options = dict(options)

    # -- identity -------------------------------------------------------------------------------
    def split_file_path(self) -> Path:
        assert self.split_file is not None and self.card_dir is not None
        return self.card_dir / self.split_file

    def fingerprint(self) -> str:
        content = ""
        if self.split_file is not None:
            path = self.split_file_path()
            content = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"
        return card_sha256({"loader": "nih", "version": LOADER_VERSION, "options": self.options,
                            "split_file_sha256": content})

    # -- loading --------------------------------------------------------------------------------
    def check_root(self, data_root: Path) -> None:
        """The data root's layout, before anything heavy runs (metadata beside it, image folders under it);
        raises the loader's own DataError."""
        meta = self.metadata_path(data_root)
        resolve_image_paths(data_root, [])
        if not meta.is_file():
            raise DataError(f"{self.source}: metadata file not found: {meta}")

    def metadata_path(self, data_root: Path | None) -> Path:
        if self.metadata in (None, "torchxrayvision"):
            return packaged_metadata()
        p = Path(self.metadata).expanduser()
        if not p.is_absolute():
            if data_root is None:
                raise DataError(f"{self.source}: metadata {self.metadata!r} is relative to --data-root; pass it")
            p = Path(data_root) / p
            if not p.is_file() and (root := root_above(data_root, self.metadata)):
                raise subfolder_error(data_root, root, f"{self.metadata} and {LAYOUT}")
        return p

    def samples(self, data_root: Path | None) -> pd.DataFrame:
        """Every sample of the task with its split (columns :data:`SPLIT_COLUMNS`)."""
        if self.split_file is not None:
            return read_split_file(self.split_file_path())
        assert self.patient_split is not None
        df = read_metadata(self.metadata_path(data_root))
        df = df[df["view"].isin(self.views)]
        if self.single_label:
            df = df[~df["finding"].str.contains("|", regex=False)]
        df = df.assign(split=self.patient_split.assign(df["patient_id"]))
        return df[list(SPLIT_COLUMNS)].reset_index(drop=True)

    def load(self, split: str, data_root: Path | None) -> RawSplit:
        if data_root is None:
            raise DataError("the NIH loader needs --data-root (the folder holding images/ or images_NNN/)")
        df = self.samples(data_root)
        known = sorted(df["split"].unique())
        part = df[df["split"] == split]
        if part.empty:
            raise DataError(f"{self.source}: no samples in split {split!r} (splits present: {', '.join(known)})")
        names = part["image_index"].tolist()
        paths = resolve_image_paths(Path(data_root), names)
        images = FileImages(paths, prefix=f"nih:{self.fingerprint()[:16]}:{split}", sample_ids=names, mode="L",
                            square=True)  # NIH distributes every image at 1024 x 1024
        columns = {c: part[c].to_numpy(dtype=object) for c in ("finding", "sex", "age", "view", "patient_id")}
        extra = {"patient_id": part["patient_id"].to_numpy(dtype=np.int64),
                 "view": part["view"].to_numpy(dtype=object)}
        return RawSplit(sample_ids=np.asarray(names, dtype=object), columns=columns, images=images, extra=extra)

    # -- building the committed split file ------------------------------------------------------
    def build_split_file(self, card: Any, *, metadata: Path | None = None, out_dir: Path | None = None) -> Path:
        """Run the card's recipe on the metadata and write the split file (to the task folder by default)."""
        from fairbench.data.nih_recipe import build

        if self.split_file is None or self.recipe is None:
            raise CardError(f"{self.source}: task '{card.name}' has no 'split_file' and 'recipe' to build")
        meta = read_metadata(metadata if metadata is not None else packaged_metadata())
        self.recipe.check_against(card)
        out = Path(out_dir) if out_dir is not None else self.split_file_path().parent
        return build(meta, self.recipe, out / Path(self.split_file).name)
