"""The ``fairvlmed`` dataset family: Harvard-FairVLMed (FairCLIP, Luo et al., CVPR 2024) in its npz layout.

``--data-root`` holds ``Training/``, ``Validation/`` and ``Test/`` (``Testing/`` in some releases; either is
accepted for either name), each with ``data_xxxxx.npz`` files, plus the clinical-note summaries
``gpt4_summarized_notes.csv`` (``gpt-4_summarized_notes.csv`` in the dataset README; either name).

Each npz holds the SLO fundus image (``slo_fundus``), the label ``glaucoma`` (0/1) and the attributes
``race``, ``gender``, ``ethnicity`` (legacy files: ``hispanic``), ``language``, ``maritalstatus`` and ``age``.
The loader hands them to the card unchanged (-1 = unknown stays -1; the card declares ``missing: [-1]``, so a
sample with an unknown value is left out of that attribute's groups only, never out of the task).

Paired text (``text`` option): ``summary`` (default) reads the notes CSV (file name in the first column,
summary in the third) and cuts each summary to ``max_text_chars`` (180) at a word boundary, as FairCLIP does
before CLIP tokenisation; ``note`` uses the npz's own ``note``; ``none`` pairs no text.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fairbench.cards import Fields, card_sha256
from fairbench.data.base import RawSplit
from fairbench.data.files import FileImages, root_above, subfolder_error
from fairbench.errors import DataError

__all__ = ["ATTRIBUTE_KEYS", "NOTES_FILES", "FairVLMedLoader", "truncate_words"]

LOADER_VERSION = "1"
OBTAIN = "https://github.com/Harvard-Ophthalmology-AI-Lab/FairCLIP (Harvard-FairVLMed, request access)"
NOTES_FILES = ("gpt4_summarized_notes.csv", "gpt-4_summarized_notes.csv")
#: what --data-root holds
LAYOUT = "Training/, Validation/ and Test/ with the data_xxxxx.npz files, and gpt4_summarized_notes.csv"
#: npz key per column; a tuple lists accepted spellings, the first is the current one
ATTRIBUTE_KEYS: dict[str, tuple[str, ...]] = {
    "glaucoma": ("glaucoma",), "race": ("race",), "gender": ("gender",), "ethnicity": ("ethnicity", "hispanic"),
    "language": ("language",), "maritalstatus": ("maritalstatus",), "age": ("age",),
}
_TEST_NAMES = ("Test", "Testing")


def truncate_words(text: str, limit: int) -> str:
    """``text`` (stripped) cut to at most ``limit`` characters at the last word boundary (whitespace) before
    the cut; a single word longer than ``limit`` is cut hard."""
    text = str(text).strip()
    if len(text) <= limit:
        return text
    if text[limit].isspace():  # the cut falls between two words
        return text[:limit].rstrip()
    head = text[:limit]
    last = re.search(r"\s\S*$", head)
    return head[: last.start()].rstrip() if last and last.start() > 0 else head


class FairVLMedLoader:
    needs_data_root = True

    def __init__(self, options: dict[str, Any], *, source: str) -> None:
        f = Fields(dict(options), source=source)
        self.source = source
        self.text = f.get("text", str, "summary", choices=("summary", "note", "none"))
        self.max_text_chars = f.get("max_text_chars", int, 180)
        if self.max_text_chars < 1:
            f.fail("max_text_chars", f"must be >= 1, got {self.max_text_chars}")
        self.notes_file = f.get("notes_file", str, None)
        self.image_key = f.get("image_key", str, "slo_fundus")
        self.image_mode = f.get("image_mode", str, "L", choices=("L", "RGB"))
        f.no_unknown()
        self.options = dict(options)
        #: set by `fairbench data check` and runs that allow skipping: unreadable npz files are left out and
        #: listed in :attr:`unreadable_samples` instead of raising
        self.tolerate_unreadable = False
        self.unreadable_samples: dict[str, list[tuple[str, str]]] = {}

    def fingerprint(self) -> str:
        return card_sha256({"loader": "fairvlmed", "version": LOADER_VERSION, "options": self.options})

    def check_root(self, data_root: Path) -> None:
        """The data root's layout, before anything heavy runs (the split folders); raises a DataError."""
        for split in ("Training", "Validation", "Test"):
            self.split_dir(split, data_root)

    def split_dir(self, split: str, data_root: Path) -> Path:
        names = _TEST_NAMES if split in _TEST_NAMES else (split,)
        for name in names:
            if (Path(data_root) / name).is_dir():
                return Path(data_root) / name
        if root := root_above(data_root, "Training", *_TEST_NAMES, levels=1):
            raise subfolder_error(data_root, root, LAYOUT)
        raise DataError(f"FairVLMed split folder not found: {Path(data_root) / names[0]}"
                        + (f" (or {names[1]})" if len(names) > 1 else "")
                        + f"; --data-root must hold Training/, Validation/ and Test/ from {OBTAIN}")

    def load(self, split: str, data_root: Path | None) -> RawSplit:
        if data_root is None:
            raise DataError("the FairVLMed loader needs --data-root (the folder holding Training/, Validation/, Test/)")
        folder = self.split_dir(split, Path(data_root))
        files = sorted(folder.glob("*.npz"))
        if not files:
            raise DataError(f"{folder}: no .npz files (expected data_xxxxx.npz from {OBTAIN})")
        rows, kept, bad = [], [], []
        for path in files:
            try:
                rows.append(_read_fields(path, want_note=self.text == "note"))
                kept.append(path)
            except DataError as exc:
                if not self.tolerate_unreadable:
                    raise DataError(f"{exc}; run `fairbench data check` for every problem, or pass "
                                    f"--allow-skip-unreadable to skip such samples") from None
                bad.append((path.stem, str(exc)))
        self.unreadable_samples[split] = bad
        ids = [p.stem for p in kept]
        columns = {c: np.asarray([r[c] for r in rows], dtype=object) for c in ATTRIBUTE_KEYS}
        texts = None
        if self.text == "summary":
            texts = self._summaries(Path(data_root), [p.name for p in kept])
        elif self.text == "note":
            texts = [truncate_words(r["note"], self.max_text_chars) for r in rows]
        images = FileImages(kept, prefix=f"fairvlmed:{self.fingerprint()[:16]}:{folder.name}", sample_ids=ids,
                            mode=self.image_mode, npz_key=self.image_key)
        extra = {"age": columns["age"].astype(float)}
        return RawSplit(sample_ids=np.asarray(ids, dtype=object), columns=columns, images=images, texts=texts,
                        extra=extra)

    def notes_path(self, data_root: Path) -> Path:
        names = (self.notes_file,) if self.notes_file else NOTES_FILES
        for name in names:
            if (data_root / name).is_file():
                return data_root / name
        raise DataError(f"FairVLMed note summaries not found: {data_root / names[0]}"
                        + (f" (or {names[1]})" if len(names) > 1 else "")
                        + f"; --data-root holds {LAYOUT} (set the card option text: note or none to run without "
                          "the summaries)")

    def _summaries(self, data_root: Path, filenames: list[str]) -> list[str]:
        path = self.notes_path(data_root)
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (ValueError, OSError, pd.errors.ParserError) as exc:
            raise DataError(f"{path}: cannot read the notes CSV: {exc}") from None
        if df.shape[1] < 3:
            raise DataError(f"{path}: expected the file name in column 1 and the summary in column 3; the file "
                            f"has {df.shape[1]} column(s)")
        by_name: dict[str, str] = {}
        for name, summary in zip(df.iloc[:, 0], df.iloc[:, 2]):
            by_name[name.strip()] = summary
            by_name.setdefault(Path(name.strip()).stem, summary)
        missing = [n for n in filenames if n not in by_name and Path(n).stem not in by_name]
        if missing:
            raise DataError(f"{path}: no summary for {len(missing)} file(s), e.g. {', '.join(missing[:3])}")
        return [truncate_words(by_name.get(n, by_name.get(Path(n).stem, "")), self.max_text_chars)
                for n in filenames]


def _scalar(value: np.ndarray) -> Any:
    arr = np.asarray(value)
    if arr.size != 1:
        raise ValueError(f"expected one value, got shape {arr.shape}")
    x = arr.reshape(-1)[0]
    if isinstance(x, (np.integer, np.floating)) and float(x).is_integer():
        return int(x)
    return x.item() if hasattr(x, "item") else x


def _read_fields(path: Path, *, want_note: bool) -> dict[str, Any]:
    """Label and attributes of one npz (the image is read later, on demand)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            out: dict[str, Any] = {}
            for col, spellings in ATTRIBUTE_KEYS.items():
                key = next((k for k in spellings if k in keys), None)
                if key is None:
                    raise DataError(f"{path}: no '{spellings[0]}' array" +
                                    (f" (nor legacy '{spellings[1]}')" if len(spellings) > 1 else "") +
                                    f"; has: {', '.join(sorted(keys))}")
                out[col] = _scalar(z[key])
            if want_note:
                try:
                    out["note"] = str(_scalar(z["note"])) if "note" in keys else ""
                except ValueError:
                    raise DataError(f"{path}: 'note' is stored as a pickled object, which fairbench does not "
                                    f"unpickle; use the card option text: summary") from None
            return out
    except DataError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable npz ({exc})") from None
