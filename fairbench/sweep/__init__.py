"""Sweeps: a grid of cells run by an executor (local processes, a SLURM array via submitit, or Ray tasks).

See docs/sweeps.md. Complete cells are skipped, a failing cell is recorded in its ``error.json`` and does
not stop the others, and rerunning a sweep runs only what is missing.
"""

from __future__ import annotations

from fairbench.sweep.driver import SweepReport, plan, run_sweep
from fairbench.sweep.executors import EXECUTORS, Executor, make_executor
from fairbench.sweep.grid import Cell, SweepSpec, load_sweep_file, parse_adapt_args, parse_names, parse_seeds
from fairbench.sweep.worker import ERROR, CellJob, Outcome, read_error, run_job

__all__ = [
           "ERROR",
           "EXECUTORS",
           "Cell",
           "CellJob",
           "Executor",
           "Outcome",
           "SweepReport",
           "SweepSpec",
           "load_sweep_file",
           "make_executor",
           "parse_adapt_args",
           "parse_names",
           "parse_seeds",
           "plan",
           "read_error",
           "run_job",
           "run_sweep",
]
