"""The executor contract and its option handling."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import yaml

from fairbench.errors import FairbenchError
from fairbench.sweep.worker import CellJob, Outcome

__all__ = ["Executor", "Runner", "lost"]

Runner = Callable[[CellJob], Outcome]


class Executor(abc.ABC):
    """Subclasses are dataclasses; their fields are the executor's options."""

    name: ClassVar[str]
    #: the optional dependency (pip extra) the executor needs, if any
    requires: ClassVar[str | None] = None

    @classmethod
    def create(cls, options: dict[str, Any]) -> Executor:
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
        known = {k: v for k, v in options.items() if k in fields}
        unknown = {k: v for k, v in options.items() if k not in fields}
        if unknown and "extra" in fields:
            known["extra"] = {k: _value(v) for k, v in unknown.items()}
        elif unknown:
            name = sorted(unknown)[0]
            raise FairbenchError(f"executor '{cls.name}' has no option '{name}' "
                                 f"(its options: {', '.join(sorted(f for f in fields if f != 'extra'))})")
        for key, value in list(known.items()):
            if key != "extra":
                known[key] = _value(value)
        cls.check_installed()
        return cls(**known)  # type: ignore[call-arg]

    @classmethod
    def check_installed(cls) -> None:
        """Raise a one-line error naming the pip extra when the executor's dependency is missing."""
        if cls.requires is None:
            return
        import importlib.util

        if importlib.util.find_spec(cls.requires) is None:
            raise FairbenchError(f"the '{cls.name}' executor needs the '{cls.requires}' package: "
                                 f"pip install 'fairbench[{cls.name if cls.name != 'submitit' else 'slurm'}]'")

    def attach(self, out: Path) -> None:
        """Called once with the sweep's results root before :meth:`run` (e.g. to place logs)."""

    def describe(self) -> str:
        return self.name

    def default_threads(self) -> int | None:
        """Torch threads per cell when the sweep does not say (None: leave torch's default)."""
        return None

    @abc.abstractmethod
    def run(self, jobs: list[CellJob], runner: Runner) -> Iterator[Outcome]:
        """Run ``runner(job)`` for every job; yield outcomes as they finish."""


def _value(v: Any) -> Any:
    """Option values from the command line arrive as strings: read them as YAML scalars (8 -> int)."""
    if isinstance(v, str):
        try:
            return yaml.safe_load(v) if v.strip() else v
        except yaml.YAMLError:
            return v
    return v


def lost(job: CellJob, why: str, where: dict[str, Any] | None = None) -> Outcome:
    """The outcome of a job whose worker ended without returning one; ``where`` names the machine it ran on
    when that is not the driver's (``{"host": ...}``, for error.json)."""
    return Outcome(job.key, job.path, "failed", 0.0, why, recorded=False, where=where)
