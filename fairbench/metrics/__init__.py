"""The metrics suite: utility, group fairness and bootstrap intervals from saved predictions.

Metrics are plain functions with metadata in :data:`METRICS`; :func:`compute_metrics` slices the rows by
protected attribute, evaluates every applicable metric and resamples. Formulas and sources:
docs/metrics.md.
"""

from __future__ import annotations

from fairbench.metrics import _slice_metrics, _summaries  # noqa: F401  (register the metrics)
from fairbench.metrics._calibration import reliability_curve
from fairbench.metrics._spec import BINARY, METRICS, MULTICLASS, MetricSpec, register_metric
from fairbench.metrics._stats import SliceStats, safe_div
from fairbench.metrics._suite import compute_metrics
from fairbench.metrics._threshold import choose_threshold

__all__ = [
    "BINARY",
    "METRICS",
    "MULTICLASS",
    "MetricSpec",
    "SliceStats",
    "choose_threshold",
    "compute_metrics",
    "register_metric",
    "reliability_curve",
    "safe_div",
]
