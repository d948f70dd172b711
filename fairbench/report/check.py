"""`fairbench check`: compare result cells with a committed baseline; fail on regressions.

A baseline (JSON) holds, per cell (``task/model/adapt/seedN``), the evaluated sample set and every
comparable number: overall metrics, each attribute's summaries, and each group's n and AUC. Tolerances are
absolute, in the units of metrics.json (fractions), per metric name with a default. The comparison is
direction-aware (the metric registry's ``higher_is_better``): an AUC falling or a fairness gap growing by
more than its tolerance is a regression and fails. The same move the other way is an improvement: by default
(two-sided, a regression test of numbers) it fails too, since a bug can raise an AUC or shrink a gap as easily as
the opposite; one-sided (``--one-sided``) it is reported and passes. A metric without a direction fails on any
move beyond tolerance; counts must match exactly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fairbench import __version__
from fairbench.errors import FairbenchError, ResultsError
from fairbench.kv import split_kv
from fairbench.progress import stdout_console
from fairbench.report.collect import Collection, ResultCell, collect
from fairbench.report.leaderboard import direction
from fairbench.report.summary import lookup
from fairbench.results import write_json

__all__ = [
    "DEFAULT_TOLERANCES",
    "CheckResult",
    "Move",
    "compare",
    "extract",
    "make_baseline",
    "parse_tolerances",
    "run_check",
]

BASELINE_VERSION = 1
#: absolute tolerances (fractions); counts exact
DEFAULT_TOLERANCES: dict[str, float] = {"default": 0.01}
_COUNTS = ("n", "n_pos", "n_neg", "n_unknown", "n_per_class")
_GROUP_KEYS = ("n", "auc")
FAILING = ("regression", "changed", "undefined", "missing", "data changed", "missing cell", "unreadable")
#: verdicts that fail only in a two-sided check (the default): a move the good way, a null that became a number
TWO_SIDED = {"improvement": "improvement (two-sided)", "newly defined": "newly defined (two-sided)"}
FAILING_TWO_SIDED = tuple(TWO_SIDED.values())


# -- what is compared -----------------------------------------------------------------------------------------
def _numbers(prefix: str, tree: dict[str, Any], out: dict[str, Any], keys: Sequence[str] | None = None) -> None:
    for k, v in tree.items():
        if keys is not None and k not in keys:
            continue
        if k == "groups":
            continue
        if isinstance(v, dict):
            for sub, x in v.items():
                if x is None or (isinstance(x, (int, float)) and not isinstance(x, bool)):
                    out[f"{prefix}.{k}.{sub}"] = x
        elif v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)):
            out[f"{prefix}.{k}"] = v


def extract(cell: ResultCell) -> dict[str, Any]:
    """The comparable numbers of one cell, keyed by metrics.json path (``attributes.sex.es_auc``)."""
    m = cell.metrics
    out: dict[str, Any] = {}
    _numbers("overall", m.get("overall") or {}, out)
    for attr, a in (m.get("attributes") or {}).items():
        _numbers(f"attributes.{attr}", a or {}, out)
        for g, gm in ((a or {}).get("groups") or {}).items():
            _numbers(f"attributes.{attr}.groups.{g}", gm or {}, out, _GROUP_KEYS)
    return dict(sorted(out.items()))


def _metric_name(path: str) -> str:
    """The registry name a path's value belongs to: the last key, or the one before a per-class key."""
    parts = path.split(".")
    if len(parts) >= 2 and (parts[-2].endswith("_per_class") or parts[-2] == "n_per_class"):
        return parts[-2]
    return parts[-1]


def make_baseline(col: Collection, tolerances: dict[str, float]) -> dict[str, Any]:
    if col.problems:
        raise ResultsError("refusing to write a baseline from results with unreadable cells: "
                           + "; ".join(f"{p}: {why}" for p, why in col.problems[:3]))
    if not col.cells:
        raise ResultsError(f"no result cells under {', '.join(col.roots)} to write a baseline from")
    stamps = sorted(str(lookup(c.doc, "provenance", "started_at")) for c in col.cells
                    if lookup(c.doc, "provenance", "started_at"))
    return {
        "fairbench_baseline": BASELINE_VERSION,
        "written_by": f"fairbench {__version__} (`fairbench check --update`)",
        "as_of": stamps[-1] if stamps else None,
        "tolerances": dict(sorted(tolerances.items())),
        "cells": {c.key: {"task_version": lookup(c.doc, "task", "version"),
                          "samples_sha256": lookup(c.doc, "task", "samples_sha256"),
                          "metrics": extract(c)} for c in col.cells},
    }


# -- comparison -----------------------------------------------------------------------------------------------
@dataclass
class Move:
    cell: str
    metric: str
    base: Any
    now: Any
    tolerance: float | None
    verdict: str  # regression | changed | undefined | missing | data changed | missing cell | unreadable |
    #               improvement | newly defined | new cell | within

    @property
    def delta(self) -> float | None:
        if isinstance(self.base, (int, float)) and isinstance(self.now, (int, float)):
            return float(self.now) - float(self.base)
        return None

    @property
    def failing(self) -> bool:
        return self.verdict.split(":")[0] in FAILING + FAILING_TWO_SIDED


@dataclass
class CheckResult:
    moves: list[Move] = field(default_factory=list)
    within: int = 0
    largest_within: float = 0.0
    cells: int = 0

    @property
    def failed(self) -> bool:
        return any(m.failing for m in self.moves)

    def count(self, *verdicts: str) -> int:
        return sum(1 for m in self.moves if m.verdict in verdicts)


def _tolerance(metric: str, tolerances: dict[str, float]) -> float:
    if metric in tolerances:
        return float(tolerances[metric])
    if metric in _COUNTS:
        return 0.0
    return float(tolerances.get("default", DEFAULT_TOLERANCES["default"]))


def compare(col: Collection, baseline: dict[str, Any], tolerances: dict[str, float],
            verbose: bool = False, *, two_sided: bool = True) -> CheckResult:
    """Every baseline number against the results. ``two_sided`` (default): a move the good way beyond
    tolerance fails too; one-sided it passes and is listed."""
    res = CheckResult(cells=len(col.cells))
    for path, why in col.problems:
        res.moves.append(Move(str(path), "metrics.json", None, None, None, f"unreadable: {why}"))
    base_cells: dict[str, Any] = baseline.get("cells") or {}
    now = {c.key: c for c in col.cells}
    for key in sorted(set(base_cells) - set(now)):
        res.moves.append(Move(key, "(cell)", "present", "absent", None, "missing cell"))
    for key in sorted(set(now) - set(base_cells)):
        res.moves.append(Move(key, "(cell)", "absent", "present", None, "new cell"))
    for key in sorted(set(now) & set(base_cells)):
        cell, base = now[key], base_cells[key]
        for field_, path in (("task_version", ("task", "version")), ("samples_sha256", ("task", "samples_sha256"))):
            was, is_ = base.get(field_), lookup(cell.doc, *path)
            if was is not None and was != is_:
                res.moves.append(Move(key, f"task.{path[-1]}", _short(was), _short(is_), None, "data changed"))
        current = extract(cell)
        for metric, b in (base.get("metrics") or {}).items():
            _compare_one(res, key, metric, b, current, tolerances, verbose)
    if two_sided:
        for m in res.moves:
            m.verdict = TWO_SIDED.get(m.verdict, m.verdict)
    return res


def _compare_one(res: CheckResult, key: str, metric: str, b: Any, current: dict[str, Any],
                 tolerances: dict[str, float], verbose: bool) -> None:
    name = _metric_name(metric)
    tol = _tolerance(name, tolerances)
    if metric not in current:
        res.moves.append(Move(key, metric, b, "absent", tol, "missing"))
        return
    n = current[metric]
    if b is None and n is None:
        res.within += 1
        return
    if b is None:
        res.moves.append(Move(key, metric, b, n, tol, "newly defined"))
        return
    if n is None:
        res.moves.append(Move(key, metric, b, n, tol, "undefined"))
        return
    delta = float(n) - float(b)
    if abs(delta) <= tol + 1e-12:
        res.within += 1
        res.largest_within = max(res.largest_within, abs(delta))
        if verbose and delta != 0:
            res.moves.append(Move(key, metric, b, n, tol, "within"))
        return
    hib = None if name in _COUNTS else direction(name)
    if hib is None:
        verdict = "changed"
    else:
        verdict = "improvement" if (delta > 0) == hib else "regression"
    res.moves.append(Move(key, metric, b, n, tol, verdict))


def _short(v: Any) -> str:
    s = str(v)
    return s[:12] + "…" if len(s) > 13 else s


# -- tolerances and the command -----------------------------------------------------------------------------
def parse_tolerances(items: Sequence[str]) -> dict[str, float]:
    """``0.02`` (the default) or ``METRIC=0.005`` (one metric name, e.g. auc, es_auc, dpd)."""
    out: dict[str, float] = {}
    for item in items:
        name, text = split_kv(item, "--tolerance", expected="a number or METRIC=NUMBER", bare_key="default")
        try:
            tol = float(text)
        except ValueError:
            raise FairbenchError(f"--tolerance {item!r}: expected a number or METRIC=NUMBER") from None
        if not math.isfinite(tol) or tol < 0:
            raise FairbenchError(f"--tolerance {item!r}: a tolerance is a non-negative number")
        out[name] = tol
    return out


def read_baseline(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such baseline; write one with `fairbench check RESULTS --baseline "
                           f"{path} --update`") from None
    except (OSError, ValueError) as exc:
        raise ResultsError(f"{path}: not a readable baseline ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict) or data.get("fairbench_baseline") != BASELINE_VERSION:
        raise ResultsError(f"{path}: not a fairbench baseline (version {BASELINE_VERSION})")
    return data


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "null" if v is None else str(v)
    return str(v) if isinstance(v, int) else f"{v:.4f}"


def print_result(res: CheckResult, console: Console, *, baseline: Path) -> None:
    order = {v: i for i, v in enumerate((*FAILING, *FAILING_TWO_SIDED, "newly defined", "improvement", "new cell",
                                          "within"))}
    moves = sorted(res.moves, key=lambda m: (order.get(m.verdict.split(":")[0], 99), m.cell, m.metric))
    if moves:
        table = Table(title=f"What moved against {baseline} (values as in metrics.json: fractions)",
                      title_justify="left")
        for col, just in (("cell", "left"), ("metric", "left"), ("baseline", "right"), ("now", "right"),
                          ("Δ", "right"), ("tolerance", "right"), ("verdict", "left")):
            table.add_column(col, justify=just)  # type: ignore[arg-type]
        for m in moves:
            style = "bold red" if m.failing else "green" if m.verdict in ("improvement", "newly defined") else ""
            delta = m.delta
            exact = isinstance(m.base, int) and isinstance(m.now, int)
            shown = "" if delta is None else f"{int(delta):+d}" if exact else f"{delta:+.4f}"
            table.add_row(m.cell, m.metric, _fmt(m.base), _fmt(m.now), shown,
                          "" if m.tolerance is None else _fmt(m.tolerance), m.verdict, style=style)
        console.print(table)
    fails = sum(1 for m in res.moves if m.failing)
    improved = res.count("improvement", "newly defined", *FAILING_TWO_SIDED)
    console.print(f"check: {res.cells} cells; {fails} failing, {improved} "
                  f"improved beyond tolerance, {res.within} within tolerance (largest move "
                  f"{res.largest_within:.2g}); {'FAILED' if res.failed else 'passed'}", markup=False, soft_wrap=True)
    if res.count("new cell"):
        console.print("cells not in the baseline are not checked; add them with --update", markup=False)


def run_check(results: Sequence[Path | str], baseline: Path, *, tolerance: Sequence[str] = (), update: bool = False,
              verbose: bool = False, two_sided: bool = True, console: Console | None = None) -> int:
    """Exit code: 0 passed (or baseline written), 1 regression (or, two-sided, any move beyond tolerance) or
    unreadable results."""
    if console is None:
        console = stdout_console()  # CI logs: never wrap a path or a metric name
    col = collect(results)
    given = parse_tolerances(tolerance)
    old = read_baseline(baseline) if Path(baseline).exists() else None
    tolerances = {**DEFAULT_TOLERANCES, **((old or {}).get("tolerances") or {}), **given}
    if update:
        doc = make_baseline(col, tolerances)
        if old is not None:
            print_result(compare(col, old, tolerances, two_sided=two_sided), console, baseline=baseline)
        write_json(Path(baseline), doc)
        console.print(f"wrote baseline {baseline}: {len(doc['cells'])} cells, "
                      f"{sum(len(c['metrics']) for c in doc['cells'].values())} numbers", markup=False)
        return 0
    if old is None:
        read_baseline(baseline)  # raises the "no such baseline" error
    res = compare(col, old, tolerances, verbose, two_sided=two_sided)  # type: ignore[arg-type]
    print_result(res, console, baseline=baseline)
    return 1 if res.failed else 0
