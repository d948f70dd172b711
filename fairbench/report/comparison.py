"""The table `fairbench compare` prints: paired deltas B - A with their intervals, x100."""

from __future__ import annotations

import math
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from fairbench.progress import stdout_console
from fairbench.report.summary import OUTSIDE_MARK, lookup, outside

__all__ = ["excludes_zero", "fmt_p", "p_floor", "print_comparison", "printed_rows"]

_COVERS = {"combined": "seeds + test", "same": "test only †", "bootstrap": "test only", "seeds": "seeds only"}
_OVERALL = (("auc", "AUC"), ("acc", "ACC"), ("macro_f1", "macro F1"), ("ece", "ECE"))
_SUMMARIES = (("es_auc", "ES-AUC"), ("auc_gap", "AUC gap"), ("worst_group_auc", "worst-group AUC"),
              ("dpd", "DPD"), ("dpd_mean_ovr", "DPD (mean OvR)"), ("deodds", "DEOdds"),
              ("deodds_mean_ovr", "DEOdds (mean OvR)"), ("eqodds", "EqOdds"), ("ece_delta", "ECE Δ"))


def excludes_zero(ci: Any) -> bool:
    return isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci and (ci[0] > 0 or ci[1] < 0)


def printed_rows(metrics: dict[str, Any]) -> list[tuple[str, str, tuple[str, ...]]]:
    """(scope, metric label, path into ``metrics``) of the rows worth printing, in order."""
    rows = [("overall", label, ("overall", key)) for key, label in _OVERALL if key in metrics.get("overall", {})]
    for attr, a in (metrics.get("attributes") or {}).items():
        for g in (a.get("groups") or {}):
            if "auc" in a["groups"][g]:
                rows.append((f"{attr} = {g}", "AUC", ("attributes", attr, "groups", g, "auc")))
        rows += [(attr, label, ("attributes", attr, key)) for key, label in _SUMMARIES if key in a]
    return rows


def _x100(v: Any, signed: bool = False) -> str:
    if not isinstance(v, (int, float)):
        return "n/a"
    return f"{100 * v:+.1f}" if signed else f"{100 * v:.1f}"


def _ci(ci: Any, value: Any = None) -> str:
    if not isinstance(ci, (list, tuple)) or None in ci:
        return "n/a"
    return f"[{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]" + (OUTSIDE_MARK if outside(value, ci) else "")


def p_floor(n_boot: Any) -> float | None:
    """The smallest two-sided bootstrap p-value B resamples can give: 2 / (B + 1)."""
    return 2.0 / (n_boot + 1) if isinstance(n_boot, int) and n_boot > 0 else None


def fmt_p(p: Any, floor: float | None = None) -> str:
    """Three decimals (two significant digits below 0.001); a bootstrap p at its floor 2 / (B + 1) prints as
    ``<X``, X the floor rounded up to two significant digits (``<0.002`` at B = 1000): the resamples cannot tell
    how much smaller it is."""
    if not isinstance(p, (int, float)):
        return "n/a"
    if floor is not None and p <= floor * (1 + 1e-9):
        step = 10.0 ** (math.floor(math.log10(floor)) - 1)
        return f"<{math.ceil(floor / step - 1e-9) * step:.2g}"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _side(d: dict[str, Any]) -> str:
    adapter = f"{d['adapter']} (trained on {d['train_task']})" if d.get("adapter") and d.get("train_task") \
        else d.get("adapter")
    who = " / ".join(str(x) for x in (d.get("model"), adapter) if x)
    seeds = d.get("seeds")
    seed = f"seeds {', '.join(map(str, seeds))}" if seeds else (f"seed {d['seed']}" if d.get("seed") is not None
                                                                else "")
    extra = ", ".join(x for x in (who, seed) if x)
    return f"{d.get('path')}" + (f" ({extra})" if extra else "")


def print_comparison(result: dict[str, Any], console: Console | None = None) -> None:
    if console is None:
        console = stdout_console()  # a file or pipe: never cut a column
    multi = "per_seed" in result
    floor = p_floor(result.get("n_boot"))
    console.print(f"[bold]fairbench compare[/bold] · task [bold]{result['task']}[/bold] · n={result['n']} "
                  f"'{result['eval_split']}' samples · B={result['n_boot']} paired resamples · values x100")
    console.print(f"A: {_side(result['a'])}", markup=False, soft_wrap=True)
    console.print(f"B: {_side(result['b'])}", markup=False, soft_wrap=True)
    matched = result.get("matched_seed")
    if matched:
        console.print(f"{matched['side'].upper()} is {matched['folder']}'s seed{matched['seed']} cell: the folder's "
                      f"seed matching the other cell's", markup=False, soft_wrap=True)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("scope", "metric"):
        table.add_column(col, no_wrap=True)
    if multi:
        seeds = result["seeds"]
        per_seed = result["per_seed"]
        first = per_seed[str(seeds[0])]["metrics"]
        for col in ("Δ per seed", f"mean Δ (B−A), {len(seeds)} seeds", "95% CI", "p", "", "interval covers",
                    "seeds with bootstrap CI ∌ 0"):
            table.add_column(col, justify="right", no_wrap=True)
        across = result["across_seeds"]["metrics"]
        used: set[str] = set()
        for scope, label, path in printed_rows(first):
            s = lookup(across, *path) or {}
            per = [lookup(per_seed[str(k)]["metrics"], *path) or {} for k in seeds]
            method = s.get("method")
            used.add(str(method))
            table.add_row(scope, label, " ".join(_x100(e.get("delta"), True) for e in per),
                          _x100(s.get("mean_delta"), True), _ci(s.get("ci"), s.get("mean_delta")),
                          fmt_p(s.get("p"), floor if method in ("same", "bootstrap") else None),
                          "*" if excludes_zero(s.get("ci")) else "", _COVERS.get(str(method), "n/a"),
                          f"{sum(excludes_zero(e.get('ci')) for e in per)}/{len(per)}")
        console.print(table)
        notes = ["* the 95% interval excludes 0."]
        if any(OUTSIDE_MARK in str(c) for col in table.columns for c in col.cells):
            notes.append(f"{OUTSIDE_MARK} the interval does not contain the mean Δ (docs/metrics.md, \"Which "
                         "interval\").")
        if "combined" in used:
            notes.append("seeds + test: mean Δ over seeds, t interval whose standard error adds the spread of the "
                         "seeds' Δ (s²/k) to their paired-bootstrap variance (Welch-Satterthwaite df).")
        if "same" in used:
            notes.append(f"test only (seed {seeds[0]}): every seed gave the same Δ, so the seeds show no variation; "
                         f"the interval and p are seed {seeds[0]}'s paired bootstrap, not a claim about seeds.")
        if "bootstrap" in used:
            notes.append("test only: one paired seed's paired bootstrap.")
        if "seeds" in used:
            notes.append("seeds only: no bootstrap (n_boot 0), t interval of the seeds' Δ alone.")
        notes.append("Per-seed paired bootstrap intervals are in the JSON (--out).")
        console.print(" ".join(notes), markup=False, soft_wrap=True)
        return
    for col in ("A", "B", "Δ (B−A)", "95% CI", "p", "", "DeLong p"):
        table.add_column(col, justify="right", no_wrap=True)
    m, delong = result["metrics"], result.get("delong") or {}
    for scope, label, path in printed_rows(m):
        e = lookup(m, *path) or {}
        dl = None
        if path == ("overall", "auc"):
            dl = lookup(delong, "overall", "auc")
        elif path[-1] == "auc" and path[2] == "groups":
            dl = lookup(delong, "attributes", path[1], path[3], "auc")
        table.add_row(scope, label, _x100(e.get("a")), _x100(e.get("b")), _x100(e.get("delta"), True),
                      _ci(e.get("ci"), e.get("delta")), fmt_p(e.get("p"), floor), "*" if excludes_zero(e.get("ci")) else "",
                      fmt_p(dl.get("p")) if isinstance(dl, dict) and "p" in dl else "")
    console.print(table)
    console.print("* the 95% paired bootstrap interval of B − A excludes 0. For AUC gap, DPD, DEOdds and ECE lower "
                  "is better; a negative Δ is an improvement.", markup=False, soft_wrap=True)
    if any(OUTSIDE_MARK in str(c) for col in table.columns for c in col.cells):
        console.print(f"{OUTSIDE_MARK} the percentile interval does not contain Δ: differences of gaps and other "
                      "absolute-value statistics are biased under resampling (docs/metrics.md, \"Which interval\").",
                      markup=False, soft_wrap=True)
