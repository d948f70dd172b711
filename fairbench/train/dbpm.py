"""Dynamic Bad Pair Mining (Lan et al., ICLR 2024), per training pair, and robust-fair's released batch-slot
variant.

Per pair (DBPM's ``models/dbpm_model.py``, adapted from time-series views to image-text pairs by sample id):

- the memory holds, for every training pair ``i`` and epoch ``t``, the pair's UNWEIGHTED loss ``l_i^(t)``
  (recorded before any reweighting);
- at the start of epoch ``e >= warm_epochs``: ``m_i = (1/e) * sum_{t<e} ((t+1)/E) * l_i^(t)`` with ``E`` the
  number of epochs of the run, ``mu`` and ``sigma`` the mean and population standard deviation of ``m`` over
  pairs;
- noisy positive pairs: ``m_i <= mu - beta_np * sigma``; faulty positive pairs: ``m_i >= mu + beta_fp * sigma``;
- during epoch ``e`` the loss of a flagged pair becomes ``l_i * phi(l_i; mu, sigma)`` (``phi`` the Gaussian
  density, evaluated at the detached current loss; not bounded by 1).

Batch slot (robust-fair's ``finetune_RobustFairCLIP.py``): slot ``i`` is the ``i``-th batch of an epoch
(different pairs every epoch, the loader shuffles); the memory holds the batch-mean loss AFTER reweighting;
from epoch ``warm_epochs`` on, ``h_i`` is the plain mean of slot ``i``'s history, and a slot is bad when
``h_i < mu - beta_np * sigma`` or ``h_i > mu + beta_fp * sigma`` (strict); its batch loss becomes
``L * phi(L; mu, sigma)`` with ``L`` detached inside ``phi``.

When ``sigma`` is zero (all values equal) nothing is flagged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

__all__ = [
    "DBPM_VARIANTS",
    "EpochFlags",
    "PairMemory",
    "SlotMemory",
    "epoch_weighted_mean",
    "gaussian_pdf",
    "pair_flags",
    "population_stats",
    "reweight",
    "slot_flags",
]

DBPM_VARIANTS = ("pair", "slot")


def epoch_weighted_mean(history: torch.Tensor, max_epochs: int) -> torch.Tensor:
    """``m_i = (1/e) * sum_{t<e} ((t+1)/E) * history[i, t]`` for ``history`` [n, e] (missing = NaN, skipped)."""
    e = history.shape[1]
    w = (torch.arange(e, dtype=torch.float64) + 1.0) / float(max_epochs)
    return torch.nansum(history.double() * w, dim=1) / float(e)


def population_stats(values: torch.Tensor) -> tuple[float, float]:
    v = values.double()
    mu = float(v.mean())
    return mu, float(((v - mu) ** 2).mean().sqrt())


def pair_flags(m: torch.Tensor, mu: float, sigma: float, beta_np: float, beta_fp: float
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(noisy, faulty) boolean masks: ``m <= mu - beta_np sigma`` and ``m >= mu + beta_fp sigma``."""
    if not sigma > 0 or not math.isfinite(sigma):
        none = torch.zeros_like(m, dtype=torch.bool)
        return none, none.clone()
    return m <= mu - beta_np * sigma, m >= mu + beta_fp * sigma


def slot_flags(h: torch.Tensor, mu: float, sigma: float, beta_low: float, beta_high: float) -> torch.Tensor:
    """Bad slots: ``h < mu - beta_low sigma`` or ``h > mu + beta_high sigma``."""
    if not sigma > 0 or not math.isfinite(sigma):
        return torch.zeros_like(h, dtype=torch.bool)
    return (h < mu - beta_low * sigma) | (h > mu + beta_high * sigma)


def gaussian_pdf(x: torch.Tensor | float, mu: float, sigma: float) -> torch.Tensor:
    x = torch.as_tensor(x)
    return torch.exp(-((x - mu) ** 2) / (2.0 * sigma ** 2)) / (sigma * math.sqrt(2.0 * math.pi))


def reweight(per_pair: torch.Tensor, bad: torch.Tensor, mu: float, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """DBPM's transformation: ``l_i * phi(l_i; mu, sigma)`` for flagged pairs (``phi`` at the detached loss),
    ``l_i`` otherwise. Returns (reweighted losses, weights)."""
    weights = torch.ones_like(per_pair)
    if bool(bad.any()):
        pdf = gaussian_pdf(per_pair.detach(), mu, sigma).to(per_pair.dtype)
        weights = torch.where(bad.to(per_pair.device), pdf, weights)
    return per_pair * weights, weights


@dataclass
class EpochFlags:
    """What DBPM decided at the start of an epoch."""

    epoch: int
    mu: float
    sigma: float
    noisy: torch.Tensor  # bool mask over pairs (or slots)
    faulty: torch.Tensor
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def bad(self) -> torch.Tensor:
        return self.noisy | self.faulty


class PairMemory:
    """Per-pair loss history [n_pairs, max_epochs] (NaN = not recorded)."""

    def __init__(self, n: int, max_epochs: int) -> None:
        self.max_epochs = max_epochs
        self.losses = torch.full((n, max_epochs), float("nan"), dtype=torch.float64)

    def record(self, idx: torch.Tensor, losses: torch.Tensor, epoch: int) -> None:
        self.losses[idx.long().cpu(), epoch] = losses.detach().double().cpu()

    def flags(self, epoch: int, beta_np: float, beta_fp: float) -> EpochFlags:
        m = epoch_weighted_mean(self.losses[:, :epoch], self.max_epochs)
        mu, sigma = population_stats(m)
        noisy, faulty = pair_flags(m, mu, sigma, beta_np, beta_fp)
        return EpochFlags(epoch, mu, sigma, noisy, faulty,
                          {"low": mu - beta_np * sigma, "high": mu + beta_fp * sigma})

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"losses": self.losses.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.losses = state["losses"].clone().double()


class SlotMemory:
    """robust-fair's released memory: one value per (batch slot, epoch) [n_slots, max_epochs]."""

    def __init__(self, n_slots: int, max_epochs: int) -> None:
        self.losses = torch.full((n_slots, max_epochs), float("nan"), dtype=torch.float64)

    def record(self, slot: int, loss: float, epoch: int) -> None:
        self.losses[slot, epoch] = float(loss)

    def flags(self, epoch: int, beta_low: float, beta_high: float) -> EpochFlags:
        h = torch.nanmean(self.losses[:, :epoch], dim=1)
        mu, sigma = population_stats(h)
        bad = slot_flags(h, mu, sigma, beta_low, beta_high)
        low = h < mu - beta_low * sigma
        return EpochFlags(epoch, mu, sigma, bad & low, bad & ~low,
                          {"low": mu - beta_low * sigma, "high": mu + beta_high * sigma})

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"losses": self.losses.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.losses = state["losses"].clone().double()
