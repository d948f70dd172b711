"""What the shared loop trains: an objective owns its modules, computes a batch loss and predicts a split.

- :class:`FeatureHead`: an MLP on frozen probe features (the ``mlp`` adapter).
- :class:`ImageHead`: the image encoder (or its LoRA adapters) with a linear head on the probe feature,
  cross-entropy on the task labels (``lora``/``full_ft`` with ``objective=head``).
- :class:`ClipObjective`: the CLIP loss on (image, paired text) with the family's similarity; predictions are
  the family's zero-shot head with the current weights (``lora``/``full_ft`` with ``objective=clip``; the base
  of ``fairclip`` and ``robust_fair``).
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fairbench.errors import FairbenchError
from fairbench.progress import track
from fairbench.train.data import PairTexts, PixelStore, epoch_batches
from fairbench.train.groups import Mitigation

__all__ = ["FAMILY_TRAIN_SCALE", "ClipObjective", "FeatureHead", "ImageHead", "Objective", "train_logit_scale"]

#: families whose zero-shot similarity carries no temperature (logit_scale() == 1): the CLIP loss needs one to
#: learn anything. GLoRIA's global contrastive loss multiplies cosines by temp3 = 10 (gloria/configs); BLIP-2's
#: ITC divides by a learned temperature initialised at 0.07. (The model interface has no training temperature.)
FAMILY_TRAIN_SCALE = {"gloria": 10.0, "blip2": 1.0 / 0.07}


def train_logit_scale(model: Any, spec: str | float) -> tuple[float | None, str]:
    """The factor that turns the family's similarity into CLIP-loss logits: None keeps the family's own
    (learned or fixed) scale; a number replaces it. Returns (scale, description)."""
    if isinstance(spec, str) and spec.strip().lower() == "family":
        scale = FAMILY_TRAIN_SCALE.get(model.card.family)
        if scale is None:
            return None, "family logit scale"
        return scale, f"{scale:g} ({model.card.family} training temperature)"
    try:
        value = float(spec)
    except (TypeError, ValueError):
        raise FairbenchError(f"train_logit_scale must be 'family' or a positive number, got {spec!r}") from None
    if value <= 0:
        raise FairbenchError(f"train_logit_scale must be 'family' or a positive number, got {spec!r}")
    return value, f"{value:g}"


class Objective(abc.ABC):
    #: every parameter and buffer the loop checkpoints (and wraps for data parallelism)
    module: nn.Module
    n_train: int
    device: torch.device

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        return [{"params": [p for p in self.module.parameters() if p.requires_grad], "lr": lr}]

    def train_mode(self) -> None:
        self.module.train()

    def eval_mode(self) -> None:
        self.module.eval()

    def train_batches(self, epoch: int, batch_size: int, seed: int, world: int) -> list[np.ndarray]:
        """The epoch's global batches of training-split row indices (default: every sample once, seeded)."""
        return epoch_batches(self.n_train, batch_size, seed, epoch, world)

    def begin_epoch(self, epoch: int, batches: list[np.ndarray]) -> None:
        """Called before an epoch's first step with its global batches."""

    @abc.abstractmethod
    def batch_loss(self, idx: np.ndarray, epoch: int, step: int) -> torch.Tensor:
        """The scalar loss of this process's share ``idx`` (training-split row indices) of step ``step``."""

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        """What to record for the epoch (plain numbers, lists, strings)."""
        return {}

    def epoch_line(self, entry: dict[str, Any]) -> str | None:
        """The objective's part of the log line printed after each epoch (None: no line)."""
        return None

    @abc.abstractmethod
    def predict(self, split: str) -> np.ndarray:
        """Class probabilities [n, C] for a split with the current weights (eval mode, no gradient)."""

    def state_dict(self) -> dict[str, Any]:
        """Objective state beyond the weights (tensors and plain containers), checkpointed every epoch."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def record(self) -> dict[str, Any]:
        """What to record in metrics.json (``adapt.fitted``)."""
        return {}


class _Mitigated:
    """Head objectives whose per-sample cross-entropy goes through a :class:`~fairbench.train.groups.Mitigation`
    (ERM by default; resample, reweight or GroupDRO for the mitigation adapters)."""

    mitigation: Mitigation = Mitigation()
    n_train: int

    def train_batches(self, epoch: int, batch_size: int, seed: int, world: int) -> list[np.ndarray]:
        return self.mitigation.batches(self.n_train, batch_size, seed, epoch, world)

    def state_dict(self) -> dict[str, Any]:
        return {"mitigation": self.mitigation.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mitigation.load_state_dict(state.get("mitigation") or {})

    def record(self) -> dict[str, Any]:
        m = self.mitigation
        return {} if m.name == "erm" else {"mitigation": {"name": m.name, **m.record()}}


class FeatureHead(_Mitigated, Objective):
    """An MLP on frozen probe features, standardised with training-split statistics."""

    def __init__(self, features: dict[str, np.ndarray], labels: np.ndarray, n_classes: int, *, hidden: list[int],
                 dropout: float, device: torch.device) -> None:
        x_tr = features["train"].astype(np.float64)
        mean, std = x_tr.mean(axis=0), x_tr.std(axis=0)
        del x_tr
        std = np.where(std > 0, std, 1.0)
        self.x = {s: torch.from_numpy(_standardised(f, mean, std)).to(device) for s, f in features.items()}
        self.y = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)
        layers: list[nn.Module] = []
        width = self.x["train"].shape[1]
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU(), nn.Dropout(dropout)]
            width = int(h)
        layers.append(nn.Linear(width, n_classes))
        self.head = nn.Sequential(*layers).to(device)
        self.module = nn.ModuleDict({"head": self.head})
        self.n_train = len(self.y)
        self.device = device

    def batch_loss(self, idx: np.ndarray, epoch: int, step: int) -> torch.Tensor:
        i = torch.from_numpy(idx).to(self.device)
        return self.mitigation.reduce(F.cross_entropy(self.head(self.x["train"][i]), self.y[i], reduction="none"), idx)

    @torch.no_grad()
    def predict(self, split: str) -> np.ndarray:
        self.eval_mode()
        x = self.x[split]  # in chunks of rows: the hidden activations of a whole large split are not held at once
        return torch.cat([torch.softmax(self.head(x[i:i + PREDICT_ROWS]).float(), dim=1)
                          for i in range(0, max(len(x), 1), PREDICT_ROWS)]).cpu().numpy()


#: rows a feature head scores at a time (a split of at most this many is one pass, as before chunking)
PREDICT_ROWS = 8192


def _standardised(f: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``((f - mean) / std).astype(float32)``, computed in chunks of rows (elementwise: the same values) so that
    no float64 copy of a whole split is held."""
    out = np.empty(f.shape, dtype=np.float32)
    for i in range(0, len(f), PREDICT_ROWS):
        out[i:i + PREDICT_ROWS] = (f[i:i + PREDICT_ROWS] - mean) / std
    return out


class _ModelObjective(Objective):
    """Shared plumbing for objectives that run the model's image encoder on pixels."""

    def __init__(self, ctx: Any, model: Any, *, eval_batch_size: int, head_lr: float | None = None) -> None:
        self.ctx, self.model, self.device = ctx, model, model.device
        self.samples = {s: ctx.split(s) for s in ("train", "val", "test")}
        self.pixels = {s: PixelStore(model, smp.images, len(smp)) for s, smp in self.samples.items()}
        self.n_train = len(self.samples["train"])
        self.eval_batch_size = eval_batch_size
        self.head_lr = head_lr
        self.freeze_norm = False

    def train_mode(self) -> None:
        self.module.train()
        if self.freeze_norm:
            from fairbench.train.towers import set_norm_eval

            set_norm_eval(self.module)

    def images(self, split: str, idx: np.ndarray) -> torch.Tensor:
        return self.pixels[split].get(idx).to(self.device)

    def eval_batches(self, split: str) -> list[np.ndarray]:
        n = len(self.samples[split])
        return [np.arange(s, min(n, s + self.eval_batch_size)) for s in range(0, n, self.eval_batch_size)]


class ImageHead(_Mitigated, _ModelObjective):
    """Cross-entropy through a linear head on the probe feature; the encoder parameters that require grad
    train with it (all that reach the feature for full fine-tuning, the LoRA weights for LoRA)."""

    def __init__(self, ctx: Any, model: Any, n_classes: int, *, eval_batch_size: int, head_lr: float) -> None:
        super().__init__(ctx, model, eval_batch_size=eval_batch_size, head_lr=head_lr)
        with torch.no_grad():
            model.module.eval()
            dim = model.image_outputs(self.images("train", np.arange(1)))["feature"].shape[1]
        self.head = nn.Linear(int(dim), n_classes).to(self.device)
        self.module = nn.ModuleDict({"model": model.module, "head": self.head})
        self.labels = torch.from_numpy(np.asarray(self.samples["train"].labels, dtype=np.int64))

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        encoder = [p for p in self.model.module.parameters() if p.requires_grad]
        groups = [{"params": list(self.head.parameters()), "lr": float(self.head_lr or lr)}]
        return ([{"params": encoder, "lr": lr}] if encoder else []) + groups

    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.model.image_outputs(pixels)["feature"].float())

    def batch_loss(self, idx: np.ndarray, epoch: int, step: int) -> torch.Tensor:
        y = self.labels[torch.from_numpy(idx)].to(self.device)
        return self.mitigation.reduce(F.cross_entropy(self.logits(self.images("train", idx)), y, reduction="none"), idx)

    @torch.no_grad()
    def predict(self, split: str) -> np.ndarray:
        self.eval_mode()
        batches = track(self.eval_batches(split), f"predicting {split} ({len(self.samples[split])} images)")
        out = [torch.softmax(self.logits(self.images(split, b)).float(), dim=1) for b in batches]
        return torch.cat(out).cpu().numpy()


class ClipObjective(_ModelObjective):
    """``0.5 * (CE(L, arange) + CE(L^T, arange))`` over a batch of (image, paired text) with ``L`` the family's
    similarity (its own scale, or ``train_logit_scale``). Texts: the task's paired reports, or class prompts
    (one drawn per sample and epoch). Predictions: the family's zero-shot head with the current weights."""

    def __init__(self, ctx: Any, model: Any, *, texts: str, logit_scale: str | float, eval_batch_size: int,
                 seed: int, adapter: str) -> None:
        super().__init__(ctx, model, eval_batch_size=eval_batch_size)
        from fairbench.models.zeroshot import family_prompts

        prompts, _ = family_prompts(model, ctx.task)
        self.texts = PairTexts(texts, self.samples["train"], prompts, seed, adapter=adapter)
        self.scale, self.scale_desc = train_logit_scale(model, logit_scale)
        self.module = nn.ModuleDict({"model": model.module})
        self.adapter = adapter

    # -- the loss --------------------------------------------------------------------------------
    def embed(self, idx: np.ndarray, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.model
        img = model.image_outputs(self.images("train", idx))["embedding"]
        txt = model.encode_text(model.tokenize(self.texts.batch(idx, epoch)))
        return img, txt

    def similarities(self, img: torch.Tensor, txt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits ``L`` [B, B] as the CLIP loss uses them, the family's unscaled similarity [B, B])."""
        sim = self.model.similarity(img, txt).float()
        family_scale = self.model.logit_scale()
        cosine = sim / family_scale
        logits = sim if self.scale is None else cosine * self.scale
        return logits, cosine

    @staticmethod
    def per_sample_loss(logits: torch.Tensor) -> torch.Tensor:
        """Each pair's CLIP loss, the mean of its image->text and text->image cross-entropies [B]."""
        target = torch.arange(logits.shape[0], device=logits.device)
        return 0.5 * (F.cross_entropy(logits, target, reduction="none")
                      + F.cross_entropy(logits.T, target, reduction="none"))

    def batch_loss(self, idx: np.ndarray, epoch: int, step: int) -> torch.Tensor:
        logits, _ = self.similarities(*self.embed(idx, epoch))
        return self.per_sample_loss(logits).mean()

    # -- predictions ------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, split: str) -> np.ndarray:
        self.eval_mode()
        head = self.model.zeroshot_head(self.ctx.task)
        scores = []
        for b in self.eval_batches(split):
            out = self.model.image_outputs(self.images(split, b))
            scores.append(head.score({k: out[k] for k in head.needs}))
        logits = head.finalize(torch.cat(scores))
        return torch.softmax(logits.float(), dim=1).cpu().numpy()

    def record(self) -> dict[str, Any]:
        return {"texts": self.texts.source, "train_logit_scale": self.scale_desc}

