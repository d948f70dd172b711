"""Reading and validating a predictions table (the predictions.parquet contract)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fairbench.errors import DataError
from fairbench.progress import warn

__all__ = ["DECISION_COLUMN", "INTERSECTION_SEP", "Predictions", "group_codes", "read_predictions"]

INTERSECTION_SEP = "*"
#: optional column of a binary predictions table: each row's probability of a positive decision under a
#: randomised rule (e.g. fairlearn's ThresholdOptimizer). When present, the threshold metrics are the rule's
#: expected rates and no threshold is applied (docs/metrics.md, "Randomised decisions").
DECISION_COLUMN = "p_decide_positive"
_PROB_TOLERANCE = 1e-6
#: how far a row's probabilities may sum from 1 (float32 softmax outputs are within ~1e-6)
_SUM_TOLERANCE = 1e-3
#: duplicate ids named in the error at most
_IDS_SHOWN = 5


@dataclass(frozen=True)
class Predictions:
    classes: list[str]
    split: np.ndarray  # (n,) split name as str
    y: np.ndarray  # (n,) int class index
    probs: np.ndarray  # (n, K) float64, NaN kept
    attributes: dict[str, np.ndarray]  # name -> (n,) object array of str, None = unknown
    #: notes on the input for the metrics document (e.g. probabilities that do not sum to 1)
    notes: dict[str, str] = field(default_factory=dict)
    #: (n,) probability of a positive decision under a randomised rule (DECISION_COLUMN), NaN kept; None: the
    #: decisions are the recorded threshold (binary) or argmax (multiclass)
    decide: np.ndarray | None = None


def _label(v: object) -> str:
    if isinstance(v, float | np.floating) and float(v).is_integer():
        return str(int(v))
    return str(v)


def _group_labels(column: pd.Series) -> np.ndarray:
    """Group label of every row as a string (object array), None where the value is missing."""
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    names = np.array([_label(v) for v in uniques] + [None], dtype=object)
    return names[codes]  # code -1 (missing) picks the trailing None


def _intersect(parts: list[np.ndarray]) -> np.ndarray:
    codes = np.zeros(len(parts[0]), dtype=np.int64)
    unknown = np.zeros(len(parts[0]), dtype=bool)
    names: list[list[str]] = []
    for labels in parts:
        c, u = pd.factorize(labels, use_na_sentinel=True)
        unknown |= c < 0
        codes = codes * (len(u) + 1) + c
        names.append([str(v) for v in u])
    out = np.full(len(codes), None, dtype=object)
    combos, inverse = np.unique(codes[~unknown], return_inverse=True)
    if len(combos):
        joined = []
        for combo in combos:
            idx = []
            for part in reversed(names):
                combo, j = divmod(int(combo), len(part) + 1)
                idx.append(part[j])
            joined.append(INTERSECTION_SEP.join(reversed(idx)))
        out[~unknown] = np.array(joined, dtype=object)[inverse]
    return out


def _row_name(df: pd.DataFrame, i: int) -> str:
    return f"sample_id {str(df['sample_id'].iloc[i])!r}" if "sample_id" in df.columns else f"row {i}"


def _check_sums(df: pd.DataFrame, probs: np.ndarray, prob_cols: list[str]) -> str | None:
    """A warning (also returned, for the document's notes) when rows' class probabilities do not sum to 1; rows
    with a missing probability are left to the metrics. Not refused: scores that are not a distribution (e.g.
    coarsened ones) still rank and threshold, but calibration (ECE) assumes a distribution."""
    if not len(probs):
        return None
    sums = probs.sum(axis=1)
    bad = np.flatnonzero(~np.isnan(sums) & (np.abs(sums - 1.0) > _SUM_TOLERANCE))
    if not len(bad):
        return None
    i = int(bad[0])
    note = (f"{len(bad)} row(s) have probabilities ({', '.join(prob_cols)}) that do not sum to 1 (within "
            f"{_SUM_TOLERANCE:g}; their sums range from {sums[bad].min():.6g} to {sums[bad].max():.6g}); "
            "calibration metrics assume they do")
    warn(f"{note}; e.g. {_row_name(df, i)} (split {str(df['split'].iloc[i])!r}) sums to {sums[i]:.6g}")
    return note  # without the example row, so that the document does not depend on the row order


def _check_unique_ids(df: pd.DataFrame) -> None:
    """A sample appears once per split: a repeated id would count its sample twice."""
    if "sample_id" not in df.columns or not len(df):
        return
    # pandas' own string columns (no Python str per row): the same values compared as the str arrays were
    keys = pd.DataFrame({"split": df["split"].astype(str), "id": df["sample_id"].astype(str)})
    repeated = keys[keys.duplicated(keep=False)]
    if len(repeated):
        ids = list(dict.fromkeys(repeated["id"]))
        splits = sorted(set(repeated["split"]))
        shown = ", ".join(repr(i) for i in ids[:_IDS_SHOWN]) + (f" and {len(ids) - _IDS_SHOWN} more"
                                                               if len(ids) > _IDS_SHOWN else "")
        raise DataError(f"duplicate sample_id(s) in split(s) {', '.join(splits)}: {shown} ({len(repeated)} rows "
                        f"for {len(ids)} id(s)); each sample must appear once per split")


def read_predictions(
    df: pd.DataFrame, classes: list[str], attributes: list[str] | None, intersections: list[list[str]] | None,
) -> Predictions:
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"predictions must be a pandas DataFrame, got {type(df).__name__}")
    classes = [str(c) for c in classes]
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise DataError(f"classes must name at least two distinct classes, got {classes}")
    prob_cols = [f"prob_{c}" for c in classes]
    missing = [c for c in ("split", "label", *prob_cols) if c not in df.columns]
    if missing:
        raise DataError(f"predictions lack column(s) {missing}; columns present: {list(df.columns)}")

    label = pd.to_numeric(df["label"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad_label = np.isnan(label) | (label != np.round(label)) | (label < 0) | (label >= len(classes))
    if bad_label.any():
        example = df["label"].iloc[np.flatnonzero(bad_label)[0]]
        raise DataError(f"'label' must be a class index in [0, {len(classes)}); "
                        f"{int(bad_label.sum())} row(s) are not, e.g. {example!r}")
    probs = np.column_stack([
        pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan) for c in prob_cols
    ]) if len(df) else np.zeros((0, len(classes)))
    out_of_range = (probs < -_PROB_TOLERANCE) | (probs > 1 + _PROB_TOLERANCE)
    if out_of_range.any():
        raise DataError(f"probability columns must lie in [0, 1]; {int(out_of_range.any(axis=1).sum())} row(s) do not")
    probs = np.clip(probs, 0.0, 1.0)
    decide = _decisions(df, classes)
    _check_unique_ids(df)
    sums_note = _check_sums(df, probs, prob_cols)

    available = [c[len("attr_"):] for c in df.columns if isinstance(c, str) and c.startswith("attr_")]
    names = available if attributes is None else [str(a) for a in attributes]
    unknown = [a for a in names if a not in available]
    if unknown:
        raise DataError(f"no column for attribute(s) {unknown} (expected attr_<name>); available: {available}")
    attrs = {a: _group_labels(df[f"attr_{a}"]) for a in names}
    for combo in intersections or []:
        combo = [str(a) for a in combo]
        if len(combo) < 2:
            raise DataError(f"an intersection needs at least two attributes, got {combo}")
        absent = [a for a in combo if a not in available]
        if absent:
            raise DataError(f"intersection {combo} names attribute(s) without a column: {absent}")
        parts = [attrs[a] if a in attrs else _group_labels(df[f"attr_{a}"]) for a in combo]
        attrs[INTERSECTION_SEP.join(combo)] = _intersect(parts)
    return Predictions(
        classes=classes, split=_split_names(df["split"]), y=label.astype(np.int64), probs=probs,
        attributes=attrs, notes={"probabilities": sums_note} if sums_note else {}, decide=decide,
    )


def _split_names(column: pd.Series) -> np.ndarray:
    """Each row's split as str (an object array); a categorical column's rows share its few names."""
    if isinstance(column.dtype, pd.CategoricalDtype) and not column.isna().any():
        names = column.cat.categories.astype(str).to_numpy(dtype=object)
        return names[column.cat.codes.to_numpy()]
    return column.astype(str).to_numpy()


def _decisions(df: pd.DataFrame, classes: list[str]) -> np.ndarray | None:
    """The randomised rule's probability of a positive decision per row, or None without the column."""
    if DECISION_COLUMN not in df.columns:
        return None
    if len(classes) != 2:
        raise DataError(f"column '{DECISION_COLUMN}' (randomised binary decisions) needs a binary task; the "
                        f"classes are {classes}")
    p = pd.to_numeric(df[DECISION_COLUMN], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    outside = (p < -_PROB_TOLERANCE) | (p > 1 + _PROB_TOLERANCE)
    if outside.any():
        raise DataError(f"column '{DECISION_COLUMN}' must lie in [0, 1] (a probability of a positive decision); "
                        f"{int(outside.sum())} row(s) do not, e.g. {p[np.flatnonzero(outside)[0]]!r}")
    return np.clip(p, 0.0, 1.0)


def group_codes(labels: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Codes in [0, G) by sorted group name, -1 for unknown; the sorted names."""
    known = np.array([v is not None for v in labels], dtype=bool)
    names = sorted({v for v in labels[known]})
    codes = np.full(len(labels), -1, dtype=np.int64)
    if names:
        lookup = {name: i for i, name in enumerate(names)}
        codes[known] = [lookup[v] for v in labels[known]]
    return codes, names
