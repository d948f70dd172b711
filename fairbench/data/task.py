"""Task cards: the typed schema, validation, label mapping, attribute binning and task discovery.

A task is a folder under ``tasks/`` (shipped in the wheel) or under a user's ``--tasks-dir``, holding
``<name>.yaml`` (the card; its stem is the task name), a README and any committed split files. Files whose
name starts with ``_`` are include-only bases, not tasks.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fairbench.cards import Fields, card_sha256, open_card
from fairbench.data.base import DATASETS, RawSplit, SampleSet
from fairbench.errors import CardError, DataError
from fairbench.registry import Registry

__all__ = [
    "TASKS",
    "AttributeSpec",
    "EvalSpec",
    "PromptSpec",
    "TaskCard",
    "apply_task_args",
    "builtin_tasks_dir",
    "discover_tasks",
    "flatten_task_args",
    "get_task",
    "load_task_card",
]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class AttributeSpec:
    """How a raw column becomes group labels: a value map, or numeric bins ``[lo, hi)``."""

    name: str
    column: str
    bins: tuple[float, ...] | None = None
    labels: tuple[str, ...] | None = None
    map: dict[str, str] | None = None
    missing: tuple[str, ...] = ()

    def apply(self, raw: np.ndarray, *, where: str) -> np.ndarray:
        """Group label per sample (object array of str, None for unknown). Raises DataError on values
        outside the card's encoding."""
        out = np.empty(len(raw), dtype=object)
        missing = set(self.missing)
        bad: list[Any] = []
        for i, value in enumerate(raw):
            if _is_missing(value) or _key(value) in missing:
                out[i] = None
                continue
            if self.bins is not None:
                try:
                    x = float(value)
                except (TypeError, ValueError):
                    bad.append(value)
                    continue
                j = int(np.searchsorted(self.bins, x, side="right")) - 1
                if j < 0 or j >= len(self.bins) - 1:
                    bad.append(value)
                    continue
                out[i] = self.labels[j]  # type: ignore[index]
            elif self.map is not None:
                k = _key(value)
                if k in self.map:
                    out[i] = self.map[k]
                elif "*" in self.map:
                    out[i] = self.map["*"]
                else:
                    bad.append(value)
            else:
                out[i] = _key(value)
        if bad:
            shown = ", ".join(repr(b) for b in sorted(set(map(str, bad)))[:5])
            expected = (f"bins {list(self.bins)}" if self.bins is not None
                        else f"one of {sorted(self.map)}" if self.map is not None else "a value")
            raise DataError(f"{where}: attribute '{self.name}' (column '{self.column}') has {len(bad)} value(s) "
                            f"outside the card's encoding: {shown}; expected {expected}")
        return out

    @property
    def groups(self) -> list[str] | None:
        if self.labels is not None:
            return list(self.labels)
        if self.map is not None:
            return sorted(set(self.map.values()))
        return None


@dataclass(frozen=True)
class PromptSpec:
    templates: tuple[str, ...]
    classnames: dict[str, tuple[str, ...]]
    #: how to combine the class names of a class for families that use the card's templates; None = the
    #: family's own rule. ``name_sum`` suits composite classes ("abnormal" = any of several findings).
    ensemble: str | None = None


@dataclass(frozen=True)
class EvalSpec:
    split: str = "test"
    threshold: float | str = 0.5
    n_boot: int = 1000
    min_group_size: int = 30
    ece_bins: int = 15
    intersections: tuple[tuple[str, ...], ...] = ()
    no_finding_class: str | None = None


@dataclass(frozen=True)
class TaskCard:
    name: str
    version: str
    description: str
    path: Path
    dataset_loader: str
    dataset_options: dict[str, Any]
    classes: tuple[str, ...]
    label_column: str
    label_map: dict[str, str] | None
    attributes: dict[str, AttributeSpec]
    splits: dict[str, str]
    metrics: tuple[str, ...]
    evaluation: EvalSpec
    prompts: PromptSpec | None = None
    synthetic: bool = False
    citation: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    #: ``--task-arg`` overrides applied to ``dataset_options`` (dotted key -> value); empty: the card's own
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        return card_sha256(self.raw)

    def loader(self):  # type: ignore[no-untyped-def]
        cls = DATASETS.get(self.dataset_loader)
        # loaders that read files committed beside the card (e.g. a split file) declare accepts_card_dir
        kwargs = {"card_dir": self.path.parent} if getattr(cls, "accepts_card_dir", False) else {}
        source = f"{self.path}: dataset.options"
        if self.args:
            source += " with --task-arg " + " ".join(f"{k}={v}" for k, v in self.args.items())
        return cls(self.dataset_options, source=source, **kwargs)

    def with_args(self, args: dict[str, Any]) -> TaskCard:
        """This card with ``--task-arg`` overrides of its dataset options (:func:`apply_task_args`); the card's
        sha256 stays the card's own, the overrides are recorded in :attr:`args`."""
        if not args:
            return self
        options, applied = apply_task_args(self, args)
        return dataclasses.replace(self, dataset_options=options, args={**self.args, **applied})

    def load_split(self, split: str, data_root: Path | None = None, loader: Any = None) -> SampleSet:
        """Load one canonical split (train/val/test) with labels mapped and attributes binned."""
        loader = loader or self.loader()
        if loader.needs_data_root and data_root is None:
            raise DataError(f"task '{self.name}' reads a real dataset: pass --data-root pointing at the "
                            f"dataset folder (see tasks/{self.name}/README.md)")
        raw: RawSplit = loader.load(self.splits[split], data_root)
        where = f"task '{self.name}', split '{split}'"
        labels = self._map_labels(raw, where)
        attrs = {}
        for name, spec in self.attributes.items():
            if spec.column not in raw.columns:
                raise DataError(f"{where}: attribute '{name}' wants column '{spec.column}', which the "
                                f"'{self.dataset_loader}' loader does not provide (it has: "
                                f"{', '.join(sorted(raw.columns))})")
            attrs[name] = spec.apply(raw.columns[spec.column], where=where)
        return SampleSet(task=self.name, split=split, classes=list(self.classes),
                         sample_ids=np.asarray(raw.sample_ids).astype(str), labels=labels, attributes=attrs,
                         images=raw.images, texts=raw.texts, extra=raw.extra)

    def _map_labels(self, raw: RawSplit, where: str) -> np.ndarray:
        if self.label_column not in raw.columns:
            raise DataError(f"{where}: label column '{self.label_column}' is not provided by the "
                            f"'{self.dataset_loader}' loader (it has: {', '.join(sorted(raw.columns))})")
        values = raw.columns[self.label_column]
        index = {c: i for i, c in enumerate(self.classes)}
        out = np.empty(len(values), dtype=np.int64)
        bad: list[str] = []
        first_bad: int | None = None
        for i, v in enumerate(values):
            k = _key(v)
            cls = None
            if self.label_map is not None:
                cls = self.label_map.get(k, self.label_map.get("*"))
            elif k in index:
                cls = k
            elif isinstance(v, (int, np.integer)) and 0 <= int(v) < len(self.classes):
                cls = self.classes[int(v)]
            if cls is None:
                bad.append(k)
                first_bad = i if first_bad is None else first_bad
            else:
                out[i] = index[cls]
        if bad:
            raise DataError(f"{where}: {len(bad)} label value(s) in column '{self.label_column}' are not in the "
                            f"card's label map: {', '.join(sorted(set(bad))[:5])}"
                            + (f" (first at sample {ids[first_bad]!r})" if (ids := getattr(raw, "sample_ids", None))
                               is not None and first_bad is not None else ""))
        return out


def flatten_task_args(args: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"n": {"test": 5}}`` (a sweep file's nested form) -> ``{"n.test": 5}``; dotted keys pass through."""
    out: dict[str, Any] = {}
    for key, value in args.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_task_args(value, f"{full}."))
        else:
            out[full] = value
    return out


def apply_task_args(task: TaskCard, args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The task's dataset options with ``args`` (``--task-arg KEY=VALUE``; dotted keys reach into nested
    options) applied, and the applied values (typed). Only the keys the task's loader declares in its
    ``task_args`` mapping (key -> type) are accepted; anything else is a one-line error naming the key and what
    is allowed. The loader checks the values' ranges when the task is loaded."""
    cls = DATASETS.get(task.dataset_loader)
    allowed: dict[str, type] = dict(getattr(cls, "task_args", None) or {})
    options = copy.deepcopy(task.dataset_options)
    applied: dict[str, Any] = {}
    for key, value in flatten_task_args(dict(args)).items():
        key = str(key).strip()
        if key not in allowed:
            what = (f"it accepts {', '.join(sorted(allowed))}" if allowed
                    else "it accepts no --task-arg")
            raise CardError(f"--task-arg {key}: task '{task.name}' (loader '{task.dataset_loader}') does not "
                            f"accept this key; {what}")
        kind = allowed[key]
        typed: Any = value
        if isinstance(value, str) and kind is not str:
            try:
                typed = kind(value.strip())
            except ValueError:
                typed = None
        if typed is None or isinstance(typed, bool) or not isinstance(typed, kind):
            raise CardError(f"--task-arg {key}={value}: expected {'an integer' if kind is int else kind.__name__}")
        node = options
        *path, last = key.split(".")
        for i, part in enumerate(path):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise CardError(f"--task-arg {key}: option '{'.'.join(path[:i + 1])}' of task '{task.name}' is "
                                f"not a mapping")
            node = child
        node[last] = typed
        applied[key] = typed
    return options, applied


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _key(value: Any) -> str:
    """Raw values are compared as strings; integral floats (1.0) become '1'."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (np.integer,)):
        return str(int(value))
    return str(value)


# -- parsing ---------------------------------------------------------------------------------------

def load_task_card(path: Path) -> TaskCard:
    path = Path(path)
    data, f, name = open_card(path)
    version = f.get("version", (str, int))
    description = f.get("description", str, "")
    synthetic = f.get("synthetic", bool, False)
    citation = f.get("citation", str, "")

    ds = f.sub("dataset")
    loader = ds.get("loader", str)
    if loader not in DATASETS:
        ds.fail("loader", f"names an unknown loader: {DATASETS.unknown_message(loader)}")
    options = ds.get("options", dict, {})
    ds.no_unknown()

    classes = f.str_list("classes")
    if len(classes) < 2:
        f.fail("classes", "must list at least two class names")
    if len(set(classes)) != len(classes):
        f.fail("classes", "has duplicate names")

    lab = f.sub("label", {})
    label_column = lab.get("column", str, "label")
    label_map = None
    if "map" in lab.data:
        raw_map = lab.get("map", dict)
        label_map = {}
        for k, v in raw_map.items():
            if v not in classes:
                lab.fail(f"map.{k}", f"maps to {v!r}, which is not one of classes {classes}")
            label_map[_key(k)] = v
    lab.no_unknown()

    attributes = {}
    for aname, spec in f.get("attributes", dict).items():
        attributes[str(aname)] = _parse_attribute(str(aname), Fields(spec or {}, source=str(path),
                                                                     path=f"attributes.{aname}"))
    if not attributes:
        f.fail("attributes", "must declare at least one protected attribute")

    splits = {s: s for s in SPLITS}
    sp = f.sub("splits", {})
    for s in SPLITS:
        splits[s] = sp.get(s, str, s)
    sp.no_unknown()

    metrics = tuple(f.str_list("metrics", ["auc", "acc", "macro_f1", "es_auc", "dpd", "deodds"]))

    ev = f.sub("evaluation", {})
    threshold = ev.get("threshold", (float, str), 0.5)
    if isinstance(threshold, str) and threshold not in ("val_youden", "val_f1"):
        ev.fail("threshold", f"must be a number or one of val_youden, val_f1; got {threshold!r}")
    if isinstance(threshold, float) and not 0.0 <= threshold <= 1.0:
        ev.fail("threshold", f"must lie in [0, 1], got {threshold}")
    inters = []
    for i, combo in enumerate(ev.get("intersections", list, [])):
        if not isinstance(combo, list) or len(combo) < 2 or any(c not in attributes for c in combo):
            ev.fail(f"intersections[{i}]", f"must list two or more declared attributes ({sorted(attributes)})")
        inters.append(tuple(combo))
    no_finding = ev.get("no_finding_class", str, None)
    if no_finding is not None and no_finding not in classes:
        ev.fail("no_finding_class", f"must be one of classes {classes}")
    evaluation = EvalSpec(
        split=ev.get("split", str, "test", choices=("val", "test")),
        threshold=threshold,
        n_boot=ev.get("n_boot", int, 1000),
        min_group_size=ev.get("min_group_size", int, 30),
        ece_bins=ev.get("ece_bins", int, 15),
        intersections=tuple(inters),
        no_finding_class=no_finding,
    )
    ev.no_unknown()

    prompts = None
    if f.get("prompts", dict, None) is not None:
        pr = f.sub("prompts")
        templates = pr.str_list("templates")
        if not templates or any("{}" not in t for t in templates):
            pr.fail("templates", "must be a non-empty list of strings that each contain '{}'")
        cn = pr.sub("classnames", {})
        classnames = {}
        for c in classes:
            value = cn.get(c, (str, list), c)
            syns = [value] if isinstance(value, str) else cn.str_list(c)
            if not syns:
                cn.fail(c, "must list at least one name")
            classnames[c] = tuple(syns)
        cn.no_unknown()
        ensemble = pr.get("ensemble", str, None, choices=("mean_embedding", "name_sum", "mean_logit", "max_logit"))
        pr.no_unknown()
        prompts = PromptSpec(tuple(templates), classnames, ensemble)

    f.no_unknown()
    return TaskCard(name=name, version=str(version), description=description, path=path.resolve(),
                    dataset_loader=loader, dataset_options=options, classes=tuple(classes),
                    label_column=label_column, label_map=label_map, attributes=attributes, splits=splits,
                    metrics=metrics, evaluation=evaluation, prompts=prompts, synthetic=synthetic,
                    citation=citation, raw=data)


def _parse_attribute(name: str, a: Fields) -> AttributeSpec:
    column = a.get("column", str, name)
    bins = a.get("bins", list, None)
    labels = a.str_list("labels", None) if bins is not None else None
    vmap = a.get("map", dict, None)
    missing = tuple(_key(m) for m in a.get("missing", list, []))
    a.no_unknown()
    if bins is not None and vmap is not None:
        a.fail("bins", "and 'map' cannot both be given")
    if bins is not None:
        try:
            edges = tuple(float(b) for b in bins)
        except (TypeError, ValueError):
            a.fail("bins", "must be a list of numbers (use .inf for infinity)")
        if len(edges) < 3 or any(x >= y for x, y in zip(edges, edges[1:])):
            a.fail("bins", f"must be at least three strictly increasing edges, got {bins}")
        if labels is None:
            labels = [_bin_label(lo, hi) for lo, hi in zip(edges, edges[1:])]
        if len(labels) != len(edges) - 1:
            a.fail("labels", f"must have one label per bin ({len(edges) - 1}), got {len(labels)}")
        return AttributeSpec(name, column, bins=edges, labels=tuple(labels), missing=missing)
    if vmap is not None:
        return AttributeSpec(name, column, map={_key(k): str(v) for k, v in vmap.items()}, missing=missing)
    return AttributeSpec(name, column, missing=missing)


def _bin_label(lo: float, hi: float) -> str:
    def fmt(x: float) -> str:
        return str(int(x)) if float(x).is_integer() else str(x)
    if math.isinf(hi):
        return f">={fmt(lo)}"
    if lo <= 0 and not math.isinf(lo):
        return f"<{fmt(hi)}"
    return f"[{fmt(lo)},{fmt(hi)})"


# -- discovery -------------------------------------------------------------------------------------

TASKS: Registry[TaskCard] = Registry("task")
_TASK_PATHS: dict[str, Path] = {}  # name -> card file, to report a name defined in two folders


def builtin_tasks_dir() -> Path:
    """The shipped task folders: ``fairbench/_tasks`` in a wheel, the repository's ``tasks/`` otherwise."""
    here = Path(__file__).resolve().parent.parent
    packaged = here / "_tasks"
    return packaged if packaged.is_dir() else here.parent / "tasks"


def discover_tasks(extra_dirs: list[Path] | tuple[Path, ...] = ()) -> dict[str, Path]:
    """Find every task card (``<dir>/<task>/<task>.yaml``) and register it lazily by name."""
    dirs = [builtin_tasks_dir(), *[Path(d) for d in extra_dirs]]
    for d in dirs[1:]:
        if not d.is_dir():
            raise CardError(f"--tasks-dir {d}: not a directory")
    for d in dirs:
        if not d.is_dir():
            continue
        for card in sorted(d.glob("*/*.yaml")):
            if card.name.startswith("_"):
                continue
            name = card.stem
            prev = _TASK_PATHS.get(name)
            if prev is not None and prev.resolve() != card.resolve():
                raise CardError(f"task '{name}' is defined twice: {prev} and {card}")
            if prev is None:
                _TASK_PATHS[name] = card
                TASKS.register_lazy(name, functools.partial(load_task_card, card))
    return dict(_TASK_PATHS)


def get_task(name: str, extra_dirs: list[Path] | tuple[Path, ...] = ()) -> TaskCard:
    discover_tasks(extra_dirs)
    return TASKS.get(name)
