"""CheXzero (rajpurkarlab/CheXzero): OpenAI CLIP ViT-B/32 fine-tuned on MIMIC-CXR, with its own preprocessing
and its positive-vs-negative zero-shot rule.

- **Weights**: ``torch.save(model.state_dict(), path)`` of OpenAI's ``clip.model.CLIP`` (``run_train.py``), the
  same key names as open_clip's ``CLIP`` (no ``input_resolution``/``context_length``/``vocab_size`` entries:
  those live in OpenAI's TorchScript archives only). Built as open_clip ``ViT-B-32-quickgelu`` (OpenAI's
  QuickGELU) and loaded strictly (zero missing, zero unexpected keys); read with ``weights_only=True``.
- **Preprocessing**: the card's ``resize: chexzero`` pipeline (:mod:`fairbench.models.preprocess`): longest
  side to 320 (LANCZOS) on a black square, normalised on the 0-255 scale with mean 101.48761 / std 83.43944,
  then a bicubic tensor resize to 224 (``zero_shot.py: make``).
- **Zero-shot** (``zero_shot.py: run_softmax_eval``): per label, the positive text ``"{}".format(label)`` and
  the negative text ``"no {}".format(label)`` (the card's ``options.pair_template``), each embedded and
  L2-normalised (over several labels of one class: mean of the normalised embeddings, re-normalised, as
  upstream's ``zeroshot_classifier`` does over templates); image features L2-normalised; logits are plain
  cosines (no ``logit_scale``); ``p = exp(pos) / (exp(pos) + exp(neg))``.
  How the per-class probabilities become the probabilities of fairbench's mutually exclusive classes:

  - a two-class task with ``evaluation.no_finding_class``: only the other (finding) class is scored,
    ``P(finding) = p``, ``P(no finding) = 1 - p`` (upstream's own "No Finding" row scores "No Finding" against
    "no No Finding", whose AUC in the released notebook is 0.07);
  - otherwise every class is scored and ``P(c) = p_c / sum_k p_k`` (the head returns ``log p_c``; the
    zero-shot adapter's softmax normalises). Upstream scores labels independently (multi-label), so the
    per-class ranking of ``p_c`` and of the normalised probability can differ.

  Upstream averages the probabilities of its ten released checkpoints; one card loads one checkpoint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from fairbench.errors import CardError
from fairbench.models.family import Family
from fairbench.models.openclip import OpenCLIPModel, build_open_clip, open_clip_inputs
from fairbench.models.zeroshot import ZeroShotHead

if TYPE_CHECKING:
    from fairbench.models.base import ModelCard
    from fairbench.models.weights import WeightsSource

__all__ = ["FAMILY", "CheXzeroModel", "build_chexzero", "chexzero_head"]

PAIR_TEMPLATE = ("{}", "no {}")


class CheXzeroModel(OpenCLIPModel):
    """An open_clip CLIP with CheXzero's similarity (plain cosine) and pair zero-shot head."""

    def logit_scale(self) -> torch.Tensor:
        return torch.tensor(1.0, device=self.device)  # upstream: image_features @ zeroshot_weights, no scale

    def zeroshot_head(self, task: Any, ensemble: str = "family") -> ZeroShotHead:
        return chexzero_head(self, task, ensemble)


def _pair(card: ModelCard) -> tuple[str, str]:
    pair = card.options.get("pair_template", list(PAIR_TEMPLATE))
    if (not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(isinstance(t, str) and "{}" in t
                                                                         for t in pair)):
        raise CardError(f"{card.path}: field 'options.pair_template' must be two templates with '{{}}' "
                        f"(positive, negative); got {pair!r}")
    return str(pair[0]), str(pair[1])


@torch.no_grad()
def chexzero_head(model: CheXzeroModel, task: Any, ensemble: str = "family") -> ZeroShotHead:
    if ensemble not in ("family", "mean_embedding"):
        raise CardError(f"model '{model.card.name}': CheXzero's zero-shot rule is its positive/negative pair; "
                        f"ensemble {ensemble!r} does not apply (use family)")
    if task.prompts is None:
        raise CardError(f"{task.path}: zero-shot needs a 'prompts' section (classnames) for model "
                        f"'{model.card.name}'")
    pos_t, neg_t = _pair(model.card)
    classes = list(task.classes)
    nf = task.evaluation.no_finding_class
    scored = [c for c in classes if c != nf] if (nf is not None and len(classes) == 2) else classes
    pos_texts = [[pos_t.format(n) for n in task.prompts.classnames[c]] for c in scored]
    neg_texts = [[neg_t.format(n) for n in task.prompts.classnames[c]] for c in scored]
    pos_emb = model.class_embeddings(pos_texts)
    neg_emb = model.class_embeddings(neg_texts)
    device = model.device

    def cosines(out: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        img = F.normalize(out["embedding"].to(device).float(), dim=-1)
        return img @ pos_emb.T, img @ neg_emb.T

    if scored != classes:
        fi = classes.index(scored[0])

        def score(out: dict[str, torch.Tensor]) -> torch.Tensor:
            pos, neg = cosines(out)
            logp = torch.cat([F.logsigmoid(neg - pos), F.logsigmoid(pos - neg)], dim=1)  # [no finding, finding]
            return logp if fi == 1 else logp.flip(1)
        combine = (f"two classes with no_finding_class {nf!r}: P({scored[0]}) = p of its pair, "
                   f"P({nf}) = 1 - p")
    else:
        def score(out: dict[str, torch.Tensor]) -> torch.Tensor:
            pos, neg = cosines(out)
            # p_c = exp(pos) / (exp(pos) + exp(neg)) = sigmoid(pos - neg); log p_c, and then
            return F.logsigmoid(pos - neg)  # the adapter's softmax gives p_c / sum_k p_k
        combine = "every class scored by its pair; P(c) = p_c / sum_k p_k"
    prompts = [p + n for p, n in zip(pos_texts, neg_texts)]
    if scored != classes:
        prompts = [prompts[0] if c in scored else [] for c in classes]
    record = {"style": "chexzero_pair", "rule": "pos_neg_softmax", "pair_template": [pos_t, neg_t],
              "probability": "p = exp(cos_pos) / (exp(cos_pos) + exp(cos_neg)), plain cosines (temperature 1)",
              "classes_scored": scored, "combine": combine,
              "label_embedding": "mean of the normalised embeddings of a class's names, re-normalised"}
    return ZeroShotHead(classes=tuple(classes), prompts=prompts, rule="pos_neg_softmax", score=score,
                        record=record)


def build_chexzero(card: ModelCard, source: WeightsSource, device: torch.device) -> CheXzeroModel:
    if card.preprocessing.resize != "chexzero":
        raise CardError(f"{card.path}: field 'preprocessing.resize' must be chexzero for family chexzero")
    _pair(card)
    model = build_open_clip(card, source, device)
    model.__class__ = CheXzeroModel  # same state; CheXzero's similarity and zero-shot head
    assert isinstance(model, CheXzeroModel)
    return model


FAMILY = Family(build=build_chexzero, default_files=("best_64_0.0001_original_17000_0.863.pt",),
                inputs=open_clip_inputs)
