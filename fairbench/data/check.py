"""``fairbench data check``: a task's data on disk, checked against its card before anything runs.

Per split it reports sample counts per class and per attribute group (through the card's own label map and
binning, so what is counted is what a run evaluates), images that are missing, empty, not images, truncated
or corrupt, and values outside the card's encoding. Problems a run could not survive are errors (the command
exits 1); things a run survives but a reader should know (small groups, empty classes, many unknown
attribute values) are warnings.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fairbench.data.files import FileImages, default_workers
from fairbench.data.task import SPLITS, TaskCard
from fairbench.errors import DataError
from fairbench.progress import bar

__all__ = ["CheckReport", "SplitCheck", "check_task", "render_report"]

UNKNOWN = "(unknown)"
INVALID = "(outside encoding)"


@dataclass
class SplitCheck:
    split: str
    classes: list[str]
    n: int = 0
    class_counts: Counter = field(default_factory=Counter)
    #: attribute -> group -> class -> n
    groups: dict[str, dict[str, Counter]] = field(default_factory=dict)
    #: (sample id, path, reason)
    bad_images: list[tuple[str, str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and not self.bad_images


@dataclass
class CheckReport:
    task: str
    data_root: Path | None
    splits: list[SplitCheck]

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.splits)

    def as_dict(self) -> dict[str, Any]:
        return {"task": self.task, "data_root": str(self.data_root), "ok": self.ok, "splits": [
            {"split": s.split, "n": s.n, "classes": dict(s.class_counts),
             "groups": {a: {g: dict(c) for g, c in gs.items()} for a, gs in s.groups.items()},
             "bad_images": [{"sample_id": i, "path": p, "reason": r} for i, p, r in s.bad_images],
             "errors": s.errors, "warnings": s.warnings} for s in self.splits]}


def check_task(task: TaskCard, data_root: Path | None, *, splits: list[str] | None = None, quick: bool = False,
               workers: int | None = None) -> CheckReport:
    loader = task.loader()
    if hasattr(loader, "tolerate_unreadable"):
        loader.tolerate_unreadable = True
    report = CheckReport(task.name, data_root, [])
    for split in splits or list(SPLITS):
        report.splits.append(_check_split(task, loader, split, data_root, quick, workers or default_workers()))
    return report


def _check_split(task: TaskCard, loader: Any, split: str, data_root: Path | None, quick: bool,
                 workers: int) -> SplitCheck:
    out = SplitCheck(split, list(task.classes))
    where = f"task '{task.name}', split '{split}'"
    if loader.needs_data_root and data_root is None:
        out.errors.append(f"{where}: this task reads a real dataset; pass --data-root")
        return out
    try:
        raw = loader.load(task.splits[split], data_root)
    except DataError as exc:
        out.errors.append(str(exc))
        return out
    out.n = len(raw.sample_ids)
    for sid, reason in getattr(loader, "unreadable_samples", {}).get(task.splits[split], []):
        out.bad_images.append((str(sid), "", str(reason)))

    try:
        labels = np.asarray([task.classes[i] for i in task._map_labels(raw, where)], dtype=object)
    except DataError as exc:
        labels = _tolerant_labels(task, raw, where)
        bad = [i for i, y in enumerate(labels) if y == INVALID]
        if bad:
            values = raw.columns[task.label_column]
            named = ", ".join(f"{raw.sample_ids[i]} ({values[i]!r})" for i in bad[:5])
            more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
            out.errors.append(f"{exc}; {len(bad)} of {out.n} rows: {named}{more} (the other {out.n - len(bad)} "
                              f"are counted below)")
        else:
            out.errors.append(str(exc))
    out.class_counts = Counter(labels.tolist())
    for c in task.classes:
        if out.class_counts[c] == 0 and out.class_counts[INVALID] < out.n:
            out.warnings.append(f"{where}: no sample of class '{c}'")

    for name, spec in task.attributes.items():
        if spec.column not in raw.columns:
            out.errors.append(f"{where}: attribute '{name}' wants column '{spec.column}', which the loader does "
                              f"not provide (it has: {', '.join(sorted(raw.columns))})")
            continue
        try:
            groups = spec.apply(raw.columns[spec.column], where=where)
        except DataError as exc:
            out.errors.append(str(exc))
            groups = _tolerant_groups(spec, raw.columns[spec.column])
        table: dict[str, Counter] = {}
        for g, y in zip(groups, labels):
            table.setdefault(UNKNOWN if g is None else str(g), Counter())[y] += 1
        out.groups[name] = dict(sorted(table.items()))
        unknown = sum(table.get(UNKNOWN, Counter()).values())
        if out.n and unknown / out.n > 0.5:
            out.warnings.append(f"{where}: attribute '{name}' is unknown for {unknown} of {out.n} samples")
        if split == task.evaluation.split:
            for g, c in table.items():
                if g not in (UNKNOWN, INVALID) and sum(c.values()) < task.evaluation.min_group_size:
                    out.warnings.append(f"{where}: group {name}={g} has {sum(c.values())} samples, below the "
                                        f"card's min_group_size {task.evaluation.min_group_size}")

    images = raw.images
    if isinstance(images, FileImages):
        with bar(f"checking {split} images", len(images)) as b, ThreadPoolExecutor(workers) as pool:
            def inspect(i: int) -> str | None:
                r = images.inspect(i, quick=quick)
                b.advance()
                return r
            for i, reason in enumerate(pool.map(inspect, range(len(images)))):
                if reason is not None:
                    out.bad_images.append((str(raw.sample_ids[i]), images.files[i], reason))
    return out


def _tolerant_labels(task: TaskCard, raw: Any, where: str) -> np.ndarray:
    """Each row's class through the card's own label map, one value at a time; :data:`INVALID` where the value is
    outside it (or every row, when the label column itself is absent)."""
    if task.label_column not in raw.columns:
        return np.full(len(raw.sample_ids), INVALID, dtype=object)
    memo: dict[tuple[str, str], str] = {}
    out = []
    for v in raw.columns[task.label_column]:
        k = (type(v).__name__, str(v))
        if k not in memo:
            one = SimpleNamespace(columns={task.label_column: np.asarray([v], dtype=object)})
            try:
                memo[k] = task.classes[int(task._map_labels(one, where)[0])]
            except DataError:
                memo[k] = INVALID
        out.append(memo[k])
    return np.asarray(out, dtype=object)


def _tolerant_groups(spec: Any, column: np.ndarray) -> list[Any]:
    memo: dict[tuple[str, str], Any] = {}
    out = []
    for v in column:
        k = (type(v).__name__, str(v))
        if k not in memo:
            try:
                memo[k] = spec.apply(np.asarray([v], dtype=object), where="")[0]
            except DataError:
                memo[k] = INVALID
        out.append(memo[k])
    return out


def render_report(report: CheckReport, console: Console, *, max_listed: int = 20) -> None:
    said: set[str] = set()  # a problem of the whole data root (e.g. a wrong --data-root) is said once, not per split
    for s in report.splits:
        title = f"{report.task} / {s.split}: {s.n} samples"
        table = Table(title=title, title_justify="left", show_lines=False)
        table.add_column("attribute")
        table.add_column("group")
        shown = s.classes + ([INVALID] if s.class_counts.get(INVALID) else [])
        for c in shown:
            table.add_column(c, justify="right", style="red" if c == INVALID else None)
        table.add_column("total", justify="right")
        table.add_row("(all)", "", *[str(s.class_counts.get(c, 0)) for c in shown], str(s.n))
        for attr, groups in s.groups.items():
            for i, (g, counts) in enumerate(groups.items()):
                style = "red" if g == INVALID else ("dim" if g == UNKNOWN else None)
                table.add_row(escape(attr) if i == 0 else "", escape(g), *[str(counts.get(c, 0)) for c in shown],
                              str(sum(counts.values())), style=style)
        if s.n:
            console.print(table)
        if s.bad_images:
            by_reason = Counter(r for _, _, r in s.bad_images)
            summary = ", ".join(f"{n} {r}" for r, n in sorted(by_reason.items()))
            console.print(f"[red]error:[/red] {escape(s.split)}: {len(s.bad_images)} unusable image(s) ({summary}):",
                          highlight=False)
            for sid, path, reason in s.bad_images[:max_listed]:
                console.print(f"  {reason}: {path or sid}", markup=False, highlight=False, soft_wrap=True)
            if len(s.bad_images) > max_listed:
                console.print(f"  ... and {len(s.bad_images) - max_listed} more", markup=False)
        for e in s.errors:
            if e not in said:
                console.print(f"[red]error:[/red] {escape(e)}", highlight=False, soft_wrap=True)
            said.add(e)
        for w in s.warnings:
            if w not in said:
                console.print(f"[yellow]warning:[/yellow] {escape(w)}", highlight=False, soft_wrap=True)
            said.add(w)
    if report.ok:
        console.print("[green]ok[/green]: every split loads, every image decodes, every value is in the card's "
                      "encoding", highlight=False)
    elif any(s.bad_images for s in report.splits) and not any(s.errors for s in report.splits):
        console.print("[red]problems found[/red]: a run stops on unusable images unless they are restored, or "
                      "left out with `fairbench run --allow-skip-unreadable` (which records each one)",
                      highlight=False)
    else:
        console.print("[red]problems found[/red]: a run cannot proceed until the errors above are fixed",
                      highlight=False)
