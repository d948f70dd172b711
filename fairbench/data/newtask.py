"""``fairbench tasks new``: a task card for the ``csv`` loader, written from what a manifest holds.

The card is a starting point for the user to read and edit: classes come from the label column's values,
attributes map each value to itself (numeric columns with many values get bins at rounded terciles), values
that usually mean "unknown" are listed under ``missing:``, and the split comes from the split column or a salted
patient hash. The card validates as written and runs with ``--tasks-dir`` and no ``--data-root`` (the manifest
path is absolute; image paths resolve against the manifest's folder).
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from fairbench.data.csv_loader import SPLIT_VALUES, read_manifest
from fairbench.errors import CardError, DataError

__all__ = ["MISSING_WORDS", "NewTask", "write_task_card"]

#: values that usually mean "not recorded"; listed under an attribute's ``missing:`` when present
MISSING_WORDS = ("unknown", "unk", "na", "n/a", "nan", "none", "null", "?", "not recorded", "declined",
                 "unable to obtain")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
MAX_CLASSES = 20
MAX_GROUPS = 20
#: a numeric attribute with more distinct values than this is binned rather than mapped value by value
MAX_MAPPED_NUMERIC = 10


@dataclass
class NewTask:
    """What was written, for the command's summary."""

    path: Path
    n_rows: int
    classes: list[str]
    attributes: dict[str, str]  # name -> "map (k groups)" / "bins ..."
    missing_files: int
    notes: list[str] = field(default_factory=list)


def _class_name(value: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(value)).strip("_")
    return name or "class"


def _is_number(values: pd.Series) -> bool:
    try:
        pd.to_numeric(values, errors="raise")
    except (ValueError, TypeError):
        return False
    return True


def _round_edge(x: float) -> float:
    if x == 0 or not math.isfinite(x):
        return float(x)
    digits = max(0, 1 - int(math.floor(math.log10(abs(x)))))  # two significant figures
    return float(round(x, digits))


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _attribute_spec(name: str, col: pd.Series, notes: list[str]) -> tuple[dict[str, Any], str]:
    present = col.dropna().astype(str)
    missing = sorted({v for v in present.unique() if v.strip().lower() in MISSING_WORDS})
    values = present[~present.isin(missing)]
    spec: dict[str, Any] = {"column": name}
    if values.empty:
        raise DataError(f"attribute column {name!r} has no value other than blank or unknown")
    if _is_number(values) and values.nunique() > MAX_MAPPED_NUMERIC:
        x = pd.to_numeric(values).to_numpy(dtype=float)
        edges = sorted({_round_edge(float(q)) for q in np.quantile(x, [1 / 3, 2 / 3])})
        edges = [e for e in edges if x.min() < e <= x.max()] or [_round_edge(float(np.median(x)))]
        labels = [f"<{_fmt(edges[0])}"]
        labels += [f"[{_fmt(lo)},{_fmt(hi)})" for lo, hi in zip(edges, edges[1:])]
        labels.append(f">={_fmt(edges[-1])}")
        spec["bins"] = [-math.inf, *edges, math.inf]
        spec["labels"] = labels
        what = f"bins at {', '.join(map(_fmt, edges))} (rounded terciles: edit to the bins your study uses)"
    else:
        groups = sorted(values.unique(), key=lambda v: (len(v), v))
        if len(groups) > MAX_GROUPS:
            notes.append(f"attribute {name!r} has {len(groups)} distinct values: map them to fewer groups")
        spec["map"] = {g: g for g in groups}
        what = f"map ({len(groups)} groups)"
    if missing:
        spec["missing"] = missing
        what += f"; missing: {', '.join(missing)}"
    return spec, what


def write_task_card(name: str, manifest: Path, *, image: str, label: str, attributes: list[str] | None = None,
                    patient: str | None = None, split: str | None = None, out_dir: Path = Path("tasks"),
                    overwrite: bool = False) -> NewTask:
    """Write ``out_dir/name/name.yaml`` for the manifest; the card is validated before it is kept."""
    from fairbench.data.task import builtin_tasks_dir, load_task_card

    if not _NAME.match(name):
        raise CardError(f"task name {name!r}: use lower-case letters, digits and _ (starting with a letter)")
    if (builtin_tasks_dir() / name).is_dir():
        raise CardError(f"task name {name!r} is taken by a shipped task: choose another name")
    manifest = Path(os.path.expanduser(str(manifest))).absolute()
    df = read_manifest(manifest)
    columns = [str(c) for c in df.columns]
    attributes = [a.strip() for a in (attributes or []) if a.strip()]
    for option, col in [("--image", image), ("--label", label), ("--patient", patient), ("--split", split),
                        *[("--attributes", a) for a in attributes]]:
        if col is not None and col not in columns:
            raise DataError(f"{manifest}: {option} column {col!r} is not in the manifest; it has: "
                            f"{', '.join(columns)}")
    if not attributes:
        raise CardError("--attributes: name at least one protected attribute column (e.g. --attributes sex,age)")
    if label in attributes or image in attributes:
        raise CardError("--attributes must not include the --label or --image column")

    notes: list[str] = []
    labels = df[label]
    if labels.isna().any():
        i = int(np.flatnonzero(labels.isna().to_numpy())[0])
        raise DataError(f"{manifest} line {i + 2}: column {label!r} (the label) is blank; every row needs a "
                        f"label ({int(labels.isna().sum())} blank)")
    values = sorted(labels.astype(str).unique(), key=lambda v: (len(v), v))
    if len(values) < 2:
        raise DataError(f"{manifest}: column {label!r} has one value ({values[0]!r}); a task needs two classes")
    if len(values) > MAX_CLASSES:
        raise DataError(f"{manifest}: column {label!r} has {len(values)} distinct values; is it the label? "
                        f"(at most {MAX_CLASSES} classes)")
    if set(values) == {"0", "1"}:
        label_map = {"0": "negative", "1": "positive"}
        notes.append("label values 0/1 became classes 'negative'/'positive': rename them to what they mean")
    else:
        label_map = {v: _class_name(v) for v in values}
        if len(set(label_map.values())) != len(label_map):
            label_map = {v: f"{_class_name(v)}_{i}" for i, v in enumerate(values)}
    classes = list(dict.fromkeys(label_map.values()))

    attr_specs: dict[str, Any] = {}
    attr_what: dict[str, str] = {}
    for a in attributes:
        attr_specs[a], attr_what[a] = _attribute_spec(a, df[a], notes)

    options: dict[str, Any] = {"manifest": str(manifest), "image": image}
    if patient:
        options["patient"] = patient
    else:
        notes.append("no --patient column: each row is its own patient, so one patient's images may fall "
                     "into different splits")
    if split:
        options["split"] = split
        seen = set(df[split].dropna().astype(str))
        if odd := sorted(seen - set(SPLIT_VALUES)):
            guess = {v: ("val" if v.lower().startswith("val") else "test" if v.lower().startswith("test")
                         else "train" if v.lower().startswith("train") else None) for v in odd}
            if all(guess.values()):
                options["split_map"] = guess
            else:
                raise DataError(f"{manifest}: --split column {split!r} has values {', '.join(map(repr, odd))}; "
                                f"expected train, val or test")
    else:
        options["patient_split"] = {"train": 0.7, "val": 0.1, "test": 0.2, "salt": f"{name}-v1"}

    binary = len(classes) == 2
    card: dict[str, Any] = {
        "name": name,
        "version": 1,
        "description": f"{label} from {manifest.name} ({len(df)} images)",
        "dataset": {"loader": "csv", "options": options},
        "classes": classes,
        "label": {"column": label, "map": label_map},
        "attributes": attr_specs,
        "prompts": {"templates": ["a medical image showing {}."],
                    "classnames": {c: [c.replace("_", " ")] for c in classes}},
        "metrics": (["auc", "acc", "macro_f1", "es_auc", "auc_gap", "dpd", "deodds"] if binary
                    else ["auc", "acc", "macro_f1", "es_auc", "auc_gap"]),
        "evaluation": {"split": "test", "threshold": "val_youden" if binary else 0.5, "min_group_size": 30},
    }
    if len(attributes) >= 2:
        card["evaluation"]["intersections"] = [attributes[:2]]

    folder = Path(out_dir) / name
    path = folder / f"{name}.yaml"
    if path.exists() and not overwrite:
        raise CardError(f"{path} exists: pass --overwrite to replace it")
    header = (f"# Written by `fairbench tasks new` on {_dt.date.today().isoformat()} from {manifest}.\n"
              f"# A starting point: check the classes, the attribute groups and bins, the prompts and the split;\n"
              f"# bump `version` whenever you change something that alters numbers.\n")
    text = header + yaml.safe_dump(card, sort_keys=False, allow_unicode=True, width=110)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(text, encoding="utf-8")
    try:
        written = load_task_card(tmp.rename(path))
        written.loader()  # the loader accepts the options
    except Exception:
        path.unlink(missing_ok=True)
        raise
    base = manifest.parent
    missing = sum(not (Path(p) if os.path.isabs(p) else base / p).exists() for p in df[image].astype(str))
    return NewTask(path=path, n_rows=len(df), classes=classes, attributes=attr_what, missing_files=missing,
                   notes=notes)
