"""The table `fairbench run` prints at the end of a cell."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fairbench.progress import stdout_console
from fairbench.report.formatting import OUTSIDE_MARK, outside

__all__ = ["OUTSIDE_LEGEND", "OUTSIDE_MARK", "analyses_lines", "fmt100", "lookup", "outside", "print_power_plan", "print_summary", "random_weights"]

#: after an interval that does not contain its own point estimate (docs/metrics.md, "Which interval")
OUTSIDE_LEGEND = ("‡ the 95% percentile interval does not contain the point estimate: resampling inflates gaps, DPD, "
                  "DEOdds, ECE and other absolute-value statistics; read it as their spread (docs/metrics.md)")


def lookup(tree: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree




def fmt100(value: Any, ci: Any = None, *, stacked: bool = False) -> str:
    """A fraction shown x100 with one decimal, and its CI when there is one; ``n/a`` when undefined.
    ``stacked`` puts the interval on a second line (``lo–hi``), which keeps terminal tables narrow. An interval
    that does not contain the value is marked :data:`OUTSIDE_MARK`."""
    if value is None:
        return "n/a"
    text = f"{100 * float(value):.1f}"
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci:
        lo, hi = 100 * ci[0], 100 * ci[1]
        text += f"\n{lo:.1f}–{hi:.1f}" if stacked else f" [{lo:.1f}, {hi:.1f}]"
        if outside(value, ci):
            text += OUTSIDE_MARK
    return text


def print_summary(doc: dict[str, Any], cell: Path, console: Console | None = None) -> None:
    console = console or stdout_console()
    m = doc.get("metrics", {})
    ci = m.get("ci", {}) or {}
    task = doc.get("task", {})
    synthetic = " — SYNTHETIC data (demonstration, not a medical result)" if task.get("synthetic") else ""
    console.print(f"[bold]fairbench[/bold] task [bold]{task.get('name')}[/bold] v{task.get('version')}"
                  f"{synthetic}")
    intervals = (f"[95% bootstrap CI, B={m.get('n_boot')}]" if m.get("n_boot") and ci
                 else "no confidence intervals" + ("" if m.get("n_boot") else " (no bootstrap: n_boot 0)"))
    console.print(f"model [bold]{lookup(doc, 'model', 'name')}[/bold] · adapter "
                  f"[bold]{lookup(doc, 'adapt', 'name')}[/bold]{_trained_on(doc)} · seed {doc.get('seed')} · "
                  f"evaluated on '{task.get('eval_split', 'test')}' · values x100, {intervals}")
    if random_weights(doc):
        console.print("[bold]RANDOM WEIGHTS:[/bold] the model ran with random, untrained weights (--weights "
                      "random): these numbers describe no trained model")
    n_skipped = lookup(doc, "data", "n_skipped")
    if n_skipped:
        console.print(f"[bold]note:[/bold] {n_skipped} sample(s) skipped as unreadable and left out of every "
                      f"number (listed in {escape(str(cell / 'metrics.json'))} under data.skipped)", soft_wrap=True)
    fitted = lookup(doc, "adapt", "fitted") or {}
    if fitted.get("needs_attribute_at_prediction"):
        console.print(f"[bold]note:[/bold] this adapter used the protected attribute "
                      f"'{fitted.get('attribute')}' of every test sample to make its prediction "
                      f"({fitted.get('uses', 'per-group thresholds')}): it cannot be deployed where that attribute "
                      f"may not decide")
    if (doc.get("threshold") or {}).get("rule") == "randomised":
        console.print("[bold]note:[/bold] its decisions are randomised: ACC, F1, DPD and DEOdds are the expected "
                      "rates of that rule (no threshold applied); its AUC and ECE read P(yhat = 1), a coarse score",
                      soft_wrap=True)
    overall = Table(title="Overall", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("n", "AUC", "ACC", "macro F1", "ECE"):
        overall.add_column(col, justify="right", min_width=9, no_wrap=True)
    o = m.get("overall", {})
    overall.add_row(str(o.get("n", "")),
                    *(fmt100(o.get(k), lookup(ci, "overall", k), stacked=True)
                      for k in ("auc", "acc", "macro_f1", "ece")))
    console.print(overall)
    fair = Table(title="Fairness per protected attribute (summaries on each attribute's first row)",
                 title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    fair.add_column("attr", no_wrap=True)
    fair.add_column("group (n)", no_wrap=True)
    for col in ("AUC", "ES-AUC", "AUC gap", "DPD", "DEOdds"):
        fair.add_column(col, justify="right", min_width=9, no_wrap=True)
    for attr, a in (m.get("attributes") or {}).items():
        groups = list((a.get("groups") or {}).items())
        summary = []
        for key in ("es_auc", "auc_gap", "dpd", "deodds"):
            name = _first_key(a, key, f"{key}_mean_ovr")  # multiclass: the mean over one-vs-rest
            summary.append(fmt100(a.get(name), lookup(ci, "attributes", attr, name), stacked=True))
        for i, (g, gm) in enumerate(groups):
            fair.add_row(attr if i == 0 else "", f"{g}\nn={gm.get('n', '?')}",
                         fmt100(gm.get("auc"), lookup(ci, "attributes", attr, "groups", g, "auc"), stacked=True),
                         *(summary if i == 0 else [""] * 4), end_section=i == len(groups) - 1)
    console.print(fair)
    if any(OUTSIDE_MARK in str(c) for t in (overall, fair) for col in t.columns for c in col.cells):
        console.print(OUTSIDE_LEGEND, markup=False, soft_wrap=True)
    for line in analyses_lines(doc.get("analyses") or {}):
        console.print(line, markup=False, soft_wrap=True)
    console.print(f"results: {cell}", soft_wrap=True)


def analyses_lines(analyses: dict[str, Any]) -> list[str]:
    """Summary lines for ``analyses`` (docs/metrics.md, "Analyses"): the detectable AUC gaps, any attribute whose
    best-vs-worst gap was underpowered, and underdiagnosis by group (one line per attribute)."""
    from fairbench.analyses.power import underpowered

    lines = []
    power = analyses.get("power") or {}
    mdes = [f"{a} {fmt100(r.get('mde_auc_gap'))}" for a, r in power.items()]
    if mdes:
        lines.append("power: smallest AUC gap detectable at 80% power (best vs worst group, x100): " + ", ".join(mdes))
    for attr, r in power.items():
        if underpowered(r.get("observed_gap"), r.get("observed_gap_ci"), r.get("mde_auc_gap")):
            lines.append(f"power: {attr}: AUC gap {fmt100(r['observed_gap'], r['observed_gap_ci'])} includes 0 — "
                         f"underpowered: gaps below {fmt100(r['mde_auc_gap'])} could not be seen")
    for attr, r in (analyses.get("underdiagnosis") or {}).items():
        groups = ", ".join(f"{g} {fmt100(v.get('rate'), v.get('ci'))}" for g, v in (r.get("groups") or {}).items())
        worst = r.get("worst_group")
        tail = ""
        if worst is not None and r.get("best_group") != worst:
            w = r["groups"][worst]
            tail = (f"; worst {worst}, +{fmt100(w['gap_to_best'], w.get('gap_to_best_ci'))} over best "
                    f"{r.get('best_group')}")
        lines.append(f"underdiagnosis ({attr}, x100): {groups}{tail}")
    return lines


def _first_key(d: dict[str, Any], *keys: str) -> str:
    """The first of ``keys`` with a value in ``d`` (the first key when none has one)."""
    for k in keys:
        if d.get(k) is not None:
            return k
    return keys[0]


def random_weights(doc: dict[str, Any]) -> bool:
    """Whether a cell's model ran with random (untrained) weights (``--weights random``)."""
    return lookup(doc, "model", "weights", "source") == "random"


def print_power_plan(plan: dict[str, Any], console: Console | None = None) -> None:
    """`fairbench power`: one row per attribute (and intersection) of the task's evaluated split."""
    console = console or stdout_console()
    scaled = f" rescaled to N={plan['n']}" if plan["n"] != plan["n_observed"] else ""
    console.print(f"[bold]fairbench power[/bold] task [bold]{escape(plan['task'])}[/bold], split '{plan['split']}' "
                  f"({plan['n_observed']} samples{scaled}); 80% power, two-sided alpha 0.05, better group at AUC "
                  f"{plan['planning_auc']}, rates at 0.5; values x100", soft_wrap=True)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("attr", "groups (n_pos/n_neg)", "AUC gap", "hardest pair", "DPD", "DEOdds"):
        table.add_column(col, justify="left" if col in ("attr", "groups (n_pos/n_neg)", "hardest pair") else "right")
    for attr, rec in plan["attributes"].items():
        sizes = ", ".join(f"{g} {v['n_pos']}/{v['n_neg']}" for g, v in rec["inputs"].items())
        table.add_row(escape(attr), escape(sizes), fmt100(rec.get("mde_auc_gap")),
                      escape(" vs ".join(rec.get("pair") or [])) or rec.get("reason", ""),
                      fmt100(rec.get("mde_dpd")), fmt100(rec.get("mde_deodds")))
    console.print(table)
    console.print("A gap smaller than these could pass unseen (method: Hanley-McNeil AUC variances and two-proportion "
                  "tests, docs/metrics.md).", soft_wrap=True)


def _trained_on(doc: dict[str, Any]) -> str:
    """`` (trained on A)`` for a cross-dataset cell (metrics.json ``train_task``), else nothing."""
    name = lookup(doc, "train_task", "name")
    return f" (trained on {name})" if name else ""
