"""Zero-shot classification from the task card's prompt templates.

Each class gets the prompts ``template.format(name)`` for every template and every class name synonym of the
card. How prompts are combined per class is the ``ensemble`` parameter:

- ``mean_embedding`` (default; CLIP's prompt ensembling): mean of the normalised prompt embeddings,
  re-normalised, then the family's similarity.
- ``mean_logit``: mean over prompts of the family's similarity.
- ``max_logit``: max over prompts (GLoRIA's and MedCLIP's non-ensembled rule).

Probabilities are the softmax over classes of the family's logits (scaled cosine for CLIP-like families).
"""

from __future__ import annotations

import numpy as np
import torch

from fairbench.adapters.base import AdaptContext, Adapter
from fairbench.errors import CardError

__all__ = ["ZeroShot", "class_prompts"]


def class_prompts(ctx: AdaptContext) -> list[list[str]]:
    prompts = ctx.task.prompts
    if prompts is None:
        raise CardError(f"{ctx.task.path}: zero-shot needs a 'prompts' section (templates and classnames)")
    return [[t.format(name) for t in prompts.templates for name in prompts.classnames[c]]
            for c in ctx.task.classes]


class ZeroShot(Adapter):
    name = "zeroshot"
    description = "Zero-shot: task-card prompt templates per class, prompt ensembling, softmax over classes"
    defaults = {"ensemble": "mean_embedding"}

    @torch.no_grad()
    def run(self, ctx: AdaptContext) -> dict[str, np.ndarray]:
        rule = self.params["ensemble"]
        if rule not in ("mean_embedding", "mean_logit", "max_logit"):
            raise CardError(f"adapter 'zeroshot': ensemble must be mean_embedding, mean_logit or max_logit, "
                            f"got {rule!r}")
        model = ctx.model
        model.module.eval()
        texts = class_prompts(ctx)
        self.fitted["prompts"] = {c: t for c, t in zip(ctx.task.classes, texts)}
        if rule == "mean_embedding":
            class_emb = model.class_embeddings(texts)
        else:
            per_class = [model.encode_text(model.tokenize(t)) for t in texts]
        out = {}
        for split in self.predict_splits:
            emb = torch.from_numpy(ctx.encode(split)["embedding"]).to(model.device)
            if rule == "mean_embedding":
                logits = model.zeroshot_logits(emb, class_emb)
            else:
                sims = [model.similarity(emb, e) for e in per_class]
                reduce = (lambda s: s.mean(dim=1)) if rule == "mean_logit" else (lambda s: s.max(dim=1).values)
                logits = torch.stack([reduce(s) for s in sims], dim=1)
            out[split] = torch.softmax(logits.float(), dim=1).cpu().numpy()
        return out
