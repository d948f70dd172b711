"""The ``csv`` dataset family: any folder of images described by a manifest (CSV or parquet).

A manifest has one row per image: an image path column, a label column, one column per protected attribute,
and optionally a patient id column and a split column. Nothing else is assumed about the dataset, so a
hospital's own export works without code: ``fairbench tasks new`` writes a card for it.

Card options (``dataset.options``):

- ``manifest`` (required): the CSV (``.csv``, ``.csv.gz``, ``.tsv``) or parquet file. An absolute path, or a
  path relative to ``--data-root`` when one is given, else to the card's folder.
- ``image`` (required): the column holding each image's path. Relative paths resolve against ``image_root``
  when the card sets it, else against ``--data-root`` when one is given, else against the manifest's folder.
- ``image_root``: see ``image`` (absolute, or relative to the manifest's folder).
- ``patient``: the patient id column. Without it each row is its own patient (say so in the README: images of
  one patient may then fall into different splits).
- ``split``: the split column; its values must be ``train``, ``val`` or ``test`` after ``split_map``
  (e.g. ``{validate: val, valid: val}``). Without it, patients are hashed into splits by ``patient_split``
  (fractions and salt), as the other loaders split.
- ``patient_split``: ``{train: 0.7, val: 0.1, test: 0.2, salt: <name>-v1}`` (required when there is no
  ``split`` column).
- ``sample_id``: a column of unique sample ids (default: the image path as written in the manifest).
- ``mode``: ``RGB`` (default) or ``L``: how images are decoded.

Columns handed to the card: every column of the manifest, with values as written (blank cells are missing),
plus ``patient_id``. The card's ``label.column`` and ``attributes.*.column`` pick from them.

Errors name the manifest, the row (its line in a CSV file, header = line 1) and the column: a split value
outside train/val/test, a patient in two splits, a duplicated sample id, a blank image path. Missing or
unreadable image files are listed by ``fairbench data check`` (and skipped at run time only with
``--allow-skip-unreadable``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fairbench.cards import Fields, card_sha256
from fairbench.data.base import RawSplit
from fairbench.data.files import FileImages
from fairbench.data.patient_split import PatientSplit
from fairbench.errors import DataError

__all__ = ["SPLIT_VALUES", "CSVLoader", "read_manifest"]

LOADER_VERSION = "1"
SPLIT_VALUES = ("train", "val", "test")


def read_manifest(path: Path) -> pd.DataFrame:
    """A manifest as strings (blank cells as missing); one-line errors for unreadable files."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest not found: {path}")
    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            df = pd.read_parquet(path)
            df = df.astype(object).where(df.notna(), None)
            df.columns = [str(c) for c in df.columns]
            return df
        sep = "\t" if name.endswith((".tsv", ".tsv.gz")) else ","
        df = pd.read_csv(path, dtype=str, keep_default_na=False, sep=sep)
    except (ValueError, OSError, pd.errors.ParserError, ImportError) as exc:
        raise DataError(f"{path}: cannot read the manifest: {exc}") from None
    if df.empty:
        raise DataError(f"{path}: the manifest has no rows")
    df = df.apply(lambda col: col.str.strip())
    return df.where(df != "", None)


def row_name(manifest: Path, index: int) -> str:
    """How errors name a row: its line in a CSV (header = line 1), its index in a parquet file."""
    if str(manifest).lower().endswith((".parquet", ".pq")):
        return f"{manifest} row {index}"
    return f"{manifest} line {index + 2}"


class CSVLoader:
    needs_data_root = False  # the manifest's folder is the default root; --data-root is optional
    accepts_card_dir = True

    def __init__(self, options: dict[str, Any], *, source: str, card_dir: Path | None = None) -> None:
        f = Fields(dict(options), source=source)
        self.source = source
        self.card_dir = Path(card_dir) if card_dir is not None else None
        self.manifest = f.get("manifest", str)
        self.image_col = f.get("image", str)
        self.image_root = f.get("image_root", str, None)
        self.patient_col = f.get("patient", str, None)
        self.split_col = f.get("split", str, None)
        self.sample_id_col = f.get("sample_id", str, None)
        self.mode = f.get("mode", str, "RGB", choices=("RGB", "L"))
        split_map = f.get("split_map", dict, {})
        self.split_map = {str(k): str(v) for k, v in split_map.items()}
        for k, v in self.split_map.items():
            if v not in SPLIT_VALUES:
                f.fail(f"split_map.{k}", f"must map to one of {', '.join(SPLIT_VALUES)}, got {v!r}")
        self.patient_split = PatientSplit.parse(f.sub("patient_split")) if "patient_split" in f.data else None
        if self.split_col is None and self.patient_split is None:
            f.fail("patient_split", "is required when the manifest has no split column (option 'split'): "
                                    "e.g. {train: 0.7, val: 0.1, test: 0.2, salt: mytask-v1}")
        f.no_unknown()
        self.options = dict(options)
        self._frames: dict[str, pd.DataFrame] = {}

    # -- files ----------------------------------------------------------------------------------
    def manifest_path(self, data_root: Path | None) -> Path:
        p = Path(os.path.expanduser(self.manifest))
        if p.is_absolute():
            return p
        if data_root is not None:
            return Path(data_root) / p
        if self.card_dir is not None:
            return self.card_dir / p
        return p.absolute()

    def image_base(self, manifest: Path, data_root: Path | None) -> Path:
        if self.image_root is not None:
            root = Path(os.path.expanduser(self.image_root))
            return root if root.is_absolute() else manifest.parent / root
        if data_root is not None:
            return Path(data_root)
        return manifest.parent

    def _manifest_sha256(self, path: Path) -> str:
        h = hashlib.sha256()
        try:
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
        except OSError:
            return "missing"
        return h.hexdigest()

    def fingerprint(self) -> str:
        # The manifest's bytes are part of the fingerprint (a relabelled row changes the data); a relative
        # manifest path that needs --data-root is hashed by name only until it is read.
        path = self.manifest_path(None)
        return card_sha256({"loader": "csv", "version": LOADER_VERSION, "options": self.options,
                            "manifest_sha256": self._manifest_sha256(path)})

    # -- reading --------------------------------------------------------------------------------
    def frame(self, data_root: Path | None) -> pd.DataFrame:
        """The whole manifest with ``split``, ``patient_id``, ``sample_id`` and ``file`` columns added."""
        key = str(data_root)
        if key in self._frames:
            return self._frames[key]
        path = self.manifest_path(data_root)
        if not path.is_file():
            where = ("relative to --data-root" if data_root is not None and not Path(self.manifest).is_absolute()
                     else "")
            raise DataError(f"{self.source}: manifest {path} not found" + (f" ({where})" if where else ""))
        df = read_manifest(path).reset_index(drop=True)
        wanted = [("image", self.image_col), ("patient", self.patient_col), ("split", self.split_col),
                  ("sample_id", self.sample_id_col)]
        for option, col in wanted:
            if col is not None and col not in df.columns:
                raise DataError(f"{path}: column {col!r} (option '{option}' of {self.source}) is not in the "
                                f"manifest; it has: {', '.join(map(str, df.columns))}")
        images = df[self.image_col]
        if images.isna().any():
            i = int(np.flatnonzero(images.isna().to_numpy())[0])
            raise DataError(f"{row_name(path, i)}: column {self.image_col!r} is blank (every row needs an image "
                            f"path)")
        sample_ids = df[self.sample_id_col] if self.sample_id_col else images
        if sample_ids.isna().any():
            i = int(np.flatnonzero(sample_ids.isna().to_numpy())[0])
            raise DataError(f"{row_name(path, i)}: column {self.sample_id_col!r} is blank")
        dup = sample_ids.duplicated(keep=False)
        if dup.any():
            rows = np.flatnonzero(dup.to_numpy())[:2]
            col = self.sample_id_col or self.image_col
            raise DataError(f"{row_name(path, int(rows[0]))} and {_short(path, int(rows[1]))}: column "
                            f"{col!r} repeats {sample_ids.iloc[rows[0]]!r}; sample ids must be unique"
                            + ("" if self.sample_id_col else " (set option 'sample_id' to a unique column)"))
        if self.patient_col is not None:
            patients = df[self.patient_col]
            if patients.isna().any():
                i = int(np.flatnonzero(patients.isna().to_numpy())[0])
                raise DataError(f"{row_name(path, i)}: column {self.patient_col!r} (patient id) is blank")
        else:
            patients = sample_ids
        df = df.assign(sample_id=sample_ids.astype(str).to_numpy(), patient_id=patients.astype(str).to_numpy())
        if self.split_col is not None:
            split = df[self.split_col].map(lambda v: None if v is None else self.split_map.get(str(v), str(v)))
            bad = ~split.isin(SPLIT_VALUES)
            if bad.any():
                i = int(np.flatnonzero(bad.to_numpy())[0])
                raise DataError(f"{row_name(path, i)}: column {self.split_col!r} is {df[self.split_col].iloc[i]!r}; "
                                f"expected one of {', '.join(SPLIT_VALUES)}"
                                + (f" after split_map {self.split_map}" if self.split_map else
                                   " (map other names with the option split_map)")
                                + f" ({int(bad.sum())} such row(s))")
            per_patient = split.groupby(df["patient_id"]).nunique()
            if (per_patient > 1).any():
                pid = per_patient.index[per_patient.to_numpy() > 1][0]
                rows = np.flatnonzero((df["patient_id"] == pid).to_numpy())
                splits = sorted(set(split.iloc[rows]))
                raise DataError(f"{row_name(path, int(rows[0]))}: patient {pid!r} (column {self.patient_col!r}) "
                                f"is in splits {', '.join(splits)}; a patient's images must all be in one split "
                                f"({', '.join(_short(path, int(r)) for r in rows[:4])})")
            df["split"] = split.to_numpy(dtype=object)
        else:
            assert self.patient_split is not None
            df["split"] = self.patient_split.assign(df["patient_id"])
        base = self.image_base(path, data_root)
        df["file"] = [p if os.path.isabs(p) else os.path.join(base, p)
                      for p in (os.path.expanduser(str(x)) for x in df[self.image_col])]
        self._frames[key] = df
        return df

    def load(self, split: str, data_root: Path | None) -> RawSplit:
        df = self.frame(data_root)
        part = df[df["split"] == split]
        if part.empty:
            raise DataError(f"{self.source}: no rows of the manifest fall in split {split!r} "
                            f"({', '.join(f'{k} {v}' for k, v in df['split'].value_counts().items())})")
        internal = {"sample_id", "patient_id", "split", "file"}
        columns: dict[str, np.ndarray] = {
            str(c): part[c].to_numpy(dtype=object) for c in part.columns if c not in internal}
        columns["patient_id"] = part["patient_id"].to_numpy(dtype=object)
        ids = part["sample_id"].tolist()
        images = FileImages(part["file"].tolist(), prefix=f"csv:{self.fingerprint()[:16]}:{split}", sample_ids=ids,
                            mode=self.mode)
        return RawSplit(sample_ids=np.asarray(ids, dtype=object), columns=columns, images=images,
                        extra={"patient_id": columns["patient_id"]})


def _short(manifest: Path, index: int) -> str:
    """A row's name without the file: ``row N`` (parquet) or ``line N`` (CSV)."""
    return f"row {index}" if str(manifest).lower().endswith((".parquet", ".pq")) else f"line {index + 2}"
