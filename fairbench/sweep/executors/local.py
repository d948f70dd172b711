"""``local``: cells in worker processes on this machine.

``workers`` long-lived processes (spawned, so no forked torch state) receive cells one at a time; each worker
imports torch and the model code once and runs many cells. A worker that dies (out of memory, a segfault,
``kill``) fails the cell it was running (each worker has its own pipe, so the driver knows which cell that
was) and is replaced. ``workers: 0`` runs the cells in this process, one after the other (for debugging).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Any

from fairbench.errors import FairbenchError
from fairbench.sweep.executors.base import Executor, Runner, lost
from fairbench.sweep.worker import CellJob, Outcome

__all__ = ["LocalExecutor"]


def _worker_main(runner: Runner, conn: Any, driver_pid: int | None = None) -> None:
    # Ctrl-C reaches the whole process group: only the driver acts on it (it terminates the workers)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_driver(driver_pid)
    conn.send(("ready", None, None))
    while True:
        try:
            item = conn.recv()
        except (EOFError, OSError):  # the driver is gone
            return
        if item is None:
            return
        index, job = item
        try:
            outcome = runner(job)
        except Exception as exc:  # noqa: BLE001 - the runner records failures itself; this is a backstop
            outcome = lost(job, f"{type(exc).__name__}: {exc}")
        conn.send(("end", index, outcome))


def _exit_with_driver(driver_pid: int | None) -> None:
    """End this worker when the driver dies, even mid-cell (a killed driver must not leave workers finishing
    cells nobody collects): on Linux the kernel sends SIGKILL (``PR_SET_PDEATHSIG``); everywhere a daemon
    thread waits for the driver's end (multiprocessing's parent sentinel, else polling the parent pid) and
    exits. The cell's lock dies with the worker; its temporary files are cleared when the cell runs again."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if driver_pid is not None and os.getppid() != driver_pid:  # the driver died before we got here
        os._exit(1)
    parent = mp.parent_process()
    sentinel = getattr(parent, "sentinel", None)

    def watch() -> None:
        if sentinel is not None:
            try:
                wait([sentinel])
            except OSError:
                pass
        else:
            while driver_pid is None or os.getppid() == driver_pid:
                time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="fairbench-driver-watch", daemon=True).start()


_PR_SET_PDEATHSIG = 1


@dataclass
class LocalExecutor(Executor):
    name = "local"
    workers: int = 1
    #: seconds between checks that every worker is alive
    poll_s: float = 0.5

    _last_exit: int | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.workers, int) or self.workers < 0:
            raise FairbenchError(f"local executor: workers must be a non-negative integer, got {self.workers!r}")

    def describe(self) -> str:
        if self.workers == 0:
            return "local executor, in this process"
        return f"local executor, {self.workers} worker process{'es' if self.workers != 1 else ''}"

    def default_threads(self) -> int | None:
        return max(1, (os.cpu_count() or 1) // max(1, self.workers))

    def run(self, jobs: list[CellJob], runner: Runner) -> Iterator[Outcome]:
        if not jobs:
            return
        if self.workers == 0:
            for job in jobs:
                yield runner(job)
            return
        yield from self._run_pool(jobs, runner)

    def _run_pool(self, jobs: list[CellJob], runner: Runner) -> Iterator[Outcome]:
        # One pipe per worker: the driver knows which job each worker holds, and a worker that dies cannot
        # corrupt a queue the others share.
        ctx = mp.get_context("spawn")
        pending = deque(enumerate(jobs))
        workers: dict[Any, _Worker] = {}
        finished: set[int] = set()
        startup_failures = 0

        def spawn() -> None:
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker_main, args=(runner, child, os.getpid()), daemon=True,
                            name="fairbench-sweep-worker")
            p.start()
            child.close()
            workers[parent] = _Worker(p)

        def dispatch(conn: Any) -> None:
            w = workers[conn]
            if pending:
                w.index, job = pending.popleft()
                conn.send((w.index, job))
            else:
                w.index = None
                conn.send(None)
                retire(conn)

        def retire(conn: Any) -> None:
            w = workers.pop(conn)
            w.proc.join(timeout=10)
            conn.close()

        try:
            for _ in range(min(self.workers, len(jobs))):
                spawn()
            while len(finished) < len(jobs):
                if not workers:  # every worker failed to start
                    while pending:
                        index, job = pending.popleft()
                        finished.add(index)
                        yield lost(job, f"not run: worker processes exit at start (exit code "
                                        f"{self._last_exit}; their error is printed above)")
                    break
                for conn in wait(list(workers), timeout=self.poll_s):
                    w = workers[conn]
                    try:
                        kind, index, outcome = conn.recv()
                    except (EOFError, OSError):  # the worker died
                        w.proc.join(timeout=10)
                        self._last_exit = w.proc.exitcode
                        held = w.index
                        workers.pop(conn)
                        conn.close()
                        if held is not None:
                            finished.add(held)
                            yield lost(jobs[held], f"worker process died (exit code {w.proc.exitcode}) while "
                                                   "running this cell")
                        if not w.ready:
                            startup_failures += 1
                        if pending and startup_failures < 3:
                            spawn()
                        continue
                    if kind == "ready":
                        w.ready = True
                        dispatch(conn)
                        continue
                    w.index = None
                    finished.add(index)
                    yield outcome
                    dispatch(conn)
        finally:
            for w in workers.values():
                if w.proc.is_alive():
                    w.proc.terminate()
            deadline = time.time() + 5
            for w in workers.values():
                w.proc.join(max(0.0, deadline - time.time()))
                if w.proc.is_alive():
                    w.proc.kill()


@dataclass
class _Worker:
    proc: Any
    index: int | None = None
    ready: bool = False
