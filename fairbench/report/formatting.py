"""How the report layer writes a metric's name and value: one place for the leaderboard, the HTML report and
the figures.

Labels and directions come from the metric's spec (:data:`fairbench.metrics.METRICS`); counts and other keys
of metrics.json that are not metrics get their labels here. Values are x100 with one decimal everywhere
(tables and figures alike).
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = [
    "SCALE",
    "SCALE_LABEL",
    "arrow",
    "direction",
    "fmt_agg",
    "fmt_raw",
    "interval",
    "is_count",
    "metric_label",
    "number",
    "pct",
    "slug",
]

#: every metric value is shown x100 (tables and figures)
SCALE = 100.0
SCALE_LABEL = "x100"

#: keys of metrics.json that are not registered metrics (counts, settings), as tables name them
OTHER_LABELS = {"n": "n", "n_pos": "n positive", "n_neg": "n negative", "n_unknown": "n unknown group", "ece_bins": "ECE bins",
                "n_boot": "bootstrap resamples"}


def _spec(key: str) -> Any:
    from fairbench.metrics import METRICS

    return METRICS.get(key) if key in METRICS else None


def metric_label(key: str) -> str:
    """The label of a metrics.json key: the metric spec's (``es_auc`` -> ``ES-AUC``), else a count's or the key."""
    spec = _spec(key)
    if spec is not None:
        return spec.display
    return OTHER_LABELS.get(key, key)


def direction(metric: str) -> bool | None:
    """True if higher is better, False if lower is, None if neither (from the metric's spec)."""
    spec = _spec(metric)
    return None if spec is None else spec.higher_is_better


def arrow(metric: str) -> str:
    """`` ↑`` (higher is better), `` ↓`` (lower is better) or nothing."""
    d = direction(metric)
    return " ↑" if d is True else " ↓" if d is False else ""


def slug(name: str) -> str:
    """A file or id name for an attribute or adapter: ``sex*age`` -> ``sex_x_age``; the figures' file names and
    the report's links and ids use this one function."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name.replace("*", "_x_"))


def is_count(key: str) -> bool:
    return key == "n" or key.startswith("n_")


def number(x: Any) -> float | None:
    """A finite number as float; None for anything else (None, NaN, bools, text)."""
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def interval(ci: Any) -> str:
    """``[low, high]`` x100 with one decimal; empty when there is no interval."""
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(number(v) is not None for v in ci):
        return f"[{SCALE * ci[0]:.1f}, {SCALE * ci[1]:.1f}]"
    return ""


#: marks an interval that does not contain its own value (a percentile bootstrap interval of a gap statistic can
#: miss it: docs/metrics.md, "Which interval")
OUTSIDE_MARK = "‡"


def outside(value: Any, ci: Any) -> bool:
    """Whether ``ci`` is an interval that does not contain ``value``."""
    v = number(value)
    return (v is not None and isinstance(ci, (list, tuple)) and len(ci) == 2
            and all(number(c) is not None for c in ci) and not ci[0] <= v <= ci[1])


def pct(value: Any, ci: Any = None) -> str:
    """A metric value x100 with one decimal, and its interval in brackets where there is one (marked
    :data:`OUTSIDE_MARK` when it does not contain the value); n/a if undefined."""
    v = number(value)
    if v is None:
        return "n/a"
    text = f"{SCALE * v:.1f}"
    iv = interval(ci)
    return (f"{text} {iv}" + (OUTSIDE_MARK if outside(v, ci) else "")) if iv else text


def fmt_agg(a: Any, ci: bool = True) -> str:
    """A table entry (a :class:`fairbench.report.tables.Agg`; not imported, tables imports this module): the mean
    over seeds x100, its interval, ``*`` when some seeds had no value."""
    if a.mean is None:
        return "n/a"
    text = f"{SCALE * a.mean:.1f}"
    if ci and a.low is not None and a.high is not None:
        text += f" [{SCALE * a.low:.1f}, {SCALE * a.high:.1f}]"
        if not a.low <= a.mean <= a.high:
            text += OUTSIDE_MARK
    if a.n < a.total:
        text += "*"
    return text


def fmt_raw(value: Any) -> str:
    """A value recorded by an adapter or the pipeline (not a metric), for reading: floats to 4 significant
    digits, integers and text as they are, lists item by item."""
    if isinstance(value, bool) or value is None:
        return "null" if value is None else str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt_raw(v) for v in value) + "]"
    return str(value)
