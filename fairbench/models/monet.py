"""MONET's concept presence score as a zero-shot rule (``options.zero_shot: monet_concept`` on an ``hf_clip`` card).

suinleelab/MONET ``tutorial/automatic_concept_annotation.ipynb`` (``get_prompt_embedding``,
``calculate_concept_presence_score``) scores one concept per image:

- the concept's terms (synonyms) in each of three templates ("This is skin image of {}", "This is dermatology
  image of {}", "This is image of {}"), and one reference prompt per template ("This is skin image", "This is
  dermatology image", "This is image"); text and image embeddings L2-normalised;
- per template: the target similarity is the MEAN over the terms of the image-prompt cosines (not the cosine
  of a mean embedding), the reference similarity the cosine with that template's reference;
- ``softmax([target / temp, reference / temp])[0]`` with ``temp = 1 / exp(4.5944)``, i.e.
  ``sigmoid((target - reference) * exp(4.5944))``; the score is the mean of that over the three templates.

A class's terms are the task card's class names (``prompts.classnames``). MONET scores each concept on its own
(presence, not a distribution over classes); fairbench's classes are mutually exclusive, so, as for CheXzero: a
two-class task with ``evaluation.no_finding_class`` scores only the other class (``P(finding) = score``,
``P(no finding) = 1 - score``); any other task scores every class and uses ``P(c) = score_c / sum_k score_k``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from fairbench.errors import CardError
from fairbench.models.zeroshot import ZeroShotHead

__all__ = ["MONET_REFERENCES", "MONET_SCALE", "MONET_TEMPLATES", "monet_concept_head"]

MONET_TEMPLATES = ("This is skin image of {}", "This is dermatology image of {}", "This is image of {}")
MONET_REFERENCES = ("This is skin image", "This is dermatology image", "This is image")
MONET_SCALE = 4.5944  # temp = 1 / exp(4.5944)


def _normalised(model: Any, texts: list[str]) -> torch.Tensor:
    return F.normalize(model.encode_text(model.tokenize(texts)).float(), dim=-1)


@torch.no_grad()
def monet_concept_head(model: Any, task: Any, ensemble: str = "family") -> ZeroShotHead:
    card = model.card
    if ensemble not in ("family", "mean_embedding"):
        raise CardError(f"model '{card.name}': MONET's concept score averages cosines over a concept's terms; "
                        f"ensemble {ensemble!r} does not apply (use family)")
    if task.prompts is None:
        raise CardError(f"{task.path}: zero-shot needs a 'prompts' section (classnames) for model '{card.name}'")
    templates = [str(t) for t in card.options.get("concept_templates", MONET_TEMPLATES)]
    references = [str(t) for t in card.options.get("concept_references", MONET_REFERENCES)]
    if len(templates) != len(references) or not all("{}" in t for t in templates):
        raise CardError(f"{card.path}: options.concept_templates (each with '{{}}') and "
                        f"options.concept_references must pair up one to one")
    scale = math.exp(float(card.options.get("concept_scale", MONET_SCALE)))
    classes = list(task.classes)
    nf = task.evaluation.no_finding_class
    scored = [c for c in classes if c != nf] if (nf is not None and len(classes) == 2) else classes
    terms = {c: list(task.prompts.classnames[c]) for c in scored}
    # [class][template] -> normalised embeddings of that template over the class's terms
    targets = [[_normalised(model, [t.format(term) for term in terms[c]]) for t in templates] for c in scored]
    refs = _normalised(model, references)  # [templates, dim]
    device = model.device

    def presence(out: dict[str, torch.Tensor]) -> torch.Tensor:
        img = F.normalize(out["embedding"].to(device).float(), dim=-1)  # [n, dim]
        ref = img @ refs.T  # [n, templates]
        cols = []
        for per_template in targets:
            target = torch.stack([(img @ e.T).mean(dim=1) for e in per_template], dim=1)  # [n, templates]
            cols.append(torch.sigmoid((target - ref) * scale).mean(dim=1))
        return torch.stack(cols, dim=1)  # [n, scored classes]

    if scored != classes:
        fi = classes.index(scored[0])

        def score(out: dict[str, torch.Tensor]) -> torch.Tensor:
            p = presence(out).clamp(1e-12, 1 - 1e-12)
            logp = torch.cat([torch.log1p(-p), torch.log(p)], dim=1)  # [no finding, finding]
            return logp if fi == 1 else logp.flip(1)
        combine = f"two classes with no_finding_class {nf!r}: P({scored[0]}) = its score, P({nf}) = 1 - score"
    else:
        def score(out: dict[str, torch.Tensor]) -> torch.Tensor:
            return torch.log(presence(out).clamp_min(1e-12))  # the adapter's softmax: score_c / sum_k score_k
        combine = "every class scored as a concept; P(c) = score_c / sum_k score_k"
    prompts = [[t.format(term) for t in templates for term in terms[c]] + references if c in scored else []
               for c in classes]
    record = {"style": "monet_concept", "rule": "monet_concept", "templates": templates, "references": references,
              "scale": f"exp({card.options.get('concept_scale', MONET_SCALE)})", "classes_scored": scored,
              "probability": ("per template sigmoid((mean over terms of cos(image, template(term)) - "
                              "cos(image, reference)) * scale), averaged over templates (MONET's concept "
                              "presence score)"),
              "combine": combine}
    return ZeroShotHead(classes=tuple(classes), prompts=prompts, rule="monet_concept", score=score, record=record)
