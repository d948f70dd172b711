"""Shared by the fine-tuning adapters (:mod:`fairbench.adapters.full_ft`, :mod:`fairbench.adapters.lora`):
fine-tuning the image encoder: ``full_ft`` (every weight) and ``lora`` (low-rank adapters via peft).

Objectives (``objective``):

- ``head`` (default): a linear head on the probe feature, cross-entropy on the task labels; predictions are
  its softmax. ``full_ft`` trains the parameters that reach the probe feature (found by a backward pass) and
  the head; ``lora`` trains the LoRA weights and the head. The head has its own learning rate (``head_lr``).
- ``clip``: the CLIP loss on (image, text) pairs, text = a class prompt of the sample's class drawn per epoch
  (``texts=prompts``, the default; FLYP-style) or the task's paired reports (``texts=reports``/``auto``);
  predictions are the family's zero-shot head with the fine-tuned weights. ``full_ft`` trains the whole model
  (``trainable=all``: both towers, and a learnable logit scale where the family has one) or the parameter set
  of FairCLIP's released scripts (``trainable=released``; :data:`fairbench.train.towers.RELEASED_SETS`), which
  makes it the released CLIP fine-tuning baseline of ``fairclip`` and ``robust_fair``.

LoRA (``r``, ``alpha``, ``lora_dropout``) targets the model card's ``lora_targets`` (the vision tower);
``lora_text=true`` also adapts every ``nn.Linear`` used only by the text path (useful with ``objective=clip``).
Batch-norm statistics stay frozen under LoRA.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

from fairbench.adapters._trainable import TrainableAdapter
from fairbench.adapters.base import AdaptContext
from fairbench.errors import FairbenchError
from fairbench.train.config import LOOP_DEFAULTS
from fairbench.train.objectives import ClipObjective, ImageHead, Objective

__all__ = ["FINETUNE_DEFAULTS", "OBJECTIVES", "FineTuneAdapter"]

OBJECTIVES = ("head", "clip")
FINETUNE_DEFAULTS = {**LOOP_DEFAULTS, "epochs": 10, "batch_size": 32, "schedule": "cosine", "patience": 3,
                     "objective": "head", "head_lr": 1e-3, "texts": "prompts", "train_logit_scale": "family"}
_UNUSED = {"head": ("texts", "train_logit_scale", "trainable"), "clip": ("head_lr",)}


class FineTuneAdapter(TrainableAdapter):
    """``prepare_model`` decides which weights train; the objective is ``head`` or ``clip``."""

    unused_by_objective = _UNUSED
    #: keep batch-norm running statistics frozen while training (LoRA: the base model is frozen)
    freeze_norm: ClassVar[bool] = False

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        super().__init__(params)
        if self.params["objective"] not in OBJECTIVES:
            raise FairbenchError(f"adapter '{self.name}': objective must be one of {', '.join(OBJECTIVES)}, "
                                 f"got {self.params['objective']!r}")

    @abc.abstractmethod
    def prepare_model(self, ctx: AdaptContext) -> dict[str, Any]:
        """Set which weights train; returns what to record."""

    def build_objective(self, ctx: AdaptContext) -> Objective:
        record = self.prepare_model(ctx)
        self.fitted[self.name] = record
        p = self.params
        if p["objective"] == "head":
            obj: ImageHead | ClipObjective = ImageHead(ctx, ctx.model, len(ctx.task.classes),
                                                       eval_batch_size=int(p["eval_batch_size"]),
                                                       head_lr=float(p["head_lr"]))
        else:
            obj = ClipObjective(ctx, ctx.model, texts=str(p["texts"]), logit_scale=p["train_logit_scale"],
                                eval_batch_size=int(p["eval_batch_size"]), seed=ctx.seed, adapter=self.name)
        obj.freeze_norm = self.freeze_norm
        return obj
