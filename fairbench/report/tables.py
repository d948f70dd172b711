"""The table model of the leaderboard and the HTML report: rows model x adapter, columns of metrics.json paths,
entries aggregated over seeds (mean and a 95% interval), the best entry of each column, and the facts a page's
header states about its cells. :mod:`fairbench.report.leaderboard` writes these tables as markdown,
:mod:`fairbench.report.html` as HTML; both read the numbers from here, so they agree cell for cell.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fairbench.report.collect import ResultCell
from fairbench.report.formatting import arrow, direction, metric_label
from fairbench.report.summary import lookup, random_weights
from fairbench.results import METRICS as METRICS_FILE
from fairbench.results.cells import adapt_label

__all__ = [
    "FAIRNESS",
    "MAX_GROUP_COLUMNS",
    "RANDOM_MARK",
    "UTILITY",
    "Agg",
    "Column",
    "HeaderFacts",
    "Row",
    "aggregate",
    "attribute_columns",
    "attribute_groups",
    "best_rows",
    "card_extras",
    "combine",
    "digest",
    "distinct",
    "newest",
    "present",
    "resolve_key",
    "small_groups",
    "table_rows",
    "table_values",
    "utility_columns",
]

UTILITY = ("auc", "acc", "macro_f1", "ece")
FAIRNESS = ("es_auc", "auc_gap", "dpd", "deodds")
MAX_GROUP_COLUMNS = 6
RANDOM_MARK = "(random weights)"


# -- aggregation over seeds -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Agg:
    mean: float | None
    low: float | None = None
    high: float | None = None
    n: int = 0  # cells with a defined value
    total: int = 0  # cells in the row
    interval: str = ""  # "seeds" | "bootstrap" | ""


def _t975(df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def aggregate(cells: Sequence[ResultCell], path: tuple[str, ...]) -> Agg:
    """Mean over seeds; a 95% t interval across seeds with 2+ defined values that differ, else the (first) cell's
    bootstrap CI: seeds that all give the same value (a deterministic adapter on fixed weights) carry no
    spread of their own, and the sampling uncertainty is the bootstrap's."""
    return combine([(lookup(c.metrics, *path), lookup(c.metrics.get("ci") or {}, *path)) for c in cells])


def combine(entries: Sequence[tuple[Any, Any]], bounds: tuple[float | None, float | None] = (0.0, 1.0)) -> Agg:
    """:func:`aggregate` of one entry per seed, ``(value, its bootstrap interval or None)``: the mean of the
    finite values; a 95% t interval across seeds (clipped to ``bounds``; every metric of the suite lies in
    [0, 1]) when two or more differ, else the first defined entry's interval. The leaderboard's analyses and
    variants tables (:mod:`fairbench.report.analysis_tables`) read values kept outside ``metrics`` through it."""
    values = [(float(v), ci) for v, ci in entries
              if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    if not values:
        return Agg(None, total=len(entries))
    xs = [v for v, _ in values]
    mean = math.fsum(xs) / len(xs)
    if len(xs) >= 2 and max(xs) - min(xs) > 1e-12:
        sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
        half = _t975(len(xs) - 1) * sd / math.sqrt(len(xs))
        low, high = mean - half, mean + half
        if bounds[0] is not None:
            low = max(bounds[0], low)
        if bounds[1] is not None:
            high = min(bounds[1], high)
        return Agg(mean, low, high, len(xs), len(entries), "seeds")
    ci = values[0][1]
    if isinstance(ci, list) and len(ci) == 2 and None not in ci:
        return Agg(mean, float(ci[0]), float(ci[1]), len(xs), len(entries), "bootstrap")
    return Agg(mean, n=len(xs), total=len(entries))


def best_rows(aggs: list[Agg], metric: str) -> set[int]:
    d = direction(metric)
    shown = [(i, round(100 * a.mean, 1)) for i, a in enumerate(aggs) if a.mean is not None]
    if d is None or len(shown) < 2:
        return set()
    target = max(v for _, v in shown) if d else min(v for _, v in shown)
    return {i for i, v in shown if v == target}



# -- rows and columns ---------------------------------------------------------------------------------------
@dataclass
class Row:
    model: str
    adapt: str
    cells: list[ResultCell]

    @property
    def adapt_label(self) -> str:
        """The adapter as rows name it: ``linear_probe (trained on A)`` for cross-dataset cells."""
        return adapt_label(self.adapt)

    @property
    def label(self) -> str:
        """The model as its rows name it, marked when its weights were random (untrained)."""
        n = sum(random_weights(c.doc) for c in self.cells)
        if not n:
            return self.model
        return f"{self.model} {RANDOM_MARK}" + ("" if n == len(self.cells) else f" in {n} of {len(self.cells)} seeds")


def table_rows(cells: list[ResultCell]) -> list[Row]:
    groups: dict[tuple[str, str], list[ResultCell]] = {}
    for c in cells:
        groups.setdefault((c.model, c.adapt), []).append(c)
    rows = [Row(m, a, sorted(cs, key=lambda c: c.seed)) for (m, a), cs in groups.items()]

    def auc(r: Row) -> float:
        m = aggregate(r.cells, ("overall", "auc")).mean
        return -m if m is not None else math.inf

    return sorted(rows, key=lambda r: (auc(r), r.model, r.adapt))


def present(cells: list[ResultCell], *path: str) -> bool:
    return any(lookup(c.metrics, *path) is not None for c in cells)


def resolve_key(cells: list[ResultCell], scope: tuple[str, ...], metric: str) -> str | None:
    """The key a column reads: the metric itself, or its multiclass one-vs-rest mean."""
    for key in (metric, f"{metric}_mean_ovr"):
        if present(cells, *scope, key):
            return key
    return None


def card_extras(task: str, tasks_dirs: Sequence[Path]) -> tuple[list[str], list[str], bool]:
    """(utility extras, fairness extras, card found) from the task card's ``metrics`` list."""
    from fairbench.errors import FairbenchError
    from fairbench.metrics import METRICS

    try:
        from fairbench.data.task import get_task

        card = get_task(task, tuple(tasks_dirs))
    except FairbenchError:
        return [], [], False
    util, fair = [], []
    base = set(UTILITY) | set(FAIRNESS) | {f"{m}_mean_ovr" for m in FAIRNESS}
    for m in card.metrics:
        if m in base or m not in METRICS:
            continue
        spec = METRICS.get(m)
        if spec.per_class:
            continue
        (util if spec.kind == "slice" else fair).append(m)
    return util, fair, True


#: a table column: (header, metrics path, metric for direction/bold or None, show interval)
Column = tuple[str, tuple[str, ...], str | None, bool]


def table_values(rows: list[Row], columns: list[Column]) -> tuple[list[list[Agg]], list[set[int]]]:
    """Per row and column the aggregate over seeds, and per column the rows that are best (bold): what the
    markdown tables and the HTML report (:mod:`fairbench.report.html`) both show."""
    aggs = [[aggregate(r.cells, path) for _, path, _, _ in columns] for r in rows]
    best = [best_rows([a[j] for a in aggs], metric) if metric else set() for j, (_, _, metric, _) in
            enumerate(columns)]
    return aggs, best



def newest(cells: list[ResultCell]) -> str:
    stamps = sorted(str(lookup(c.doc, "provenance", "started_at")) for c in cells
                    if lookup(c.doc, "provenance", "started_at"))
    return stamps[-1] if stamps else "unknown (no provenance.started_at in the results)"


def digest(cells: list[ResultCell]) -> str:
    h = hashlib.sha256()
    for c in sorted(cells, key=lambda c: c.key):
        h.update(c.key.encode())
        h.update(hashlib.sha256((c.path / METRICS_FILE).read_bytes()).digest())
    return h.hexdigest()[:16]


def distinct(cells: list[ResultCell], *path: str) -> list[str]:
    return sorted({str(lookup(c.doc, *path)) for c in cells if lookup(c.doc, *path) is not None})


@dataclass
class HeaderFacts:
    """What a leaderboard page's header says of its cells (the markdown page and the HTML report both use it)."""

    version: list[str]
    commits: list[str]  # short commit, "-dirty" when the tree had changes
    produced: list[str]  # fairbench versions
    split: list[str]
    ns: list[int]
    boots: list[int]
    thresholds: list[str]

    @classmethod
    def of(cls, cells: list[ResultCell]) -> HeaderFacts:
        return cls(version=distinct(cells, "task", "version"),
                   commits=sorted({f"{str(lookup(c.doc, 'provenance', 'git_commit'))[:10]}"
                                   f"{'-dirty' if lookup(c.doc, 'provenance', 'git_dirty') else ''}"
                                   for c in cells if lookup(c.doc, "provenance", "git_commit")})
                   + _no_commit(cells),
                   produced=distinct(cells, "provenance", "fairbench_version"),
                   split=distinct(cells, "task", "eval_split") or ["test"],
                   ns=sorted({int(n) for c in cells if (n := lookup(c.metrics, "overall", "n")) is not None}),
                   boots=sorted({int(b) for c in cells if (b := c.metrics.get("n_boot")) is not None}),
                   thresholds=_threshold_rules(cells))


def _no_commit(cells: list[ResultCell]) -> list[str]:
    """The header's commit list must describe every cell it lists: cells that recorded no commit are counted
    (never covered by another cell's commit)."""
    k = sum(1 for c in cells if not lookup(c.doc, "provenance", "git_commit"))
    return [f"none recorded for {k} of {len(cells)} cells"] if k else []


def _threshold_rules(cells: list[ResultCell]) -> list[str]:
    """Each distinct threshold rule as a reader needs it: a fixed threshold with its value ("fixed at 0.5"), a
    rule chosen on the validation split by name and split ("youden on val"), argmax for multiclass."""
    out = set()
    for c in cells:
        t = c.doc.get("threshold") if isinstance(c.doc.get("threshold"), dict) else {}
        rule, value, on = t.get("rule"), t.get("value"), t.get("chosen_on")
        if rule is None:
            continue
        if rule == "fixed" and isinstance(value, (int, float)):
            out.add(f"fixed at {value:g}")
        elif on not in (None, "fixed", rule):
            out.add(f"{rule} on {on}")
        else:
            out.add(str(rule))
    return sorted(out)


def attribute_groups(attr: str, cells: list[ResultCell]) -> dict[str, Any]:
    """The attribute's groups in the order the cells list them, with their n in the evaluated split."""
    groups: dict[str, Any] = {}
    for c in cells:
        for g, gm in (lookup(c.metrics, "attributes", attr, "groups") or {}).items():
            groups.setdefault(g, (gm or {}).get("n"))
    return groups


def small_groups(attr: str, cells: list[ResultCell]) -> tuple[dict[str, Any], Any]:
    """({group: n} flagged small in some cell, the minimum group size)."""
    small: dict[str, Any] = {}
    for c in cells:
        small.update(lookup(c.metrics, "flags", "small_groups", attr) or {})
    minimum = next((lookup(c.metrics, "flags", "min_group_size") for c in cells), None)
    return dict(sorted(small.items())), minimum


def attribute_columns(attr: str, cells: list[ResultCell], extras: list[str]) -> list[Column]:
    """A fairness table's columns: group AUCs (means only, up to MAX_GROUP_COLUMNS groups), then the fairness
    metrics (and the task card's extras) with intervals."""
    scope = ("attributes", attr)
    groups = attribute_groups(attr, cells)
    columns: list[Column] = []
    if len(groups) <= MAX_GROUP_COLUMNS:
        columns += [(f"AUC {g}", (*scope, "groups", g, "auc"), None, False) for g in groups]
    for metric in [*FAIRNESS, *extras]:
        key = resolve_key(cells, scope, metric)
        if key is not None and key not in [p[-1] for _, p, _, _ in columns]:
            columns.append((metric_label(key) + arrow(key), (*scope, key), key, True))
    return columns


def utility_columns(cells: list[ResultCell], extras: list[str]) -> list[Column]:
    """The utility table's columns: the standard utility metrics and the task card's extras, where present."""
    return [(metric_label(m) + arrow(m), ("overall", m), m, True) for m in [*UTILITY, *extras]
            if present(cells, "overall", m)]
