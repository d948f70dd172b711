"""Zero-shot classification with each family's own rule.

The model builds a zero-shot head for the task (:meth:`VLModel.zeroshot_head`, see
:mod:`fairbench.models.zeroshot`): the prompts per class (task-card templates x class-name synonyms, or the
family's generator, e.g. CheXpert prompts for GLoRIA and MedCLIP), the ensembling rule, and any normalisation
across the images of a split (GLoRIA z-scores each class). The ``ensemble`` parameter picks the rule:

- ``family`` (default): the family's own rule (CLIP-like: ``mean_embedding``; MedCLIP: ``mean_logit``;
  GLoRIA: ``max_logit``).
- ``mean_embedding`` (CLIP's prompt ensembling): mean of the normalised prompt embeddings, re-normalised, then
  the family's similarity.
- ``mean_logit``: mean over prompts of the family's similarity.
- ``max_logit``: max over prompts.
- ``name_sum``: each task-card class name a sub-class, probabilities summed per class (composite classes).

Probabilities are the softmax over classes of the family's logits (scaled cosine for CLIP-like families). The
prompts used and the rule are recorded (``adapt.fitted``). Under ``--precision bf16|fp16`` the image encoder runs
in autocast; the probabilities' change against a float32 pass on the first images of the evaluated split is
recorded (``precision.effect``: ``max_abs_delta_prob``, ``argmax_agreement``).

``templates=all`` adds the prompt-sensitivity analysis (:mod:`fairbench.analyses.prompts`, metrics.json
``analyses.prompts``): the evaluated split scored under each card template, the family's released prompts and a
fixed set of variants, one by one. The cell's predictions stay those of the default prompts. The parameter is
recorded in ``adapt.params`` only when given (``templates=default`` cells keep the parameters they had).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fairbench.adapters.base import AdaptContext, Adapter
from fairbench.errors import CardError

if TYPE_CHECKING:
    from fairbench.models.zeroshot import ZeroShotHead

__all__ = ["ZeroShot", "class_prompts"]

_ENSEMBLES = ("family", "mean_embedding", "mean_logit", "max_logit", "name_sum")


def class_prompts(ctx: AdaptContext) -> list[list[str]]:
    """The task card's prompts per class (templates x class-name synonyms)."""
    from fairbench.models.zeroshot import task_prompts

    return task_prompts(ctx.task)


def _image_outputs(ctx: AdaptContext, split: str, needs: tuple[str, ...], batch_size: int
                   ) -> Iterator[dict[str, torch.Tensor]]:
    """The image outputs a head needs: the cached split encoding when it suffices, else a forward pass per
    batch (GLoRIA's local features are too large to cache)."""
    model = ctx.model
    if set(needs) <= {"embedding", "feature"}:
        enc = ctx.encode(split)
        yield {k: torch.from_numpy(enc[k]).to(model.device) for k in needs}
        return
    samples = ctx.split(split)
    n = len(samples)
    for start in range(0, n, batch_size):
        idx = np.arange(start, min(n, start + batch_size))
        yield ctx.image_outputs(model.preprocess(samples.images.load(idx)))


class ZeroShot(Adapter):
    name = "zeroshot"
    description = ("Zero-shot: the family's prompts and ensembling rule (or task-card templates), softmax over "
                   "classes")
    defaults = {"ensemble": "family", "templates": "default"}

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        super().__init__(params)
        if self.params["templates"] not in ("default", "all"):
            raise CardError(f"adapter 'zeroshot': templates must be default or all, got {self.params['templates']!r}")
        if self.params["templates"] == "default":
            del self.params["templates"]  # as recorded before the parameter existed: older cells stay current
        #: analyses added to metrics.json ``analyses`` (templates=all: ``prompts``)
        self.analyses: dict[str, Any] = {}

    @torch.no_grad()
    def run(self, ctx: AdaptContext) -> dict[str, np.ndarray]:
        rule = self.params["ensemble"]
        if rule not in _ENSEMBLES:
            raise CardError(f"adapter 'zeroshot': ensemble must be one of {', '.join(_ENSEMBLES)}, got {rule!r}")
        model = ctx.model
        model.module.eval()
        head = model.zeroshot_head(ctx.task, ensemble=rule)
        self.fitted["prompts"] = {c: list(t) for c, t in zip(ctx.task.classes, head.prompts)}
        self.fitted["zeroshot"] = dict(head.record)
        out = {}
        for split in self.predict_splits:
            scores = [head.score(o) for o in _image_outputs(ctx, split, head.needs, head.batch_size)]
            logits = head.finalize(torch.cat(scores))
            out[split] = torch.softmax(logits.float(), dim=1).cpu().numpy()
        if ctx.precision != "fp32":
            ctx.precision_measured.update(_probability_effect(ctx, head, out))
        split = ctx.task.evaluation.split
        if self.params.get("templates") == "all" and split in out:
            from fairbench.analyses.prompts import prompt_sensitivity

            self.analyses["prompts"] = prompt_sensitivity(ctx, rule, out[split], split=split,
                                                          ensemble_record=head.record,
                                                          image_outputs=_image_outputs)
        return out


def _probability_effect(ctx: AdaptContext, head: ZeroShotHead, probs: dict[str, np.ndarray]) -> dict[str, Any]:
    """The probabilities at the run's precision against a float32 pass, on the first images of the evaluated
    split (heads that normalise across a whole split, or need more than the embedding, are not measured)."""
    from fairbench.models.zeroshot import _identity

    split = ctx.task.evaluation.split
    if split not in probs or head.finalize is not _identity or not set(head.needs) <= {"embedding", "feature"}:
        return {"probabilities": "not measured (the head normalises across the split or needs local features)"}
    idx, ref = ctx.precision_reference(split)
    device = ctx.model.device
    ref_probs = torch.softmax(head.score({k: torch.from_numpy(ref[k]).to(device) for k in head.needs}).float(),
                              dim=1).cpu().numpy()
    p = probs[split][idx]
    return {"split": split, "max_abs_delta_prob": float(np.max(np.abs(p - ref_probs))),
            "argmax_agreement": float(np.mean(p.argmax(1) == ref_probs.argmax(1)))}
