"""Zero-shot classification as each family's official code does it: prompts, ensembling, normalisation.

A :class:`ZeroShotHead` is built once per task. It holds the prompts of every class and turns image outputs
(a batch of :meth:`VLModel.image_outputs`) into class logits; ``finalize`` then sees the logits of a whole
split (GLoRIA z-scores each class column across the images there). The zero-shot adapter only feeds it.

Prompts (the card's ``prompt_style``):

- ``templates``: the task card's templates x class-name synonyms.
- ``chexpert``: the CheXpert generator (:mod:`fairbench.models.chexpert_prompts`) for every task class that
  is a CheXpert class by its id (Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion), with the card's
  ``options.prompts`` ``{n, seed}``, when every class of the task is one; otherwise every class uses the task
  templates (never a mix: one class with generated prompts beside others with templates compares unlike prompt
  sets). Which source each class used, the number of prompts per class, the seed and the prompts are recorded
  in metrics.json (``adapt.fitted``).

Ensembling (``ensemble``; ``family`` = the family's :attr:`VLModel.default_ensemble`):

- ``mean_embedding``: CLIP's prompt ensembling (mean of normalised prompt embeddings, re-normalised).
- ``mean_logit``: mean over prompts of the family's logits (MedCLIP's ``PromptClassifier(ensemble=True)``).
- ``max_logit``: max over prompts (GLoRIA's ``zero_shot_classification``; MedCLIP with ``ensemble=False``).
- ``name_sum``: every class name of the task card is a sub-class (its templates ensembled as in
  ``mean_embedding``); softmax over all sub-classes; a class's probability is the sum over its names. Right for
  composite classes ("abnormal" = any of several findings), where one averaged embedding blurs unrelated
  findings. The head returns log class probabilities, so the adapter's softmax gives back those sums.

With ``family``, a task card's ``prompts.ensemble`` wins for families that use the card's templates (it
describes how the task's class names combine); otherwise the family's rule applies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch

from fairbench.errors import CardError
from fairbench.models.chexpert_prompts import chexpert_class_for, generate_chexpert_prompts

if TYPE_CHECKING:
    from fairbench.data.task import TaskCard


class VLModel(Protocol):
    """What a zero-shot head needs of a model: every :class:`fairbench.models.base.VLModel` has it. A protocol
    rather than an import, because the base module builds heads with this module (no import circle)."""

    card: Any
    device: torch.device
    default_ensemble: str

    def tokenize(self, texts: list[str]) -> Any: ...

    def encode_text(self, tokens: Any) -> torch.Tensor: ...

    def similarity(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor: ...

    def class_embeddings(self, prompts: list[list[str]]) -> torch.Tensor: ...

    def zeroshot_logits(self, image_emb: torch.Tensor, class_emb: torch.Tensor) -> torch.Tensor: ...

__all__ = [
    "ENSEMBLES",
    "PROMPT_STYLES",
    "ZeroShotHead",
    "build_head",
    "family_prompts",
    "reduce_prompts",
    "task_prompts",
]

ENSEMBLES = ("mean_embedding", "mean_logit", "max_logit", "name_sum")
PROMPT_STYLES = ("templates", "chexpert")


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@dataclass
class ZeroShotHead:
    classes: tuple[str, ...]
    prompts: list[list[str]]
    rule: str
    #: image outputs of one batch (the keys in ``needs``) -> class logits ``[n, n_classes]``
    score: Callable[[dict[str, torch.Tensor]], torch.Tensor]
    needs: tuple[str, ...] = ("embedding",)
    #: logits of a whole split -> logits (identity unless the family normalises across images)
    finalize: Callable[[torch.Tensor], torch.Tensor] = _identity
    #: images per forward pass when ``needs`` goes beyond the cached embedding and feature
    batch_size: int = 64
    record: dict[str, Any] = field(default_factory=dict)


def task_prompts(task: TaskCard) -> list[list[str]]:
    """The task card's prompts: every template x every class-name synonym, per class."""
    prompts = task.prompts
    if prompts is None:
        raise CardError(f"{task.path}: zero-shot needs a 'prompts' section (templates and classnames)")
    return [[t.format(name) for t in prompts.templates for name in prompts.classnames[c]] for c in task.classes]


def family_prompts(model: VLModel, task: TaskCard) -> tuple[list[list[str]], dict[str, Any]]:
    """Prompts per class under the card's ``prompt_style``, and what to record about them."""
    style = model.card.prompt_style
    if style == "templates":
        return task_prompts(task), {"style": "templates"}
    if style != "chexpert":
        raise CardError(f"{model.card.path}: field 'prompt_style' must be one of {', '.join(PROMPT_STYLES)}; "
                        f"got {style!r}")
    opts = dict(model.card.options.get("prompts", {}))
    n, seed = opts.get("n"), int(opts.get("seed", 0))
    keys = {c: chexpert_class_for(c) for c in task.classes}
    record: dict[str, Any] = {"style": "chexpert", "n": n, "seed": seed}
    if all(k is not None for k in keys.values()):
        generated = generate_chexpert_prompts(None if n is None else int(n), seed)
        out = [list(generated[keys[c]]) for c in task.classes]
        return out, {**record, "sources": {c: f"chexpert:{keys[c]}" for c in task.classes},
                     "n_prompts": {c: len(p) for c, p in zip(task.classes, out)}}
    # Not every class is a CheXpert class: the generator cannot cover them all, and one class with ten generated
    # report phrases beside others with the task's templates would compare unlike prompt sets (with text averaged
    # per class this can favour either side). Every class then uses the task templates.
    bare = [c for c, k in keys.items() if k is None]
    if task.prompts is None:
        raise CardError(f"{task.path}: class '{bare[0]}' has no CheXpert prompts and the task card has no "
                        f"'prompts' section to fall back on (model '{model.card.name}')")
    out = task_prompts(task)
    if len(bare) < len(task.classes):
        record["note"] = (f"task templates for every class: {', '.join(bare)} have no CheXpert prompts, and mixing "
                          f"generated prompts for {', '.join(c for c in task.classes if c not in bare)} with "
                          f"templates for the others would give the classes unlike prompt sets")
    return out, {**record, "sources": {c: "templates" for c in task.classes},
                 "n_prompts": {c: len(p) for c, p in zip(task.classes, out)}}


def reduce_prompts(rule: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """``[n_images, n_prompts]`` -> ``[n_images]`` for ``mean_logit`` / ``max_logit``."""
    if rule == "mean_logit":
        return lambda s: s.mean(dim=1)
    if rule == "max_logit":
        return lambda s: s.max(dim=1).values
    raise CardError(f"zero-shot ensemble must be one of {', '.join(ENSEMBLES)}; got {rule!r}")


def resolve_rule(model: VLModel, ensemble: str, task: TaskCard | None = None) -> str:
    rule = ensemble
    if ensemble == "family":
        task_rule = task.prompts.ensemble if task is not None and task.prompts is not None else None
        rule = task_rule if task_rule and model.card.prompt_style == "templates" else model.default_ensemble
    if rule not in ENSEMBLES:
        raise CardError(f"adapter 'zeroshot': ensemble must be family, {', '.join(ENSEMBLES)}; got {ensemble!r}")
    return rule


@torch.no_grad()
def build_head(model: VLModel, task: TaskCard, ensemble: str = "family") -> ZeroShotHead:
    """The generic head: the family's ``tokenize``/``encode_text``/``similarity`` and one ensembling rule."""
    rule = resolve_rule(model, ensemble, task)
    prompts, record = family_prompts(model, task)
    device = model.device
    if rule == "name_sum":
        if model.card.prompt_style != "templates" or task.prompts is None:
            raise CardError(f"zero-shot ensemble 'name_sum' needs the task card's templates and class names "
                            f"(model '{model.card.name}' uses prompt_style {model.card.prompt_style!r})")
        names = [(ci, [t.format(name) for t in task.prompts.templates])
                 for ci, c in enumerate(task.classes) for name in task.prompts.classnames[c]]
        sub_emb = model.class_embeddings([texts for _, texts in names])
        owner = [ci for ci, _ in names]

        def score(out: dict[str, torch.Tensor]) -> torch.Tensor:
            logp = torch.log_softmax(model.zeroshot_logits(out["embedding"].to(device), sub_emb).float(), dim=1)
            return torch.stack([torch.logsumexp(logp[:, [j for j, o in enumerate(owner) if o == ci]], dim=1)
                                for ci in range(len(task.classes))], dim=1)
    elif rule == "mean_embedding":
        class_emb = model.class_embeddings(prompts)

        def score(out: dict[str, torch.Tensor]) -> torch.Tensor:
            return model.zeroshot_logits(out["embedding"].to(device), class_emb)
    else:
        per_class = [model.encode_text(model.tokenize(p)) for p in prompts]
        reduce = reduce_prompts(rule)

        def score(out: dict[str, torch.Tensor]) -> torch.Tensor:
            emb = out["embedding"].to(device)
            return torch.stack([reduce(model.similarity(emb, e)) for e in per_class], dim=1)

    record = {**record, "rule": rule}
    return ZeroShotHead(classes=tuple(task.classes), prompts=prompts, rule=rule, score=score, record=record)
