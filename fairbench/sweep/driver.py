"""Run a sweep: skip complete cells, hand the rest to an executor, record failures, report progress."""

from __future__ import annotations

from pathlib import Path

from fairbench.results import ensure_writable, is_complete
from fairbench.sweep.executors import Executor, make_executor
from fairbench.sweep.executors.base import Runner
from fairbench.sweep.grid import Cell, SweepSpec
from fairbench.sweep.progress import SweepProgress
from fairbench.sweep.report import SweepReport
from fairbench.sweep.worker import ERROR, CellJob, read_error, record_error, run_job

__all__ = ["SweepReport", "plan", "reads_embedding_cache", "run_sweep", "sharing_order"]


def plan(spec: SweepSpec) -> tuple[list[Cell], list[Cell]]:
    """(complete cells that are skipped, cells to run). With ``overwrite`` every cell runs. A complete cell
    computed under other cards or settings (``pipeline.stale_reason``) is not skipped: its run fails with
    the reason, recorded in its ``error.json``, and its results stay as they were. A complete cell whose
    metrics.json lacks a requested ``variants`` entry is not skipped either: its run adds the entry from its
    predictions (no model runs) and leaves the rest as it was."""
    cells = spec.cells()
    if spec.options.get("overwrite"):
        return [], cells
    done = [c for c in cells if is_complete(spec.cell_path(c))]
    if done:
        from fairbench.pipeline import RunConfig, missing_variants, stale_cell

        # a complete cell that lacks a requested variant runs too: the pipeline adds it from its predictions
        done = [c for c in done if stale_cell(cfg := RunConfig(**spec.run_config(c))) is None
                and not missing_variants(cfg)]
    todo = [c for c in cells if c not in set(done)]
    return done, todo


def reads_embedding_cache(adapt: str, params: dict) -> bool:
    """Whether the adapter ``adapt`` with ``params`` reads the frozen encoder's outputs through the embedding cache
    (zero-shot, linear probe, MLP head, the mitigation adapters on the ``head`` backbone, a post-processor such as
    ``fair_threshold`` on one of these). An unknown name or bad parameters: False (the run reports those)."""
    from fairbench.adapters.base import ADAPTERS
    from fairbench.analyses.leakage import frozen_encoder

    try:
        adapter = ADAPTERS.get(adapt)(params)
    except Exception:  # noqa: BLE001 - only an ordering hint; the cell's own run reports a bad adapter
        return False
    base = getattr(adapter, "base", None)
    return frozen_encoder(adapter) or (base is not None and frozen_encoder(base))


def sharing_order(spec: SweepSpec, cells: list[Cell]) -> list[Cell]:
    """``cells`` in the order that lets one encode serve a whole group: the cells reading the same embedding-cache
    entries (same training task and model, and the same seed under ``--weights random``, whose weights the seed
    draws) form a group. First the group leaders (each group's first cell in grid order that encodes through the
    cache), so that with several workers the groups' encodes run side by side; then the cells that do not read
    the cache (fine-tuning: busy while the leaders encode); then the rest, which find the entries stored, or wait
    on an entry's lock while its leader writes it (``EmbeddingCache.get_or_compute``) instead of encoding again.
    Within each part the grid order is kept. Without the embedding cache: the grid order."""
    if spec.options.get("embedding_cache") is False:
        return list(cells)
    random = str(spec.options.get("weights") or "") == "random"
    reads = {a: reads_embedding_cache(a, spec.params_for(a)) for a in dict.fromkeys(c.adapt for c in cells)}
    leaders: dict[tuple, Cell] = {}
    for c in cells:
        if reads[c.adapt]:
            leaders.setdefault((c.task, c.model, c.seed if random else None), c)
    first = list(leaders.values())
    lead = set(first)
    return (first + [c for c in cells if not reads[c.adapt]]
            + [c for c in cells if reads[c.adapt] and c not in lead])


def run_sweep(spec: SweepSpec, *, runner: Runner = run_job, executor: Executor | None = None,
              validate: bool = True, show: SweepProgress | None = None) -> SweepReport:
    """Run every incomplete cell of ``spec``; failures are recorded in ``<cell>/error.json`` and counted,
    never raised. Interrupting (Ctrl-C) keeps every complete cell; rerunning finishes the rest."""
    if validate:
        spec.validate()
    executor = executor or make_executor(spec.executor, spec.executor_options)
    out = spec.out
    ensure_writable(out)
    executor.attach(out)
    done, todo = plan(spec)
    todo = sharing_order(spec, todo)
    for c in done:  # complete and current: an error recorded by an earlier, refused run no longer applies
        (spec.cell_path(c) / ERROR).unlink(missing_ok=True)
    report = SweepReport(cells=spec.cells(), already_complete=done)
    threads = spec.threads if spec.threads is not None else executor.default_threads()
    env = CellJob.carried_env()
    jobs = [CellJob(key=c.key, path=spec.cell_path(c), config=spec.run_config(c), threads=threads, env=env,
                    executor=executor.name) for c in todo]
    show = show or SweepProgress()
    show.start(total=len(report.cells), complete=len(done), to_run=len(todo), where=executor.describe(),
               previously_failed=sum(1 for c in todo if read_error(spec.cell_path(c)) is not None))
    try:
        for outcome in executor.run(jobs, runner):
            if outcome.status == "failed" and not outcome.recorded:
                outcome.recorded = record_error(Path(outcome.path), key=outcome.key, message=outcome.error or "",
                                                error_type="WorkerLost", executor=executor.name,
                                                where=outcome.where)
            report.outcomes.append(outcome)
            show.update(outcome)
    finally:
        show.finish(report)
    return report
