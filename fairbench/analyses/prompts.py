"""Prompt sensitivity of zero-shot fairness (``--adapt zeroshot --adapt-arg templates=all``).

The zero-shot head is rebuilt once per prompt set and the evaluated split scored under each:

- ``card``: each of the task card's templates alone (x every class-name synonym of the card);
- ``released``: the family's released prompts where the family has them (``prompt_style: chexpert``: the
  CheXpert prompt generator GLoRIA and MedCLIP ship, with the card's ``n`` and ``seed``);
- ``variant``: each of :data:`VARIANTS`, a fixed, documented set of generic wordings in the style of
  CLIP_benchmark's per-dataset template lists (written for fairbench, not copied from CLIP_benchmark);
- ``ensemble``: the cell's own head (the default prompts and rule), whose probabilities are the cell's
  predictions; the analysis never changes them.

Each prompt set uses the family's own scoring (its ensembling rule over the class-name synonyms, SigLIP's
sigmoid, GLoRIA's normalisation), through :meth:`VLModel.zeroshot_head` on a copy of the task card holding only
that template. Per set: the AUC (binary: of the second class; multiclass: macro one-vs-rest) and, per attribute,
each group's AUC (groups with at least ``min_group_size`` samples and both labels), the gap (best - worst), the
worst group, and for two-group attributes the signed difference (second group - first, sorted). ``spread``
summarises the single prompt sets (the ensemble left out): min, max and SD of the AUC and of each gap, and
whether every set ranks the same group worst (``same_sign``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from fairbench.analyses.leakage import known_group

__all__ = ["VARIANTS", "attribute_gaps", "prompt_sensitivity", "prompt_sets", "score_auc", "spread"]

#: generic template variants (CLIP_benchmark-style wordings, fixed here; docs/metrics.md)
VARIANTS: tuple[str, ...] = (
    "{}.",
    "a photo of {}.",
    "an image of {}.",
    "an x-ray showing {}.",
    "a chest x-ray showing {}.",
    "a radiograph of {}.",
)


def score_auc(labels: np.ndarray, probs: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    k = probs.shape[1]
    if len(np.unique(labels)) < 2:
        return None
    if k == 2:
        return float(roc_auc_score(labels, probs[:, 1]))
    if len(np.unique(labels)) < k:
        return None
    return float(roc_auc_score(labels, probs, multi_class="ovr", average="macro"))


def attribute_gaps(labels: np.ndarray, probs: np.ndarray, attributes: dict[str, Any], min_group_size: int
                   ) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for a, groups in attributes.items():
        g = np.asarray(groups, dtype=object)
        aucs: dict[str, float] = {}
        for name in sorted({str(v) for v in g if known_group(v)}):
            mask = np.array([v is not None and str(v) == name for v in g])
            if mask.sum() < min_group_size:
                continue
            auc = score_auc(labels[mask], probs[mask])
            if auc is not None:
                aucs[name] = auc
        rec: dict[str, Any] = {"groups": aucs}
        if len(aucs) >= 2:
            worst = min(aucs, key=aucs.__getitem__)
            best = max(aucs, key=aucs.__getitem__)
            rec.update(gap=aucs[best] - aucs[worst], worst=worst, best=best)
            if len(aucs) == 2:
                first, second = sorted(aucs)
                rec["signed"] = {"value": aucs[second] - aucs[first], "as": f"{second} - {first}"}
        else:
            rec.update(gap=None, worst=None, best=None)
        out[a] = rec
    return out


@contextlib.contextmanager
def _templates_style(model: Any) -> Iterator[None]:
    """The model scoring the card's templates even if its family generates its own prompts."""
    card = model.card
    if card.prompt_style == "templates":
        yield
        return
    model.card = dataclasses.replace(card, prompt_style="templates")
    try:
        yield
    finally:
        model.card = card


def prompt_sets(model: Any, task: Any) -> list[dict[str, Any]]:
    """``[{"kind", "template", "task"}]``: a task card per single prompt set (None: the model's released prompts
    on the card as it is)."""
    if task.prompts is None:
        return []
    sets: list[dict[str, Any]] = []
    seen: set[str] = set()
    for t in task.prompts.templates:
        seen.add(t)
        sets.append({"kind": "card", "template": t, "task": _with_template(task, t)})
    if model.card.prompt_style == "chexpert":
        opts = dict(model.card.options.get("prompts", {}))
        sets.append({"kind": "released", "template": f"CheXpert prompt generator (n={opts.get('n')}, "
                     f"seed={opts.get('seed', 0)})", "task": None})
    for t in VARIANTS:
        if t not in seen:
            sets.append({"kind": "variant", "template": t, "task": _with_template(task, t)})
    return sets


def _with_template(task: Any, template: str) -> Any:
    return dataclasses.replace(task, prompts=dataclasses.replace(task.prompts, templates=(template,)))


@torch.no_grad()
def _probs(ctx: Any, head: Any, split: str, image_outputs: Any) -> np.ndarray:
    scores = [head.score(o) for o in image_outputs(ctx, split, head.needs, head.batch_size)]
    return torch.softmax(head.finalize(torch.cat(scores)).float(), dim=1).cpu().numpy()


def prompt_sensitivity(ctx: Any, ensemble: str, ensemble_probs: np.ndarray, *, image_outputs: Any,
                       split: str | None = None, ensemble_record: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``analyses.prompts`` record of a zero-shot cell; ``ensemble_probs``: the cell's own probabilities on
    ``split`` (default: the task's evaluated split); ``image_outputs(ctx, split, needs, batch_size)``: the zero-shot
    adapter's image pass (passed in: the adapter imports this module, not the reverse)."""
    task, model = ctx.task, ctx.model
    split = split or task.evaluation.split
    samples = ctx.split(split)
    labels = np.asarray(samples.labels)
    min_size = int(task.evaluation.min_group_size)
    records: list[dict[str, Any]] = []
    for s in prompt_sets(model, task):
        if s["task"] is None:
            head = model.zeroshot_head(task, ensemble=ensemble)
        else:
            with _templates_style(model):
                head = model.zeroshot_head(s["task"], ensemble=ensemble)
        p = _probs(ctx, head, split, image_outputs)
        records.append({"kind": s["kind"], "template": s["template"], "rule": head.rule,
                        "auc": score_auc(labels, p), "gaps": attribute_gaps(labels, p, samples.attributes, min_size)})
    records.append({"kind": "ensemble", "template": "the cell's default prompts (its predictions)",
                    "rule": (ensemble_record or {}).get("rule"), "auc": score_auc(labels, ensemble_probs),
                    "gaps": attribute_gaps(labels, ensemble_probs, samples.attributes, min_size)})
    return {"split": split, "ensemble": ensemble, "variants": list(VARIANTS), "templates": records,
            "spread": spread([r for r in records if r["kind"] != "ensemble"], list(task.attributes))}


def _summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"min": None, "max": None, "sd": None, "n": 0}
    return {"min": float(min(values)), "max": float(max(values)),
            "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, "n": len(values)}


def spread(records: list[dict[str, Any]], attributes: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"auc": _summary([r["auc"] for r in records if r["auc"] is not None]), "gaps": {}}
    for a in attributes:
        recs = [r["gaps"][a] for r in records if r["gaps"].get(a, {}).get("gap") is not None]
        worst = sorted({g["worst"] for g in recs})
        entry = {**_summary([g["gap"] for g in recs]), "worst_groups": worst, "same_sign": len(worst) == 1}
        signed = [g["signed"]["value"] for g in recs if "signed" in g]
        if signed:
            entry["signed"] = {**_summary(signed), "as": recs[0]["signed"]["as"]}
        out["gaps"][a] = entry
    return out
