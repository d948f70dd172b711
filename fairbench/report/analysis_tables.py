"""The leaderboard's analyses and variants tables: per protected attribute, rows model x adapter (the rows of the
main tables), entries from metrics.json ``analyses`` (docs/metrics.md, "Analyses") and ``variants``, aggregated
over seeds as the main tables are (:func:`fairbench.report.tables.combine`: mean, a t interval across seeds that
differ, else the first seed's bootstrap interval). A cell without the analysis gives no value; a row without any
gives a dash, and a column that no row has is left out.

Kinds of entry: ``value`` (x100, with an interval where the column has one), ``slope`` (calibration slopes,
unscaled: the mean over seeds of the smallest and of the largest group slope), ``flag`` (yes / no / ``k of n``
seeds) and ``group`` (a group name, or every name with its seed count where seeds disagree).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fairbench.report.formatting import fmt_agg
from fairbench.report.summary import lookup
from fairbench.report.tables import Row, combine

__all__ = ["DASH", "VARIANT_NAMES", "AnalysisColumn", "analysis_columns", "analysis_entries", "variant_columns"]

DASH = "–"
#: the variants tables' columns, in FairMedFM's own names (fairbench.analyses.fairmedfm.NAMES)
VARIANT_NAMES = ("overall-auc", "worst-auc", "auc-gap", "overall-acc", "acc-gap", "eod", "eo", "overall-ece",
                 "ece-gap", "overall-bce", "bce-gap")


@dataclass(frozen=True)
class AnalysisColumn:
    header: str
    kind: str  # "value" | "slope" | "flag" | "group"
    #: from a cell's metrics.json: value -> (value, interval or None); slope -> (min, max); flag -> bool;
    #: group -> str; None where the cell has no such entry
    get: Callable[[dict[str, Any]], Any]
    interval: bool = True
    bounds: tuple[float | None, float | None] = (0.0, 1.0)


def _worst_ud(doc: dict[str, Any], attr: str) -> dict[str, Any] | None:
    rec = lookup(doc, "analyses", "underdiagnosis", attr)
    worst = (rec or {}).get("worst_group")
    return None if worst is None else (rec.get("groups") or {}).get(worst)


def _underpowered(doc: dict[str, Any], attr: str) -> bool | None:
    from fairbench.analyses.power import underpowered

    rec = lookup(doc, "analyses", "power", attr)
    if not isinstance(rec, dict) or rec.get("mde_auc_gap") is None or rec.get("observed_gap") is None:
        return None
    return underpowered(rec.get("observed_gap"), rec.get("observed_gap_ci"), rec.get("mde_auc_gap"))


def _slopes(doc: dict[str, Any], attr: str) -> tuple[float, float] | None:
    groups = lookup(doc, "analyses", "calibration", attr, "groups") or {}
    slopes = [g["slope"] for g in groups.values() if isinstance(g, dict) and isinstance(g.get("slope"), (int, float))]
    return (min(slopes), max(slopes)) if slopes else None


def _pair(doc: dict[str, Any], *path: str) -> tuple[Any, Any] | None:
    rec = lookup(doc, *path[:-1])
    if not isinstance(rec, dict) or rec.get(path[-1]) is None:
        return None
    return rec.get(path[-1]), None


def analysis_columns(attr: str) -> list[AnalysisColumn]:
    """Every column an attribute's analyses table may have (the ones no row fills are dropped later)."""
    def leakage(d: dict[str, Any]) -> Any:
        rec = lookup(d, "analyses", "leakage", attr)
        return None if not isinstance(rec, dict) or rec.get("auc") is None else (rec["auc"], rec.get("ci"))

    def ud(key: str, ci: str) -> Callable[[dict[str, Any]], Any]:
        def get(d: dict[str, Any]) -> Any:
            w = _worst_ud(d, attr)
            return None if w is None or w.get(key) is None else (w[key], w.get(ci))
        return get

    def ece_gap(d: dict[str, Any]) -> Any:
        v = lookup(d, "metrics", "attributes", attr, "ece_delta")
        return None if v is None else (v, lookup(d, "metrics", "ci", "attributes", attr, "ece_delta"))

    return [
        AnalysisColumn("leakage AUC", "value", leakage),
        AnalysisColumn("MDE AUC gap", "value", lambda d: _pair(d, "analyses", "power", attr, "mde_auc_gap"),
                       interval=False),
        AnalysisColumn("underpowered", "flag", lambda d: _underpowered(d, attr)),
        AnalysisColumn("worst underdiagnosed", "group",
                       lambda d: lookup(d, "analyses", "underdiagnosis", attr, "worst_group")),
        AnalysisColumn("its underdiagnosis", "value", ud("rate", "ci")),
        AnalysisColumn("gap to best", "value", ud("gap_to_best", "gap_to_best_ci"), bounds=(None, None)),
        AnalysisColumn("ECE gap", "value", ece_gap),
        AnalysisColumn("calibration slope (min to max)", "slope", lambda d: _slopes(d, attr)),
        AnalysisColumn("AUC gap SD over prompts", "value",
                       lambda d: _pair(d, "analyses", "prompts", "spread", "gaps", attr, "sd"), interval=False),
        AnalysisColumn("same worst group over prompts", "flag",
                       lambda d: lookup(d, "analyses", "prompts", "spread", "gaps", attr, "same_sign")),
    ]


def variant_columns(variant: str, attr: str) -> list[AnalysisColumn]:
    """A variants table's columns: the variant's own names (FairMedFM's); intervals only across seeds that differ
    (the variant records no bootstrap interval); BCE is not bounded by 1."""
    return [AnalysisColumn(name, "value", lambda d, name=name: _pair(d, "variants", variant, attr, name),
                           bounds=(0.0, None) if "bce" in name else (0.0, 1.0))
            for name in VARIANT_NAMES]


def _entry(col: AnalysisColumn, docs: list[dict[str, Any]]) -> str | None:
    got = [col.get(d) for d in docs]
    known = [g for g in got if g is not None]
    if not known:
        return None
    star = "*" if len(known) < len(docs) else ""
    if col.kind == "value":
        return fmt_agg(combine([g if g is not None else (None, None) for g in got], col.bounds), col.interval)
    if col.kind == "slope":
        lo = sum(float(g[0]) for g in known) / len(known)
        hi = sum(float(g[1]) for g in known) / len(known)
        return f"{lo:.2f} to {hi:.2f}{star}"
    if col.kind == "flag":
        yes = sum(bool(g) for g in known)
        text = "yes" if yes == len(known) else "no" if yes == 0 else f"{yes} of {len(known)} seeds"
        return text + star
    names: dict[str, int] = {}
    for g in known:
        names[str(g)] = names.get(str(g), 0) + 1
    if len(names) == 1:
        return next(iter(names)) + star
    return ", ".join(f"{n} ({k} seeds)" if k != 1 else f"{n} (1 seed)" for n, k in sorted(names.items())) + star


def analysis_entries(rows: list[Row], columns: list[AnalysisColumn]) -> tuple[list[AnalysisColumn], list[list[str]]]:
    """(the columns some row fills, the rows' entries: text, or :data:`DASH` where a row has no value)."""
    table = [[_entry(col, [c.doc for c in r.cells]) for col in columns] for r in rows]
    keep = [j for j in range(len(columns)) if any(t[j] is not None for t in table)]
    return [columns[j] for j in keep], [[t[j] if t[j] is not None else DASH for j in keep] for t in table]
