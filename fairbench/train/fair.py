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
"""

from __future__ import annotations

import functools

import torch

__all__ = ["sinkhorn_divergence", "pair_scores", "fairclip_term", "loss_distribution_term", "FAIR_MODES"]

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
