"""`fairbench report`: a static HTML site of result cells that opens from disk (file://), no server, no network.

SITE/index.html lists the tasks; SITE/tasks/<task>.html holds the leaderboard tables of the markdown
leaderboard (the same columns, aggregates, intervals and bold entries: :func:`fairbench.report.leaderboard
.table_values`), sortable in the browser, with the fairness-utility figure and, with a reference adapter, the
"versus" tables and forest plot; SITE/cells/<task>/<model>/<adapt>/seed<N>/index.html holds one cell: every
metric with its interval, the per-group tables, its figures, threshold, data report, training curves and
provenance, beside a copy of its metrics.json. Pages are rendered by Jinja2 templates (autoescaped) from
``fairbench/report/templates``; SITE/assets holds the stylesheet and the sorting script.

Figures are inline SVG. An SVG that ``fairbench plot`` already wrote (under ``figures``, or under SITE/figures
from an earlier report) is reused when it is not older than the results it shows; a missing or stale one is
drawn once, as SVG, into SITE/figures.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fairbench import __version__
from fairbench.errors import FairbenchError, ResultsError
from fairbench.report.collect import Collection, ResultCell, collect
from fairbench.report.formatting import arrow, fmt_agg, fmt_raw, is_count, metric_label, number, pct, slug
from fairbench.report.leaderboard import latest_version, problem_task, versus_seeds_text
from fairbench.report.page_model import Figure, Table, TCell, THead
from fairbench.report.reported import ReportedSource, column_label, fmt_value, load_reported
from fairbench.report.summary import lookup, random_weights
from fairbench.report.tables import (
    Column,
    HeaderFacts,
    aggregate,
    attribute_columns,
    attribute_groups,
    card_extras,
    digest,
    distinct,
    newest,
    resolve_key,
    small_groups,
    table_rows,
    table_values,
    utility_columns,
)
from fairbench.report.versus import Versus, check_reference, compute_versus, fmt_delta, fmt_p
from fairbench.results import METRICS as METRICS_FILE
from fairbench.results.cells import adapt_label

__all__ = ["ASSETS", "TEMPLATES", "write_site"]

TEMPLATES = Path(__file__).resolve().parent / "templates"
ASSETS = ("site.css", "sort.js")
MAX_SKIPPED_LISTED = 200


# -- the template data: fairbench/report/page_model.py ----------------------------------------------------------


def _col_key(path: tuple[str, ...]) -> str:
    """``("overall", "auc")`` -> ``auc``; a group column -> ``auc:<group>``."""
    if len(path) >= 5 and path[2] == "groups":
        return f"{path[-1]}:{path[3]}"
    return path[-1]


# -- figures: reuse what exists, draw what is missing ---------------------------------------------------------
def _plots() -> Any:
    """fairbench.report.plots, imported only when a figure must be drawn (matplotlib takes a second to load)."""
    from fairbench.report import plots

    return plots


class _Figures:
    def __init__(self, site: Path, figures: Path | None):
        self.draw_dir = site / "figures"
        self.sources = [d for d in (figures, self.draw_dir) if d is not None]
        self.reused = 0
        self.drawn = 0

    def _find(self, rel: str, newer_than: float) -> Path | None:
        for d in self.sources:
            p = d / rel
            if p.is_file() and p.stat().st_mtime >= newer_than:
                return p
        return None

    def _get(self, rels: list[str], cells: Sequence[ResultCell], draw: Any) -> dict[str, Path | None]:
        stamp = max((c.path / METRICS_FILE).stat().st_mtime for c in cells)
        found = {rel: self._find(rel, stamp) for rel in rels}
        missing = sum(p is None for p in found.values())
        self.reused += len(found) - missing
        if missing:
            self.drawn += len(draw())
            found = {rel: p or (self.draw_dir / rel if (self.draw_dir / rel).is_file() else None)
                     for rel, p in found.items()}
        return found

    def cell(self, cell: ResultCell) -> tuple[dict[str, Path | None], list[str]]:
        base = f"{cell.task}/{cell.model}/{cell.adapt}/seed{cell.seed}"
        attrs = [a for a, v in (cell.metrics.get("attributes") or {}).items() if (v or {}).get("groups")]
        problems: list[str] = []

        def draw() -> list[Path]:
            from fairbench.report.plots import plot_cell

            files, probs = plot_cell(cell, self.draw_dir, ("svg",))
            problems.extend(probs)
            return files

        found = self._get([f"{base}/{slug(a)}.svg" for a in attrs], [cell], draw) if attrs else {}
        return {a: found[f"{base}/{slug(a)}.svg"] for a in attrs}, problems

    def analyses(self, cell: ResultCell) -> tuple[dict[str, Path | None], list[str]]:
        """The figure of each analysis the cell recorded (:func:`fairbench.report.analyses_view.figure_names`)."""
        from fairbench.report.analyses_view import figure_names, figure_stem

        base = f"{cell.task}/{cell.model}/{cell.adapt}/seed{cell.seed}"
        names = figure_names(cell)
        problems: list[str] = []

        def draw() -> list[Path]:
            from fairbench.report.plots_analyses import plot_analyses

            files, probs = plot_analyses(cell, self.draw_dir, ("svg",))
            problems.extend(probs)
            return files

        rels = {name: f"{base}/{figure_stem(name)}.svg" for name in names}
        found = self._get(list(rels.values()), [cell], draw) if rels else {}
        return {name: found[rel] for name, rel in rels.items()}, problems

    def training(self, cell: ResultCell) -> Path | None:
        epochs = lookup(cell.doc, "adapt", "fitted", "epochs")
        if not isinstance(epochs, list) or not epochs:
            return None
        rel = f"{cell.task}/{cell.model}/{cell.adapt}/seed{cell.seed}/training.svg"
        return self._get([rel], [cell], lambda: _plots().plot_training(cell, self.draw_dir, ("svg",)))[rel]

    def tradeoff(self, task: str, cells: list[ResultCell]) -> Path | None:
        rel = f"{task}/fairness_utility.svg"
        if not any(lookup(c.metrics, "attributes", a, "es_auc") is not None for c in cells
                   for a in (c.metrics.get("attributes") or {})):
            return None
        return self._get([rel], cells, lambda: _plots().plot_tradeoff(task, cells, self.draw_dir, ("svg",)))[rel]

    def versus(self, v: Versus, cells: list[ResultCell], synthetic: bool) -> Path | None:
        if v.unavailable or not any(r.ok for r in v.rows):
            return None
        rel = f"{v.task}/versus_{slug(v.reference)}.svg"
        return self._get([rel], cells,
                         lambda: _plots().plot_versus(v, self.draw_dir, ("svg",), synthetic=synthetic))[rel]


_SVG_START = re.compile(r"<svg\b")
_SVG_IDS = re.compile(r'(\bid="|href="#|url\(#)([^"\)]+)')


def _inline(path: Path | None, alt: str, caption: str, prefix: str) -> Figure | None:
    """The SVG file's root element with ``role="img"`` and an ``aria-label`` (the figure's alt text); its ids
    (and the references to them) get ``prefix``, so several figures on one page keep their ids unique."""
    if path is None:
        return None
    text = path.read_text(encoding="utf-8")
    m = _SVG_START.search(text)
    if m is None:
        return None
    from markupsafe import escape

    body = _SVG_IDS.sub(lambda g: f"{g.group(1)}{prefix}-{g.group(2)}", text[m.end():])
    return Figure(svg=f'<svg role="img" aria-label="{escape(alt)}"' + body, caption=caption)


# -- tables --------------------------------------------------------------------------------------------------
def _leaderboard_table(table_id: str, caption: str, rows: list[Any], columns: list[Column], lead: bool,
                       cell_href: dict[str, str]) -> Table:
    """The markdown leaderboard's table (:func:`fairbench.report.leaderboard.table_values`) as a Table."""
    aggs, best = table_values(rows, columns)
    heads = [THead("model", "model", False), THead("adapter", "adapter", False)]
    if lead:
        heads += [THead("seeds", "seeds"), THead("cell pages (seed)", "cells", False)]
    heads += [THead(h, _col_key(path)) for h, path, _, _ in columns]
    out = []
    for i, r in enumerate(rows):
        line = [TCell(r.label, r.label), TCell(r.adapt_label, r.adapt)]
        if lead:
            line += [TCell(str(len(r.cells)), len(r.cells)),
                     TCell("", f"{r.model}/{r.adapt}",
                           links=[(str(c.seed), cell_href[c.key], f"cell {c.key}") for c in r.cells])]
        for j, (_, _, _, ci) in enumerate(columns):
            a = aggs[i][j]
            line.append(TCell(fmt_agg(a, ci), a.mean, best=i in best[j]))
        out.append(line)
    return Table(table_id, caption, heads, out)


def _versus_tables(v: Versus) -> list[tuple[str, str, Table]]:
    out = []
    for attr in v.attributes:
        t = v.table(attr)
        heads = [THead("model", "model", False), THead("adapter", "adapter", False),
                 THead("paired seeds", "seeds", False)]
        heads += [THead(f"Δ {metric_label(p[-1])}{arrow(p[-1])}", p[-1]) for p in t.paths]
        heads.append(THead("p (Holm)", "p_holm", False))
        rows = []
        for r, deltas, adjusted in t.rows:
            line = [TCell(r.model, r.model), TCell(r.adapt_label, r.adapt), TCell(versus_seeds_text(r, v.reference))]
            if r.ok:
                line += [TCell(fmt_delta(d), d.delta if d is not None else None) for d in deltas]
                line.append(TCell(" / ".join(fmt_p(p) for p in adjusted)))
            else:
                line += [TCell("–") for _ in deltas] + [TCell("–")]
            rows.append(line)
        compared = [r for r, _, _ in t.rows if r.ok]
        caption = (f"{len(compared)} row{'s' if len(compared) != 1 else ''} compared; {t.n_comparisons} "
                   f"comparison{'s' if t.n_comparisons != 1 else ''} with a p-value, Holm-adjusted over this table.")
        out.append((attr, caption, Table(f"versus-{slug(attr)}", f"Versus {v.reference}: {attr} (Δ x100)",
                                         heads, rows)))
    return out


def _reported(sources: list[ReportedSource]) -> list[dict[str, Any]]:
    out = []
    for n, s in enumerate(sources, start=1):
        heads = [THead("method (reported)", "method", False)] + [THead(column_label(c), c, True) for c in s.columns]
        rows = []
        for method, values in s.rows:
            rows.append([TCell(f"{method} [{n}]", method)]
                        + [TCell(fmt_value(v, s.scale, s.decimals),
                                 number(v[0] if isinstance(v, list) else v)) for v in values])
        out.append({"n": n, "source": s,
                    "table": Table(f"reported-{n}", f"[{n}] {s.citation}", heads, rows) if s.rows else None})
    return out


# -- per task ------------------------------------------------------------------------------------------------
def _facts(task: str, cells: list[ResultCell], roots: list[str]) -> list[tuple[str, str]]:
    """The markdown leaderboard's header lines, as (label, text)."""
    h = HeaderFacts.of(cells)
    version, commits, produced, split, ns, boots, thresholds = (h.version, h.commits, h.produced, h.split, h.ns,
                                                                h.boots, h.thresholds)
    return [
        ("Task version", ", ".join(version) or "?"),
        ("Generated by", (f"fairbench {__version__} from {len(cells)} result cell{'s' if len(cells) != 1 else ''} "
                         f"under {', '.join(roots)} (results digest {digest(cells)})")),
        ("As of", f"{newest(cells)}: the start time of the newest result (not the time of generation)"),
        ("Produced by", f"fairbench {', '.join(produced) or '?'}"
                        + (f" at git commit{'s' if len(commits) > 1 else ''} {', '.join(commits)}" if commits else "")),
        ("Evaluated on", (f"the {', '.join(split)} split (n = {', '.join(map(str, ns)) or '?'}); threshold rule "
                         f"{', '.join(thresholds) or '?'}; bootstrap resamples "
                         f"B = {', '.join(map(str, boots)) or '0'}")),
    ]


def _task_context(task: str, cells: list[ResultCell], col: Collection, reported: list[ReportedSource],
                  tasks_dirs: Sequence[Path], reference: str | None, figs: _Figures,
                  cell_href: dict[str, str]) -> dict[str, Any]:
    synthetic = any(lookup(c.doc, "task", "synthetic") for c in cells)
    util_extra, fair_extra, card_found = card_extras(task, tasks_dirs)
    rows = table_rows(cells)
    utility = _leaderboard_table("utility", f"{task}: utility (x100, mean over seeds)", rows,
                                 utility_columns(cells, util_extra), True, cell_href)
    attrs: dict[str, None] = {}
    for c in cells:
        attrs.update(dict.fromkeys(c.metrics.get("attributes") or {}))
    fairness = []
    for attr in attrs:
        small, minimum = small_groups(attr, cells)
        fairness.append({
            "attr": attr, "kind": "intersection" if "*" in attr else "attribute",
            "groups": attribute_groups(attr, cells), "small": small, "min_group_size": minimum,
            "table": _leaderboard_table(f"fair-{slug(attr)}", f"{task}: fairness by {attr} (x100, mean over seeds)",
                                        rows, attribute_columns(attr, cells, fair_extra), False, cell_href)})
    tradeoff = _inline(figs.tradeoff(task, cells),
                       f"{task}: overall AUC against ES-AUC per protected attribute, one point per model and "
                       "adapter (mean over seeds)", "Fairness against utility: overall AUC (x) and ES-AUC (y) per "
                       "attribute, one point per model x adapter (mean over seeds; bars: the spread over seeds).",
                       "tradeoff")
    versus = None
    if reference is not None:
        v = compute_versus(task, cells, reference, tasks_dirs=tasks_dirs)
        forest = _inline(figs.versus(v, cells, synthetic),
                         f"{task}: forest plot of paired differences against {reference}",
                         f"Paired differences B − {reference} (x100) with 95% intervals; filled point and * = the "
                         "interval excludes 0.", "versus")
        versus = {"reference": reference, "n_boot": v.n_boot, "unavailable": v.unavailable, "cautions": v.cautions,
                  "tables": [] if v.unavailable else _versus_tables(v), "figure": forest}
    cell_rows = []
    for c in sorted(cells, key=lambda c: c.key):
        p = c.doc.get("provenance") or {}
        commit = str(p.get("git_commit") or "")[:10] + ("-dirty" if p.get("git_dirty") else "")
        cell_rows.append([TCell("", c.key, links=[(c.key, cell_href[c.key], "")]),
                          TCell(str(lookup(c.doc, "model", "weights", "source") or "?")),
                          TCell(str(p.get("fairbench_version", "?"))), TCell(commit or "?"),
                          TCell(str(p.get("started_at", "?"))),
                          TCell(str(p.get("duration_s", "?")), number(p.get("duration_s")))])
    cells_table = Table("cells", f"{task}: the result cells", [
        THead("cell", "cell", False), THead("weights", "weights", False), THead("fairbench", "fairbench", False),
        THead("git commit", "commit", False), THead("started", "started", False),
        THead("duration (s)", "duration")], cell_rows)
    left_out = [(p.as_posix(), why) for p, why in col.problems if problem_task(p) in (task, None)]
    return {"task": task, "synthetic": synthetic, "facts": _facts(task, cells, col.roots), "card_found": card_found,
            "n_random": sum(random_weights(c.doc) for c in cells), "n_cells": len(cells), "left_out": left_out,
            "mixed_samples": len(distinct(cells, "task", "samples_sha256")) > 1, "utility": utility,
            "fairness": fairness, "tradeoff": tradeoff, "versus": versus, "reported": _reported(reported),
            "cells_table": cells_table}


# -- the index: headline numbers -----------------------------------------------------------------------------
HEADLINE_ROWS = 3  # the index shows this many best and worst rows of each task (all when there are few)


def _largest(r: Any, attrs: list[str], metric: str, worst_high: bool = True) -> tuple[Any, str | None]:
    """The row's aggregate of ``metric`` in the attribute where it is worst (largest gap, lowest score)."""
    found = []
    for attr in attrs:
        key = resolve_key(r.cells, ("attributes", attr), metric)
        if key is None:
            continue
        a = aggregate(r.cells, ("attributes", attr, key))
        if a.mean is not None:
            found.append((a, attr))
    if not found:
        return None, None
    return (max if worst_high else min)(found, key=lambda f: f[0].mean)


def _worst_text(found: tuple[Any, str | None]) -> TCell:
    a, attr = found
    return TCell("n/a") if a is None else TCell(f"{fmt_agg(a)} ({attr})", a.mean)


def _headline(task: str, cells: list[ResultCell]) -> tuple[Table, int]:
    """The task's best and worst rows by AUC (all rows when there are few), plus the row with the largest AUC gap,
    each with its largest gaps over the protected attributes: the numbers a landing page leads with."""
    rows = table_rows(cells)
    attrs: dict[str, None] = {}
    for c in cells:
        attrs.update(dict.fromkeys(c.metrics.get("attributes") or {}))
    attr_list = list(attrs)
    keep = list(range(len(rows))) if len(rows) <= 2 * HEADLINE_ROWS else \
        list(range(HEADLINE_ROWS)) + list(range(len(rows) - HEADLINE_ROWS, len(rows)))
    gaps = [_largest(r, attr_list, "auc_gap")[0] for r in rows]
    widest = max((i for i, g in enumerate(gaps) if g is not None), key=lambda i: gaps[i].mean, default=None)
    if widest is not None and widest not in keep:
        keep = sorted([*keep, widest])
    heads = [THead("model", "model", False), THead("adapter", "adapter", False), THead("seeds", "seeds"),
             THead("AUC ↑", "auc"), THead("lowest ES-AUC ↑ (attribute)", "es_auc"),
             THead("largest AUC gap ↓ (attribute)", "auc_gap"), THead("largest DEOdds ↓ (attribute)", "deodds")]
    out = []
    for i in keep:
        r = rows[i]
        auc = aggregate(r.cells, ("overall", "auc"))
        out.append([TCell(r.label, r.label), TCell(r.adapt_label, r.adapt), TCell(str(len(r.cells)), len(r.cells)),
                    TCell(fmt_agg(auc), auc.mean, best=i == 0 and auc.mean is not None),
                    _worst_text(_largest(r, attr_list, "es_auc", worst_high=False)),
                    _worst_text(_largest(r, attr_list, "auc_gap")), _worst_text(_largest(r, attr_list, "deodds"))])
    shown = "every row" if len(keep) == len(rows) else (
        f"the best and worst {HEADLINE_ROWS} of {len(rows)} rows by AUC"
        + (" and the row with the largest AUC gap" if widest is not None and HEADLINE_ROWS <= widest
           < len(rows) - HEADLINE_ROWS else ""))
    caption = (f"{task}: {shown} (x100, mean over seeds [95% interval], as on the task page); each row's worst "
               "value over the protected attributes, with the attribute")
    return Table(f"headline-{slug(task)}", caption, heads, out), len(rows)


def _models_table(by_task: dict[str, list[ResultCell]]) -> Table:
    """One row per model: on each task its best row by AUC (the adapter), with that row's largest AUC gap."""
    tasks = list(by_task)
    best: dict[str, dict[str, Any]] = {}
    for task, cells in by_task.items():
        attrs: dict[str, None] = {}
        for c in cells:
            attrs.update(dict.fromkeys(c.metrics.get("attributes") or {}))
        for r in table_rows(cells):  # best first
            if r.model in best.get(task, {}):
                continue
            auc = aggregate(r.cells, ("overall", "auc"))
            gap, attr = _largest(r, list(attrs), "auc_gap")
            text = f"AUC {fmt_agg(auc)} ({r.adapt_label})" + (f"; AUC gap {fmt_agg(gap)} ({attr})" if gap is not None
                                                        else "")
            best.setdefault(task, {})[r.model] = TCell(text, auc.mean)
    models = sorted({m for t in best.values() for m in t})
    heads = [THead("model", "model", False), THead("tasks", "tasks")]
    heads += [THead(f"{t}: best adapter by AUC ↑; its largest AUC gap ↓", f"task:{t}") for t in tasks]
    rows = [[TCell(m, m), TCell(str(sum(m in best.get(t, {}) for t in tasks)), sum(m in best.get(t, {}) for t in tasks))]
            + [best.get(t, {}).get(m, TCell("–")) for t in tasks] for m in models]
    return Table("models", "Each model across tasks: its best adapter by AUC on each task (x100, mean over seeds "
                 "[95% interval]) and that row's largest AUC gap over the protected attributes", heads, rows)


# -- per cell ------------------------------------------------------------------------------------------------
#: pairs of metrics that agree by definition on binary tasks (TNR = 1 - FPR, so FairMedFM's TNR range is the
#: FPR range): shown once when their values coincide, with both names
_COINCIDE = {"eqodds_fairmedfm": "eqodds", "eqodds_fairmedfm_per_class": "eqodds_per_class",
             "eqodds_fairmedfm_mean_ovr": "eqodds_mean_ovr"}
_COINCIDE_NOTE = " = {other} (equal here: TNR = 1 − FPR)"
_DIFFER_NOTE = " (TNR range where EqOdds has the FPR range)"


def _same(a: Any, b: Any) -> bool:
    """Two metrics.json values (numbers, [low, high] or per-class dicts) equal up to rounding noise."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    x, y = number(a), number(b)
    if x is None or y is None:
        return a is None and b is None
    return abs(x - y) <= 1e-9


def _metric_rows(metrics: dict[str, Any], ci: dict[str, Any]) -> list[list[TCell]]:
    """(metric, value, interval) rows of one level of metrics.json (overall or an attribute), named by the
    metric's spec: numbers x100 with their bootstrap interval, counts as they are, per-class dicts one row per
    class. A metric that equals its definitional twin (EqOdds and FairMedFM's EqOdds on a binary task) is one
    row that names both."""
    rows = []
    merged = {twin: key for key, twin in _COINCIDE.items()
              if key in metrics and twin in metrics and _same(metrics[key], metrics[twin])
              and _same(ci.get(key), ci.get(twin))}
    for key, value in metrics.items():
        if key == "groups" or key in _COINCIDE and _COINCIDE[key] in merged:
            continue
        label = metric_label(key)
        note = ""
        if key in merged:
            note = _COINCIDE_NOTE.format(other=metric_label(merged[key]))
        elif key in _COINCIDE and _COINCIDE[key] in metrics:
            note = _DIFFER_NOTE
        if isinstance(value, dict):
            for cls, v in value.items():
                c = (ci.get(key) or {}).get(cls) if isinstance(ci.get(key), dict) else None
                rows.append(_metric_row(f"{label} ({cls}){note}", key, v, c))
        else:
            rows.append(_metric_row(label + arrow(key) + note, key, value, ci.get(key)))
    return rows


def _metric_row(label: str, key: str, value: Any, ci: Any) -> list[TCell]:
    v = number(value)
    if is_count(key):
        return [TCell(label, key), TCell("" if value is None else str(value), v), TCell("")]
    ok = isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci
    interval = f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ok else "–"
    return [TCell(label, key), TCell(pct(value), v), TCell(interval, number(ci[0]) if ok else None)]


def _group_table(attr: str, a: dict[str, Any], ci: dict[str, Any], cell_key: str) -> Table | None:
    groups = a.get("groups") or {}
    if not groups:
        return None
    keys: dict[str, None] = {}
    for gm in groups.values():
        keys.update(dict.fromkeys(k for k, v in (gm or {}).items() if not isinstance(v, dict)))
    heads = [THead("group", "group", False)] + [THead(metric_label(k) + ("" if is_count(k) else arrow(k)), k)
                                                for k in keys]
    rows = []
    for g, gm in groups.items():
        gm = gm or {}
        gci = lookup(ci, "groups", g) or {}
        line = [TCell(g, g)]
        for k in keys:
            v = gm.get(k)
            line.append(TCell("" if v is None else str(v), number(v)) if is_count(k)
                        else TCell(pct(v, gci.get(k)), number(v)))
        rows.append(line)
    return Table(f"groups-{slug(attr)}", f"{cell_key}: groups of {attr} (x100; counts as they are; brackets: 95% "
                 "bootstrap interval)", heads, rows)


def _flatten(tree: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted path, value as text) of each leaf: floats to 4 significant digits (the metrics.json copy beside
    the page has them in full), long lists cut."""
    if isinstance(tree, dict):
        out = []
        for k, v in tree.items():
            out += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out or [(prefix, "{}")]
    if isinstance(tree, list):
        text = fmt_raw(tree) if all(not isinstance(v, (dict, list)) for v in tree) else json.dumps(tree, default=str)
        return [(prefix, text if len(text) <= 300 else text[:300] + " …")]
    return [(prefix, fmt_raw(tree))]


#: alt text and caption of each analysis figure
_ANALYSIS_ALT = {
    "underdiagnosis": "underdiagnosis rate per group with 95% bootstrap intervals, per attribute and intersection "
                      "(Seyyed-Kalantari et al. 2021)",
    "calibration": "reliability diagram per group, per attribute and intersection, with each group's ECE, "
                   "calibration slope and intercept",
    "leakage": "probe AUC for each protected attribute from the frozen image embeddings, with 95% intervals, "
               "against chance",
    "power": "minimum detectable gaps at 80% power beside the observed AUC gap, DPD and DEOdds with their intervals",
    "prompts": "zero-shot AUC and AUC gap per attribute under each prompt set",
}


def _cell_context(cell: ResultCell, figs: _Figures, task_href: str) -> tuple[dict[str, Any], list[str]]:
    m = cell.metrics
    ci = m.get("ci") or {}
    figures, problems = figs.cell(cell)
    attributes = []
    for attr, a in (m.get("attributes") or {}).items():
        a = a or {}
        aci = lookup(ci, "attributes", attr) or {}
        attributes.append({
            "attr": attr,
            "metrics": Table(f"attr-{slug(attr)}", f"{cell.key}: fairness by {attr}",
                             [THead("metric", "metric", False), THead("value", "value"),
                              THead("95% interval", "interval")], _metric_rows(a, aci)),
            "groups": _group_table(attr, a, aci, cell.key),
            "figure": _inline(figures.get(attr), f"{cell.key}, protected attribute {attr}: group metrics with 95% "
                              "intervals, ROC curves and reliability diagrams per group",
                              f"{attr}: group metrics with 95% bootstrap intervals (left), ROC per group (middle), "
                              "reliability per group (right).", f"fig-{slug(attr)}"),
        })
    overall = Table("overall", f"{cell.key}: overall metrics", [
        THead("metric", "metric", False), THead("value", "value"), THead("95% interval", "interval")],
        _metric_rows(m.get("overall") or {}, ci.get("overall") or {}))
    data = cell.doc.get("data") or {}
    skipped = data.get("skipped") or []
    fitted = dict(lookup(cell.doc, "adapt", "fitted") or {})
    epochs = fitted.pop("epochs", None)
    training = _inline(figs.training(cell), f"{cell.key}: training curves per epoch",
                       f"Training curves ({len(epochs) if isinstance(epochs, list) else 0} epochs).", "training")
    provenance = _flatten(cell.doc.get("provenance") or {})
    analysis_files, analysis_problems = figs.analyses(cell)
    problems += analysis_problems
    from fairbench.report.analyses_view import analysis_sections

    analyses = analysis_sections(cell, {
        name: _inline(path, f"{cell.key}: {_ANALYSIS_ALT[name]}", _ANALYSIS_ALT[name][:1].upper()
                      + _ANALYSIS_ALT[name][1:] + ".", f"analysis-{name}")
        for name, path in analysis_files.items()})
    identity = [("task.version", str(lookup(cell.doc, "task", "version"))),
                ("task.card_sha256", str(lookup(cell.doc, "task", "card_sha256"))),
                ("task.samples_sha256", str(lookup(cell.doc, "task", "samples_sha256"))),
                ("model.card_sha256", str(lookup(cell.doc, "model", "card_sha256"))),
                ("model.weights.source", str(lookup(cell.doc, "model", "weights", "source"))),
                ("model.weights.sha256", str(lookup(cell.doc, "model", "weights", "sha256"))),
                ("config_sha256", str(cell.doc.get("config_sha256")))]
    counts = [(k, str(v)) for k, v in (m.get("overall") or {}).items() if is_count(k)]
    counts += [(f"{attr}: unknown group", str((a or {}).get("n_unknown"))) for attr, a in
               (m.get("attributes") or {}).items() if (a or {}).get("n_unknown") is not None]
    ctx = {
        "cell": cell, "synthetic": bool(lookup(cell.doc, "task", "synthetic")), "task_href": task_href,
        "random": random_weights(cell.doc),
        "summary": [("task", f"{cell.task} (version {lookup(cell.doc, 'task', 'version')})"), ("model", cell.model),
                    ("weights", str(lookup(cell.doc, "model", "weights", "source"))),
                    ("adapter", adapt_label(cell.adapt)),
                    ("adapter parameters", json.dumps(lookup(cell.doc, "adapt", "params") or {}, sort_keys=True)),
                    ("seed", str(cell.seed)), ("evaluated on", f"{m.get('eval_split', '?')} split"),
                    ("bootstrap", f"B = {m.get('n_boot', 0)}, {m.get('ci_method', '')}".rstrip(", "))],
        "overall": overall, "attributes": attributes,
        "threshold": _flatten(cell.doc.get("threshold") or {}),
        "counts": counts, "data": [(k, v) for k, v in _flatten(data) if not k.startswith("skipped")],
        "skipped": skipped[:MAX_SKIPPED_LISTED], "n_skipped": len(skipped),
        "fitted": [(k, v) for k, v in _flatten(fitted)] if fitted else [], "training": training,
        "notes": _flatten(m.get("notes")) if m.get("notes") else [],
        "flags": _flatten(m.get("flags")) if m.get("flags") else [],
        "provenance": provenance, "identity": identity, "folder": cell.path.resolve().as_posix(),
        "analyses": analyses,
    }
    return ctx, problems


# -- the site ------------------------------------------------------------------------------------------------
def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.globals["version"] = __version__
    return env


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _rel(target: str, page: str) -> str:
    """``target`` (relative to SITE) as a link from ``page`` (relative to SITE)."""
    return os.path.relpath(target, os.path.dirname(page) or ".").replace(os.sep, "/")


@dataclass
class SiteReport:
    pages: list[Path]
    collection: Collection
    problems: list[str]
    figures_reused: int
    figures_drawn: int


def write_site(results: Sequence[Path | str], out: Path, *, figures: Path | None = None,
               reported_dir: Path | None = None, tasks_dirs: Sequence[Path] = (),
               reference: str | None = None) -> SiteReport:
    """Write the site for the cells under ``results`` into ``out``; ``figures``: a folder written by
    ``fairbench plot`` whose SVGs are reused."""
    if figures is not None and not Path(figures).is_dir():
        raise FairbenchError(f"--figures {figures}: no such folder (a folder written by `fairbench plot`)")
    col = collect(results)
    if not col.cells:
        raise ResultsError(f"no readable result cells under {', '.join(col.roots)}"
                           + (f" ({len(col.problems)} unreadable)" if col.problems else ""))
    if reference is not None:
        check_reference(col.cells, reference)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FairbenchError(f"--out {out}: exists and is not a folder")
    reported = load_reported(reported_dir)
    env = _environment()
    figs = _Figures(out, Path(figures) if figures is not None else None)
    problems: list[str] = []
    pages: list[Path] = []
    by_task = {task: latest_version(task, cells, col) for task, cells in sorted(col.by_task().items())}
    cell_page = {c.key: f"cells/{slug(c.task)}/{slug(c.model)}/{slug(c.adapt)}/seed{c.seed}/index.html"
                 for cells in by_task.values() for c in cells}
    task_page = {task: f"tasks/{slug(task)}.html" for task in by_task}

    def render(name: str, page: str, **ctx: Any) -> None:
        root = _rel(".", page)
        text = env.get_template(name).render(root="" if root == "." else root + "/", **ctx)
        _write(out / page, text)
        pages.append(out / page)

    index = []
    for task, cells in by_task.items():
        href = {k: _rel(p, task_page[task]) for k, p in cell_page.items()}
        ctx = _task_context(task, cells, col, reported.get(task, []), tasks_dirs, reference, figs, href)
        render("task.html", task_page[task], **ctx)
        index.append({"task": task, "href": task_page[task], "synthetic": ctx["synthetic"], "n_cells": len(cells),
                      "n_random": ctx["n_random"],
                      "version": ", ".join(distinct(cells, "task", "version")),
                      "models": sorted({c.model for c in cells}), "adapters": sorted({c.adapt for c in cells}),
                      "seeds": sorted({c.seed for c in cells}), "reported": ctx["reported"],
                      "headline": _headline(task, cells)[0]})
        for c in cells:
            page = cell_page[c.key]
            cctx, probs = _cell_context(c, figs, _rel(task_page[task], page))
            problems += probs
            (out / page).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(c.path / METRICS_FILE, (out / page).parent / METRICS_FILE)
            render("cell.html", page, metrics_href=METRICS_FILE, **cctx)
    render("index.html", "index.html", tasks=index, models=_models_table(by_task), roots=col.roots, n_cells=sum(len(c) for c in by_task.values()),
           skipped=[f"{p}: {why}" for p, why in col.problems])
    assets = out / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    for name in ASSETS:
        shutil.copyfile(TEMPLATES / name, assets / name)
    return SiteReport(pages, col, problems, figs.reused, figs.drawn)
