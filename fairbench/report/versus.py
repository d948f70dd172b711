""""Versus <reference>": paired differences B - reference per task, for the leaderboard and the forest plot.

For every (model, adapter) of a task other than the reference adapter, the cells are compared with the same
model's reference-adapter cells on the same test samples (:func:`fairbench.compare.compare_pair`: a paired
bootstrap of every metric), seed by seed over the seeds present on both sides. Each pair is computed once;
the leaderboard's tables and the forest plot read the same :class:`Versus`.

What a row shows per metric (:meth:`VersusRow.delta`):

- one paired seed: that seed's delta, its 95% paired-bootstrap percentile interval and bootstrap p-value;
- two or more: the mean of the per-seed deltas with the interval and p-value of
  :func:`fairbench.compare.across_seeds` (as `fairbench compare` prints them): a t interval whose standard
  error combines the seeds' spread with their paired-bootstrap variance, clipped to [-1, 1]; where every seed
  gives the same delta (deterministic adapters on fixed weights) the seeds carry no spread, and the first
  seed's paired bootstrap is shown instead, as the leaderboard does for its own intervals.

Per protected attribute, :meth:`Versus.table` adds Holm-adjusted p-values over the table's comparisons.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fairbench.errors import FairbenchError
from fairbench.registry import did_you_mean
from fairbench.report.summary import OUTSIDE_MARK, lookup
from fairbench.results import ResultCell

__all__ = [
    "VERSUS_METRICS",
    "Delta",
    "Versus",
    "VersusRow",
    "VersusTable",
    "check_reference",
    "compute_versus",
    "fmt_delta",
    "fmt_p",
    "holm",
]

#: the metrics of a "versus" table, in column order (multiclass tasks read dpd/deodds as their OvR means)
VERSUS_METRICS = ("auc", "es_auc", "auc_gap", "dpd", "deodds")
BOOTSTRAP_SEED = 0
_SAME = 1e-12  # per-seed deltas closer than this are "the same" (as in the leaderboard's aggregate and compare)


@dataclass(frozen=True)
class Delta:
    """B - reference for one metric of one row; ``method``: "bootstrap" (one seed's paired bootstrap),
    "seeds" (mean over seeds, interval combining seed and test-sample variation) or "same" (seeds gave the
    same delta: the first seed's paired bootstrap)."""

    delta: float | None
    ci: tuple[float, float] | None
    p: float | None
    method: str

    @property
    def excludes_zero(self) -> bool:
        return self.ci is not None and (self.ci[0] > 0 or self.ci[1] < 0)


@dataclass
class VersusRow:
    model: str
    adapt: str
    #: "ok", "no reference cell", "no shared seed" or "not comparable"
    status: str
    seeds: tuple[int, ...] = ()  # the paired seeds whose comparison succeeded
    unpaired: tuple[int, ...] = ()  # this row's seeds without a reference cell of the same seed
    reference_seeds: tuple[int, ...] = ()  # the seeds of the same model's reference cells
    per_seed: dict[int, dict[str, Any]] = field(default_factory=dict, repr=False)  # compare_pair results

    @property
    def adapt_label(self) -> str:
        """The adapter as rows name it: ``linear_probe (trained on A)`` for cross-dataset cells."""
        from fairbench.results.cells import adapt_label

        return adapt_label(self.adapt)
    across: dict[str, Any] = field(default_factory=dict, repr=False)  # across_seeds result (2+ seeds)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def method(self) -> str:
        """"seeds" (2+ paired seeds) or "bootstrap" (one)."""
        return "seeds" if len(self.seeds) >= 2 else "bootstrap"

    def delta(self, path: tuple[str, ...]) -> Delta | None:
        """B - reference at a metrics.json path (None for a row without comparisons)."""
        if not self.ok:
            return None
        first = lookup(self.per_seed[self.seeds[0]]["metrics"], *path) or {}
        if len(self.seeds) == 1:
            return _bootstrap(first, "bootstrap")
        values = [lookup(self.per_seed[s]["metrics"], *path, "delta") for s in self.seeds]
        if any(not isinstance(v, (int, float)) for v in values):
            return Delta(None, None, None, "seeds")  # undefined in some seed
        if max(values) - min(values) <= _SAME:
            return _bootstrap(first, "same")
        t = lookup(self.across, *path) or {}
        ci = t.get("ci")
        return Delta(t.get("mean_delta"), (max(-1.0, ci[0]), min(1.0, ci[1])) if ci else None, t.get("p"), "seeds")


def _bootstrap(entry: dict[str, Any], method: str) -> Delta:
    ci = entry.get("ci")
    ok = isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci
    return Delta(entry.get("delta"), (float(ci[0]), float(ci[1])) if ok else None, entry.get("p"), method)


def holm(ps: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of the defined p-values (None stays None): sorted ascending, the i-th
    (0-based) of m becomes max over j <= i of min(1, (m - j) p_(j))."""
    defined = sorted((p, i) for i, p in enumerate(ps) if p is not None)
    m = len(defined)
    out: list[float | None] = [None] * len(ps)
    running = 0.0
    for rank, (p, i) in enumerate(defined):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


@dataclass(frozen=True)
class VersusTable:
    """One protected attribute: per row, the metric paths' deltas and Holm-adjusted p-values."""

    attribute: str
    paths: tuple[tuple[str, ...], ...]  # one per VERSUS_METRICS entry
    rows: list[tuple[VersusRow, list[Delta | None], list[float | None]]]
    n_comparisons: int  # deltas with a p-value (the Holm family)
    n_cells: int  # deltas the table holds (compared rows x metrics)


@dataclass
class Versus:
    task: str
    reference: str
    n_boot: int
    rows: list[VersusRow]
    attributes: list[str]
    #: per attribute, the metrics.json path of each of VERSUS_METRICS
    paths: dict[str, tuple[tuple[str, ...], ...]]
    cautions: list[str] = field(default_factory=list)
    unavailable: str | None = None  # why nothing could be compared (no task card)

    def table(self, attr: str) -> VersusTable:
        paths = self.paths[attr]
        deltas = [[r.delta(p) for p in paths] for r in self.rows]
        flat = [d.p if d is not None else None for ds in deltas for d in ds]
        adjusted = holm(flat)
        k = len(paths)
        rows = [(r, deltas[i], adjusted[i * k:(i + 1) * k]) for i, r in enumerate(self.rows)]
        return VersusTable(attr, paths, rows, sum(p is not None for p in flat),
                           sum(d is not None for ds in deltas for d in ds))


def check_reference(cells: Sequence[ResultCell], reference: str) -> None:
    """One clear error when no cell has the reference adapter, naming the adapters present."""
    present = sorted({c.adapt for c in cells})
    if reference not in present:
        from fairbench.adapters.base import ADAPTERS

        # the registry's did-you-mean, over the adapters these results have (then over every registered one)
        hint = did_you_mean(reference, present) or (
            did_you_mean(reference, ADAPTERS.names()) if reference not in ADAPTERS else "")
        raise FairbenchError(f"--reference {reference}: no result cell has adapter '{reference}' (adapters "
                             f"present: {', '.join(present) or 'none'})" + (f".{hint}" if hint else ""))


def _paths(attr: str, cells: Sequence[ResultCell]) -> tuple[tuple[str, ...], ...]:
    out = []
    for metric in VERSUS_METRICS:
        if metric == "auc":
            out.append(("overall", "auc"))
            continue
        key = next((k for k in (metric, f"{metric}_mean_ovr")
                    if any(lookup(c.metrics, "attributes", attr, k) is not None for c in cells)), metric)
        out.append(("attributes", attr, key))
    return tuple(out)


def _n_boot(cells: Sequence[ResultCell], card: Any) -> int:
    """The cells' bootstrap count when they all record the same positive one, else the task card's."""
    recorded = {int(b) for c in cells if isinstance(b := c.metrics.get("n_boot"), int)}
    if len(recorded) == 1 and next(iter(recorded)) > 0:
        return next(iter(recorded))
    return int(card.evaluation.n_boot)


def compute_versus(task: str, cells: Sequence[ResultCell], reference: str, *, tasks_dirs: Sequence[Path] = (),
                   n_boot: int | None = None) -> Versus:
    """Every (model, adapter) of the task's cells against (same model, ``reference``), each pair once."""
    from fairbench.compare import across_seeds, compare_pair
    from fairbench.data.task import get_task

    cells = list(cells)
    attrs = list(dict.fromkeys(a for c in cells for a in (c.metrics.get("attributes") or {})))
    paths = {a: _paths(a, cells) for a in attrs}
    groups: dict[tuple[str, str], dict[int, ResultCell]] = {}
    for c in cells:
        groups.setdefault((c.model, c.adapt), {})[c.seed] = c
    keys = sorted(k for k in groups if k[1] != reference)
    try:
        card = get_task(task, tuple(tasks_dirs))
    except FairbenchError as exc:
        rows = [VersusRow(m, a, "not comparable") for m, a in keys]
        return Versus(task, reference, 0, rows, attrs, paths,
                      unavailable=f"the task card '{task}' was not found, so the cells cannot be paired (pass "
                                  f"--tasks-dir): {exc}")
    boot = _n_boot(cells, card) if n_boot is None else int(n_boot)
    rows: list[VersusRow] = []
    cautions: list[str] = []
    for model, adapt in keys:
        mine, ref = groups[(model, adapt)], groups.get((model, reference))
        if not ref:
            rows.append(VersusRow(model, adapt, "no reference cell", unpaired=tuple(sorted(mine))))
            continue
        shared = sorted(mine.keys() & ref.keys())
        unpaired = tuple(sorted(mine.keys() - ref.keys()))
        if not shared:
            rows.append(VersusRow(model, adapt, "no shared seed", unpaired=unpaired,
                                  reference_seeds=tuple(sorted(ref))))
            continue
        per_seed: dict[int, dict[str, Any]] = {}
        for s in shared:
            a, b = ref[s], mine[s]
            try:
                per_seed[s] = compare_pair(replace(a, label=a.key), replace(b, label=b.key), card, n_boot=boot,
                                           seed=BOOTSTRAP_SEED)
            except FairbenchError as exc:
                cautions.append(f"{b.key} was not compared with {a.key}: {exc}")
        if not per_seed:
            rows.append(VersusRow(model, adapt, "not comparable", unpaired=unpaired,
                                  reference_seeds=tuple(sorted(ref))))
            continue
        seeds = tuple(sorted(per_seed))
        rows.append(VersusRow(model, adapt, "ok", seeds=seeds, unpaired=unpaired, reference_seeds=tuple(sorted(ref)),
                              per_seed=per_seed, across=across_seeds(per_seed) if len(seeds) >= 2 else {}))
    return Versus(task, reference, boot, rows, attrs, paths, cautions)


def fmt_delta(d: Delta | None) -> str:
    """x100, signed, one decimal, with the interval (``‡`` after an interval that does not contain Δ); ``*`` when
    the interval excludes 0."""
    if d is None or d.delta is None or not math.isfinite(d.delta):
        return "n/a"
    text = _signed(d.delta)
    if d.ci is not None:
        text += f" [{_signed(d.ci[0])}, {_signed(d.ci[1])}]"
        if not d.ci[0] <= d.delta <= d.ci[1]:
            text += OUTSIDE_MARK  # docs/metrics.md, "Which interval"
    if d.method == "same":
        text += "†"
    return text + (" *" if d.excludes_zero else "")


def fmt_p(p: float | None) -> str:
    """As `fairbench compare` prints p-values: three decimals, or two significant digits below 0.001."""
    if p is None:
        return "n/a"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _signed(v: float) -> str:
    text = f"{100 * v:+.1f}"
    return "+0.0" if text == "-0.0" else text
