"""`fairbench leaderboard`: one markdown page per task from result cells.

A page has a header (which results, when, which fairbench), a utility table and one fairness table per
protected attribute, rows model x adapter (mean over seeds with an interval), the best entry per column in
bold (direction-aware), then numbers reported in papers (clearly marked as not reproduced) and the list of
cells used. The output is a pure function of the inputs: the date is the newest result's start time, never
the clock, and every ordering is explicit, so regenerating from the same results gives identical bytes.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fairbench import __version__
from fairbench.report.collect import Collection, ResultCell, collect
from fairbench.report.reported import ReportedSource, load_reported, render_reported
from fairbench.report.summary import lookup, random_weights
from fairbench.report.versus import Versus, VersusRow, check_reference, compute_versus, fmt_delta, fmt_p
from fairbench.results import METRICS as METRICS_FILE

__all__ = ["build_pages", "write_leaderboards", "LABELS", "direction", "Agg", "aggregate"]

LABELS = {"auc": "AUC", "acc": "ACC", "macro_f1": "macro F1", "ece": "ECE", "balanced_accuracy": "bal. ACC",
          "f1": "F1", "var_f1": "Var F1", "tpr": "TPR", "fpr": "FPR", "tnr": "TNR", "fnr": "FNR",
          "selection_rate": "selection rate", "es_auc": "ES-AUC", "es_acc": "ES-ACC", "auc_gap": "AUC gap",
          "worst_group_auc": "worst-group AUC", "dpd": "DPD", "deodds": "DEOdds", "eqodds": "EqOdds",
          "eqodds_fairmedfm": "EqOdds (FairMedFM)", "f1_delta": "F1 Δ", "ece_delta": "ECE Δ",
          "dpd_mean_ovr": "DPD (mean OvR)", "deodds_mean_ovr": "DEOdds (mean OvR)",
          "eqodds_mean_ovr": "EqOdds (mean OvR)", "eqodds_fairmedfm_mean_ovr": "EqOdds FairMedFM (mean OvR)",
          "underdiagnosis_rate": "underdiagnosis", "underdiagnosis_gap": "underdiagnosis gap",
          "worst_group_underdiagnosis": "worst-group underdiagnosis"}
UTILITY = ("auc", "acc", "macro_f1", "ece")
FAIRNESS = ("es_auc", "auc_gap", "dpd", "deodds")
MAX_GROUP_COLUMNS = 6
RANDOM_MARK = "(random weights)"


def direction(metric: str) -> bool | None:
    """True if higher is better, False if lower is, None if neither (from the metric registry)."""
    from fairbench.metrics import METRICS

    if metric not in METRICS:
        return None
    return METRICS.get(metric).higher_is_better


def _arrow(metric: str) -> str:
    d = direction(metric)
    return " ↑" if d is True else " ↓" if d is False else ""


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
    values = []
    for c in cells:
        v = lookup(c.metrics, *path)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            values.append((float(v), c))
    if not values:
        return Agg(None, total=len(cells))
    xs = [v for v, _ in values]
    mean = math.fsum(xs) / len(xs)
    if len(xs) >= 2 and max(xs) - min(xs) > 1e-12:
        sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
        half = _t975(len(xs) - 1) * sd / math.sqrt(len(xs))
        # every tabulated metric lies in [0, 1]: so does its interval
        return Agg(mean, max(0.0, mean - half), min(1.0, mean + half), len(xs), len(cells), "seeds")
    ci = lookup(values[0][1].metrics.get("ci") or {}, *path)
    if isinstance(ci, list) and len(ci) == 2 and None not in ci:
        return Agg(mean, float(ci[0]), float(ci[1]), len(xs), len(cells), "bootstrap")
    return Agg(mean, n=len(xs), total=len(cells))


def _fmt(a: Agg, ci: bool = True) -> str:
    if a.mean is None:
        return "n/a"
    text = f"{100 * a.mean:.1f}"
    if ci and a.low is not None and a.high is not None:
        text += f" [{100 * a.low:.1f}, {100 * a.high:.1f}]"
    if a.n < a.total:
        text += "*"
    return text


def _best(aggs: list[Agg], metric: str) -> set[int]:
    d = direction(metric)
    shown = [(i, round(100 * a.mean, 1)) for i, a in enumerate(aggs) if a.mean is not None]
    if d is None or len(shown) < 2:
        return set()
    target = max(v for _, v in shown) if d else min(v for _, v in shown)
    return {i for i, v in shown if v == target}


# -- pages ---------------------------------------------------------------------------------------------------
@dataclass
class _Row:
    model: str
    adapt: str
    cells: list[ResultCell]

    @property
    def label(self) -> str:
        """The model as its rows name it, marked when its weights were random (untrained)."""
        n = sum(random_weights(c.doc) for c in self.cells)
        if not n:
            return self.model
        return f"{self.model} {RANDOM_MARK}" + ("" if n == len(self.cells) else f" in {n} of {len(self.cells)} seeds")


def _rows(cells: list[ResultCell]) -> list[_Row]:
    groups: dict[tuple[str, str], list[ResultCell]] = {}
    for c in cells:
        groups.setdefault((c.model, c.adapt), []).append(c)
    rows = [_Row(m, a, sorted(cs, key=lambda c: c.seed)) for (m, a), cs in groups.items()]

    def auc(r: _Row) -> float:
        m = aggregate(r.cells, ("overall", "auc")).mean
        return -m if m is not None else math.inf

    return sorted(rows, key=lambda r: (auc(r), r.model, r.adapt))


def _present(cells: list[ResultCell], *path: str) -> bool:
    return any(lookup(c.metrics, *path) is not None for c in cells)


def _resolve(cells: list[ResultCell], scope: tuple[str, ...], metric: str) -> str | None:
    """The key a column reads: the metric itself, or its multiclass one-vs-rest mean."""
    for key in (metric, f"{metric}_mean_ovr"):
        if _present(cells, *scope, key):
            return key
    return None


def _card_extras(task: str, tasks_dirs: Sequence[Path]) -> tuple[list[str], list[str], bool]:
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


def table_values(rows: list[_Row], columns: list[Column]) -> tuple[list[list[Agg]], list[set[int]]]:
    """Per row and column the aggregate over seeds, and per column the rows that are best (bold): what the
    markdown tables and the HTML report (:mod:`fairbench.report.html`) both show."""
    aggs = [[aggregate(r.cells, path) for _, path, _, _ in columns] for r in rows]
    best = [_best([a[j] for a in aggs], metric) if metric else set() for j, (_, _, metric, _) in
            enumerate(columns)]
    return aggs, best


def _table(rows: list[_Row], columns: list[Column], lead: bool) -> list[str]:
    """columns: (header, path, metric for direction/bold or None, show interval)."""
    aggs, best = table_values(rows, columns)
    head = ["model", "adapter"] + (["seeds"] if lead else []) + [h for h, _, _, _ in columns]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + ("---:|" if lead else "") + "---:|" * len(columns)]
    for i, r in enumerate(rows):
        cells = [r.label, r.adapt] + ([str(len(r.cells))] if lead else [])
        for j, (_, _, _, ci) in enumerate(columns):
            text = _fmt(aggs[i][j], ci)
            cells.append(f"**{text}**" if i in best[j] else text)
        out.append("| " + " | ".join(cells) + " |")
    return out


def _newest(cells: list[ResultCell]) -> str:
    stamps = sorted(str(lookup(c.doc, "provenance", "started_at")) for c in cells
                    if lookup(c.doc, "provenance", "started_at"))
    return stamps[-1] if stamps else "unknown (no provenance.started_at in the results)"


def _digest(cells: list[ResultCell]) -> str:
    h = hashlib.sha256()
    for c in sorted(cells, key=lambda c: c.key):
        h.update(c.key.encode())
        h.update(hashlib.sha256((c.path / METRICS_FILE).read_bytes()).digest())
    return h.hexdigest()[:16]


def _distinct(cells: list[ResultCell], *path: str) -> list[str]:
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
        return cls(version=_distinct(cells, "task", "version"),
                   commits=sorted({f"{str(lookup(c.doc, 'provenance', 'git_commit'))[:10]}"
                                   f"{'-dirty' if lookup(c.doc, 'provenance', 'git_dirty') else ''}"
                                   for c in cells if lookup(c.doc, "provenance", "git_commit")})
                   + _no_commit(cells),
                   produced=_distinct(cells, "provenance", "fairbench_version"),
                   split=_distinct(cells, "task", "eval_split") or ["test"],
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


def _header(task: str, cells: list[ResultCell], roots: list[str], synthetic: bool,
            left_out: Sequence[tuple[Path, str]] = ()) -> list[str]:
    h = HeaderFacts.of(cells)
    version, commits, produced, split, ns, boots, thresholds = (h.version, h.commits, h.produced, h.split, h.ns,
                                                                h.boots, h.thresholds)
    title = f"# Leaderboard: {task} (task version {', '.join(version) or '?'})"
    lines = ["<!-- Generated by `fairbench leaderboard`; do not edit by hand. Regenerate it from the results. -->",
             "", title + (" — SYNTHETIC data" if synthetic else ""), ""]
    if synthetic:
        lines += ["> **Synthetic data** for testing and demonstration, with a known injected bias: these numbers "
                  "say nothing about any real model or patient population.", ""]
    lines += [
        f"- **Generated by** fairbench {__version__} from {len(cells)} result cell{'s' if len(cells) != 1 else ''} "
        f"under {', '.join(f'`{r}`' for r in roots)} (results digest `{_digest(cells)}`).",
        f"- **As of** {_newest(cells)}: the start time of the newest result (not the time of generation).",
        f"- **Produced by** fairbench {', '.join(produced) or '?'}"
        + (f" at git commit{'s' if len(commits) > 1 else ''} {', '.join(f'`{c}`' for c in commits)}" if commits else "")
        + ".",
        f"- **Evaluated on** the `{', '.join(split)}` split (n = {', '.join(map(str, ns)) or '?'}); threshold rule "
        f"{', '.join(thresholds) or '?'}; bootstrap resamples B = {', '.join(map(str, boots)) or '0'}.",
        "- **Values are x100.** Each entry is the mean over seeds. Brackets: a 95% interval, across seeds (t "
        "distribution, clipped to [0, 100]) when a row's seeds give different values, else the (first) cell's "
        "bootstrap percentile interval; none when neither exists. `*` = undefined in some seeds (mean over the rest); "
        "n/a = undefined.",
        "- **Bold** = best in its column (↑ higher is better, ↓ lower is better); ties are all bold. Rows are "
        "sorted by AUC. Group AUC columns show means only.",
        "",
    ]
    if len(_distinct(cells, "task", "samples_sha256")) > 1:
        lines += ["> Caution: the cells were evaluated on different sample sets (their `task.samples_sha256` "
                  "differ), so rows are not strictly comparable.", ""]
    n_random = sum(random_weights(c.doc) for c in cells)
    if n_random:
        lines += [f"> **Random weights**: {n_random} of {len(cells)} cells ran an untrained model "
                  f"(`--weights random`); their rows are marked {RANDOM_MARK} and their numbers describe no "
                  "trained model.", ""]
    if left_out:
        lines += [f"> **Left out**: {len(left_out)} result cell{'s' if len(left_out) != 1 else ''} under these roots "
                  f"could not be used, so {'their seeds are' if len(left_out) != 1 else 'its seed is'} missing from "
                  "the means below:", ">"]
        lines += [f"> - `{path.as_posix()}`: {why}" for path, why in left_out]
        lines.append("")
    return lines


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
        small.update((lookup(c.metrics, "flags", "small_groups", attr) or {}))
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
        key = _resolve(cells, scope, metric)
        if key is not None and key not in [p[-1] for _, p, _, _ in columns]:
            columns.append((LABELS.get(key, key) + _arrow(key), (*scope, key), key, True))
    return columns


def utility_columns(cells: list[ResultCell], extras: list[str]) -> list[Column]:
    """The utility table's columns: the standard utility metrics and the task card's extras, where present."""
    return [(LABELS.get(m, m) + _arrow(m), ("overall", m), m, True) for m in [*UTILITY, *extras]
            if _present(cells, "overall", m)]


def _attribute_section(attr: str, cells: list[ResultCell], rows: list[_Row], extras: list[str]) -> list[str]:
    groups = attribute_groups(attr, cells)
    kind = "intersection" if "*" in attr else "attribute"
    lines = [f"## Fairness: {attr} ({kind})", ""]
    if groups:
        lines.append("Groups (n in the evaluated split): " + ", ".join(f"{g} ({n})" for g, n in groups.items()) + ".")
    small, minimum = small_groups(attr, cells)
    if small:
        lines.append(f"Small groups (n < {minimum}; wide intervals): "
                     + ", ".join(f"{g} ({n})" for g, n in small.items()) + ".")
    lines.append("")
    return lines + _table(rows, attribute_columns(attr, cells, extras), lead=False) + [""]


def _cells_section(cells: list[ResultCell]) -> list[str]:
    lines = ["## Cells", "", "| cell | weights | fairbench | git commit | started | duration (s) | path |",
             "|---|---|---|---|---|---:|---|"]
    for c in sorted(cells, key=lambda c: c.key):
        p = c.doc.get("provenance") or {}
        commit = str(p.get("git_commit") or "")[:10] + ("-dirty" if p.get("git_dirty") else "")
        lines.append(f"| {c.key} | {lookup(c.doc, 'model', 'weights', 'source') or '?'} | "
                     f"{p.get('fairbench_version', '?')} | {commit or '?'} | {p.get('started_at', '?')} | "
                     f"{p.get('duration_s', '?')} | `{c.path.as_posix()}` |")
    return lines + [""]


def versus_seeds_text(r: VersusRow, ref: str) -> str:
    """The "paired seeds" entry of a versus row: the seeds and method, or why the row was not compared."""
    if r.ok:
        seeds = ", ".join(map(str, r.seeds)) + (" (t)" if r.method == "seeds" else " (bootstrap)")
        if r.unpaired:
            seeds += f"; unpaired {', '.join(map(str, r.unpaired))}"
        return seeds
    return {"no reference cell": f"no reference cell (no {r.model} / {ref})",
            "no shared seed": f"no shared seed (seeds {', '.join(map(str, r.unpaired))}; {ref}: "
                              f"{', '.join(map(str, r.reference_seeds))})",
            }.get(r.status, f"{r.status} (see the caution above)")


def _versus_section(v: Versus) -> list[str]:
    """The "versus <reference>" tables: one per protected attribute, paired differences B - reference."""
    ref = v.reference
    lines = [f"## Versus {ref} (paired differences)", "",
             f"Δ = B − {ref}, x100: each model's other adapters (B) against the same model's `{ref}` cells, paired on "
             "the same test samples.", "",
             f"- **Pairing**: seed by seed, over the seeds present on both sides (`paired seeds`). `(bootstrap)`: one "
             f"paired seed, its paired bootstrap (B = {v.n_boot} shared resamples of the evaluated samples, seed 0; "
             "95% percentile interval, two-sided bootstrap p). `(t)`: two or more paired seeds, the mean of the "
             "per-seed Δ with a Student t 95% interval across seeds (clipped to [−100, 100]) and a one-sample t-test "
             "p; `†` marks a Δ that every seed gave alike, shown with the first seed's paired bootstrap instead.",
             "- **`*`** = the 95% interval excludes 0: a difference on this task, not a ranking of methods across "
             "tasks. With many comparisons some intervals exclude 0 by chance: read `p (Holm)`, the row's p-values "
             "in the order of its Δ columns, Holm-adjusted over the comparisons of its table.",
             "- AUC is the overall AUC (the same in every table). ↑ higher is better, ↓ lower is better: for AUC gap, "
             "DPD and DEOdds a negative Δ is an improvement.", ""]
    if v.unavailable:
        return lines + [f"> Caution: {v.unavailable}", ""]
    for caution in v.cautions:
        lines += [f"> Caution: {caution}", ""]
    for attr in v.attributes:
        t = v.table(attr)
        compared = [r for r, _, _ in t.rows if r.ok]
        n_t = sum(r.method == "seeds" for r in compared)
        n_b = len(compared) - n_t
        parts = []
        if n_t:
            parts.append(f"{n_t} row{'s' if n_t != 1 else ''} with two or more paired seeds (t): mean Δ, t interval "
                         "and t-test p across seeds")
        if n_b:
            parts.append(f"{n_b} row{'s' if n_b != 1 else ''} with one paired seed (bootstrap): that seed's paired "
                         "bootstrap Δ, interval and p")
        caption = "; ".join(parts) + ". " if parts else "No row could be compared. "
        if compared:
            caption += (f"{t.n_comparisons} comparison{'s' if t.n_comparisons != 1 else ''} in this table "
                        f"({len(compared)} row{'s' if len(compared) != 1 else ''} x {len(t.paths)} metrics"
                        + (f", {t.n_cells - t.n_comparisons} without a p-value" if t.n_cells != t.n_comparisons
                           else "")
                        + "); `p (Holm)` adjusts over " + ("all of them." if t.n_comparisons != 1 else "it."))
        heads = [f"Δ {LABELS.get(p[-1], p[-1])}{_arrow(p[-1])}" for p in t.paths]
        lines += [f"### Versus {ref}: {attr}", "", caption, "",
                  "| " + " | ".join(["model", "adapter", "paired seeds", *heads, "p (Holm)"]) + " |",
                  "|---|---|---|" + "---:|" * len(heads) + "---|"]
        for r, deltas, adjusted in t.rows:
            seeds = versus_seeds_text(r, ref)
            if r.ok:
                values = [fmt_delta(d) for d in deltas]
                p_text = " / ".join(fmt_p(p) for p in adjusted)
            else:
                values, p_text = ["–"] * len(heads), "–"
            lines.append("| " + " | ".join([r.model, r.adapt, seeds, *values, p_text]) + " |")
        lines.append("")
    return lines


def task_page(task: str, cells: list[ResultCell], roots: list[str], reported: list[ReportedSource],
              tasks_dirs: Sequence[Path] = (), versus: Versus | None = None,
              left_out: Sequence[tuple[Path, str]] = ()) -> str:
    synthetic = any(lookup(c.doc, "task", "synthetic") for c in cells)
    util_extra, fair_extra, card_found = _card_extras(task, tasks_dirs)
    rows = _rows(cells)
    lines = _header(task, cells, roots, synthetic, left_out)
    if not card_found:
        lines += [f"> The task card '{task}' was not found (pass `--tasks-dir`), so only the standard columns "
                  "are shown.", ""]
    lines += ["## Utility", ""] + _table(rows, utility_columns(cells, util_extra), lead=True) + [""]
    attrs: dict[str, None] = {}
    for c in cells:
        attrs.update(dict.fromkeys(c.metrics.get("attributes") or {}))
    for attr in attrs:
        lines += _attribute_section(attr, cells, rows, fair_extra)
    if versus is not None:
        lines += _versus_section(versus)
    lines += render_reported(task, reported, synthetic)
    lines += _cells_section(cells)
    return "\n".join(lines).rstrip("\n") + "\n"


def reported_only_page(task: str, reported: list[ReportedSource]) -> str:
    lines = ["<!-- Generated by `fairbench leaderboard`; do not edit by hand. Regenerate it from the results. -->",
             "", f"# Leaderboard: {task}", "",
             f"- **Generated by** fairbench {__version__}. No fairbench results for this task were given, so the "
             "page holds only numbers reported in papers.", ""]
    lines += render_reported(task, reported, synthetic=False)
    return "\n".join(lines).rstrip("\n") + "\n"


def build_pages(col: Collection, *, reported: dict[str, list[ReportedSource]], include_reported_only: bool = False,
                tasks_dirs: Sequence[Path] = (), reference: str | None = None) -> dict[str, str]:
    """``{"<task>.md": markdown}`` for every task in the results (and, optionally, every task with reported
    numbers but no results). ``reference``: an adapter; each page gets "versus <reference>" tables of paired
    differences (:mod:`fairbench.report.versus`)."""
    if reference is not None:
        check_reference(col.cells, reference)
    pages: dict[str, str] = {}
    for task, cells in sorted(col.by_task().items()):
        cells = _latest_version(task, cells, col)
        versus = compute_versus(task, cells, reference, tasks_dirs=tasks_dirs) if reference is not None else None
        left_out = [(path, why) for path, why in col.problems if _problem_task(path) in (task, None)]
        pages[f"{task}.md"] = task_page(task, cells, col.roots, reported.get(task, []), tasks_dirs, versus,
                                        left_out)
    if include_reported_only:
        for task, sources in sorted(reported.items()):
            pages.setdefault(f"{task}.md", reported_only_page(task, sources))
    return pages


def _problem_task(path: Path) -> str | None:
    """The task of a cell that could not be used, from its place in the results layout
    (``task/model/adapt/seedN/metrics.json``); None when the path does not say."""
    cell = path.parent if path.name == METRICS_FILE else path
    if re.fullmatch(r"seed\d+", cell.name) and len(cell.parts) >= 4:
        return cell.parent.parent.parent.name
    return None


def _latest_version(task: str, cells: list[ResultCell], col: Collection) -> list[ResultCell]:
    """A page never mixes task versions: older versions are reported and left out."""
    def key(v: str) -> tuple[int, Any]:
        return (0, int(v)) if v.isdigit() else (1, v)

    versions = sorted({str(lookup(c.doc, "task", "version")) for c in cells}, key=key)
    if len(versions) <= 1:
        return cells
    keep = versions[-1]
    for c in cells:
        if str(lookup(c.doc, "task", "version")) != keep:
            col.problems.append((c.path / METRICS_FILE, f"task {task} version {lookup(c.doc, 'task', 'version')} "
                                                        f"left out: the leaderboard shows version {keep}"))
    return [c for c in cells if str(lookup(c.doc, "task", "version")) == keep]


_SOURCE = re.compile(r"^- \*\*Generated by\*\* (fairbench .*)$", re.MULTILINE)
_DIGEST = re.compile(r"\(results digest `([0-9a-f]+)`\)")


def replaced_pages(pages: dict[str, str], out: Path) -> list[tuple[Path, str]]:
    """Pages under ``out`` that writing ``pages`` would replace although they were generated from other results
    (another results digest, or no fairbench header): (path, what the existing page says it came from)."""
    clashes = []
    for name, text in pages.items():
        path = Path(out) / name
        if not path.is_file():
            continue
        old = path.read_text(encoding="utf-8", errors="replace")
        if old == text:
            continue
        said, new = _SOURCE.search(old), _SOURCE.search(text)
        if said is None:
            clashes.append((path, "by hand or another tool (no fairbench header)"))
            continue
        theirs, ours = _DIGEST.search(said.group(1)), _DIGEST.search(new.group(1)) if new else None
        if (theirs and theirs.group(1)) != (ours and ours.group(1)):
            clashes.append((path, f"by {said.group(1).rstrip('.')}"))
    return clashes


def write_leaderboards(results: Sequence[Path | str], out: Path, *, reported_dir: Path | None = None,
                       include_reported_only: bool = False, tasks_dirs: Sequence[Path] = (),
                       reference: str | None = None, overwrite: bool = False) -> tuple[list[Path], Collection]:
    """Write one page per task under ``out``. A page already there that was generated from other results (its
    header names another results digest; committed leaderboards included) is replaced only with ``overwrite``;
    otherwise nothing is written and the error says what would be replaced."""
    from fairbench.errors import ResultsError
    from fairbench.results import atomic_write

    col = collect(results)
    if not col.cells and not include_reported_only:
        raise ResultsError(f"no readable result cells under {', '.join(col.roots)}"
                           + (f" ({len(col.problems)} unreadable)" if col.problems else ""))
    pages = build_pages(col, reported=load_reported(reported_dir), include_reported_only=include_reported_only,
                        tasks_dirs=tasks_dirs, reference=reference)
    out = Path(out)
    clashes = [] if overwrite else replaced_pages(pages, out)
    if clashes:
        listed = "; ".join(f"{p} was generated {said}" for p, said in clashes)
        raise ResultsError(f"{len(clashes)} page(s) under {out} were generated from other results and would be "
                           f"replaced ({listed}). Pass --overwrite to replace them, or --out DIR to write elsewhere "
                           f"(nothing was written)")
    written = []
    for name, text in pages.items():
        path = out / name
        atomic_write(path, lambda p, t=text: p.write_text(t, encoding="utf-8"))
        written.append(path)
    return written, col
