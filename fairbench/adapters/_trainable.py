"""The base of every trainable adapter: loop parameters, checkpoint folder, selection record."""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import numpy as np

from fairbench.adapters.base import AdaptContext, Adapter
from fairbench.cards import card_sha256
from fairbench.errors import DataError, FairbenchError
from fairbench.train import dist
from fairbench.train.checkpoint import CheckpointStore
from fairbench.train.config import LOOP_DEFAULTS, TrainConfig
from fairbench.train.objectives import Objective

__all__ = ["TrainableAdapter", "check_trainable", "require_all_classes", "resolve_attribute"]


def require_all_classes(ctx: AdaptContext, adapter: str) -> None:
    n_classes = len(ctx.task.classes)
    present = set(np.unique(ctx.split("train").labels).tolist())
    missing = [ctx.task.classes[i] for i in range(n_classes) if i not in present]
    if missing:
        raise DataError(f"task '{ctx.task.name}': the training split has no sample of class(es) {missing}; "
                        f"adapter '{adapter}' cannot learn them")


def check_trainable(adapter: str, value: Any) -> str:
    """``trainable`` of the CLIP-loss adapters: ``released`` or ``all`` (:mod:`fairbench.train.towers`)."""
    from fairbench.train.towers import TRAINABLE_SETS

    if value not in TRAINABLE_SETS:
        raise FairbenchError(f"adapter '{adapter}': trainable must be one of {', '.join(TRAINABLE_SETS)}, "
                             f"got {value!r}")
    return str(value)


def resolve_attribute(ctx: AdaptContext, adapter: str, value: str, *, intersections: bool = False) -> str:
    """``auto``: ``race`` when the task has it (FairCLIP's default), else the task's first attribute. With
    ``intersections``, ``a*b`` names the intersection of attributes ``a`` and ``b``."""
    names = list(ctx.task.attributes)
    if not names:
        raise FairbenchError(f"adapter '{adapter}': task '{ctx.task.name}' declares no protected attribute")
    if value == "auto":
        return "race" if "race" in names else names[0]
    parts = value.split("*") if intersections else [value]
    unknown = [p for p in parts if p not in names]
    if unknown or len(set(parts)) != len(parts):
        hint = " or an intersection such as a*b" if intersections else ""
        raise FairbenchError(f"adapter '{adapter}': attribute '{value}' is not an attribute of task "
                             f"'{ctx.task.name}' (it has: {', '.join(names)}{hint})")
    return value


#: the epoch selections that score the validation split by groups of the adapter's attribute
GROUP_SELECTIONS = ("val_worst_group", "val_worst_cell_acc")


class TrainableAdapter(Adapter):
    """Subclasses add their own parameters to :data:`LOOP_DEFAULTS` and build an :class:`Objective`."""

    defaults: ClassVar[dict[str, Any]] = dict(LOOP_DEFAULTS)
    #: parameters that only some values of the ``switch`` parameter use: {value: parameters it ignores}
    unused_by_objective: ClassVar[dict[str, tuple[str, ...]]] = {}
    #: the parameter whose value decides which others apply
    switch: ClassVar[str] = "objective"
    #: the ``attribute`` parameter (where there is one) may name an intersection ``a*b``
    allow_intersections: ClassVar[bool] = False

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self.given = set(params or {})
        self._store: CheckpointStore | None = None
        value = self.params.get(self.switch)
        stray = sorted(self.given & set(self.unused_by_objective.get(str(value), ())))
        if stray:
            raise FairbenchError(f"adapter '{self.name}': parameter(s) {', '.join(stray)} do not apply to "
                                 f"{self.switch}={value}")
        self.config = TrainConfig.from_params(self.name, self.params)
        if self.config.select_on in GROUP_SELECTIONS and "attribute" not in self.params:
            raise FairbenchError(f"adapter '{self.name}': select_on={self.config.select_on} needs an adapter with an "
                                 f"'attribute' parameter (resample, reweight, groupdro, fairclip, robust_fair)")

    @abc.abstractmethod
    def build_objective(self, ctx: AdaptContext) -> Objective:
        """The model set up for training (LoRA injected, parameters frozen) and its objective."""

    def fingerprint(self, ctx: AdaptContext) -> str:
        return card_sha256({"adapter": self.name, "params": self.params, "model_card": ctx.model.card.sha256,
                            "weights": ctx.weights_sha256(), "task_card": ctx.task.sha256,
                            "train_ids": ctx.split("train").ids_sha256, "seed": ctx.seed,
                            "world_size": dist.world_size()})

    def run(self, ctx: AdaptContext) -> dict[str, np.ndarray]:
        from fairbench.train.loop import Trainer

        require_all_classes(ctx, self.name)
        fingerprint = self.fingerprint(ctx)  # before training changes any weight
        objective = self.build_objective(ctx)
        self._store = CheckpointStore(ctx.checkpoint_dir, fingerprint)
        labels = {s: ctx.split(s).labels for s in ("val", "test")}
        groups = None
        if self.config.select_on in GROUP_SELECTIONS:
            from fairbench.train.groups import group_labels

            attribute = resolve_attribute(ctx, self.name, str(self.params["attribute"]),
                                          intersections=self.allow_intersections)
            groups = group_labels(ctx.split("val").attributes, attribute)
            self.fitted["selection_groups"] = {"attribute": attribute,
                                               "groups": sorted({str(g) for g in groups})}
        trainer = Trainer(self.config, objective, name=self.name, seed=ctx.seed, labels=labels, store=self._store,
                          resume=ctx.resume, predict_splits=self.predict_splits, groups=groups)
        result = trainer.run()
        record = dict(result.record)
        self.fitted["epochs"] = record.pop("history")
        self.fitted["trained_parameters"] = record.pop("trained_parameters")
        self.fitted["train"] = record
        self.fitted.update(objective.record())
        self.fitted["checkpoints"] = {"dir": str(ctx.checkpoint_dir) if ctx.checkpoint_dir else None,
                                      "kept": bool(self.config.keep_checkpoints and ctx.checkpoint_dir)}
        return result.probs

    def finish(self, ctx: AdaptContext) -> None:
        if self._store is not None and not self.config.keep_checkpoints:
            self._store.discard()
