"""What runs on a worker: one cell, its failure recorded in the cell's ``error.json`` instead of raised.

This module stays light to import (torch and the pipeline are imported inside :func:`run_job`), because
executors pickle :func:`run_job` by reference and every worker imports it first.
"""

from __future__ import annotations

import json
import os
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fairbench.results import METRICS, now_iso, write_json

__all__ = ["ERROR", "CellJob", "Outcome", "clear_stale", "read_error", "record_error", "run_cell_job", "run_job"]

ERROR = "error.json"
#: environment variables a job carries to its worker (a Ray or SLURM node may not inherit the driver's)
_CARRIED = ("FAIRBENCH_", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME")


@dataclass
class CellJob:
    """Everything a worker needs for one cell; picklable (plain data and paths)."""

    key: str
    path: Path
    config: dict[str, Any]  # keyword arguments of fairbench.pipeline.RunConfig
    threads: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    executor: str = "local"

    @staticmethod
    def carried_env() -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if k.startswith(_CARRIED)}


@dataclass
class Outcome:
    key: str
    path: Path
    #: "done" | "skipped" (complete before this job ran) | "failed" | "busy" (another process held the cell's
    #: lock: not run, nothing recorded in the cell)
    status: str
    duration_s: float = 0.0
    error: str | None = None
    #: True when the error is already in the cell's error.json (the driver records it otherwise)
    recorded: bool = False
    #: where a lost job ran, when not on the driver's machine (error.json fields: host, ...)
    where: dict[str, Any] | None = None
    #: CPU seconds (user + system, every thread) the worker process spent on the job
    cpu_s: float = 0.0


def run_cell_job(job: CellJob) -> bool:
    """Run the cell with the pipeline; True if it was already complete."""
    from fairbench.pipeline import RunConfig, run_cell

    if not job.threads:
        return run_cell(RunConfig(**job.config)).skipped
    import torch

    # restored afterwards: an in-process executor must not change the caller's thread count (floating-point
    # results, e.g. tinyclip's pretrained weights, depend on it)
    before = torch.get_num_threads()
    torch.set_num_threads(job.threads)
    try:
        return run_cell(RunConfig(**job.config)).skipped
    finally:
        torch.set_num_threads(before)


def run_job(job: CellJob, cell: Callable[[CellJob], bool] = run_cell_job) -> Outcome:
    """Run one cell (``cell(job)``, the pipeline by default). Never raises for a failing cell: the error goes
    to ``<cell>/error.json`` and into the returned outcome."""
    from fairbench.locking import CellBusyError, cell_lock

    os.environ.update(job.env)
    t0, c0 = time.time(), time.process_time()
    started = now_iso()
    try:
        # the cell's lock (fairbench.locking) for the whole job: its stale files, its run, its error record
        with cell_lock(job.path):
            try:
                clear_stale(job.path)
                skipped = cell(job)
            except CellBusyError:  # the pipeline found its cell folder held (another spelling of the same cell)
                raise
            except Exception as exc:  # noqa: BLE001 - every failure of a cell is recorded, none stops the sweep
                return _failed(job, exc, started, t0)
            (job.path / ERROR).unlink(missing_ok=True)
    except CellBusyError as exc:  # another run or sweep is computing it: not run here, nothing written
        return Outcome(job.key, job.path, "busy", time.time() - t0, one_line(exc))
    except Exception as exc:  # noqa: BLE001 - the lock could not be taken (e.g. an unwritable folder)
        return _failed(job, exc, started, t0)
    return Outcome(job.key, job.path, "skipped" if skipped else "done", time.time() - t0,
                   cpu_s=time.process_time() - c0)


def _failed(job: CellJob, exc: Exception, started: str, t0: float) -> Outcome:
    message = one_line(exc)
    recorded = record_error(job.path, key=job.key, message=message, error_type=type(exc).__name__,
                            tb=traceback.format_exc(), started_at=started, executor=job.executor)
    return Outcome(job.key, job.path, "failed", time.time() - t0, message, recorded)


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    from fairbench.errors import FairbenchError

    return text if isinstance(exc, FairbenchError) else f"{type(exc).__name__}: {text}"


def record_error(path: Path, *, key: str, message: str, error_type: str, tb: str | None = None,
                 started_at: str | None = None, executor: str = "local",
                 where: dict[str, Any] | None = None) -> bool:
    """Write ``error.json`` in the cell directory; False if even that fails (the driver reports it). ``host``
    is this machine's unless ``where`` says where the cell ran."""
    from fairbench import __version__

    doc = {"cell": key, "error_type": error_type, "message": message, "executor": executor,
           "host": socket.gethostname(), "started_at": started_at, "failed_at": now_iso(),
           "fairbench_version": __version__, "traceback": tb}
    doc.update(where or {})
    try:
        path.mkdir(parents=True, exist_ok=True)
        write_json(path / ERROR, doc)
        return True
    except OSError:
        return False


def read_error(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads((Path(path) / ERROR).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def clear_stale(path: Path) -> None:
    """Remove temporary files a killed writer left in an incomplete cell (atomic writes never leave a
    half-written file under its real name, but a SIGKILL leaves the temporary one)."""
    if not path.is_dir() or (path / METRICS).exists():
        return
    for tmp in path.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
