"""Progress bars and status messages that stay quiet where nobody is watching.

Bars show only when stderr is a terminal and ``CI`` is not set to a true value; ``FAIRBENCH_PROGRESS=1``
forces them on, ``=0`` off. Messages (``info``/``warn``) always go to stderr so stdout stays parseable.

Where output is not a terminal (a pipe, a file, a CI log) the consoles are :data:`WIDE` columns wide instead of
rich's 80, so a path, a class name or a table row is never split or cut; prose lines are simply not wrapped.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

__all__ = ["WIDE", "bar", "console", "info", "progress_enabled", "stdout_console", "track", "warn"]

T = TypeVar("T")

#: Width of a console that does not write to a terminal: wide enough that nothing is ever wrapped or cut.
WIDE = 10_000


def _unwrapped(console: Console) -> Console:
    """``console``, made :data:`WIDE` columns wide when it does not write to a terminal (rich would use 80, or
    $COLUMNS, and split paths mid-word or cut table cells with an ellipsis)."""
    if not console.is_terminal:
        console.width = WIDE
    return console


def stdout_console() -> Console:
    """The console for what a command prints on stdout (tables, summaries)."""
    return _unwrapped(Console(highlight=False))


console = _unwrapped(Console(stderr=True, highlight=False))


def progress_enabled() -> bool:
    forced = os.environ.get("FAIRBENCH_PROGRESS")
    if forced is not None:
        return forced.strip().lower() not in ("", "0", "false", "no")
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        return False
    return sys.stderr.isatty()


class _Bar:
    """A handle to advance one task and show a postfix (e.g. the current loss)."""

    def __init__(self, progress: Progress | None, task_id: int | None) -> None:
        self._p, self._id = progress, task_id

    def advance(self, n: float = 1) -> None:
        if self._p is not None:
            self._p.advance(self._id, n)  # type: ignore[arg-type]

    def postfix(self, text: str) -> None:
        if self._p is not None:
            self._p.update(self._id, postfix=text)  # type: ignore[arg-type]


@contextmanager
def bar(description: str, total: float | None) -> Iterator[_Bar]:
    if not progress_enabled():
        yield _Bar(None, None)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[postfix]}"))
    with Progress(*columns, console=console, transient=True) as p:
        yield _Bar(p, p.add_task(description, total=total, postfix=""))


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with bar(description, total) as b:
        for item in items:
            yield item
            b.advance()


def info(message: str) -> None:
    console.print(message, style="dim", markup=False, soft_wrap=True)


def warn(message: str) -> None:
    console.print(f"warning: {message}", style="yellow", markup=False, soft_wrap=True)
