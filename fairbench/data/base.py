"""What a dataset loader hands to the rest of fairbench.

A loader reads one split of a dataset in its upstream layout and returns a :class:`RawSplit`: sample ids,
raw columns (labels and attributes exactly as the dataset stores them), optional paired texts and an image
source. The task card then maps raw labels to class indices and bins raw attributes into groups, in one place
(:mod:`fairbench.data.task`), so every loader gets identical label and attribute handling.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fairbench.registry import Registry

__all__ = ["DATASETS", "ArrayImages", "DatasetLoader", "ImageSource", "RawSplit", "SampleSet"]


class ImageSource(Protocol):
    """Random access to a split's images as uint8 arrays (H, W) or (H, W, 3). A source that produces runs of
    consecutive images together may say how many in an optional ``block`` attribute (the synthetic loader: its
    chunks of 64), so that subsamples can take whole runs (:func:`fairbench.analyses.leakage.train_rows`)."""

    #: identifies the exact pixels (dataset, version, split, options); used in cache keys
    key: str

    def __len__(self) -> int: ...

    def load(self, indices: np.ndarray) -> list[np.ndarray]: ...


class ArrayImages:
    """Images already in memory as one uint8 array [N, H, W] (or [N, H, W, 3])."""

    def __init__(self, array: np.ndarray, key: str) -> None:
        if array.dtype != np.uint8:
            raise TypeError(f"ArrayImages wants uint8 pixels, got {array.dtype}")
        self.array = array
        self.key = key

    def __len__(self) -> int:
        return len(self.array)

    def load(self, indices: np.ndarray) -> list[np.ndarray]:
        return list(self.array[np.asarray(indices)])

    def subset(self, indices: np.ndarray) -> ArrayImages:
        idx = np.asarray(indices)
        digest = hashlib.sha256(idx.astype(np.int64).tobytes()).hexdigest()[:16]
        return ArrayImages(self.array[idx], f"{self.key}[{digest}]")


@dataclass
class RawSplit:
    """One split as the dataset stores it."""

    sample_ids: np.ndarray
    columns: dict[str, np.ndarray]
    images: ImageSource
    texts: list[str] | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.sample_ids)
        for name, col in self.columns.items():
            if len(col) != n:
                raise ValueError(f"column {name!r} has {len(col)} rows, expected {n}")
        if len(self.images) != n:
            raise ValueError(f"image source has {len(self.images)} images, expected {n}")
        if self.texts is not None and len(self.texts) != n:
            raise ValueError(f"texts has {len(self.texts)} rows, expected {n}")


@dataclass
class SampleSet:
    """One split of a task: labels as class indices, attributes binned into group labels (None = unknown)."""

    task: str
    split: str
    classes: list[str]
    sample_ids: np.ndarray
    labels: np.ndarray
    attributes: dict[str, np.ndarray]
    images: ImageSource
    texts: list[str] | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.sample_ids)

    @property
    def ids_sha256(self) -> str:
        h = hashlib.sha256()
        for sid in self.sample_ids:
            h.update(str(sid).encode())
            h.update(b"\0")
        return h.hexdigest()


class DatasetLoader(Protocol):
    """A dataset family. ``options`` come from the task card's ``dataset.options``."""

    #: True when the loader needs ``--data-root`` (real datasets); False for generated data
    needs_data_root: bool

    def __init__(self, options: dict[str, Any], *, source: str) -> None:
        """Validate options, raising CardError that names ``source`` and the bad option."""

    def load(self, split: str, data_root: Path | None) -> RawSplit: ...

    def fingerprint(self) -> str:
        """A string that changes whenever the loaded data would change (options, code version)."""


DATASETS: Registry[type] = Registry("dataset loader")
DATASETS.register_lazy("synth_cxr", "fairbench.data.synth_loader:SynthCXRLoader")
# real datasets in their upstream layouts (docs/tasks.md)
DATASETS.register_lazy("nih", "fairbench.data.nih:NIHLoader")
DATASETS.register_lazy("fairvlmed", "fairbench.data.fairvlmed:FairVLMedLoader")
DATASETS.register_lazy("chexpert", "fairbench.data.chexpert:CheXpertLoader")
# any folder of images with a manifest (no code: `fairbench tasks new` writes the card)
DATASETS.register_lazy("csv", "fairbench.data.csv_loader:CSVLoader")
DATASETS.register_lazy("ham10000", "fairbench.data.skin:HAM10000Loader")
DATASETS.register_lazy("fitzpatrick17k", "fairbench.data.skin:Fitzpatrick17kLoader")
DATASETS.register_lazy("padchest", "fairbench.data.padchest:PadChestLoader")
DATASETS.register_lazy("mimic_cxr", "fairbench.data.mimic:MIMICLoader")
