"""The Sinkhorn fairness terms of FairCLIP and robust-fair.

``sinkhorn_divergence`` is geomloss' ``SamplesLoss("sinkhorn", p=2, blur=blur, scaling=scaling, debias=True)``
on 1-D samples with uniform weights: cost ``|x - y|^2 / 2``, entropic regularisation ``epsilon = blur^2`` and
the debiased divergence ``S = OT(a, b) - OT(a, a) / 2 - OT(b, b) / 2``.

FairCLIP's term compares, for every group ``g`` of one attribute, the distribution of a score over the main
batch with its distribution over a batch drawn from group ``g`` (:func:`fairclip_term`):

- ``code`` (the released ``finetune_FairCLIP.py``): the score is the diagonal of ``logits_per_image @
  logits_per_text.T`` where ``logits_per_text = logits_per_image.T``, i.e. ``s_j = (L L)_jj = sum_k L_jk L_kj``
  for the scaled logits ``L``; the group side is computed without gradient and normalised to sum to one; the
  main-batch side is not normalised.
- ``paper``: the score is the cosine similarity of each matched pair (diagonal of the cosine matrix), on both
  sides, unnormalised, and the gradient flows through both sides.

robust-fair's term (:func:`loss_distribution_term`) compares each group's per-sample losses with the whole
batch's.

Scale. For 1-D samples and a small blur the divergence is close to ``W2^2 / 2``, whose gradient with respect to
a sample ``x_i`` of an ``n``-sample side is ``(x_i - T(x_i)) / n`` (``T`` the optimal transport map). The mean
CLIP loss has gradient ``1 / n`` with respect to each per-sample loss, so on the ``loss`` term ``lambda_fair``
is in natural units: at ``lambda_fair = 1`` a sample whose loss sits ``d`` nats from where the other side's
distribution puts it carries an extra ``d`` times its own CLIP-loss gradient. :func:`gradient_share` measures
the ratio of the two parameter gradients on a batch.

FairCLIP's released term is group-blind (:func:`fairclip_code_closed_form`): the group side, divided by its
sum, lies in [0, 1], while the batch scores ``s = diag(L L)`` are of order ``B x scale^2`` (about 1e4 to 1e5 for
CLIP), so ``S(s, s~_g) ~= mean(s^2) / 2`` for every group, whatever its pairs are.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

__all__ = [
    "FAIR_MODES",
    "GradientShare",
    "fairclip_code_closed_form",
    "fairclip_term",
    "gradient_share",
    "loss_distribution_term",
    "pair_scores",
    "sinkhorn_divergence",
]

FAIR_MODES = ("code", "paper")


@functools.lru_cache(maxsize=8)
def _samples_loss(blur: float, scaling: float):  # type: ignore[no-untyped-def]
    from geomloss import SamplesLoss

    return SamplesLoss("sinkhorn", p=2, blur=blur, scaling=scaling, debias=True, backend="tensorized")


def sinkhorn_divergence(x: torch.Tensor, y: torch.Tensor, *, blur: float, scaling: float = 0.5) -> torch.Tensor:
    """Debiased Sinkhorn divergence between the 1-D samples ``x`` [n] and ``y`` [m] (uniform weights), in
    float32 outside any autocast region."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        return _samples_loss(float(blur), float(scaling))(x.float().reshape(-1, 1), y.float().reshape(-1, 1))


def pair_scores(logits: torch.Tensor, cosine: torch.Tensor, mode: str) -> torch.Tensor:
    """The per-pair score FairCLIP compares: ``diag(L @ L)`` (``code``) or ``diag(cosine)`` (``paper``);
    ``logits`` is ``logits_per_image`` [B, B] (scaled), ``cosine`` the unscaled similarity [B, B]."""
    if mode == "code":
        logits_per_text = logits.T
        return (logits @ logits_per_text.T).diagonal()  # as released: sum_k L_jk L_kj, not sum_k L_jk^2
    if mode == "paper":
        return cosine.diagonal()
    raise ValueError(f"mode must be one of {FAIR_MODES}, got {mode!r}")


def fairclip_term(mode: str, batch_scores: torch.Tensor, group_scores: list[torch.Tensor], *, blur: float,
                  scaling: float = 0.5) -> torch.Tensor:
    """``sum_g S(batch, group g)``. In ``code`` mode the group side carries no gradient and is divided by its
    sum (one-sided normalisation); in ``paper`` mode both sides are used as they are."""
    total = batch_scores.new_zeros(())
    for s_g in group_scores:
        if mode == "code":
            s_g = s_g.detach()
            s_g = s_g / s_g.sum()
        total = total + sinkhorn_divergence(batch_scores, s_g, blur=blur, scaling=scaling)
    return total


def loss_distribution_term(per_sample: torch.Tensor, groups: list[str | None], *, blur: float,
                           scaling: float = 0.5) -> tuple[torch.Tensor, dict[str, int]]:
    """``sum_g S(losses of the batch, losses of group g's samples in the batch)`` over the groups present
    (unknown = None is in no group); gradient through both sides. Returns the term and the group sizes."""
    total = per_sample.new_zeros(())
    sizes: dict[str, int] = {}
    for g in sorted({str(v) for v in groups if v is not None}):
        idx = [i for i, v in enumerate(groups) if v is not None and str(v) == g]
        sizes[g] = len(idx)
        total = total + sinkhorn_divergence(per_sample, per_sample[torch.tensor(idx, device=per_sample.device)],
                                            blur=blur, scaling=scaling)
    return total, sizes


def fairclip_code_closed_form(batch_scores: torch.Tensor, n_groups: int) -> float:
    """What FairCLIP's released term is worth when the batch scores dwarf the normalised group side:
    ``n_groups * mean(s^2) / 2`` (no group information enters)."""
    s = batch_scores.detach().double()
    return float(n_groups * 0.5 * (s ** 2).mean())


@dataclass(frozen=True)
class GradientShare:
    """Parameter-gradient norms of the two parts of a loss on one batch."""

    base: float  # ||grad(base loss)||
    extra: float  # ||grad(lambda * term)||

    @property
    def ratio(self) -> float | None:
        return self.extra / self.base if self.base > 0 else None


def _grad_norm(loss: torch.Tensor | None, params: list[torch.Tensor]) -> float:
    if loss is None or not loss.requires_grad:
        return 0.0
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    total = sum(float(g.detach().double().pow(2).sum()) for g in grads if g is not None)
    return math.sqrt(total)


def gradient_share(base: torch.Tensor, extra: torch.Tensor | None, params: list[torch.Tensor]) -> GradientShare:
    """``||grad(base)||`` and ``||grad(extra)||`` over ``params`` (the parameters the optimiser steps), both from
    the same forward pass (the graph is kept for the training step's own backward)."""
    return GradientShare(base=_grad_norm(base, params), extra=_grad_norm(extra, params))
