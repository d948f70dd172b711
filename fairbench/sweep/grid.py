"""A sweep: the grid tasks x models x adapters x seeds, plus the run options every cell shares.

With ``eval_tasks`` (cross-dataset evaluation) the grid also holds, for each task A and each eval task B other
than A, the cells trained on A and evaluated on B (every model, adapter and seed; zero-shot adapters have no
training task, so they are left out of these, with a note).

A sweep comes from the command line, from a YAML sweep file, or both (command-line values replace the
file's). Relative paths in a sweep file are relative to the file. Every name is resolved before anything
runs, so a typo fails at once instead of in the hundredth job.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fairbench.cards import Fields, read_yaml_with_includes
from fairbench.errors import CardError, FairbenchError
from fairbench.kv import split_kv
from fairbench.results import adapt_folder, cell_dir, check_seed

__all__ = ["Cell", "SweepSpec", "load_sweep_file", "parse_adapt_args", "parse_names", "parse_seeds", "run_options"]

#: RunConfig fields a sweep sets per cell (the grid) or through its own keys
_GRID = ("task", "model", "adapt", "seed", "eval_task")
_OWN = ("tasks_dirs", "adapt_args")


def run_options() -> tuple[str, ...]:
    """RunConfig fields shared by every cell, settable from a sweep file (and the CLI)."""
    from fairbench.pipeline import RunConfig  # imported here: it pulls in torch

    return tuple(f.name for f in dataclasses.fields(RunConfig) if f.name not in _GRID + _OWN)


#: adapters that train nothing: no cross-dataset cells (``fairbench run --eval-task`` refuses them)
ZERO_SHOT = ("zeroshot",)
_PATH_OPTIONS = ("out", "data_root", "eval_data_root")
_OPTION_TYPES: dict[str, Any] = {"out": str, "data_root": str, "eval_data_root": str, "weights": str, "device": str,
                                 "overwrite": bool,
                                 "n_boot": int, "allow_skip_unreadable": bool, "image_cache": (str, int),
                                 "precision": str, "embedding_cache": bool,
                                 "model_args": dict, "task_args": dict, "variants": (list, str)}


@dataclass(frozen=True, order=True)
class Cell:
    """One grid point; ``eval_task`` (cross-dataset evaluation) is the task evaluated after training on
    ``task`` ("" for the task itself)."""

    task: str
    model: str
    adapt: str
    seed: int
    eval_task: str = ""

    @property
    def key(self) -> str:
        """The cell's place under the results root (as ``cell_path`` spells it)."""
        if self.eval_task:
            return f"{self.eval_task}/{self.model}/{adapt_folder(self.adapt, self.task)}/seed{self.seed}"
        return f"{self.task}/{self.model}/{self.adapt}/seed{self.seed}"

    @property
    def evaluated(self) -> str:
        """The task whose results the cell holds."""
        return self.eval_task or self.task


@dataclass
class SweepSpec:
    tasks: list[str] = field(default_factory=list)
    #: cross-dataset evaluation: every task's adapters are also evaluated on each of these
    eval_tasks: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    adapts: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    #: RunConfig options shared by every cell (out, weights, device, n_boot, ...)
    options: dict[str, Any] = field(default_factory=dict)
    tasks_dirs: tuple[Path, ...] = ()
    #: parameters per adapter name; "*" applies to every adapter of the grid
    adapt_args: dict[str, dict[str, Any]] = field(default_factory=dict)
    executor: str = "local"
    executor_options: dict[str, Any] = field(default_factory=dict)
    #: torch threads per cell (None: the executor decides)
    threads: int | None = None
    #: a folder for the HTML report (``fairbench report``) of the results, written after the run
    report: Path | None = None
    source: Path | None = None

    @property
    def out(self) -> Path:
        return Path(self.options.get("out", "results"))

    def cells(self) -> list[Cell]:
        """Every grid point once, in the order given (tasks, then models, adapters, seeds)."""
        for what, values in (("tasks", self.tasks), ("models", self.models), ("adapts", self.adapts),
                             ("seeds", self.seeds)):
            if not values:
                raise FairbenchError(f"the sweep has no {what}; give --{what} or '{what}:' in a sweep file")
        seen: dict[Cell, None] = {}
        for t in self.tasks:
            for m in self.models:
                for a in self.adapts:
                    for s in self.seeds:
                        seen.setdefault(Cell(t, m, a, int(s)), None)
        for t in self.tasks:
            for e in self.eval_tasks:
                if e == t:  # trained and evaluated on the same task: the cell above
                    continue
                for m in self.models:
                    for a in self.adapts:
                        if a in ZERO_SHOT:
                            continue
                        for s in self.seeds:
                            seen.setdefault(Cell(t, m, a, int(s), e), None)
        return list(seen)

    def notes(self) -> list[str]:
        """What the grid leaves out, to say before it runs."""
        left = [a for a in self.adapts if a in ZERO_SHOT]
        if not self.eval_tasks or not left or not any(e != t for t in self.tasks for e in self.eval_tasks):
            return []
        return [(f"eval_tasks: {', '.join(left)} trains nothing, so it has no cross-dataset cells; its cells on "
                 f"{', '.join(self.eval_tasks)} are those tasks' own (add them to tasks)")]

    def params_for(self, adapt: str) -> dict[str, Any]:
        return {**self.adapt_args.get("*", {}), **self.adapt_args.get(adapt, {})}

    def run_config(self, cell: Cell) -> dict[str, Any]:
        """The keyword arguments of the cell's ``fairbench.pipeline.RunConfig`` (plain data, so a worker
        can unpickle a job without importing torch)."""
        return {"task": cell.task, "model": cell.model, "adapt": cell.adapt, "seed": cell.seed,
                "tasks_dirs": self.tasks_dirs, "adapt_args": self.params_for(cell.adapt), **self.options,
                **({"eval_task": cell.eval_task} if cell.eval_task else {})}

    def cell_path(self, cell: Cell) -> Path:
        return cell_dir(self.out, cell.evaluated, cell.model, cell.adapt, cell.seed,
                        train_task=cell.task if cell.eval_task else None)

    def validate(self) -> None:
        """Resolve every task, model, adapter (with its parameters) and the weights source; nothing runs."""
        from fairbench.adapters.base import ADAPTERS
        from fairbench.data.task import get_task
        from fairbench.models.base import get_model_card
        from fairbench.models.weights import parse_weights

        cards = {t: get_task(t, self.tasks_dirs) for t in dict.fromkeys(self.tasks + self.eval_tasks)}
        for t in self.tasks:
            cards[t] = cards[t].with_args(self.options.get("task_args") or {})
        if any(a not in ZERO_SHOT for a in self.adapts):
            from fairbench.pipeline import check_same_classes

            for t in self.tasks:
                for e in self.eval_tasks:
                    if e != t:
                        check_same_classes(cards[t], cards[e])
        for m in self.models:
            get_model_card(m)
        scoped = set(self.adapt_args) - {"*"}
        stray = sorted(scoped - set(self.adapts))
        if stray:
            raise FairbenchError(f"adapter arguments for '{stray[0]}', which is not in the sweep's adapters "
                                 f"({', '.join(self.adapts)})")
        for a in self.adapts:
            cls = ADAPTERS.get(a)
            try:
                cls(self.params_for(a))
            except FairbenchError as exc:
                hint = (" (scope an argument to one adapter with ADAPTER.KEY=VALUE)"
                        if self.adapt_args.get("*") else "")
                raise FairbenchError(f"{exc}{hint}") from None
        if self.options.get("weights"):
            parse_weights(str(self.options["weights"]))
        precision = self.options.get("precision")
        if precision is not None:
            from fairbench.precision import PRECISIONS

            if precision not in PRECISIONS:
                raise FairbenchError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
        if self.options.get("variants"):
            from fairbench.pipeline import check_variants

            for t in cards:  # every evaluated task: the grid's and the eval tasks
                check_variants(self.options["variants"], cards[t], "variants")
        known = run_options()
        unknown = sorted(set(self.options) - set(known))
        if unknown:
            raise FairbenchError(f"unknown run option '{unknown[0]}' (known: {', '.join(known)})")

    def merged(self, **overrides: Any) -> SweepSpec:
        """A copy with every override that is not None (or empty) applied; options merge key by key."""
        new = dataclasses.replace(self, options=dict(self.options), adapt_args=dict(self.adapt_args),
                                  executor_options=dict(self.executor_options))
        for key, value in overrides.items():
            if value is None or (isinstance(value, (list, tuple, dict)) and not value):
                continue
            if key == "options":
                new.options.update({k: v for k, v in value.items() if v is not None})
            elif key == "adapt_args":
                for adapter, params in value.items():
                    new.adapt_args[adapter] = {**new.adapt_args.get(adapter, {}), **params}
            elif key == "executor_options":
                new.executor_options.update(value)
            else:
                setattr(new, key, value)
        return new


# -- parsing ---------------------------------------------------------------------------------------------
def parse_names(values: list[str] | None) -> list[str]:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]`` (repeatable options that also take comma lists)."""
    out: list[str] = []
    for v in values or []:
        out.extend(p.strip() for p in str(v).split(",") if p.strip())
    return out


_RANGE = re.compile(r"^(\d+)-(\d+)$")


def parse_seeds(values: list[Any] | None) -> list[int]:
    """Seeds from ``0,1,2``, ``0-4`` (inclusive) or integers."""
    out: list[int] = []
    for v in values or []:
        if isinstance(v, int) and not isinstance(v, bool):
            parts: list[str] = [str(v)]
        else:
            parts = [p.strip() for p in str(v).split(",") if p.strip()]
        for p in parts:
            m = _RANGE.match(p)
            if m:
                lo, hi = int(m.group(1)), int(m.group(2))
                if hi < lo:
                    raise FairbenchError(f"seed range {p!r} runs backwards")
                check_seed(hi, f"seed range {p!r}: seed")
                out.extend(range(lo, hi + 1))
            elif p.isdigit():
                out.append(check_seed(int(p)))
            else:
                raise FairbenchError(f"seed {p!r}: expected a non-negative integer, a list 0,1,2 or a range 0-4")
    return list(dict.fromkeys(out))


def parse_adapt_args(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """``KEY=VALUE`` (every adapter of the sweep) or ``ADAPTER.KEY=VALUE`` (that adapter only)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        key, value = split_kv(item, "--adapt-arg", expected="KEY=VALUE or ADAPTER.KEY=VALUE")
        adapter, dot, param = key.rpartition(".")
        scope = adapter if dot else "*"
        out.setdefault(scope, {})[param if dot else key] = value
    return out


# -- sweep files -----------------------------------------------------------------------------------------
def load_sweep_file(path: Path) -> SweepSpec:
    """Read a YAML sweep file (``include:`` allowed). See docs/sweeps.md for the fields."""
    path = Path(path)
    data = read_yaml_with_includes(path)
    f = Fields(data, source=str(path))
    base = path.resolve().parent

    def rel(value: Any) -> Path:
        p = Path(os.path.expanduser(str(value)))
        return p if p.is_absolute() else (base / p).resolve()

    spec = SweepSpec(source=path)
    for key in ("tasks", "eval_tasks", "models", "adapts"):
        value = f.get(key, (list, str), [])
        setattr(spec, key, parse_names(value if isinstance(value, list) else [value]))
    seeds = f.get("seeds", (list, str, int), [0])
    try:
        spec.seeds = parse_seeds(seeds if isinstance(seeds, list) else [seeds])
    except FairbenchError as exc:
        f.fail("seeds", f"is wrong: {exc}")
    dirs = f.get("tasks_dir", (list, str), [])
    spec.tasks_dirs = tuple(rel(d) for d in (dirs if isinstance(dirs, list) else [dirs]))
    args = f.get("adapt_args", dict, {})
    for adapter, params in args.items():
        if not isinstance(params, dict):
            f.fail(f"adapt_args.{adapter}", "must be a mapping of parameter: value")
        spec.adapt_args["*" if adapter == "all" else str(adapter)] = dict(params)
    spec.executor = f.get("executor", str, "local")
    spec.executor_options = dict(f.get("executor_options", dict, {}))
    workers = f.get("workers", int, None)
    if workers is not None:
        spec.executor_options["workers"] = workers
    ray_address = f.get("ray_address", str, None)
    if ray_address is not None:
        if spec.executor != "ray":
            f.fail("ray_address", f"applies to the ray executor, not '{spec.executor}' (add executor: ray)")
        spec.executor_options["address"] = ray_address
    spec.threads = f.get("threads", int, None)
    report = f.get("report", str, None)
    spec.report = rel(report) if report else None
    known = run_options()
    for key in known:
        if key in data:
            value = f.get(key, _OPTION_TYPES.get(key, (str, int, float, bool, list, dict)), None)
            spec.options[key] = rel(value) if key in _PATH_OPTIONS and value is not None else value
    if "variants" in spec.options:  # a list or one name, comma-separated allowed
        value = spec.options["variants"]
        spec.options["variants"] = parse_names([str(v) for v in value] if isinstance(value, list) else [value])
    if spec.options.get("task_args"):
        from fairbench.data.task import flatten_task_args

        spec.options["task_args"] = flatten_task_args(spec.options["task_args"])  # n: {test: 5} -> n.test: 5
    try:
        f.no_unknown()
    except CardError as exc:
        raise CardError(f"{exc}; run options: {', '.join(known)}") from None
    return spec
