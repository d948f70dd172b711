"""Shared by the classic bias-mitigation adapters (``resample``, ``reweight``, ``groupdro``): a classifier trained
with cross-entropy on the task labels, whose batches or batch loss use the (protected group x label) cells of
one attribute (:mod:`fairbench.train.groups`).

``backbone``:

- ``head`` (default): the ``mlp`` adapter's head on frozen probe features from the embedding cache (same
  architecture and defaults), so a mitigation cell costs about what an ``mlp`` cell costs and differs from it
  only in the mitigation;
- ``lora``: LoRA on the model card's targets plus a linear head on the probe feature, end to end (the ``lora``
  adapter's ``objective=head`` setup and defaults);
- ``full``: every parameter reaching the probe feature plus a linear head (``full_ft`` with ``objective=head``).

``attribute``: ``auto`` (race when the task has it, else its first attribute), a task attribute, or an
intersection ``a*b``. The cells used and their sizes are recorded in ``adapt.fitted.cells``.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import numpy as np

from fairbench.adapters._trainable import TrainableAdapter, resolve_attribute
from fairbench.adapters.base import AdaptContext
from fairbench.adapters.mlp import feature_head
from fairbench.errors import FairbenchError
from fairbench.train.config import LOOP_DEFAULTS
from fairbench.train.groups import Cells, Mitigation, group_labels
from fairbench.train.objectives import FeatureHead, ImageHead, Objective

__all__ = ["BACKBONES", "MitigationAdapter", "backbone_defaults"]

BACKBONES = ("head", "lora", "full")
_HEAD = {**LOOP_DEFAULTS, "epochs": 100, "batch_size": 128, "lr": 1e-3, "weight_decay": 1e-4,
         "schedule": "constant", "patience": 10}
_ENCODER = {**LOOP_DEFAULTS, "epochs": 10, "batch_size": 32, "schedule": "cosine", "patience": 3}
_SETUP = {"head": {**_HEAD}, "lora": {**_ENCODER, "lr": 1e-4}, "full": {**_ENCODER, "lr": 1e-5}}
_OWN = {"backbone": "head", "attribute": "auto", "hidden": [256], "dropout": 0.1, "head_lr": 1e-3, "r": 8,
        "alpha": 16.0, "lora_dropout": 0.1}
_UNUSED = {"head": ("head_lr", "r", "alpha", "lora_dropout"), "lora": ("hidden", "dropout"),
           "full": ("hidden", "dropout", "r", "alpha", "lora_dropout")}


def backbone_defaults(backbone: str, own: dict[str, Any]) -> dict[str, Any]:
    """Every parameter with its default for ``backbone``: the loop's (as ``mlp`` for ``head``, as
    ``lora``/``full_ft`` otherwise), the shared ones, then the adapter's own."""
    return {**_SETUP[backbone], **_OWN, "backbone": backbone, **own}


class MitigationAdapter(TrainableAdapter):
    """Subclasses give their own parameters (``own``) and the :class:`Mitigation` for the cells."""

    own: ClassVar[dict[str, Any]] = {}
    switch = "backbone"
    unused_by_objective = _UNUSED
    allow_intersections = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.defaults = backbone_defaults("head", cls.own)

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        backbone = (params or {}).get("backbone", "head")
        if backbone not in BACKBONES:
            raise FairbenchError(f"adapter '{self.name}': backbone must be one of {', '.join(BACKBONES)}, "
                                 f"got {backbone!r}")
        self.defaults = self.preset(backbone_defaults(str(backbone), self.own), params or {})  # type: ignore[misc]
        super().__init__(params)  # numbers (eta > 0, adjustment >= 0, ...) checked by parse_params' PARAM_RANGES

    def preset(self, defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
        """The defaults the given parameters override (a subclass's named recipe changes them here)."""
        return defaults

    @abc.abstractmethod
    def mitigation(self, cells: Cells, ctx: AdaptContext) -> Mitigation:
        """The batches and loss reduction for these cells."""

    def build_objective(self, ctx: AdaptContext) -> Objective:
        p = self.params
        attribute = resolve_attribute(ctx, self.name, str(p["attribute"]), intersections=True)
        train = ctx.split("train")
        cells = Cells.build(group_labels(train.attributes, attribute), train.labels, list(ctx.task.classes),
                            attribute=attribute, adapter=self.name)
        mitigation = self.mitigation(cells, ctx)  # checks that depend on the data, before any training
        n_classes = len(ctx.task.classes)
        obj: FeatureHead | ImageHead
        if p["backbone"] == "head":
            obj = feature_head(ctx, p, self.name)
        else:
            self.fitted[p["backbone"]] = self._prepare_encoder(ctx)
            obj = ImageHead(ctx, ctx.model, n_classes, eval_batch_size=int(p["eval_batch_size"]),
                            head_lr=float(p["head_lr"]))
            obj.freeze_norm = p["backbone"] == "lora"
        obj.mitigation = mitigation
        self.fitted.update({"attribute": attribute, "backbone": p["backbone"], "cells": cells.sizes(),
                            "groups": {g: int(np.sum(cells.counts[k * n_classes:(k + 1) * n_classes]))
                                       for k, g in enumerate(cells.groups)}})
        return obj

    def _prepare_encoder(self, ctx: AdaptContext) -> dict[str, Any]:
        from fairbench.train.towers import inject_lora, train_probe_feature

        p = self.params
        if p["backbone"] == "full":
            return train_probe_feature(ctx.model)
        if int(p["r"]) < 1:
            raise FairbenchError(f"adapter '{self.name}': r must be at least 1, got {p['r']!r}")
        return inject_lora(ctx.model, r=int(p["r"]), alpha=float(p["alpha"]), dropout=float(p["lora_dropout"]),
                           text=False)
