"""The one reader of a cell's ``predictions.parquet`` (used by ``fairbench metrics``, ``compare`` and the plots)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fairbench.errors import DataError

__all__ = ["read_predictions"]

#: the optional column a metric reads besides the task's own (fairbench.metrics._inputs.DECISION_COLUMN)
_DECISION_COLUMN = "p_decide_positive"


def _unreadable(path: Path, exc: Exception) -> DataError:
    if isinstance(exc, FileNotFoundError):
        return DataError(f"{path}: no such predictions file")
    return DataError(f"{path}: not a readable parquet file ({' '.join(str(exc).split())})")


def read_predictions(path: Path, classes: list[str] | None = None, attributes: list[str] | None = None,
                     splits: list[str] | None = None) -> pd.DataFrame:
    """The predictions frame; with ``classes`` and ``attributes``, a one-line error naming the file and every
    column the task needs that the file lacks.

    ``splits`` (with ``classes``): only what the metrics read, the task's columns (and the randomised-decision
    column when present), and only the rows of these splits, filtered while pyarrow reads the file; the split
    and attribute columns come as categoricals. What ``compare`` holds per row is then what it evaluates
    (docs/scale.md, "compare and metrics")."""
    if splits is not None and classes is not None:
        return _read_splits(path, classes, attributes or [], splits)
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise _unreadable(path, exc) from None
    if classes is None and attributes is None:
        return frame
    _check_columns(path, list(frame.columns), classes, attributes)
    return frame


def _check_columns(path: Path, present: list[str], classes: list[str] | None,
                   attributes: list[str] | None) -> list[str]:
    needed = ["sample_id", "split", "label", *[f"prob_{c}" for c in classes or []],
              *[f"attr_{a}" for a in attributes or []]]
    missing = [c for c in needed if c not in present]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (expected {', '.join(needed)})")
    return needed


def _read_splits(path: Path, classes: list[str], attributes: list[str], splits: list[str]) -> pd.DataFrame:
    """Read with the system allocator: pyarrow's default (mimalloc) keeps the pages the read needed in passing
    (the whole file's columns before the split filter), 30 MiB at 125 000 rows; malloc hands them back to the
    heap the arrays built next come from. The arrays keep the pool they came from."""
    import pyarrow as pa

    default = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        return _read_splits_now(path, classes, attributes, splits)
    finally:
        pa.set_memory_pool(default)


def _read_splits_now(path: Path, classes: list[str], attributes: list[str], splits: list[str]) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        present = list(pq.read_schema(path).names)
    except Exception as exc:  # noqa: BLE001
        raise _unreadable(path, exc) from None
    needed = _check_columns(path, present, classes, attributes)
    columns = needed + ([_DECISION_COLUMN] if _DECISION_COLUMN in present else [])
    try:
        table = pq.read_table(path, columns=columns)
    except Exception as exc:  # noqa: BLE001
        raise _unreadable(path, exc) from None
    split = table.column("split")
    if not pa.types.is_string(split.type) and not pa.types.is_large_string(split.type):
        split = pc.cast(split, pa.large_string())  # as astype(str) would name them (ints, say)
    table = table.filter(pc.is_in(split, value_set=pa.array(list(splits), type=split.type)))
    out = {}
    for name in columns:  # one column converted at a time, each dropped from arrow once it is in numpy/pandas
        col = table.column(name)
        table = table.drop_columns([name])
        if name == "split" or name.startswith("attr_"):
            out[name] = col.to_pandas().astype("category")
        else:
            out[name] = col.to_pandas()
        del col
    return pd.DataFrame(out)
