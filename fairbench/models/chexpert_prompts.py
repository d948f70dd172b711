"""The CheXpert class-prompt generator shared by GLoRIA and MedCLIP (severity x subtype x location).

The vocabulary is GLoRIA's ``CHEXPERT_CLASS_PROMPTS`` (``gloria/constants.py``), which MedCLIP reuses
verbatim (``medclip/constants.py``), typos included ("apperance", "presistent", "uppper"): they change the
text embeddings, so they stay. For each class, in the dictionary's order, every combination
``f"{k0} {k1} {k2}"`` of its three lists (in the order the lists appear: for Pleural Effusion that is
severity, location, subtype) is formed, and ``n`` of them are drawn with ``random.sample``.

Upstream draws from Python's global ``random`` state: GLoRIA seeds it with ``random.seed(6)`` when
``gloria.py`` is imported and calls ``generate_chexpert_class_prompts(n=5)``; MedCLIP's README calls it with
``n=10`` unseeded. fairbench draws from ``random.Random(seed)`` over all five classes in the same order (so
``seed=6, n=5`` reproduces GLoRIA's draw when nothing else consumed the global state in between), and records
the seed, ``n`` and the prompts drawn. When ``n`` is at least the number of combinations, all are used
without drawing (MedCLIP's rule).
"""

from __future__ import annotations

import random

__all__ = ["CHEXPERT_CLASS_PROMPTS", "chexpert_class_for", "generate_chexpert_prompts"]

CHEXPERT_CLASS_PROMPTS: dict[str, dict[str, list[str]]] = {
    "Atelectasis": {
        "severity": ["", "mild", "minimal"],
        "subtype": ["subsegmental atelectasis", "linear atelectasis", "trace atelectasis", "bibasilar atelectasis",
                    "retrocardiac atelectasis", "bandlike atelectasis", "residual atelectasis"],
        "location": ["at the mid lung zone", "at the upper lung zone", "at the right lung zone",
                     "at the left lung zone", "at the lung bases", "at the right lung base", "at the left lung base",
                     "at the bilateral lung bases", "at the left lower lobe", "at the right lower lobe"],
    },
    "Cardiomegaly": {
        "severity": [""],
        "subtype": ["cardiac silhouette size is upper limits of normal", "cardiomegaly which is unchanged",
                    "mildly prominent cardiac silhouette",
                    "portable view of the chest demonstrates stable cardiomegaly",
                    "portable view of the chest demonstrates mild cardiomegaly", "persistent severe cardiomegaly",
                    "heart size is borderline enlarged", "cardiomegaly unchanged",
                    "heart size is at the upper limits of normal", "redemonstration of cardiomegaly",
                    "ap erect chest radiograph demonstrates the heart size is the upper limits of normal",
                    "cardiac silhouette size is mildly enlarged",
                    ("mildly enlarged cardiac silhouette, likely left ventricular enlargement. other chambers are "
                    "less prominent"),
                    "heart size remains at mildly enlarged",
                    "persistent cardiomegaly with prominent upper lobe vessels"],
        "location": [""],
    },
    "Consolidation": {
        "severity": ["", "increased", "improved", "apperance of"],
        "subtype": ["bilateral consolidation", "reticular consolidation", "retrocardiac consolidation",
                    "patchy consolidation", "airspace consolidation", "partial consolidation"],
        "location": ["at the lower lung zone", "at the upper lung zone", "at the left lower lobe",
                     "at the right lower lobe", "at the left upper lobe", "at the right uppper lobe",
                     "at the right lung base", "at the left lung base"],
    },
    "Edema": {
        "severity": ["", "mild", "improvement in", "presistent", "moderate", "decreased"],
        "subtype": ["pulmonary edema", "trace interstitial edema", "pulmonary interstitial edema"],
        "location": [""],
    },
    "Pleural Effusion": {
        "severity": ["", "small", "stable", "large", "decreased", "increased"],
        "location": ["left", "right", "tiny"],
        "subtype": ["bilateral pleural effusion", "subpulmonic pleural effusion", "bilateral pleural effusion"],
    },
}


def _combinations(spec: dict[str, list[str]]) -> list[str]:
    keys = list(spec)
    return [f"{k0} {k1} {k2}" for k0 in spec[keys[0]] for k1 in spec[keys[1]] for k2 in spec[keys[2]]]


def generate_chexpert_prompts(n: int | None, seed: int) -> dict[str, list[str]]:
    """``{CheXpert class: prompts}`` for all five classes, drawn as described in the module docstring."""
    rng = random.Random(seed)
    out = {}
    for name, spec in CHEXPERT_CLASS_PROMPTS.items():
        combos = _combinations(spec)
        out[name] = rng.sample(combos, n) if n is not None and n < len(combos) else combos
    return out


def _norm(text: str) -> str:
    return " ".join(text.replace("_", " ").replace("-", " ").lower().split())


def chexpert_class_for(class_name: str) -> str | None:
    """The CheXpert class a task class names (ignoring case, underscores and hyphens), or None. Only the class
    id counts, not its prompt synonyms (``abnormal`` listing ``cardiomegaly`` among others is not
    Cardiomegaly)."""
    index = {_norm(k): k for k in CHEXPERT_CLASS_PROMPTS}
    return index.get(_norm(class_name))
