"""What a training step reads: seeded batches, preprocessed pixels, paired texts and per-group draws.

Everything random here comes from a ``torch.Generator`` seeded by (run seed, purpose, epoch, ...), never from
global state, so an epoch's batches are the same whether the run started at epoch 0 or resumed before it.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import torch

from fairbench.errors import FairbenchError

__all__ = ["TEXT_SOURCES", "GroupDraws", "PairTexts", "PixelStore", "epoch_batches", "generator", "shard"]

TEXT_SOURCES = ("auto", "reports", "prompts")


def generator(seed: int, *purpose: Any) -> torch.Generator:
    """A CPU generator seeded by the run seed and a purpose (e.g. ``"order", epoch``)."""
    digest = hashlib.sha256(repr((int(seed), *purpose)).encode()).digest()
    g = torch.Generator()
    g.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return g


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, world: int = 1) -> list[np.ndarray]:
    """The epoch's global batches: a seeded permutation of ``range(n)`` cut into ``ceil(n / (batch_size *
    world))`` batches whose sizes differ by at most one (every sample once per epoch, no tiny last batch)."""
    perm = torch.randperm(n, generator=generator(seed, "order", epoch)).numpy()
    k = max(1, math.ceil(n / (batch_size * world)))
    return [b for b in np.array_split(perm, k) if len(b)]


def shard(batch: np.ndarray, rank: int, world: int) -> np.ndarray:
    """This process's share of a global batch."""
    return batch[rank::world] if world > 1 else batch


class PixelStore:
    """Model-ready pixels of a split's images, preprocessed per batch from the split's images (the synthetic
    loader's arrays, or the memory-mapped preprocessed-image cache of a file-backed dataset).

    Nothing is kept between batches: a float32 copy of every split (3 x 224 x 224 x 4 bytes = 588 KiB per image,
    0.7 GiB for nih6x200's 1200 images) cost more memory than a LoRA step's model and optimizer, and preprocessing
    a batch of 32 synthetic 224-px images takes about 10 ms of CPU against minutes for the step."""

    def __init__(self, model: Any, images: Any, n: int) -> None:
        self.model, self.images, self.n = model, images, n

    def get(self, idx: np.ndarray) -> torch.Tensor:
        return self.model.preprocess(self.images.load(np.asarray(idx, dtype=np.int64)))


class PairTexts:
    """The text paired with each training image: the task's paired reports, or a prompt of the sample's class
    drawn per epoch (seeded) from the class prompts the model's zero-shot head uses."""

    def __init__(self, source: str, samples: Any, class_prompts: list[list[str]], seed: int, *, adapter: str) -> None:
        if source not in TEXT_SOURCES:
            raise FairbenchError(f"adapter '{adapter}': texts must be one of {', '.join(TEXT_SOURCES)}, got {source!r}")
        has_reports = samples.texts is not None and all(isinstance(t, str) and t for t in samples.texts)
        if source == "reports" and not has_reports:
            raise FairbenchError(f"adapter '{adapter}': texts=reports, but task '{samples.task}' has no paired texts "
                                 f"for every training image (use texts=prompts)")
        self.source = "reports" if source == "reports" or (source == "auto" and has_reports) else "prompts"
        self.samples, self.prompts, self.seed = samples, class_prompts, seed
        self.labels = np.asarray(samples.labels, dtype=np.int64)
        self._epoch: int | None = None
        self._choice: np.ndarray | None = None

    def batch(self, idx: np.ndarray, epoch: int) -> list[str]:
        if self.source == "reports":
            return [self.samples.texts[i] for i in idx]
        if self._epoch != epoch:
            u = torch.rand(len(self.labels), generator=generator(self.seed, "prompt", epoch), dtype=torch.float64)
            counts = np.asarray([len(self.prompts[c]) for c in self.labels])
            self._choice = np.minimum((u.numpy() * counts).astype(np.int64), counts - 1)
            self._epoch = epoch
        assert self._choice is not None
        return [self.prompts[self.labels[i]][self._choice[i]] for i in idx]


class GroupDraws:
    """Endless seeded draws of training pairs from each group of one attribute (FairCLIP's per-group loaders):
    ``draw(g)`` returns the next ``min(batch_size, n_g)`` indices of group ``g``'s shuffled order, reshuffling
    when fewer remain (no batch spans two shuffles, so none holds a pair twice). Samples with an unknown group
    are in no group. Restarted each epoch from (seed, epoch)."""

    def __init__(self, groups: np.ndarray, batch_size: int, seed: int, rank: int = 0) -> None:
        labels = [g for g in groups.tolist() if g is not None]
        self.names = sorted(set(map(str, labels)))
        self.members = {g: np.asarray([i for i, v in enumerate(groups.tolist()) if v is not None and str(v) == g],
                                      dtype=np.int64) for g in self.names}
        self.batch_size, self.seed, self.rank = batch_size, seed, rank
        self._state: dict[str, tuple[torch.Generator, np.ndarray, int]] = {}

    def begin_epoch(self, epoch: int) -> None:
        self._state = {}
        for gi, g in enumerate(self.names):
            gen = generator(self.seed, "group", gi, epoch, self.rank)
            self._state[g] = (gen, torch.randperm(len(self.members[g]), generator=gen).numpy(), 0)

    def draw(self, g: str) -> np.ndarray:
        gen, perm, pos = self._state[g]
        k = min(self.batch_size, len(perm))
        if pos + k > len(perm):  # like a loader with drop_last: a batch never spans two shuffles
            perm, pos = torch.randperm(len(perm), generator=gen).numpy(), 0
        self._state[g] = (gen, perm, pos + k)
        return self.members[g][perm[pos:pos + k]]
