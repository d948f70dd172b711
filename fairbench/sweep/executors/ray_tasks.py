"""``ray``: the cells as Ray tasks (needs ``pip install 'fairbench[ray]'``).

Without ``address`` a Ray instance is started on this machine for the sweep and shut down after it;
``address: auto`` (or ``ray://host:10001``) joins a running cluster, whose nodes need fairbench installed.
``num_cpus``/``num_gpus`` are what each cell asks of the scheduler (default 1 CPU, 0 GPUs); ``max_retries``
re-runs a cell whose worker died (a lost node), never one that failed with an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from fairbench.errors import FairbenchError
from fairbench.sweep.executors.base import Executor, Runner, lost
from fairbench.sweep.worker import CellJob, Outcome, one_line

__all__ = ["RayExecutor"]


@dataclass
class RayExecutor(Executor):
    name = "ray"
    requires = "ray"
    address: str | None = None
    num_cpus: float = 1
    num_gpus: float = 0
    max_retries: int = 1
    #: CPUs of the Ray instance started on this machine (default: all); ignored with ``address``
    local_cpus: int | None = None
    #: passed to ray.init (e.g. runtime_env, namespace)
    init: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        where = f"cluster at {self.address}" if self.address else "a Ray instance on this machine"
        return f"ray executor ({where}, {self.num_cpus} CPU and {self.num_gpus} GPU per cell)"

    def default_threads(self) -> int | None:
        return max(1, int(self.num_cpus))

    def run(self, jobs: list[CellJob], runner: Runner) -> Iterator[Outcome]:
        if not jobs:
            return
        import ray

        started = not ray.is_initialized()
        if started:
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "configure_logging": False, **self.init}
            if self.address:
                kwargs["address"] = self.address
            elif self.local_cpus:
                kwargs["num_cpus"] = self.local_cpus
            try:
                ray.init(**kwargs)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise FairbenchError(f"ray executor: cannot start or reach Ray: {one_line(exc)}") from None
        try:
            task = ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=self.max_retries)(runner)
            refs = {task.remote(job): job for job in jobs}
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1)
                for ref in done:
                    job = refs.pop(ref)
                    try:
                        yield ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        yield lost(job, f"ray task failed: {one_line(exc)[:500]}")
        finally:
            if started:
                ray.shutdown()
