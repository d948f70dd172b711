"""Groups for bias mitigation: cells of (protected attribute group x label) over the training split, and the
three training-time uses of them.

- :func:`group_labels` reads one attribute, or an intersection ``a*b`` (the metrics suite's convention), per
  sample; a sample whose group is unknown forms the group ``unknown``.
- :class:`Cells` numbers the (group, label) cells, counts them and checks that every group has samples of
  every class (a cell with no sample cannot be balanced or weighted).
- :func:`balanced_batches` (``resample``, and GroupDRO's sampler): each epoch draws as many samples as the
  training split holds, with replacement, every cell equally likely (``torch.utils.data.WeightedRandomSampler``
  with weights 1 / cell size, as Sagawa et al.'s ``--reweight_groups``), seeded by (seed, epoch).
- :func:`inverse_frequency_weights` (``reweight``): ``w_i = n / (K n_c(i))`` for K non-empty cells, so the
  weights average 1 over the training split (scikit-learn's "balanced" class weights, over cells).
- :class:`GroupDRO` (``groupdro``): online GroupDRO as released with Sagawa et al. (ICLR 2020;
  ``kohpangwei/group_DRO``, ``loss.py`` ``LossComputer.compute_robust_loss``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from fairbench.errors import DataError, FairbenchError
from fairbench.train.data import generator

__all__ = [
    "UNKNOWN",
    "Cells",
    "GroupDRO",
    "GroupDROMitigation",
    "Mitigation",
    "Resample",
    "Reweight",
    "balanced_batches",
    "group_labels",
    "inverse_frequency_weights",
]

UNKNOWN = "unknown"
INTERSECTION_SEP = "*"


def group_labels(attributes: dict[str, np.ndarray], name: str) -> np.ndarray:
    """Each sample's group of attribute ``name`` (``a*b`` joins the parts); :data:`UNKNOWN` where any part is
    unknown. Object array of str."""
    parts = [attributes[p] for p in name.split(INTERSECTION_SEP)]
    out = np.empty(len(parts[0]), dtype=object)
    for i in range(len(out)):
        values = [p[i] for p in parts]
        out[i] = UNKNOWN if any(v is None for v in values) else INTERSECTION_SEP.join(str(v) for v in values)
    return out


@dataclass(frozen=True)
class Cells:
    """The (group, label) cells of the training split: ``cell[i]`` is sample ``i``'s cell index."""

    groups: tuple[str, ...]
    classes: tuple[str, ...]
    cell: np.ndarray  # (n,) index into groups x classes: group_index * n_classes + label
    counts: np.ndarray  # (n_groups * n_classes,) samples per cell

    @classmethod
    def build(cls, groups: np.ndarray, labels: np.ndarray, classes: list[str], *, attribute: str,
              adapter: str) -> Cells:
        names = sorted({str(g) for g in groups})
        index = {g: k for k, g in enumerate(names)}
        labels = np.asarray(labels, dtype=np.int64)
        cell = np.array([index[str(g)] for g in groups], dtype=np.int64) * len(classes) + labels
        counts = np.bincount(cell, minlength=len(names) * len(classes))
        empty = [(names[c // len(classes)], classes[c % len(classes)]) for c in np.flatnonzero(counts == 0)]
        if empty:
            listed = ", ".join(f"{g} x {c}" for g, c in empty[:6])
            raise DataError(f"adapter '{adapter}': the training split has no sample in (group x label) cell(s) "
                            f"{listed} of attribute '{attribute}'; every group needs samples of every class to "
                            f"balance or weight the cells (choose another attribute)")
        return cls(groups=tuple(names), classes=tuple(classes), cell=cell, counts=counts)

    @property
    def names(self) -> list[str]:
        return [f"{g} x {c}" for g in self.groups for c in self.classes]

    def sizes(self) -> dict[str, int]:
        return {name: int(n) for name, n in zip(self.names, self.counts, strict=True)}


def balanced_batches(cells: Cells, batch_size: int, seed: int, epoch: int, world: int = 1) -> list[np.ndarray]:
    """``n`` draws with replacement, every cell equally likely (probability ``1 / (K n_c)`` per sample), cut
    into ``ceil(n / (batch_size * world))`` batches of near-equal size."""
    n = len(cells.cell)
    p = 1.0 / cells.counts[cells.cell].astype(np.float64)
    p /= p.sum()
    g = generator(seed, "balanced", epoch)
    draws = torch.multinomial(torch.from_numpy(p), n, replacement=True, generator=g).numpy()
    k = max(1, math.ceil(n / (batch_size * world)))
    return [b for b in np.array_split(draws, k) if len(b)]


def inverse_frequency_weights(cells: Cells) -> np.ndarray:
    """``w_i = n / (K n_c(i))`` (mean 1 over the training split)."""
    n, k = len(cells.cell), int((cells.counts > 0).sum())
    return n / (k * cells.counts[cells.cell].astype(np.float64))


class GroupDRO:
    """Online GroupDRO over the cells (Sagawa et al. 2020, Algorithm 1, as released):

    per step, ``group_loss[g]`` = mean loss of the batch's samples in cell ``g`` (0 for a cell absent from the
    batch); ``q <- q * exp(eta * (group_loss + C / sqrt(n_g)))`` (the size adjustment only when ``C > 0``, as
    the release applies it only when every adjustment is positive), ``q <- q / sum(q)``; the loss is
    ``sum_g q_g group_loss[g]``. ``q`` starts uniform and persists across steps and epochs (checkpointed)."""

    def __init__(self, cells: Cells, eta: float, adjustment: float, device: torch.device) -> None:
        if not (math.isfinite(eta) and eta > 0):
            raise FairbenchError(f"adapter 'groupdro': eta must be a finite number > 0, got {eta!r}")
        if not (math.isfinite(adjustment) and adjustment >= 0):
            raise FairbenchError(f"adapter 'groupdro': adjustment must be a finite number >= 0, got {adjustment!r}")
        self.cells, self.eta, self.adjustment = cells, eta, adjustment
        self.k = len(cells.counts)
        self.cell = torch.from_numpy(cells.cell).to(device)
        self.adj = (adjustment / torch.sqrt(torch.from_numpy(cells.counts).double())).float().to(device)
        self.q = torch.full((self.k,), 1.0 / self.k, device=device)

    def loss(self, per_sample: torch.Tensor, idx: np.ndarray, update: bool = True) -> torch.Tensor:
        """The batch loss ``sum_g q_g group_loss[g]`` (after the ``q`` step when ``update``).

        Under data parallelism (an initialised process group of more than one process, ``idx`` this process's
        share of the global batch) the per-cell loss sums and counts are all-reduced first, so every process
        takes the same ``q`` step, on the global batch's cell losses, as one process on the whole batch would.
        The returned value is the global batch's loss; its gradient is ``world`` times this process's share of
        it, so DistributedDataParallel's gradient average equals the one-process gradient."""
        cell = self.cell[torch.from_numpy(np.asarray(idx)).to(self.cell.device)]
        onehot = torch.nn.functional.one_hot(cell, self.k).to(per_sample.dtype)  # (B, K)
        count = onehot.sum(dim=0)
        sums = onehot.T @ per_sample
        world = _process_group_size()
        if world > 1:
            stats = torch.cat([sums.detach(), count]).float()
            torch.distributed.all_reduce(stats)
            global_sums, global_count = stats[:self.k].to(sums.dtype), stats[self.k:].to(count.dtype)
        else:
            global_sums, global_count = sums.detach(), count
        denom = global_count + (global_count == 0).to(global_count.dtype)
        if update:
            adjusted = global_sums / denom + (self.adj if self.adjustment > 0 else 0.0)
            q = self.q * torch.exp(self.eta * adjusted)
            self.q = q / q.sum()
        q = self.q.to(per_sample.dtype)
        if world == 1:
            return (sums / denom) @ q
        local = world * ((sums / denom) @ q)
        return local + ((global_sums / denom) @ q - local).detach()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"q": self.q.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.q = state["q"].to(self.q.device).clone()

    def record(self) -> dict[str, float]:
        return {name: float(v) for name, v in zip(self.cells.names, self.q.tolist(), strict=True)}


def _process_group_size() -> int:
    """The number of processes in the initialised default process group (1 when there is none)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return int(torch.distributed.get_world_size())
    return 1


class Mitigation:
    """How a head objective turns per-sample losses into the batch loss, and which batches an epoch has:
    plain ERM here (the mean; every sample once per epoch); the subclasses below change one or both."""

    name = "erm"

    def reduce(self, per_sample: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
        return per_sample.mean()

    def batches(self, n: int, batch_size: int, seed: int, epoch: int, world: int) -> list[np.ndarray]:
        from fairbench.train.data import epoch_batches

        return epoch_batches(n, batch_size, seed, epoch, world)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        pass

    def record(self) -> dict[str, object]:
        return {}


class Resample(Mitigation):
    """Cell-balanced batches (:func:`balanced_batches`), mean loss."""

    name = "resample"

    def __init__(self, cells: Cells) -> None:
        self.cells = cells

    def batches(self, n: int, batch_size: int, seed: int, epoch: int, world: int) -> list[np.ndarray]:
        return balanced_batches(self.cells, batch_size, seed, epoch, world)


class Reweight(Mitigation):
    """Every sample once per epoch; the batch loss is ``mean_i(w_i l_i)`` with
    :func:`inverse_frequency_weights`."""

    name = "reweight"

    def __init__(self, cells: Cells, device: torch.device) -> None:
        self.cells = cells
        self.weights = torch.from_numpy(inverse_frequency_weights(cells)).float().to(device)

    def reduce(self, per_sample: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
        w = self.weights[torch.from_numpy(np.asarray(idx)).to(self.weights.device)]
        return (w.to(per_sample.dtype) * per_sample).mean()

    def record(self) -> dict[str, object]:
        n = self.cells.counts.sum()
        k = int((self.cells.counts > 0).sum())
        return {"weights": {name: float(n / (k * c)) for name, c in zip(self.cells.names, self.cells.counts,
                                                                       strict=True)}}


class GroupDROMitigation(Mitigation):
    """:class:`GroupDRO`'s loss, with cell-balanced batches when ``balanced`` (the release's
    ``--reweight_groups``, used in every command of its README)."""

    name = "groupdro"

    def __init__(self, dro: GroupDRO, balanced: bool) -> None:
        self.dro, self.balanced = dro, balanced

    def reduce(self, per_sample: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
        return self.dro.loss(per_sample, idx, update=torch.is_grad_enabled())

    def batches(self, n: int, batch_size: int, seed: int, epoch: int, world: int) -> list[np.ndarray]:
        if self.balanced:
            return balanced_batches(self.dro.cells, batch_size, seed, epoch, world)
        return super().batches(n, batch_size, seed, epoch, world)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.dro.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state:
            self.dro.load_state_dict(state)

    def record(self) -> dict[str, object]:
        return {"q": self.dro.record(), "eta": self.dro.eta, "adjustment": self.dro.adjustment,
                "balanced_sampling": self.balanced}
