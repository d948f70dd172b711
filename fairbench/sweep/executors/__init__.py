"""Executors: where the cells of a sweep run.

An executor is a class constructed with its options (``--workers``, ``--executor-arg KEY=VALUE``, or
``executor_options`` in a sweep file) whose :meth:`Executor.run` takes the jobs and the function to call on
each, and yields one :class:`~fairbench.sweep.worker.Outcome` per job as jobs finish. A job that dies
without returning (a killed worker, a cancelled SLURM task, a lost Ray node) still yields a failed outcome.
"""

from __future__ import annotations

from fairbench.registry import Registry
from fairbench.sweep.executors.base import Executor, lost

__all__ = ["EXECUTORS", "Executor", "lost", "make_executor"]

EXECUTORS: Registry[type[Executor]] = Registry("executor")
EXECUTORS.register_lazy("local", "fairbench.sweep.executors.local:LocalExecutor")
EXECUTORS.register_lazy("submitit", "fairbench.sweep.executors.submitit_array:SubmititExecutor")
EXECUTORS.register_lazy("ray", "fairbench.sweep.executors.ray_tasks:RayExecutor")


def make_executor(name: str, options: dict) -> Executor:
    return EXECUTORS.get(name).create(options)
