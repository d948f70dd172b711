"""One cell: task x model x adapter x seed -> predictions.parquet + metrics.json.

Cross-dataset evaluation (``RunConfig.eval_task``, ``fairbench run --eval-task B``): the adapter trains and
selects on the run's task A (its train and val splits) and predicts the evaluated split of task B; the cell is
B's (B's card drives the metrics), records A as ``train_task`` and lives under
``<out>/<B>/<model>/<adapt>@<A>/seed<N>``. The two cards must name the same classes (a different order is
remapped to B's).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from fairbench.adapters.base import ADAPTERS, AdaptContext
from fairbench.cache import EmbeddingCache
from fairbench.cards import card_sha256
from fairbench.data.base import SampleSet
from fairbench.data.task import TaskCard, get_task
from fairbench.errors import FairbenchError, ResultsError
from fairbench.locking import cell_lock
from fairbench.metrics import compute_metrics
from fairbench.models.base import get_model_card
from fairbench.models.build import build_model, resolve_device, resolve_model_card
from fairbench.models.inputs import check_run_inputs, inputs_changes, inputs_digest
from fairbench.precision import check_precision, inference_batch_size
from fairbench.progress import bar
from fairbench.resources import PeakMemory
from fairbench.results import (
    METRICS,
    PREDICTIONS,
    SCHEMA_VERSION,
    atomic_write,
    cell_dir,
    check_seed,
    is_complete,
    now_iso,
    provenance,
    read_metrics,
    write_json,
)
from fairbench.train.checkpoint import checkpoint_dir_for
from fairbench.train.dist import is_main_process, local_device

__all__ = ["CellResult", "RunConfig", "metrics_document", "predictions_frame", "run_cell", "seed_everything"]


@dataclass
class RunConfig:
    task: str = "synth_cxr"
    model: str = "tinyclip"
    adapt: str = "zeroshot"
    seed: int = 0
    out: Path = Path("results")
    data_root: Path | None = None
    weights: str | None = None
    device: str = "auto"
    overwrite: bool = False
    tasks_dirs: tuple[Path, ...] = ()
    n_boot: int | None = None
    adapt_args: dict[str, Any] = field(default_factory=dict)
    # [data] leave out unreadable samples (listed in metrics.json data.skipped) instead of stopping
    allow_skip_unreadable: bool = False
    # [data] preprocessed-image cache for file-backed datasets: "auto", "off" or a size in pixels
    image_cache: str = "auto"
    # [adapters] reuse frozen image embeddings across runs (fairbench.cache)
    embedding_cache: bool = True
    # [speed] frozen-encoder inference precision: fp32, bf16 (CPU, CUDA) or fp16 (CUDA) autocast
    precision: str = "fp32"
    # [model] --model-arg KEY=VALUE for generic models (open_clip arch=NAME); recorded in metrics.json
    model_args: dict[str, Any] = field(default_factory=dict)
    # [data] --task-arg KEY=VALUE overrides of the task card's dataset options (dotted keys: nested options);
    # recorded in metrics.json task.args and the config hash
    task_args: dict[str, Any] = field(default_factory=dict)
    # [cross-dataset] evaluate on this task's evaluated split after training and selecting on ``task``
    # (None, or the same name as ``task``: in-distribution)
    eval_task: str | None = None
    # [cross-dataset] eval_task's dataset folder (None: data_root)
    eval_data_root: Path | None = None
    # [metrics] other benchmarks' metric definitions written under metrics.json ``variants`` (``--variants
    # fairmedfm``); not part of the config hash: a complete cell that lacks one gets it from its predictions
    variants: list[str] = field(default_factory=list)

    @property
    def cross(self) -> bool:
        return bool(self.eval_task) and self.eval_task != self.task

    def cell_path(self) -> Path:
        """The cell folder this configuration writes (named by the given names, before any is resolved)."""
        if self.cross:
            return cell_dir(self.out, str(self.eval_task), self.model, self.adapt, self.seed, train_task=self.task)
        return cell_dir(self.out, self.task, self.model, self.adapt, self.seed)


@dataclass
class CellResult:
    path: Path
    metrics: dict[str, Any]
    skipped: bool
    task: TaskCard


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def run_cell(cfg: RunConfig) -> CellResult:
    # resolve every name before any heavy work, so a typo fails at once
    check_seed(cfg.seed)
    task = get_task(cfg.task, cfg.tasks_dirs).with_args(cfg.task_args)
    eval_task = get_task(str(cfg.eval_task), cfg.tasks_dirs) if cfg.cross else None
    # a generic model's card is completed from its checkpoint and --model-arg (architecture, preprocessing)
    card = resolve_model_card(get_model_card(cfg.model), cfg.weights, cfg.model_args)
    adapter_cls = ADAPTERS.get(cfg.adapt)
    adapter = adapter_cls(cfg.adapt_args)
    if eval_task is not None:
        check_cross(task, eval_task, adapter.name)
    device = local_device(resolve_device(cfg.device))
    check_precision(cfg.precision, device)
    check_variants(cfg.variants, eval_task or task)
    data = prepared_loader(cfg, task, card)
    eval_data = prepared_loader(cfg, eval_task, card) if eval_task is not None else None
    cell = cell_dir(cfg.out, (eval_task or task).name, card.name, adapter.name, cfg.seed,
                    train_task=task.name if eval_task is not None else None)
    if is_complete(cell) and not cfg.overwrite:
        doc = read_metrics(cell / METRICS)
        reason = _stale(cfg, doc, task, card, adapter, eval_task)
        if reason:
            raise ResultsError(f"{cell / METRICS} is complete but was computed with {reason}; rerun with "
                               f"--overwrite to replace it, or write to another --out")
        if _missing_variants(doc, cfg.variants) and is_main_process():
            with cell_lock(cell):
                doc = add_variants(cell, eval_task or task, cfg.variants)
        return CellResult(cell, doc, skipped=True, task=eval_task or task)
    # everything the run reads (weights, tokenizer, config, --data-root): all missing pieces in one message
    check_run_inputs(card, cfg.weights, task=task, loader=data, data_root=cfg.data_root)
    if eval_task is not None:
        check_run_inputs(card, cfg.weights, task=eval_task, loader=eval_data, data_root=_eval_root(cfg))
    # one writer per cell (fairbench.locking): the folder is made with the lock and removed again, when still
    # empty, if the run fails (a model that does not build leaves no empty cell behind)
    with cell_lock(cell) if is_main_process() else contextlib.nullcontext():
        if is_complete(cell) and not cfg.overwrite:  # completed by another process since the check above
            return run_cell(cfg)
        (cell / METRICS).unlink(missing_ok=True)  # an overwritten cell is incomplete until its new metrics land
        return _compute_cell(cfg, task, card, adapter, device, data, cell, eval_task, eval_data)


def _eval_root(cfg: RunConfig) -> Path | None:
    return cfg.eval_data_root if cfg.eval_data_root is not None else cfg.data_root


def check_cross(train: TaskCard, evaluated: TaskCard, adapt: str) -> None:
    """One-line errors for a cross-dataset cell that cannot be made: a zero-shot adapter (nothing is trained,
    so the cell is the evaluated task's own) and cards whose classes differ."""
    if adapt == "zeroshot":
        raise FairbenchError(f"--adapt zeroshot trains nothing, so it has no training task: run --task "
                             f"{evaluated.name} (without --eval-task) for {evaluated.name}'s zero-shot cell")
    check_same_classes(train, evaluated)


def check_same_classes(train: TaskCard, evaluated: TaskCard) -> None:
    """One line naming the classes that differ, unless both cards name the same classes (in any order)."""
    if set(train.classes) != set(evaluated.classes) or len(train.classes) != len(evaluated.classes):
        only_train = [c for c in train.classes if c not in evaluated.classes]
        only_eval = [c for c in evaluated.classes if c not in train.classes]
        raise FairbenchError(f"--eval-task {evaluated.name}: its classes {list(evaluated.classes)} differ from "
                             f"--task {train.name}'s {list(train.classes)} (only in {train.name}: "
                             f"{', '.join(only_train) or 'none'}; only in {evaluated.name}: "
                             f"{', '.join(only_eval) or 'none'}); cross-dataset evaluation needs the same classes")


def _cross_frame(train: TaskCard, evaluated: TaskCard, splits: list[SampleSet], probs: dict[str, np.ndarray],
                 decisions: dict[str, np.ndarray] | None) -> pd.DataFrame:
    """The predictions table of a cross-dataset cell, in ``evaluated``'s class order: the adapter's
    probabilities (``train``'s order) permuted, and the labels of ``train``'s splits re-indexed."""
    order = [list(train.classes).index(c) for c in evaluated.classes]  # evaluated column j <- train column
    for s in splits:  # checked here, before the permutation hides a wrong shape
        if probs[s.split].shape != (len(s), len(train.classes)):
            raise ResultsError(f"adapter returned probabilities of shape {probs[s.split].shape} for split "
                               f"'{s.split}', expected {(len(s), len(train.classes))}")
    moved = {k: np.asarray(v)[:, order] for k, v in probs.items()}
    if decisions and order != list(range(len(order))):  # binary: a positive decision is the other class now
        decisions = {k: 1.0 - np.asarray(v, dtype=np.float64) for k, v in decisions.items()}
    frame = predictions_frame(evaluated, splits, moved, decisions)
    relabel = np.array([list(evaluated.classes).index(c) for c in train.classes], dtype=np.int64)
    from_train = frame["split"] != evaluated.evaluation.split
    frame.loc[from_train, "label"] = relabel[frame.loc[from_train, "label"].to_numpy()]
    return frame


def _compute_cell(cfg: RunConfig, task: TaskCard, card: Any, adapter: Any, device: torch.device, data: Any,
                  cell: Path, eval_task: TaskCard | None = None, eval_data: Any = None) -> CellResult:
    started, t0 = now_iso(), time.time()
    peak = PeakMemory(device)  # the cell's own peak memory, recorded in provenance.resources
    seed_everything(cfg.seed)
    model = build_model(card, cfg.weights, device)
    seed_everything(cfg.seed)
    ctx = AdaptContext(task=task, model=model, seed=cfg.seed, data_root=cfg.data_root, _loader=data,
                       embedding_cache=EmbeddingCache() if cfg.embedding_cache else None,
                       checkpoint_dir=checkpoint_dir_for(cell), resume=not cfg.overwrite,
                       batch_size=inference_batch_size(device), precision=cfg.precision,
                       eval_task=eval_task, eval_data_root=_eval_root(cfg), _eval_loader=eval_data)
    probs = adapter.run(ctx)
    if not is_main_process():  # data-parallel training: only rank 0 writes results
        return CellResult(cell, {}, skipped=False, task=eval_task or task)
    splits = [ctx.split(s) for s in adapter.predict_splits]
    if eval_task is not None:
        frame = _cross_frame(task, eval_task, splits, probs, getattr(adapter, "decisions", None))
    else:
        frame = predictions_frame(task, splits, probs, getattr(adapter, "decisions", None))
    atomic_write(cell / PREDICTIONS, lambda p: frame.to_parquet(p, index=False))

    train_task, task = task, eval_task or task  # from here on the cell is the evaluated task's
    cross = {"train_task_card": train_task.sha256} if eval_task is not None else {}
    n_boot = task.evaluation.n_boot if cfg.n_boot is None else cfg.n_boot
    with bar(f"metrics, {n_boot} bootstrap resamples" if n_boot else "metrics", None):  # minutes at B=1000
        metrics = metrics_document(
            frame, task, n_boot=n_boot, seed=cfg.seed,
            samples_sha256=_samples_sha256(frame, task.evaluation.split),
            model={"name": card.name, "card_sha256": card.sha256, "weights": model.weights_info,
                   **_resolved_record(cfg, card)},
            adapt={"name": adapter.name, "params": adapter.params, "fitted": _jsonable(adapter.fitted)},
            variants=list(cfg.variants) or None,
            config={"task_card": task.sha256, "model_card": card.sha256, "adapt": adapter.params, "seed": cfg.seed,
                    "weights": model.weights_info.get("sha256"), "n_boot": n_boot,
                    "model_inputs": inputs_digest(model.weights_info),
                    **({"model_args": dict(cfg.model_args)} if cfg.model_args else {}),
                    **({"task_args": dict(task.args)} if task.args else {}),
                    **({"precision": cfg.precision} if cfg.precision != "fp32" else {}), **cross},
        )
    if eval_task is not None:
        metrics["train_task"] = {"name": train_task.name, "version": train_task.version,
                                 "card_sha256": train_task.sha256}
    metrics["data"] = data.report()
    if eval_data is not None:
        metrics["eval_data"] = eval_data.report()
    # analyses that read the adapter's context (leakage encodes the train split) before the cache report, so the
    # report lists every encode the cell made
    analyses = _cell_analyses(adapter, ctx, n_boot, cross=eval_task is not None)
    if analyses:
        metrics.setdefault("analyses", {}).update(analyses)
    metrics["embedding_cache"] = ctx.embedding_report()
    metrics["precision"] = ctx.precision_report()
    metrics["provenance"] = provenance(device=str(device), started_at=started, duration_s=time.time() - t0)
    metrics["provenance"]["resources"] = peak.report()
    write_json(cell / METRICS, metrics)
    adapter.finish(ctx)  # e.g. remove training checkpoints, now that the cell is complete
    return CellResult(cell, metrics, skipped=False, task=task)


def check_variants(variants: list[str] | tuple[str, ...] | None, task: TaskCard, what: str = "--variants") -> None:
    """One-line errors, before anything runs, for variants that are unknown or do not apply to the task."""
    from fairbench.analyses import VARIANTS

    unknown = [v for v in variants or () if v not in VARIANTS]
    if unknown:
        raise FairbenchError(f"{what}: unknown {', '.join(map(repr, unknown))}; known: {', '.join(VARIANTS)}")
    if variants and len(task.classes) != 2:
        raise FairbenchError(f"{what} {','.join(variants)} applies to binary tasks only; task '{task.name}' has "
                             f"{len(task.classes)} classes")


def _missing_variants(doc: dict[str, Any], variants: list[str] | tuple[str, ...] | None) -> list[str]:
    have = doc.get("variants") or {}
    return [v for v in variants or () if v not in have]


def missing_variants(cfg: RunConfig) -> list[str]:
    """The variants ``cfg`` asks for that its complete cell's metrics.json lacks ([] for an incomplete cell or an
    unreadable one: running it settles those)."""
    cell = cfg.cell_path()
    if not cfg.variants or not is_complete(cell):
        return []
    try:
        return _missing_variants(read_metrics(cell / METRICS), cfg.variants)
    except FairbenchError:
        return []


def add_variants(cell: Path, task: TaskCard, variants: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Add ``variants`` to a complete cell's metrics.json from its predictions.parquet (the same function,
    :func:`fairbench.analyses.compute_variants`, that ``metrics_document`` and ``fairbench metrics --variants``
    call), keeping every other entry; returns the new document."""
    from fairbench.analyses import compute_variants
    from fairbench.results import read_predictions

    doc = read_metrics(cell / METRICS)
    missing = _missing_variants(doc, variants)
    if not missing:
        return doc
    ev = task.evaluation
    frame = read_predictions(cell / PREDICTIONS, list(task.classes), list(task.attributes))
    new = _jsonable(compute_variants(frame, classes=list(task.classes), attributes=list(task.attributes),
                                     eval_split=ev.split, intersections=[list(i) for i in ev.intersections],
                                     variants=missing))
    old = dict(doc.get("variants") or {})
    notes = {**(old.get("notes") or {}), **(new.pop("notes", None) or {})}
    doc["variants"] = {**old, **new, "notes": notes}
    write_json(cell / METRICS, doc)
    return doc


def _cell_analyses(adapter: Any, ctx: AdaptContext, n_boot: int, *, cross: bool = False) -> dict[str, Any]:
    """Analyses computed in the cell (fairbench.analyses): attribute leakage for frozen-encoder adapters (from the
    cached embeddings, on val and at most CELL_TRAIN_MAX training images; not in a cross-dataset cell, whose train
    and test splits come from different tasks), and what the adapter itself adds (zeroshot ``templates=all``: prompt sensitivity)."""
    from fairbench.analyses.leakage import CELL_TRAIN_MAX, frozen_encoder, leakage_for_cell

    out: dict[str, Any] = dict(_jsonable(getattr(adapter, "analyses", None) or {}))
    if frozen_encoder(adapter) and not cross:
        with bar("attribute leakage probes", None):
            out["leakage"] = _jsonable(leakage_for_cell(ctx, n_boot=n_boot, train_max=CELL_TRAIN_MAX))
    return out


def _resolved_record(cfg: RunConfig, card: Any) -> dict[str, Any]:
    """For a generic model (a card whose architecture the checkpoint completes): the resolved architecture and
    preprocessing, and the --model-arg values, for metrics.json ``model``."""
    out: dict[str, Any] = {"args": dict(cfg.model_args)} if cfg.model_args else {}
    if not get_model_card(card.name).architecture:
        out.update(architecture=card.architecture, preprocessing=dict(card.preprocessing.__dict__))
    return out


def _stale(cfg: RunConfig, doc: dict[str, Any], task: TaskCard, card: Any, adapter: Any,
           eval_task: TaskCard | None = None) -> str | None:
    if eval_task is not None:  # a cross-dataset cell: the training task's card too, then the evaluated one's
        recorded = (doc.get("train_task") or {}).get("card_sha256")
        if recorded != task.sha256:
            return (f"another version of the training task card '{task.name}' (sha256 "
                    f"{str(recorded)[:12]}, now {task.sha256[:12]})")
        task = eval_task
    if getattr(adapter, "randomised_decisions", False) and (doc.get("threshold") or {}).get("rule") != "randomised":
        return ("an older fairbench that scored this adapter's randomised rule with a threshold of P(yhat = 1) "
                "instead of the rule's expected rates")
    return stale_reason(doc, task=task, card=card, adapt=adapter.name, params=adapter.params,
                        n_boot=task.evaluation.n_boot if cfg.n_boot is None else cfg.n_boot,
                        random_weights=cfg.weights == "random" if cfg.weights else None, precision=cfg.precision) \
        or inputs_changes(doc.get("model", {}).get("weights") or {}, card, cfg.weights)


def stale_cell(cfg: RunConfig) -> str | None:
    """For a complete cell, :func:`stale_reason` against ``cfg`` (what makes ``run_cell`` refuse to skip it);
    None for an incomplete cell, or when the check itself cannot be made (an unknown name or unreadable metrics:
    running the cell reports those)."""
    cell = cfg.cell_path()
    if not is_complete(cell):
        return None
    try:
        task = get_task(cfg.task, cfg.tasks_dirs).with_args(cfg.task_args)
        eval_task = get_task(str(cfg.eval_task), cfg.tasks_dirs) if cfg.cross else None
        adapter = ADAPTERS.get(cfg.adapt)(cfg.adapt_args)
        card = resolve_model_card(get_model_card(cfg.model), cfg.weights, cfg.model_args)
        return _stale(cfg, read_metrics(cell / METRICS), task, card, adapter, eval_task)
    except FairbenchError:
        return None


def _plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists, keys strings)."""
    return json.loads(json.dumps(value, default=str))


def stale_reason(doc: dict[str, Any], *, task: TaskCard, card: Any, adapt: str, params: dict[str, Any],
                 n_boot: int, random_weights: bool | None = None, precision: str | None = None) -> str | None:
    """Why a complete cell's ``metrics.json`` does not answer the run asked for now, or None when it does: a
    cell is only skipped when its task card, model card, adapter settings and bootstrap count are the current
    ones (an edited card must not leave old numbers standing under the new name). ``random_weights`` (None:
    not asked) compares whether the weights were random. Weight files are not re-hashed here."""
    recorded_task = doc.get("task", {}).get("card_sha256")
    if recorded_task and recorded_task != task.sha256:
        return (f"another version of the task card '{task.name}' (sha256 {recorded_task[:12]}, now "
                f"{task.sha256[:12]})")
    recorded_args, asked_args = _plain(doc.get("task", {}).get("args") or {}), _plain(task.args)
    if recorded_args != asked_args:
        def shown(args: dict[str, Any]) -> str:
            return ("--task-arg " + " ".join(f"{k}={v}" for k, v in sorted(args.items()))) if args \
                else "the card's own dataset options"
        return f"{shown(recorded_args)}, not {shown(asked_args)}"
    recorded_model = doc.get("model", {}).get("card_sha256")
    if recorded_model and recorded_model != card.sha256:
        return (f"another version of the model card '{card.name}' (sha256 {recorded_model[:12]}, now "
                f"{card.sha256[:12]})")
    recorded_adapt = doc.get("adapt", {})
    if recorded_adapt.get("name", adapt) != adapt:
        return f"adapter '{recorded_adapt.get('name')}', not '{adapt}'"
    old, new = _plain(recorded_adapt.get("params", params)), _plain(params)
    if old != new:
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        return "other adapter settings (" + ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff) + ")"
    recorded_boot = doc.get("metrics", {}).get("n_boot")
    if recorded_boot is not None and recorded_boot != n_boot:
        return f"{recorded_boot} bootstrap resamples, not {n_boot}"
    if random_weights is not None:
        was_random = doc.get("model", {}).get("weights", {}).get("source") == "random"
        if was_random != random_weights:
            return "random weights" if was_random else "trained weights, not random ones"
    recorded_precision = doc.get("precision", {}).get("inference", "fp32")
    if precision is not None and recorded_precision != precision:
        return f"--precision {recorded_precision}, not {precision}"
    return None


def prepared_loader(cfg: RunConfig, task: TaskCard, card: Any) -> Any:
    """[data] The task's loader as a run uses it: image cache, unreadable-sample screen (fairbench.data.prepare)."""
    from fairbench.data.prepare import PreparedLoader, parse_image_cache
    from fairbench.models.preprocess import CacheGeometry

    pre = card.preprocessing
    model_input = max(pre.image_size, getattr(pre, "load_size", None) or 0)
    geometry = CacheGeometry(pre)
    image_cache = parse_image_cache(cfg.image_cache, model_input)
    if image_cache == "auto" and not geometry.cacheable:
        image_cache = None  # a pipeline no cached square reproduces (FLAIR's field-of-view crop): full images
    return PreparedLoader(task.loader(), split_names=task.splits, model_input=model_input,
                          image_cache=image_cache, allow_skip=cfg.allow_skip_unreadable, geometry=geometry)


def predictions_frame(task: TaskCard, splits: list[SampleSet], probs: dict[str, np.ndarray],
                      decisions: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """The predictions table; ``decisions`` (an adapter's randomised rule: per split, each sample's probability
    of a positive decision) becomes the ``p_decide_positive`` column the metrics read (docs/metrics.md)."""
    from fairbench.metrics._inputs import DECISION_COLUMN

    frames = []
    for s in splits:
        p = probs[s.split]
        if p.shape != (len(s), len(task.classes)):
            raise ResultsError(f"adapter returned probabilities of shape {p.shape} for split '{s.split}', "
                               f"expected {(len(s), len(task.classes))}")
        cols: dict[str, Any] = {"sample_id": s.sample_ids.astype(str), "split": s.split,
                                "label": s.labels.astype(np.int64)}
        for j, c in enumerate(task.classes):
            cols[f"prob_{c}"] = p[:, j].astype(np.float64)
        if decisions:
            d = np.asarray(decisions[s.split], dtype=np.float64)
            if d.shape != (len(s),):
                raise ResultsError(f"adapter returned decision probabilities of shape {d.shape} for split "
                                   f"'{s.split}', expected {(len(s),)}")
            cols[DECISION_COLUMN] = d
        for a, groups in s.attributes.items():
            cols[f"attr_{a}"] = pd.array(groups, dtype="string")
        for k, v in s.extra.items():
            cols[k] = v
        frames.append(pd.DataFrame(cols))
    return pd.concat(frames, ignore_index=True)


def metrics_document(frame: pd.DataFrame, task: TaskCard, *, n_boot: int, seed: int, samples_sha256: str,
                     model: dict[str, Any] | None = None, adapt: dict[str, Any] | None = None,
                     config: dict[str, Any] | None = None, variants: list[str] | None = None) -> dict[str, Any]:
    from fairbench.analyses import compute_analyses, compute_variants

    ev = task.evaluation
    result = compute_metrics(
        frame, classes=list(task.classes), attributes=list(task.attributes), eval_split=ev.split,
        threshold=ev.threshold, n_boot=n_boot, seed=seed, ece_bins=ev.ece_bins,
        min_group_size=ev.min_group_size, intersections=[list(i) for i in ev.intersections] or None,
        no_finding_class=ev.no_finding_class)
    threshold = result.pop("threshold", None)
    # undefined values (a degenerate fit's NaN interval) become null, as everywhere in metrics.json
    analyses = _jsonable(compute_analyses(result, no_finding_class=ev.no_finding_class, frame=frame,
                                          attributes=list(task.attributes),
                                          intersections=[list(i) for i in ev.intersections],
                                          threshold=threshold))
    extra = {"variants": _jsonable(compute_variants(
        frame, classes=list(task.classes), attributes=list(task.attributes), eval_split=ev.split,
        intersections=[list(i) for i in ev.intersections], variants=variants))} if variants else {}
    return {
        "schema_version": SCHEMA_VERSION,
        "task": {"name": task.name, "version": task.version, "synthetic": task.synthetic,
                 "card_sha256": task.sha256, "eval_split": ev.split, "samples_sha256": samples_sha256,
                 **({"args": dict(task.args)} if task.args else {})},
        "model": model or {},
        "adapt": adapt or {},
        "seed": seed,
        "config_sha256": card_sha256(config or {}),
        "threshold": threshold,
        "metrics": result,
        "analyses": analyses,
        **extra,
    }


def _samples_sha256(frame: pd.DataFrame, split: str) -> str:
    ids = frame.loc[frame["split"] == split, "sample_id"].astype(str)
    return card_sha256(sorted(ids.tolist()))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if math.isnan(float(obj)) or math.isinf(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
