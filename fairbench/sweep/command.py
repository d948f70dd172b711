"""`fairbench sweep`: build the spec from a sweep file and the command line, then run or list it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fairbench.errors import FairbenchError
from fairbench.progress import stdout_console
from fairbench.sweep.driver import SweepReport, plan, run_sweep
from fairbench.sweep.grid import SweepSpec, load_sweep_file, parse_adapt_args, parse_names, parse_seeds
from fairbench.sweep.worker import read_error

__all__ = ["build_spec", "sweep_command", "write_sweep_report"]


def build_spec(sweep_file: Path | None, *, tasks: list[str] | None, models: list[str] | None,
               adapts: list[str] | None, seeds: list[str] | None, executor: str | None, workers: int | None,
               executor_args: dict[str, Any], threads: int | None, tasks_dirs: list[Path] | None,
               adapt_args: list[str] | None, options: dict[str, Any], ray_address: str | None = None,
               eval_tasks: list[str] | None = None) -> SweepSpec:
    base = load_sweep_file(sweep_file) if sweep_file is not None else SweepSpec()
    executor_options = dict(executor_args)
    if workers is not None:
        executor_options["workers"] = workers
    if executor is not None and executor != base.executor:
        # options written for another executor do not carry over
        base.executor_options = {}
    if ray_address is not None:
        if (executor or base.executor) != "ray":
            raise FairbenchError(f"--ray-address applies to the ray executor, not '{executor or base.executor}' "
                                 f"(add --executor ray)")
        executor_options["address"] = ray_address
    return base.merged(
        tasks=parse_names(tasks), eval_tasks=parse_names(eval_tasks), models=parse_names(models),
        adapts=parse_names(adapts),
        seeds=parse_seeds(seeds), executor=executor, executor_options=executor_options, threads=threads,
        tasks_dirs=tuple(Path(d) for d in (tasks_dirs or ())) or None,
        adapt_args=parse_adapt_args(adapt_args), options=options,
    )


def sweep_command(spec: SweepSpec, *, dry_run: bool = False) -> SweepReport | None:
    for note in spec.notes():
        Console(stderr=True, highlight=False).print(f"note: {note}", markup=False, soft_wrap=True)
    if dry_run:
        spec.validate()
        print_plan(spec)
        return None
    report = run_sweep(spec)
    if spec.report is not None:
        write_sweep_report(spec)
    return report


def write_sweep_report(spec: SweepSpec, console: Console | None = None) -> None:
    """The sweep file's ``report:``: the HTML site of the results root, written from the cells complete now."""
    from fairbench.report.html import write_site

    console = console or Console(stderr=True, highlight=False)
    if spec.report is None or not any(spec.out.rglob("metrics.json")):
        return
    site = write_site([spec.out], spec.report, tasks_dirs=spec.tasks_dirs)
    console.print(f"wrote the report: {len(site.pages)} pages, open {spec.report / 'index.html'}", markup=False,
                  soft_wrap=True)


def print_plan(spec: SweepSpec, console: Console | None = None) -> None:
    console = console or stdout_console()
    done, todo = plan(spec)
    complete = set(done)
    table = Table(title=f"sweep plan ({len(done)} complete, {len(todo)} to run; results under {spec.out})",
                  title_justify="left")
    for col in ("task", "model", "adapter", "seed", "status"):
        table.add_column(col)
    for c in spec.cells():
        if c in complete:
            status = "complete (skipped)"
        else:
            err = read_error(spec.cell_path(c))
            message = str(err.get("message", "")) if err else ""
            status = f"failed before: {message[:60]}{'...' if len(message) > 60 else ''}" if err else "to run"
        adapter = f"{c.adapt} (trained on {c.task})" if c.eval_task else c.adapt
        table.add_row(c.evaluated, c.model, adapter, str(c.seed), status)
    console.print(table)
