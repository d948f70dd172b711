"""The table `fairbench run` prints at the end of a cell."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["print_summary", "fmt100", "lookup"]


def lookup(tree: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def fmt100(value: Any, ci: Any = None) -> str:
    """A fraction shown x100 with one decimal, and its CI when there is one; ``n/a`` when undefined."""
    if value is None:
        return "n/a"
    text = f"{100 * float(value):.1f}"
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci:
        text += f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
    return text


def print_summary(doc: dict[str, Any], cell: Path, console: Console | None = None) -> None:
    console = console or Console(highlight=False)
    m = doc.get("metrics", {})
    ci = m.get("ci", {}) or {}
    task = doc.get("task", {})
    synthetic = " — SYNTHETIC data (demonstration, not a medical result)" if task.get("synthetic") else ""
    console.print(f"[bold]fairbench[/bold] task [bold]{task.get('name')}[/bold] v{task.get('version')}"
                  f"{synthetic}")
    console.print(f"model [bold]{lookup(doc, 'model', 'name')}[/bold] · adapter "
                  f"[bold]{lookup(doc, 'adapt', 'name')}[/bold] · seed {doc.get('seed')} · "
                  f"evaluated on '{task.get('eval_split', 'test')}' · values x100, "
                  f"[95% bootstrap CI, B={m.get('n_boot', 0)}]")
    overall = Table(title="Overall", title_justify="left")
    for col in ("n", "AUC", "ACC", "macro F1", "ECE"):
        overall.add_column(col, justify="right")
    o = m.get("overall", {})
    overall.add_row(str(o.get("n", "")), fmt100(o.get("auc"), lookup(ci, "overall", "auc")),
                    fmt100(o.get("acc"), lookup(ci, "overall", "acc")),
                    fmt100(o.get("macro_f1"), lookup(ci, "overall", "macro_f1")),
                    fmt100(o.get("ece"), lookup(ci, "overall", "ece")))
    console.print(overall)
    fair = Table(title="Fairness per protected attribute", title_justify="left")
    fair.add_column("attribute")
    fair.add_column("group AUC (n)")
    for col in ("ES-AUC", "AUC gap", "DPD", "DEOdds"):
        fair.add_column(col, justify="right")
    for attr, a in (m.get("attributes") or {}).items():
        groups = a.get("groups", {})
        parts = [f"{g} {fmt100(gm.get('auc'))} ({gm.get('n')})" for g, gm in groups.items()]
        fair.add_row(attr, "  ".join(parts),
                     fmt100(a.get("es_auc"), lookup(ci, "attributes", attr, "es_auc")),
                     fmt100(a.get("auc_gap"), lookup(ci, "attributes", attr, "auc_gap")),
                     fmt100(_first(a, "dpd", "dpd_mean_ovr"), lookup(ci, "attributes", attr, "dpd")),
                     fmt100(_first(a, "deodds", "deodds_mean_ovr"), lookup(ci, "attributes", attr, "deodds")))
    console.print(fair)
    console.print(f"results: {cell}", soft_wrap=True)


def _first(d: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        if d.get(k) is not None:
            return d[k]
    return None
