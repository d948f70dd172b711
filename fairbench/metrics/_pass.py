"""One evaluation pass's definition: its attribute, groups, classes and metric specs, and how it maps slice
statistics to result paths. Kept apart from the running of passes (:mod:`fairbench.metrics._passes`) so that
:mod:`fairbench.metrics._reasons` can name it without importing the module that imports it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fairbench.metrics._spec import MetricSpec
from fairbench.metrics._stats import SliceStats

__all__ = ["Pass", "Path"]

Path = tuple[str, ...]


@dataclass(frozen=True)
class Pass:
    attribute: str | None  # None: the overall pass
    groups: list[str]
    classes: list[str]
    slice_specs: list[MetricSpec]
    summary_specs: list[MetricSpec]

    @property
    def binary(self) -> bool:
        return len(self.classes) == 2

    def slice_path(self, s: int, name: str) -> Path:
        if self.attribute is None:
            return ("overall", name)
        return ("attributes", self.attribute, "groups", self.groups[s - 1], name)

    def evaluate(self, stats: SliceStats, bad: np.ndarray) -> dict[Path, np.ndarray]:
        """Values of every reported path for a batch of statistics of shape (b, S)."""
        out: dict[Path, np.ndarray] = {}
        values: dict[str, np.ndarray] = {}
        scope = "overall" if self.attribute is None else "group"
        slices = [0] if self.attribute is None else range(1, len(self.groups) + 1)
        for spec in self.slice_specs:
            v = np.asarray(spec.fn(stats), dtype=np.float64)
            v = np.where(bad.reshape((1, -1) + (1,) * (v.ndim - 2)), np.nan, v)
            values[spec.name] = v
            if scope in spec.scopes:
                for s in slices:
                    self._emit(out, self.slice_path(s, spec.name), v[:, s], spec.per_class)
        if self.attribute is not None:
            groups = {name: v[:, 1:] for name, v in values.items()}
            overall = {name: v[:, 0] for name, v in values.items()}
            for spec in self.summary_specs:
                v = np.asarray(spec.fn(groups, overall), dtype=np.float64)
                self._emit(out, ("attributes", self.attribute, spec.name), v, spec.per_class)
        return out

    def _emit(self, out: dict[Path, np.ndarray], path: Path, v: np.ndarray, per_class: bool) -> None:
        if per_class:
            for j, c in enumerate(self.classes):
                out[path + (c,)] = v[..., j]
        else:
            out[path] = v
