"""Metric metadata and the one registry every metric name lives in.

A metric is a plain function plus a :class:`MetricSpec`. Two kinds exist:

* ``slice`` metrics map the sufficient statistics of one slice of rows (all evaluated rows, or one group
  of a protected attribute) to a value: ``fn(stats: SliceStats) -> ndarray``.
* ``summary`` metrics map the per-group values of one attribute (and the values on all evaluated rows) to
  one value: ``fn(groups: Mapping[str, ndarray], overall: Mapping[str, ndarray]) -> ndarray``; the group
  axis is the last axis, or the one before the class axis for per-class inputs.

Every function is vectorised over leading axes, so the same code gives the point estimate (one weight
vector of ones) and all bootstrap resamples at once (one weight vector per resample). Slicing rows into
groups and resampling is the suite's job, never the metric's (the contract of fairlearn's metrics).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from fairbench.registry import Registry

__all__ = ["BINARY", "BOTH", "METRICS", "MULTICLASS", "MetricSpec", "register_metric"]

Kind = Literal["slice", "summary"]
BINARY = frozenset({"binary"})
MULTICLASS = frozenset({"multiclass"})
BOTH = BINARY | MULTICLASS


@dataclass(frozen=True)
class MetricSpec:
    """What the suite and ``fairbench ls metrics`` need to know about one output key."""

    name: str
    fn: Callable[..., object]
    kind: Kind
    description: str
    higher_is_better: bool | None
    needs_scores: bool
    source: str
    tasks: frozenset[str] = BOTH
    per_class: bool = False  # the value is a dict keyed by class name
    scopes: frozenset[str] = frozenset({"overall", "group"})  # slice metrics: where they are reported
    inputs: tuple[str, ...] = ()  # summaries: the slice metrics they read
    min_groups: int = 1  # summaries: defined groups needed (2 for differences between groups)
    uses_overall: bool = False  # summaries: also read the value on all evaluated rows
    needs_no_finding: bool = False
    undefined: str = ""  # when the value is undefined (slice metrics; summaries explain themselves)
    label: str = ""  # how tables and figures name it ("ES-AUC"); empty: the name itself

    @property
    def display(self) -> str:
        """The metric's label, or its name where it has none."""
        return self.label or self.name

    def applies(self, task: str, has_no_finding: bool) -> bool:
        return task in self.tasks and (has_no_finding or not self.needs_no_finding)


METRICS: Registry[MetricSpec] = Registry("metric")


def register_metric(name: str, **meta: object) -> Callable[[Callable[..., object]], Callable[..., object]]:
    """Decorator: register ``fn`` under ``name`` with its metadata; returns ``fn`` unchanged."""

    def _add(fn: Callable[..., object]) -> Callable[..., object]:
        METRICS.register(name, MetricSpec(name=name, fn=fn, **meta))  # type: ignore[arg-type]
        return fn

    return _add
