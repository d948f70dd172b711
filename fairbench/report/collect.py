"""Find and read result cells for the leaderboard, plots and the regression check.

A path may be a results root, any folder inside one, a cell folder or a metrics.json. A cell folder is one
that holds ``metrics.json``, ``predictions.parquet`` or ``error.json`` (the cell type and the finder are
:mod:`fairbench.results.cells`'s, shared with ``fairbench compare``). A cell without a readable metrics.json
is a *problem*: reported by path with the reason, never silently dropped; callers decide whether problems
skip (leaderboard, plot) or fail (check). Result files that mix schema versions are rejected outright: their
numbers are not comparable.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fairbench.errors import ResultsError
from fairbench.results import ERROR, METRICS, SCHEMA_VERSION, ResultCell, find_cell_dirs, read_metrics

__all__ = ["Collection", "ResultCell", "collect", "format_problems"]


@dataclass
class Collection:
    roots: list[str]
    cells: list[ResultCell] = field(default_factory=list)
    problems: list[tuple[Path, str]] = field(default_factory=list)

    def by_task(self) -> dict[str, list[ResultCell]]:
        out: dict[str, list[ResultCell]] = {}
        for c in self.cells:
            out.setdefault(c.task, []).append(c)
        return out


def collect(paths: Sequence[Path | str]) -> Collection:
    if not paths:
        raise ResultsError("no results given: name a results folder, a cell folder or a metrics.json")
    col = Collection(roots=[str(p) for p in paths])
    dirs: list[Path] = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise ResultsError(f"{p}: no such results folder or file")
        dirs.extend([p.parent] if p.is_file() else find_cell_dirs(p))
    seen: set[Path] = set()
    raw: list[tuple[Path, dict[str, Any]]] = []
    for d in sorted(dirs, key=lambda x: x.as_posix()):
        if d.resolve() in seen:
            continue
        seen.add(d.resolve())
        doc, problem = _read_raw(d)
        if problem:
            col.problems.append((d / METRICS, problem))
        else:
            raw.append((d, doc))  # type: ignore[arg-type]
    _reject_mixed_versions(raw)
    keys: dict[str, Path] = {}
    for d, _doc in raw:
        try:
            doc = read_metrics(d / METRICS)
        except ResultsError as exc:
            col.problems.append((d / METRICS, str(exc).split(": ", 1)[-1]))
            continue
        missing = _missing_fields(doc)
        if missing:
            col.problems.append((d / METRICS, f"malformed metrics.json: no {missing}"))
            continue
        cell = ResultCell(d, doc)
        if cell.key in keys:
            col.problems.append((d / METRICS, f"duplicate of cell {cell.key} at {keys[cell.key]}; the first is used"))
            continue
        keys[cell.key] = d
        col.cells.append(cell)
    col.cells.sort(key=lambda c: (c.task, c.model, c.adapt, c.seed))
    return col


def _read_raw(d: Path) -> tuple[dict[str, Any] | None, str | None]:
    path = d / METRICS
    if not path.is_file():
        err = d / ERROR
        if err.is_file():
            try:
                message = json.loads(err.read_text(encoding="utf-8")).get("message", "")
            except (OSError, ValueError, AttributeError):
                message = "unreadable error.json"
            return None, f"missing: the cell failed ({message})"
        return None, "missing: the cell is incomplete (no metrics.json)"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return None, f"malformed metrics.json ({' '.join(str(exc).split())})"
    if not isinstance(doc, dict) or "schema_version" not in doc:
        return None, "malformed metrics.json (not a fairbench metrics file: no schema_version)"
    return doc, None


def _reject_mixed_versions(raw: list[tuple[Path, dict[str, Any]]]) -> None:
    versions: dict[Any, list[Path]] = {}
    for d, doc in raw:
        versions.setdefault(doc["schema_version"], []).append(d / METRICS)
    if len(versions) > 1:
        parts = [f"{v!r} ({len(ps)} file{'s' if len(ps) != 1 else ''}, e.g. {ps[0]})"
                 for v, ps in sorted(versions.items(), key=lambda kv: str(kv[0]))]
        raise ResultsError(f"results mix metrics.json schema versions {'; '.join(parts)}: numbers from different "
                           f"versions are not comparable; recompute the old ones with `fairbench metrics` "
                           f"(this fairbench writes version {SCHEMA_VERSION})")
    if versions and next(iter(versions)) != SCHEMA_VERSION:
        (version, ps), = versions.items()
        raise ResultsError(f"{ps[0]}: schema_version {version!r} is not the version this fairbench reads "
                           f"({SCHEMA_VERSION}); recompute the results with `fairbench metrics`")


def _missing_fields(doc: dict[str, Any]) -> str | None:
    for path in (("task", "name"), ("model", "name"), ("adapt", "name"), ("seed",), ("metrics", "overall")):
        node: Any = doc
        for k in path:
            if not isinstance(node, dict) or k not in node or node[k] is None:
                return ".".join(path)
            node = node[k]
    return None


def format_problems(problems: list[tuple[Path, str]]) -> list[str]:
    return [f"{path}: {why}" for path, why in problems]
