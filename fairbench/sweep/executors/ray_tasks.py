"""``ray``: the cells as Ray tasks (needs ``pip install 'fairbench[ray]'``).

Without ``address`` the sweep starts its own Ray instance on this machine (``ray.init(address="local")``, so a
Ray head already running here, ``RAY_ADDRESS`` or a session file left by a dead head are never joined) and
shuts it down after the sweep. ``address: auto`` (or ``host:port``, ``ray://host:10001``) joins a running
cluster, whose nodes need fairbench installed and the results folder mounted. ``num_cpus``/``num_gpus`` are
what each cell asks of the scheduler (default 1 CPU, 0 GPUs); ``max_retries`` re-runs a cell whose worker died
(a lost node), never one that failed with an error. What a cell prints reaches the sweep's output, prefixed
with the cell.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fairbench.errors import FairbenchError
from fairbench.sweep.executors.base import Executor, Runner, lost
from fairbench.sweep.worker import CellJob, Outcome, one_line

__all__ = ["NODE_FILE", "RayExecutor"]

#: written in the cell's folder by the task while it runs: the node running it, for error.json if the task dies
NODE_FILE = ".ray-node.json"


@dataclass
class RayExecutor(Executor):
    name = "ray"
    requires = "ray"
    #: None (or "local"): a Ray instance of its own on this machine; "auto", "host:port", "ray://host:port": join
    address: str | None = None
    num_cpus: float = 1
    num_gpus: float = 0
    max_retries: int = 1
    #: CPUs of the Ray instance started on this machine (default: all); ignored with ``address``
    local_cpus: int | None = None
    #: passed to ray.init (e.g. runtime_env, namespace)
    init: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.address is not None and not isinstance(self.address, str):
            raise FairbenchError(f"ray executor: address must be a string (auto, host:port or ray://host:port), "
                                 f"got {self.address!r}")
        if self.address is not None and not self.address.strip():
            raise FairbenchError("ray executor: address is empty; leave it out to start a Ray instance of the "
                                 "sweep's own, or give auto, host:port or ray://host:port")
        if self.address == "local":
            self.address = None
        if not isinstance(self.init, dict):
            raise FairbenchError(f"ray executor: init must be a mapping of ray.init arguments, got {self.init!r}")
        if "address" in self.init:
            raise FairbenchError("ray executor: give the cluster as the 'address' option (--ray-address), "
                                 "not in 'init'")

    def describe(self) -> str:
        where = f"cluster at {self.address}" if self.address else "a Ray instance of its own on this machine"
        return f"ray executor ({where}, {self.num_cpus} CPU and {self.num_gpus} GPU per cell)"

    def default_threads(self) -> int | None:
        return max(1, int(self.num_cpus))

    def init_kwargs(self) -> dict[str, Any]:
        """The arguments of ``ray.init``: address "local" starts a new instance even where one is running."""
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True, "configure_logging": False,
                                  **self.init, "address": self.address or "local"}
        if not self.address and self.local_cpus:
            kwargs["num_cpus"] = self.local_cpus
        return kwargs

    def run(self, jobs: list[CellJob], runner: Runner) -> Iterator[Outcome]:
        if not jobs:
            return
        import ray

        started = not ray.is_initialized()
        if started:
            try:
                ray.init(**self.init_kwargs())
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise FairbenchError(f"ray executor: cannot start or reach Ray: {one_line(exc)}") from None
        try:
            task = ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=self.max_retries)(cell)
            # the task's name prefixes what the cell prints, as forwarded to this process
            refs = {task.options(name=job.key).remote(runner, job): job for job in jobs}
            while refs:
                done, _ = ray.wait(list(refs), num_returns=1)
                for ref in done:
                    job = refs.pop(ref)
                    try:
                        yield ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        node = _take_node(job.path)
                        on = f" on {node['host']} (node {node['ray_node_ip']})" if node.get("host") else ""
                        yield lost(job, f"ray task failed{on}: {one_line(exc)[:500]}", where=node)
        finally:
            if started:
                if self.init_kwargs()["log_to_driver"]:
                    # what the last cells printed is still on its way (Ray's log monitor polls every 0.1 s)
                    time.sleep(0.5)
                ray.shutdown()


def cell(runner: Runner, job: CellJob) -> Outcome:
    """The Ray task: note this node in the cell's folder (read if the task dies), then run the cell."""
    import ray

    job.path.mkdir(parents=True, exist_ok=True)
    marker = job.path / NODE_FILE
    node = {"host": socket.gethostname(), "ray_node_ip": ray.util.get_node_ip_address(),
            "ray_node_id": ray.get_runtime_context().get_node_id()}
    marker.write_text(json.dumps(node), encoding="utf-8")
    try:
        return runner(job)
    finally:
        marker.unlink(missing_ok=True)


def _take_node(path: Path) -> dict[str, Any]:
    """The node a dead task reported (and the report removed); the host is null when it never reported."""
    marker = Path(path) / NODE_FILE
    try:
        node = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"host": None}
    marker.unlink(missing_ok=True)
    if not isinstance(node, dict):
        return {"host": None}
    return {"host": node.get("host"), "ray_node_ip": node.get("ray_node_ip"), "ray_node_id": node.get("ray_node_id")}
