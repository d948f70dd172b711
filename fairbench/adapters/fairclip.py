"""FairCLIP (Luo et al., CVPR 2024): CLIP fine-tuning plus a Sinkhorn term per group of one attribute.

Loss per step: ``L_CLIP + lambda_fair * sum_g S(batch scores, group-g scores)``, where the group-g scores come
from an extra batch of ``fair_batch_size`` training pairs of group ``g`` (an endless seeded draw per group, as
the released per-group loaders), for every group of ``attribute`` (``auto``: race when the task has it, else
its first attribute; samples with an unknown group are in no group). Modes (see
:mod:`fairbench.train.fair`):

- ``code`` (default; the released ``finetune_FairCLIP.py``): scores ``diag(L @ L)`` of the scaled logits, group
  side without gradient and normalised to sum one, batch side unnormalised.
- ``paper``: cosine similarity of matched pairs on both sides, unnormalised, gradient through both sides.

Texts: the task's paired texts when every training image has one (synth reports, FairVLMed notes), else a
class prompt per sample (``texts``). The whole model trains (both towers and the logit scale), with the
released optimiser (Adam, betas (0.1, 0.1), eps 1e-6, L2 weight decay 6e-5, lr 1e-5, batch 32, 10 epochs).
Predictions are the family's zero-shot head with the fine-tuned weights. The epoch is selected on validation
AUC; ``select_on=test`` reproduces the released protocol (test AUC), warned and recorded.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

from fairbench.adapters._trainable import TrainableAdapter, resolve_attribute
from fairbench.adapters.base import AdaptContext
from fairbench.errors import FairbenchError
from fairbench.train import dist
from fairbench.train.config import LOOP_DEFAULTS
from fairbench.train.data import GroupDraws
from fairbench.train.fair import FAIR_MODES, fairclip_term, pair_scores
from fairbench.train.objectives import ClipObjective

__all__ = ["FairCLIP", "FairCLIPObjective", "FAIRCLIP_DEFAULTS", "GroupScores"]

#: the released FairCLIP script's settings (the 2024 lambda; the 2025 scripts use 1e-6)
FAIRCLIP_DEFAULTS: dict[str, Any] = {
    **LOOP_DEFAULTS, "epochs": 10, "batch_size": 32, "lr": 1e-5, "optimizer": "adam", "betas": [0.1, 0.1],
    "eps": 1e-6, "weight_decay": 6e-5, "schedule": "constant", "patience": 0,
    "attribute": "auto", "lambda_fair": 1e-7, "blur": 1e-4, "sinkhorn_scaling": 0.5, "fair_batch_size": 32,
    "texts": "auto", "train_logit_scale": "family",
}


class GroupScores:
    """FairCLIP's per-group side: draw a batch of group ``g``'s training pairs and score its matched pairs,
    without gradient in ``code`` mode."""

    def __init__(self, objective: ClipObjective, attribute: str, fair_batch_size: int, seed: int) -> None:
        groups = objective.samples["train"].attributes[attribute]
        self.objective = objective
        self.draws = GroupDraws(np.asarray(groups, dtype=object), fair_batch_size, seed, rank=dist.rank())
        if not self.draws.names:
            raise FairbenchError(f"attribute '{attribute}' has no known group in the training split")

    def scores(self, mode: str, epoch: int) -> list[torch.Tensor]:
        out = []
        for g in self.draws.names:
            idx = self.draws.draw(g)
            grad = torch.no_grad() if mode == "code" else contextlib.nullcontext()
            with grad:
                logits, cosine = self.objective.similarities(*self.objective.embed(idx, epoch))
                out.append(pair_scores(logits, cosine, mode))
        return out


class FairCLIPObjective(ClipObjective):
    def __init__(self, ctx: AdaptContext, model: Any, params: dict[str, Any], attribute: str, *, adapter: str) -> None:
        super().__init__(ctx, model, texts=str(params["texts"]), logit_scale=params["train_logit_scale"],
                         eval_batch_size=int(params["eval_batch_size"]), seed=ctx.seed, adapter=adapter)
        self.mode = str(params["mode"])
        self.lam, self.blur = float(params["lambda_fair"]), float(params["blur"])
        self.scaling = float(params["sinkhorn_scaling"])
        self.attribute = attribute
        self.groups = GroupScores(self, attribute, int(params["fair_batch_size"]), ctx.seed)
        self._clip: list[float] = []
        self._fair: list[float] = []

    def begin_epoch(self, epoch: int, batches: list[np.ndarray]) -> None:
        self.groups.draws.begin_epoch(epoch)
        self._clip, self._fair = [], []

    def batch_loss(self, idx: np.ndarray, epoch: int, step: int) -> torch.Tensor:
        logits, cosine = self.similarities(*self.embed(idx, epoch))
        clip = self.per_sample_loss(logits).mean()
        fair = fairclip_term(self.mode, pair_scores(logits, cosine, self.mode), self.groups.scores(self.mode, epoch),
                             blur=self.blur, scaling=self.scaling)
        self._clip.append(float(clip.detach()))
        self._fair.append(float(fair.detach()))
        return clip + self.lam * fair

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        return {"clip_loss": float(np.mean(self._clip)), "fair_term": float(np.mean(self._fair))}

    def record(self) -> dict[str, Any]:
        draws = self.groups.draws
        return {**super().record(), "attribute": self.attribute, "mode": self.mode,
                "groups": {g: int(len(draws.members[g])) for g in draws.names}}


class FairCLIP(TrainableAdapter):
    name = "fairclip"
    description = ("FairCLIP: CLIP-loss fine-tuning + lambda * sum over groups of a Sinkhorn divergence "
                   "(mode code|paper)")
    defaults = {**FAIRCLIP_DEFAULTS, "mode": "code"}

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        super().__init__(params)
        if self.params["mode"] not in FAIR_MODES:
            raise FairbenchError(f"adapter 'fairclip': mode must be one of {', '.join(FAIR_MODES)}, "
                                 f"got {self.params['mode']!r}")

    def build_objective(self, ctx: AdaptContext) -> FairCLIPObjective:
        attribute = resolve_attribute(ctx, self.name, str(self.params["attribute"]))
        for p in ctx.model.module.parameters():
            p.requires_grad_(True)
        return FairCLIPObjective(ctx, ctx.model, self.params, attribute, adapter=self.name)
