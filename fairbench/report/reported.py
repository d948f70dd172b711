"""Published numbers, curated by hand, shown beside a leaderboard as *reported*, never as reproduced.

One YAML file per task in ``fairbench/report/reported/`` (format in ``fairvlmed.yaml``); ``--reported DIR``
reads another folder. Columns are metrics.json paths (``overall.auc``, ``attributes.race.es_auc``,
``attributes.race.groups.Black.auc``), so each reported value names the fairbench metric it corresponds to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fairbench.errors import CardError

__all__ = ["ReportedSource", "builtin_reported_dir", "column_label", "fmt_value", "load_reported", "render_reported"]


@dataclass(frozen=True)
class ReportedSource:
    id: str
    citation: str
    url: str | None
    setting: str | None
    secondary: str | None
    scale: float  # multiply by this to get x100
    columns: tuple[str, ...]
    rows: tuple[tuple[str, tuple[Any, ...]], ...]  # (method, values)
    claims: tuple[str, ...] = field(default_factory=tuple)
    decimals: int | None = None  # display precision (x100) as printed by the source; None: as the YAML has it


def builtin_reported_dir() -> Path:
    return Path(__file__).resolve().parent / "reported"


def load_reported(directory: Path | None = None) -> dict[str, list[ReportedSource]]:
    """Every task's reported sources, read from ``<directory>/<task>.yaml``."""
    directory = Path(directory) if directory is not None else builtin_reported_dir()
    if not directory.is_dir():
        raise CardError(f"{directory}: no such folder of reported numbers")
    out: dict[str, list[ReportedSource]] = {}
    for path in sorted(directory.glob("*.yaml")):
        task, sources = _read(path)
        out.setdefault(task, []).extend(sources)
    return out


def _read(path: Path) -> tuple[str, list[ReportedSource]]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise CardError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None

    def fail(where: str, problem: str) -> CardError:
        return CardError(f"{path}: field '{where}' {problem}")

    if not isinstance(data, dict) or not isinstance(data.get("task"), str):
        raise fail("task", "is required (the task name)")
    sources = []
    for i, s in enumerate(data.get("sources") or []):
        where = f"sources[{i}]"
        if not isinstance(s, dict) or not s.get("id") or not s.get("citation"):
            raise fail(where, "needs an id and a citation")
        unknown = sorted(set(s) - {"id", "citation", "url", "setting", "secondary", "scale", "columns", "rows",
                                   "claims", "decimals"})
        if unknown:
            raise fail(f"{where}.{unknown[0]}", "is not a known field")
        columns = tuple(str(c) for c in s.get("columns") or ())
        rows = []
        for j, r in enumerate(s.get("rows") or []):
            values = r.get("values") if isinstance(r, dict) else None
            if not isinstance(values, list) or len(values) != len(columns) or not r.get("method"):
                raise fail(f"{where}.rows[{j}]", f"needs a method and {len(columns)} values (one per column)")
            for v in values:
                ok = v is None or isinstance(v, (int, float)) or (
                    isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v))
                if not ok:
                    raise fail(f"{where}.rows[{j}]", f"value {v!r} is not a number, null or [mean, sd]")
            rows.append((str(r["method"]), tuple(values)))
        scale = s.get("scale", "fraction")
        if scale not in ("fraction", "percent"):
            raise fail(f"{where}.scale", f"must be fraction or percent, got {scale!r}")
        sources.append(ReportedSource(
            id=str(s["id"]), citation=" ".join(str(s["citation"]).split()), url=s.get("url"),
            setting=s.get("setting"), secondary=s.get("secondary"), scale=100.0 if scale == "fraction" else 1.0,
            columns=columns, rows=tuple(rows), claims=tuple(" ".join(str(c).split()) for c in s.get("claims") or ()),
            decimals=s.get("decimals")))
    return data["task"], sources


_NAMES = {"auc": "AUC", "acc": "ACC", "es_auc": "ES-AUC", "es_acc": "ES-ACC", "dpd": "DPD", "deodds": "DEOdds",
          "auc_gap": "AUC gap", "eqodds": "EqOdds", "macro_f1": "macro F1", "ece": "ECE"}


def column_label(path: str) -> str:
    """``attributes.race.groups.Black.auc`` -> ``AUC Black (race)``; ``attributes.race.es_auc`` ->
    ``ES-AUC (race)``; ``overall.auc`` -> ``AUC``."""
    parts = path.split(".")
    metric = _NAMES.get(parts[-1], parts[-1])
    if parts[0] == "attributes" and len(parts) >= 5 and parts[2] == "groups":
        return f"{metric} {'.'.join(parts[3:-1])} ({parts[1]})"
    if parts[0] == "attributes" and len(parts) == 3:
        return f"{metric} ({parts[1]})"
    return metric


def _num(x: float, decimals: int | None = None) -> str:
    """x at the source's precision: ``decimals`` if given, else the digits the value has (0.6902 x100 -> 69.02)."""
    if decimals is not None:
        return f"{x:.{decimals}f}"
    for d in range(5):
        if abs(round(x, d) - x) < 1e-9:
            return f"{x:.{d}f}"
    return f"{x:.4f}"


def fmt_value(v: Any, scale: float, decimals: int | None) -> str:
    """A reported value as the source gives it, x100 where the source used fractions: ``[mean, sd]`` as mean ± sd."""
    if v is None:
        return "–"
    if isinstance(v, list):
        return f"{_num(v[0] * scale, decimals)} ± {_num(v[1] * scale, decimals)}"
    return _num(v * scale, decimals)


def render_reported(task: str, sources: list[ReportedSource], synthetic: bool) -> list[str]:
    lines = ["## Reported in papers (not reproduced by fairbench)", ""]
    if synthetic:
        return lines + ["Synthetic task: no published numbers exist for it.", ""]
    if not sources:
        return lines + ["No published numbers are curated for this task.", ""]
    lines += [("These numbers are copied from the cited sources. fairbench did **not** produce them: the sources used "
              "their own checkpoints, prompts, thresholds, splits and code, so they are context for fairbench's "
              "own tables, never entries in them. Values x100, at the precision the source gives; ± is the standard "
              "deviation the source reports."), ""]
    for n, s in enumerate(sources, start=1):
        title = f"[{n}] {s.citation}"
        lines.append(f"### {title}")
        lines.append("")
        meta = []
        if s.setting:
            meta.append(f"Setting: {s.setting}.")
        if s.secondary:
            meta.append(f"Caution: {s.secondary}.")
        if s.url:
            meta.append(f"Source: <{s.url}>")
        if meta:
            lines += [" ".join(meta), ""]
        if s.rows:
            lines.append("| method (reported) | " + " | ".join(column_label(c) for c in s.columns) + " |")
            lines.append("|---|" + "---|" * len(s.columns))
            for method, values in s.rows:
                lines.append(f"| {method} [{n}] | " + " | ".join(fmt_value(v, s.scale, s.decimals) for v in values) + " |")
            lines.append("")
        for c in s.claims:
            lines.append(f"- {c}")
        if s.claims:
            lines.append("")
    return lines
