"""``submitit``: the cells as one SLURM job array (needs ``pip install 'fairbench[slurm]'``).

Every option other than ``cluster``, ``folder`` and ``poll_s`` goes to submitit's
``AutoExecutor.update_parameters``: generic ones (``timeout_min``, ``cpus_per_task``, ``gpus_per_node``,
``mem_gb``) and SLURM ones prefixed ``slurm_`` (``slurm_partition``, ``slurm_array_parallelism``,
``slurm_account``, ...). ``cluster: local`` runs the array as local processes through submitit's own local
executor (what the tests use); the default picks SLURM when ``sbatch`` is available. Each cell gets
``timeout_min`` minutes (default 240, not submitit's 5).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fairbench.errors import FairbenchError
from fairbench.progress import warn
from fairbench.sweep.executors.base import Executor, Runner, lost
from fairbench.sweep.worker import CellJob, Outcome, one_line

__all__ = ["DEFAULT_TIMEOUT_MIN", "SubmititExecutor"]

#: time limit per cell unless timeout_min (or slurm_time) is given
DEFAULT_TIMEOUT_MIN = 240


@dataclass
class SubmititExecutor(Executor):
    name = "submitit"
    requires = "submitit"
    #: "slurm", "local", "debug", or None to let submitit pick (SLURM when available)
    cluster: str | None = None
    #: submitit's folder for job scripts, pickles and logs (default: <out>/.submitit)
    folder: str | None = None
    poll_s: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)

    def attach(self, out: Path) -> None:
        if self.folder is None:
            self.folder = str(Path(out) / ".submitit")

    def describe(self) -> str:
        return f"submitit executor ({self.cluster or 'auto'} cluster, logs in {self.folder})"

    def default_threads(self) -> int | None:
        cpus = self.extra.get("cpus_per_task") or self.extra.get("slurm_cpus_per_task")
        return int(cpus) if cpus else None

    def _executor(self) -> Any:
        import submitit

        folder = Path(self.folder or ".submitit") / "%j"
        params = dict(self.extra)
        if "timeout_min" not in params and "slurm_time" not in params:
            params["timeout_min"] = DEFAULT_TIMEOUT_MIN  # submitit's own defaults: 5 min (SLURM), 2 min (local)
        try:
            ex = submitit.AutoExecutor(folder=folder, cluster=self.cluster)
            ex.update_parameters(name="fairbench", **params)
        except (NameError, AssertionError, ValueError, RuntimeError) as exc:
            raise FairbenchError(f"submitit executor: {' '.join(str(exc).split())}") from None
        return ex

    def run(self, jobs: list[CellJob], runner: Runner) -> Iterator[Outcome]:
        if not jobs:
            return
        ex = self._executor()
        submitted = ex.map_array(runner, jobs)
        pending = dict(zip(submitted, jobs, strict=True))
        interrupted = True
        try:
            while pending:
                progressed = False
                for sj, job in list(pending.items()):
                    if not sj.done():
                        continue
                    progressed = True
                    del pending[sj]
                    exc = sj.exception()
                    if exc is None:
                        yield sj.result()
                    else:
                        yield lost(job, f"submitit job {sj.job_id} failed: {one_line(exc)[:500]}")
                if not progressed:
                    time.sleep(self.poll_s)
            interrupted = False
        finally:
            if interrupted and pending:
                self._on_interrupt(ex, list(pending))

    def _on_interrupt(self, ex: Any, pending: list[Any]) -> None:
        if getattr(ex, "cluster", None) in ("local", "debug"):
            for sj in pending:
                try:
                    sj.cancel(check=False)
                except Exception:  # noqa: BLE001, S110 - best effort while shutting down: the job may be gone
                    pass
            return
        ids = sorted({str(sj.job_id).split("_")[0] for sj in pending})
        warn(f"{len(pending)} submitted cell(s) are still queued or running (job {', '.join(ids)}); their "
             f"results land in place. Cancel them with: scancel {' '.join(ids)}")
