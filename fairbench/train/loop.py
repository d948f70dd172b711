"""The one training loop every trainable adapter uses.

Per epoch: the objective's seeded batches of the training split (every sample once,
:func:`~fairbench.train.data.epoch_batches`, unless a mitigation balances them), a step per ``grad_accum``
batches with AdamW (or Adam, or SGD with momentum 0.9) and the schedule, float16 autocast with gradient scaling
on CUDA, then the selection score on the selection split: validation AUC (macro one-vs-rest for more than two
classes), the worst group's validation AUC for ``select_on=val_worst_group``, the lowest validation accuracy
over the (group x label) cells for ``select_on=val_worst_cell_acc``, or test AUC if the adapter was told
``select_on=test`` (FairCLIP's published protocol, warned and recorded). The best
epoch's weights predict at the end; ``patience`` epochs without improvement stop early. The test split is
never scored during training unless it is the selection split.

After every epoch the state is checkpointed (:mod:`fairbench.train.checkpoint`), so a rerun resumes after the
last completed epoch. On CPU, runs are deterministic (``torch.use_deterministic_algorithms``, seeded
generators for everything random but dropout, whose RNG state is checkpointed).

With ``WORLD_SIZE`` > 1 (``torchrun``/``accelerate launch``) the objective's modules are wrapped in
``DistributedDataParallel``; each process takes ``batch[rank::world]`` of every global batch of
``batch_size * world`` samples (so ``batch_size`` is per process, as is the CLIP loss's contrastive batch:
features are not gathered across processes); every process scores the selection split itself (identical
weights give identical scores; rank 0's decision is broadcast) and only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from fairbench.errors import FairbenchError
from fairbench.progress import bar, info, warn
from fairbench.resources import release_freed_memory
from fairbench.train import dist
from fairbench.train.checkpoint import CheckpointStore
from fairbench.train.config import SGD_MOMENTUM, TrainConfig
from fairbench.train.data import shard
from fairbench.train.objectives import Objective

__all__ = [
    "EPOCH_HOOKS",
    "SELECT_TEST_WARNING",
    "STEP_HOOKS",
    "TrainResult",
    "Trainer",
    "selection_score",
    "worst_cell_accuracy",
    "worst_group_score",
]

#: called as ``hook(epoch, step)`` after every optimizer step, and ``hook(epoch)`` after every epoch's
#: checkpoint (tests use them to interrupt a run)
STEP_HOOKS: list[Callable[[int, int], None]] = []
EPOCH_HOOKS: list[Callable[[int], None]] = []

SELECT_TEST_WARNING = ("select_on=test: the epoch is chosen by TEST AUC (FairCLIP's released protocol); this "
                       "cell's test metrics are optimistically biased and not comparable with validation-selected "
                       "cells")


def _binary_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic with tie-averaged ranks (equal to sklearn's roc_auc_score)."""
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    start = 0
    while start < len(scores):
        end = start
        while end + 1 < len(scores) and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start:end + 1]] = 0.5 * (start + end) + 1.0
        start = end + 1
    n_pos = int(positive.sum())
    n_neg = len(scores) - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def selection_score(labels: np.ndarray, probs: np.ndarray) -> float:
    """AUC (binary) or macro one-vs-rest AUC; NaN when a class is missing from ``labels``."""
    labels = np.asarray(labels)
    if not np.isfinite(probs).all() or len(np.unique(labels)) < 2:
        return float("nan")
    if probs.shape[1] == 2:
        return _binary_auc(labels == 1, probs[:, 1].astype(np.float64))
    if len(np.unique(labels)) < probs.shape[1]:
        return float("nan")
    return float(np.mean([_binary_auc(labels == c, probs[:, c].astype(np.float64)) for c in range(probs.shape[1])]))


def worst_group_score(labels: np.ndarray, probs: np.ndarray, groups: np.ndarray) -> float:
    """The lowest :func:`selection_score` over the groups (those with every class; unknown left out); NaN when
    no group has every class."""
    scores = [selection_score(labels[groups == g], probs[groups == g])
              for g in sorted({str(v) for v in groups}) if g != "unknown"]
    scores = [s for s in scores if not math.isnan(s)]
    return min(scores) if scores else float("nan")


def worst_cell_accuracy(labels: np.ndarray, probs: np.ndarray, groups: np.ndarray) -> float:
    """The lowest accuracy (argmax class) over the (group x label) cells with samples (unknown group left out):
    ``min(avg_group_acc)`` of GroupDRO's release, whose groups are these cells, minus its empty cells (which
    the release scores 0). NaN when no cell has a sample."""
    labels = np.asarray(labels)
    correct = np.argmax(probs, axis=1) == labels
    accs = [float(correct[(groups == g) & (labels == c)].mean()) for g in sorted({str(v) for v in groups})
            if g != "unknown" for c in np.unique(labels) if np.any((groups == g) & (labels == c))]
    return min(accs) if accs else float("nan")


def score_key(select: str) -> str:
    """The history key of an epoch's selection score."""
    return select if select.endswith("_acc") else f"{select}_auc"


@dataclass
class TrainResult:
    probs: dict[str, np.ndarray]
    record: dict[str, Any]


class _LossModule(nn.Module):
    """Routes the objective's batch loss through ``forward`` so DistributedDataParallel sees it."""

    def __init__(self, objective: Objective) -> None:
        super().__init__()
        self.inner = objective.module
        object.__setattr__(self, "_objective", objective)

    def forward(self, idx: np.ndarray, epoch: int, step: int) -> torch.Tensor:
        return self._objective.batch_loss(idx, epoch, step)  # type: ignore[attr-defined]


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that train and every persistent buffer (batch-norm statistics), on CPU."""
    keep = {n for n, p in module.named_parameters(remove_duplicate=False) if p.requires_grad}
    keep |= {n for n, _ in module.named_buffers(remove_duplicate=False)}
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items() if k in keep}


def trained_parameters(module: nn.Module, groups: list[dict[str, Any]]) -> dict[str, int]:
    """{top-level parameter-name prefix: number of tensors the optimiser steps}; the objective's own wrapper
    name ``model`` is dropped (``model.visual.conv1.weight`` counts under ``visual``)."""
    stepped = {id(p) for g in groups for p in g["params"] if p.requires_grad}
    out: dict[str, int] = {}
    for name, p in module.named_parameters():
        if id(p) in stepped:
            parts = name.split(".")
            key = parts[1] if parts[0] == "model" and len(parts) > 1 else parts[0]
            out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


def load_trainable_state(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    result = module.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise FairbenchError(f"checkpoint does not match the model: unexpected keys {result.unexpected_keys[:3]}")


def _schedule(cfg: TrainConfig, total_steps: int) -> Callable[[int], float]:
    warm = cfg.warmup_steps

    def factor(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        if cfg.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0 - progress

    return factor


def _optimizer(cfg: TrainConfig, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=SGD_MOMENTUM, weight_decay=cfg.weight_decay)
    kw = dict(lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, **kw) if cfg.optimizer == "adamw" else torch.optim.Adam(groups, **kw)


@contextlib.contextmanager
def _deterministic(device: torch.device):  # type: ignore[no-untyped-def]
    if device.type != "cpu":
        yield False
        return
    before = torch.are_deterministic_algorithms_enabled()
    before_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield True
    finally:
        torch.use_deterministic_algorithms(before, warn_only=before_warn)


class Trainer:
    def __init__(self, cfg: TrainConfig, objective: Objective, *, name: str, seed: int, labels: dict[str, np.ndarray],
                 store: CheckpointStore, resume: bool = True, predict_splits: tuple[str, ...] = ("val", "test"),
                 groups: np.ndarray | None = None) -> None:
        self.cfg, self.objective, self.name, self.seed = cfg, objective, name, seed
        self.labels, self.store, self.resume, self.predict_splits = labels, store, resume, predict_splits
        #: validation groups for select_on=val_worst_group
        self.groups = groups
        if cfg.select_on in ("val_worst_group", "val_worst_cell_acc") and groups is None:
            raise FairbenchError(f"adapter '{name}': select_on={cfg.select_on} needs the validation groups")
        #: every split scored during training, in order (tests check that test is never among them)
        self.scored: list[str] = []

    def _score(self, select: str) -> tuple[float, np.ndarray]:
        split = "test" if select == "test" else "val"
        self.scored.append(split)
        probs = self.objective.predict(split)
        if select == "val_worst_group":
            assert self.groups is not None
            return worst_group_score(self.labels[split], probs, self.groups), probs
        if select == "val_worst_cell_acc":
            assert self.groups is not None
            return worst_cell_accuracy(self.labels[split], probs, self.groups), probs
        return selection_score(self.labels[split], probs), probs

    def run(self) -> TrainResult:
        cfg, obj = self.cfg, self.objective
        device = obj.device
        distributed = dist.ensure_process_group(device)
        world, rank = dist.world_size(), dist.rank()
        self.store.writer = dist.is_main_process()
        if cfg.select_on == "test":
            warn(f"adapter '{self.name}': {SELECT_TEST_WARNING}")
        groups = obj.param_groups(cfg.lr)
        if not any(p.requires_grad for g in groups for p in g["params"]):
            raise FairbenchError(f"adapter '{self.name}': nothing to train (no parameter requires a gradient)")
        opt = _optimizer(cfg, groups)
        n_batches = len(obj.train_batches(0, cfg.batch_size, self.seed, world))
        steps_per_epoch = math.ceil(n_batches / cfg.grad_accum)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(cfg, cfg.epochs * steps_per_epoch))
        use_amp = cfg.amp and device.type == "cuda"
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
        wrapped: nn.Module = _LossModule(obj)
        if distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            wrapped = DDP(wrapped, device_ids=[device.index] if device.type == "cuda" else None,
                          find_unused_parameters=True)

        history: list[dict[str, Any]] = []
        best_score: float | None = None
        best_epoch: int | None = None
        best_state: dict[str, torch.Tensor] | None = None
        bad_epochs, stopped, start, resumed_from = 0, False, 0, None
        state = self.store.load(CheckpointStore.LAST) if self.resume else None
        if not self.resume:
            self.store.discard()
        if state is not None:
            load_trainable_state(obj.module, state["weights"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            obj.load_state_dict(state["objective"])
            torch.set_rng_state(state["rng"]["torch"])
            if torch.cuda.is_available() and state["rng"].get("cuda"):
                torch.cuda.set_rng_state_all(state["rng"]["cuda"])
            history, stopped = list(state["history"]), bool(state["stopped"])
            best_score, best_epoch, bad_epochs = state["best_score"], state["best_epoch"], int(state["bad_epochs"])
            start = resumed_from = int(state["epoch"])
            if best_epoch is not None:
                best = self.store.load(CheckpointStore.BEST)
                if best is None or best.get("epoch") != best_epoch:
                    raise FairbenchError(f"checkpoint folder {self.store.directory}: best.pt is missing or does not "
                                         f"match last.pt; remove the folder or rerun with --overwrite")
                best_state = best["weights"]
            warn(f"adapter '{self.name}': resuming after epoch {start} from {self.store.directory}")

        select = cfg.select_on
        key = score_key(select)
        #: on CPU, return the heap's free pages after every step and evaluation (fairbench.resources)
        trim = device.type == "cpu"
        if trim:  # e.g. full_ft's parameter probe freed a backward pass through the whole model
            release_freed_memory()
        with _deterministic(device) as deterministic:
            for epoch in range(start, cfg.epochs):
                if stopped:
                    break
                t0 = time.time()
                batches = obj.train_batches(epoch, cfg.batch_size, self.seed, world)
                obj.begin_epoch(epoch, batches)
                obj.train_mode()
                opt.zero_grad(set_to_none=True)
                losses: list[float] = []
                with bar(f"{self.name} epoch {epoch + 1}/{cfg.epochs}", len(batches)) as b:
                    for step, batch in enumerate(batches):
                        idx = shard(batch, rank, world)
                        sync = (step + 1) % cfg.grad_accum == 0 or step == len(batches) - 1
                        no_sync = wrapped.no_sync() if distributed and not sync else contextlib.nullcontext()
                        with no_sync:
                            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                                loss = wrapped(idx, epoch, step)
                            scaler.scale(loss / cfg.grad_accum).backward()
                        losses.append(float(loss.detach()))
                        if sync:
                            if cfg.max_grad_norm > 0:
                                scaler.unscale_(opt)
                                torch.nn.utils.clip_grad_norm_(
                                    [p for g in groups for p in g["params"] if p.requires_grad], cfg.max_grad_norm)
                            scaler.step(opt)
                            scaler.update()
                            opt.zero_grad(set_to_none=True)
                            sched.step()
                            if trim:  # the step's activations are free now: give their pages back
                                release_freed_memory()
                            for hook in STEP_HOOKS:
                                hook(epoch, step)
                        b.advance()
                        last = history[-1].get(key) if history else None
                        b.postfix(f"loss {np.mean(losses):.4f}" + (f"  {key} {last:.3f}" if last else ""))
                log = obj.end_epoch(epoch)
                score, _ = self._score(select)
                if trim:
                    release_freed_memory()
                score = float(dist.broadcast_object(score))
                improved = not math.isnan(score) and (best_score is None or score > best_score)
                if improved:
                    best_score, best_epoch, bad_epochs = score, epoch, 0
                    best_state = trainable_state(obj.module)
                    self.store.save(CheckpointStore.BEST, {"epoch": epoch, "weights": best_state})
                else:
                    bad_epochs += 1
                if cfg.patience and bad_epochs >= cfg.patience and epoch + 1 < cfg.epochs:
                    stopped = True
                history.append({"epoch": epoch, "train_loss": float(np.mean(losses)),
                                "lr": [float(g["lr"]) for g in opt.param_groups],
                                key: None if math.isnan(score) else score,
                                "seconds": round(time.time() - t0, 3), **log})
                line = obj.epoch_line(history[-1])
                if line and dist.is_main_process():
                    info(f"{self.name} epoch {epoch + 1}/{cfg.epochs}: {line}, {key} "
                         + ("n/a" if math.isnan(score) else f"{score:.4f}"))
                self.store.save(CheckpointStore.LAST, {
                    "epoch": epoch + 1, "weights": trainable_state(obj.module), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "scaler": scaler.state_dict(), "objective": obj.state_dict(),
                    "rng": {"torch": torch.get_rng_state(),
                            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
                    "history": history, "stopped": stopped, "best_score": best_score, "best_epoch": best_epoch,
                    "bad_epochs": bad_epochs})
                dist.barrier()
                for hook in EPOCH_HOOKS:
                    hook(epoch)

            if best_state is not None:
                load_trainable_state(obj.module, best_state)
            probs = {}
            for s in self.predict_splits:
                probs[s] = obj.predict(s)
                if trim:  # or the next split's evaluation batches come on top of this one's freed heap
                    release_freed_memory()

        record = {
            "selected_on": "test" if select == "test" else "val",
            "select_metric": {"val_worst_group": "worst_group_auc",
                              "val_worst_cell_acc": "worst_cell_accuracy"}.get(select, "auc"),
            "best_epoch": best_epoch, "best_score": best_score,
            "selection": "best epoch" if best_epoch is not None else "last epoch (selection score undefined)",
            "epochs_run": len(history), "early_stopped": bool(stopped and len(history) < cfg.epochs),
            "resumed_from_epoch": resumed_from, "history": history,
            "trained_parameters": trained_parameters(obj.module, groups),
            "optimizer": {"name": cfg.optimizer, "class": type(opt).__name__,
                          **({"momentum": float(opt.param_groups[0]["momentum"])} if cfg.optimizer == "sgd"
                             else {"betas": list(cfg.betas), "eps": cfg.eps}),
                          "weight_decay": cfg.weight_decay, "schedule": cfg.schedule,
                          "warmup_steps": cfg.warmup_steps, "grad_accum": cfg.grad_accum,
                          "steps_per_epoch": steps_per_epoch, "lr_by_group": [float(g["initial_lr"])
                                                                             for g in opt.param_groups]},
            "batches_per_epoch": n_batches, "world_size": world, "global_batch_size": cfg.batch_size * world,
            "amp": "float16" if use_amp else "off", "deterministic": deterministic, "device": str(device),
        }
        if select == "test":
            record["warning"] = SELECT_TEST_WARNING
        return TrainResult(probs=probs, record=record)
