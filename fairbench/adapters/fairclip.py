"""FairCLIP (Luo et al., CVPR 2024): CLIP fine-tuning plus a Sinkhorn term per group of one attribute.

Loss per step: ``L_CLIP + lambda_fair * sum_g S(batch scores, group-g scores)``, where the group-g scores come
from an extra batch of ``fair_batch_size`` training pairs of group ``g`` (an endless seeded draw per group, as
the released per-group loaders), for every group of ``attribute`` (``auto``: race when the task has it, else
its first attribute; samples with an unknown group are in no group). Modes (see
:mod:`fairbench.train.fair`):

- ``code`` (default; the released ``finetune_FairCLIP.py``): scores ``diag(L @ L)`` of the scaled logits, group
  side without gradient and normalised to sum one, batch side unnormalised. This term is group-blind: it equals
  ``n_groups * mean(s^2) / 2`` up to a relative 1e-5 whatever the group batches hold.
- ``paper``: cosine similarity of matched pairs on both sides, unnormalised, gradient through both sides.

The group batches run through the model in training mode like the main batch. On families with batch norm
(ResNet towers: tinyclip, MedCLIP-ResNet, GLoRIA) those extra forward passes would also move the running
statistics towards single-group batches and so change evaluation even when the term has no gradient; the
released scripts train ViT CLIP, which has no batch norm. ``group_bn=keep`` (default) restores the running
statistics after each group forward; ``group_bn=update`` lets them move (the literal loop on such a model).

Texts: the task's paired texts when every training image has one (synth reports, FairVLMed notes), else a
class prompt per sample (``texts``). ``trainable=released`` (default) trains what the released optimiser
covers (``model.transformer`` and ``model.visual``; the analogous towers for other families,
:data:`fairbench.train.towers.RELEASED_SETS`); ``all`` trains every parameter. The released optimiser: Adam,
betas (0.1, 0.1), eps 1e-6, L2 weight decay 6e-5, lr 1e-5, batch 32, 10 epochs. Predictions are the family's
zero-shot head with the fine-tuned weights. The epoch is selected on validation AUC; ``select_on=test``
reproduces the released protocol (test AUC), warned and recorded.

Every epoch records the mean CLIP loss, the mean term, ``lambda * term`` and, on the epoch's first batch, the
parameter-gradient norms of the CLIP loss and of ``lambda * term`` and their ratio (``adapt.fitted.epochs``).
``lambda_fair=0`` does not compute the term at all.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from fairbench.adapters._trainable import TrainableAdapter, check_trainable, resolve_attribute
from fairbench.adapters.base import AdaptContext
from fairbench.errors import FairbenchError
from fairbench.train import dist
from fairbench.train.config import LOOP_DEFAULTS
from fairbench.train.data import GroupDraws
from fairbench.train.fair import FAIR_MODES, fairclip_term, gradient_share, pair_scores
from fairbench.train.objectives import ClipObjective
from fairbench.train.towers import keep_norm_statistics, select_trainable

__all__ = [
    "FAIRCLIP_DEFAULTS",
    "GROUP_BN",
    "FairCLIP",
    "FairCLIPObjective",
    "FairTermObjective",
    "GroupScores",
    "check_group_bn",
    "check_lambda",
]

#: the released FairCLIP script's settings (the 2024 lambda; the 2025 scripts use 1e-6)
FAIRCLIP_DEFAULTS: dict[str, Any] = {
    **LOOP_DEFAULTS, "epochs": 10, "batch_size": 32, "lr": 1e-5, "optimizer": "adam", "betas": [0.1, 0.1],
    "eps": 1e-6, "weight_decay": 6e-5, "schedule": "constant", "patience": 0,
    "attribute": "auto", "lambda_fair": 1e-7, "blur": 1e-4, "sinkhorn_scaling": 0.5, "fair_batch_size": 32,
    "texts": "auto", "train_logit_scale": "family", "trainable": "released", "group_bn": "keep",
}
GROUP_BN = ("keep", "update")


def check_lambda(adapter: str, value: Any) -> float:
    try:
        lam = float(value)
    except (TypeError, ValueError):
        raise FairbenchError(f"adapter '{adapter}': parameter 'lambda_fair' must be a number, got {value!r}") from None
    if not math.isfinite(lam) or lam < 0:
        raise FairbenchError(f"adapter '{adapter}': parameter 'lambda_fair' must be finite and >= 0, got {value!r}")
    return lam


def check_group_bn(adapter: str, value: Any) -> str:
    if value not in GROUP_BN:
        raise FairbenchError(f"adapter '{adapter}': group_bn must be one of {', '.join(GROUP_BN)}, got {value!r}")
    return str(value)


class GroupScores:
    """FairCLIP's per-group side: draw a batch of group ``g``'s training pairs and score its matched pairs,
    without gradient in ``code`` mode; batch-norm running statistics are restored afterwards unless
    ``group_bn=update``."""

    def __init__(self, objective: ClipObjective, attribute: str, fair_batch_size: int, seed: int,
                 group_bn: str = "keep") -> None:
        groups = objective.samples["train"].attributes[attribute]
        self.objective = objective
        self.group_bn = group_bn
        self.draws = GroupDraws(np.asarray(groups, dtype=object), fair_batch_size, seed, rank=dist.rank())
        if not self.draws.names:
            raise FairbenchError(f"attribute '{attribute}' has no known group in the training split")

    def scores(self, mode: str, epoch: int) -> list[torch.Tensor]:
        out = []
        for g in self.draws.names:
            idx = self.draws.draw(g)
            grad = torch.no_grad() if mode == "code" else contextlib.nullcontext()
            stats = keep_norm_statistics(self.objective.model.module) if self.group_bn == "keep" \
                else contextlib.nullcontext()
            with grad, stats:
                logits, cosine = self.objective.similarities(*self.objective.embed(idx, epoch))
                out.append(pair_scores(logits, cosine, mode))
        return out


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


class FairTermObjective(ClipObjective):
    """A CLIP loss (the base; reweighted by DBPM in robust_fair) plus ``lambda_fair`` times a fairness term,
    with the per-epoch record both fairness-aware adapters share."""

    #: the adapter's name in the per-epoch log line
    label = "fair"

    def __init__(self, ctx: AdaptContext, model: Any, params: dict[str, Any], attribute: str, lam: float, *,
                 adapter: str) -> None:
        super().__init__(ctx, model, texts=str(params["texts"]), logit_scale=params["train_logit_scale"],
                         eval_batch_size=int(params["eval_batch_size"]), seed=ctx.seed, adapter=adapter)
        self.lam = lam
        self.blur, self.scaling = float(params["blur"]), float(params["sinkhorn_scaling"])
        self.attribute = attribute
        self._stats: dict[str, list[float]] = {}
        self._probe: dict[str, Any] = {}

    def reset_stats(self) -> None:
        self._stats = {"clip": [], "base": [], "fair": []}
        self._probe = {}

    def trained(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups(1.0) for p in g["params"] if p.requires_grad]

    def combine(self, base: torch.Tensor, fair: Callable[[], torch.Tensor], step: int,
                unweighted: torch.Tensor | None = None) -> torch.Tensor:
        """``base + lambda * fair()``; the term is not computed when lambda is 0. On the epoch's first batch,
        measures both parts' parameter gradients."""
        term = fair() if self.lam != 0 else None
        weighted = self.lam * term if term is not None else None
        if step == 0 and torch.is_grad_enabled():
            share = gradient_share(base, weighted, self.trained())
            self._probe = {"grad_norm_clip": share.base, "grad_norm_fair": share.extra, "grad_ratio": share.ratio,
                           "grad_probe_step": step}
        self._stats["base"].append(float(base.detach()))
        self._stats["clip"].append(float((unweighted if unweighted is not None else base).detach()))
        if term is not None:
            self._stats["fair"].append(float(term.detach()))
        return base if weighted is None else base + weighted

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        s = self._stats
        fair = _mean(s["fair"])
        return {"clip_loss": _mean(s["clip"]), "fair_term": fair, "lambda_fair": self.lam,
                "lambda_x_fair": self.lam * fair if fair is not None else 0.0,
                "grad_norm_clip": None, "grad_norm_fair": None, "grad_ratio": None, **self._probe}

    def epoch_line(self, entry: dict[str, Any]) -> str:
        def num(v: Any) -> str:
            return "off" if v is None else f"{v:.4g}"

        parts = [f"clip loss {num(entry.get('clip_loss'))}"]
        if entry.get("dbpm_loss") is not None:
            parts.append(f"after DBPM {num(entry['dbpm_loss'])}")
        parts += [f"fair term {num(entry.get('fair_term'))}", f"lambda x term {num(entry.get('lambda_x_fair'))}",
                  f"grad ratio {num(entry.get('grad_ratio'))}"]
        if "n_flagged" in entry:
            parts.append(f"DBPM flagged {entry['n_flagged']}, reweighted {entry.get('n_reweighted', 0)} "
                         f"(mean weight {num(entry.get('mean_weight'))})")
        return ", ".join(parts)

    def record(self) -> dict[str, Any]:
        return {**super().record(), "attribute": self.attribute, "lambda_fair": self.lam}


class FairCLIPObjective(FairTermObjective):
    label = "fairclip"

    def __init__(self, ctx: AdaptContext, model: Any, params: dict[str, Any], attribute: str, *, adapter: str) -> None:
        super().__init__(ctx, model, params, attribute, check_lambda(adapter, params["lambda_fair"]), adapter=adapter)
        self.mode = str(params["mode"])
        self.groups = GroupScores(self, attribute, int(params["fair_batch_size"]), ctx.seed, str(params["group_bn"]))

    def begin_epoch(self, epoch: int, batches: list[np.ndarray]) -> None:
        self.groups.draws.begin_epoch(epoch)
        self.reset_stats()

    def batch_loss(self, idx: np.ndarray, epoch: int, step: int) -> torch.Tensor:
        logits, cosine = self.similarities(*self.embed(idx, epoch))
        clip = self.per_sample_loss(logits).mean()
        return self.combine(clip, lambda: fairclip_term(
            self.mode, pair_scores(logits, cosine, self.mode), self.groups.scores(self.mode, epoch),
            blur=self.blur, scaling=self.scaling), step)

    def record(self) -> dict[str, Any]:
        draws = self.groups.draws
        return {**super().record(), "mode": self.mode, "group_bn": self.groups.group_bn,
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
        check_lambda(self.name, self.params["lambda_fair"])
        check_trainable(self.name, self.params["trainable"])
        check_group_bn(self.name, self.params["group_bn"])

    def build_objective(self, ctx: AdaptContext) -> FairCLIPObjective:
        attribute = resolve_attribute(ctx, self.name, str(self.params["attribute"]))
        self.fitted["parameters"] = select_trainable(ctx.model, str(self.params["trainable"]))
        return FairCLIPObjective(ctx, ctx.model, self.params, attribute, adapter=self.name)
