"""What a sweep shows while it runs: cells done / failed / remaining.

On a terminal (see :func:`fairbench.progress.progress_enabled`) a live bar; elsewhere (CI, logs, SLURM
output) one line per finished cell. Everything goes to stderr.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fairbench.progress import console, progress_enabled
from fairbench.sweep.worker import ERROR, Outcome

if TYPE_CHECKING:
    from fairbench.sweep.report import SweepReport

__all__ = ["SweepProgress"]


class SweepProgress:
    def __init__(self, live: bool | None = None) -> None:
        self.live = progress_enabled() if live is None else live
        self.done = self.failed = self.remaining = 0
        self._progress: Progress | None = None
        self._task: Any = None

    def _counts(self) -> str:
        return f"done {self.done}, failed {self.failed}, remaining {self.remaining}"

    def start(self, *, total: int, complete: int, to_run: int, where: str, previously_failed: int = 0) -> None:
        self.done, self.remaining = complete, to_run
        retry = f", {previously_failed} of them failed before" if previously_failed else ""
        console.print(f"sweep: {total} cells, {complete} already complete, {to_run} to run{retry}; {where}",
                      markup=False, soft_wrap=True)
        if self.live and to_run:
            self._progress = Progress(TextColumn("sweep"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[counts]}"), TimeElapsedColumn(),
                                      console=console, transient=True)
            self._progress.start()
            self._task = self._progress.add_task("sweep", total=to_run, counts=self._counts())

    def update(self, o: Outcome) -> None:
        self.remaining -= 1
        if o.status == "failed":
            self.failed += 1
            line = f"failed  {o.key}: {o.error}"
        elif o.status == "busy":
            line = f"busy    {o.key}: {o.error}"
        else:
            self.done += 1
            line = f"{'done' if o.status == 'done' else 'skipped'}    {o.key} ({o.duration_s:.1f} s)"
        if self._progress is not None:
            self._progress.update(self._task, advance=1, counts=self._counts())
            self._progress.console.print(line, markup=False, soft_wrap=True, highlight=False)
        else:
            console.print(f"[{self._counts()}] {line}", markup=False, soft_wrap=True)

    def finish(self, report: SweepReport) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        failed = report.failed
        remaining = report.remaining
        console.print(f"sweep: {len(report.ran)} ran, {len(report.already_complete)} already complete, "
                      f"{len(failed)} failed, {remaining} remaining"
                      + (f", {len(report.busy)} held by another process" if report.busy else ""),
                      markup=False, soft_wrap=True)
        for o in failed:
            console.print(f"  failed {o.key}: {o.error} (details: {o.path / ERROR})", markup=False, soft_wrap=True)
        for o in report.busy:
            console.print(f"  busy {o.key}: not run, another process is computing it (rerun once it ends to check "
                          "it)", markup=False, soft_wrap=True)
        if failed or remaining:
            console.print("rerun the same command to retry the failed and remaining cells; complete cells are "
                          "skipped", markup=False, soft_wrap=True)
