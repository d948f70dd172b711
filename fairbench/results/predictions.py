"""The one reader of a cell's ``predictions.parquet`` (used by ``fairbench metrics``, ``compare`` and the plots)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fairbench.errors import DataError

__all__ = ["read_predictions"]


def read_predictions(path: Path, classes: list[str] | None = None, attributes: list[str] | None = None) -> pd.DataFrame:
    """The predictions frame; with ``classes`` and ``attributes``, a one-line error naming the file and every
    column the task needs that the file lacks."""
    try:
        frame = pd.read_parquet(path)
    except FileNotFoundError:
        raise DataError(f"{path}: no such predictions file") from None
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise DataError(f"{path}: not a readable parquet file ({' '.join(str(exc).split())})") from None
    if classes is None and attributes is None:
        return frame
    needed = ["sample_id", "split", "label", *[f"prob_{c}" for c in classes or []],
              *[f"attr_{a}" for a in attributes or []]]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (expected {', '.join(needed)})")
    return frame
