"""Synthetic radiology reports, written from the *recorded* label of each image.

A report states the finding with one of several phrasings (synonyms, side, zone, size or severity), adds
zero to two normal statements that do not contradict it, sometimes an incidental non-label detail, and is
laid out in one of a few formats. Normal studies get normal phrasing, sometimes with explicit negations
("no effusion or pneumothorax"), as real reports do.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["write_reports"]

# normal statements, each with the findings it would contradict
_NORMAL = (
    ("The lungs are clear.", {"effusion", "nodule", "mass", "pneumothorax", "consolidation"}),
    ("Heart size is normal.", {"cardiomegaly"}),
    ("The cardiomediastinal silhouette is within normal limits.", {"cardiomegaly"}),
    ("No focal consolidation.", {"consolidation"}),
    ("No pleural effusion or pneumothorax.", {"effusion", "pneumothorax"}),
    ("No pneumothorax.", {"pneumothorax"}),
    ("No pleural effusion.", {"effusion"}),
    ("The costophrenic angles are sharp.", {"effusion"}),
    ("No suspicious pulmonary nodule or mass.", {"nodule", "mass"}),
    ("Pulmonary vascularity is normal.", set()),
    ("The visualized osseous structures are unremarkable.", set()),
    ("The hila are normal.", {"mass"}),
)
_NORMAL_IMPRESSION = (
    "No acute cardiopulmonary abnormality.",
    "Normal chest radiograph.",
    "No acute cardiopulmonary process.",
    "No evidence of active disease.",
    "Normal study.",
)

_FINDING_TEXT: dict[str, tuple[str, ...]] = {
    "cardiomegaly": (
        "{Sev} cardiomegaly.",
        "The cardiac silhouette is {sevly} enlarged.",
        "Enlarged cardiac silhouette, in keeping with {sev} cardiomegaly.",
        "Increased cardiothoracic ratio consistent with cardiomegaly.",
        "The heart is {sevly} enlarged.",
    ),
    "effusion": (
        "{Size} {side} pleural effusion.",
        "Blunting of {angle}, consistent with a {size} {side} pleural effusion.",
        "{Side} basal opacity with a meniscus, in keeping with a {size} pleural effusion.",
        "There is a {size} {side} effusion.",
        "Fluid layering at {base}, compatible with pleural effusion.",
    ),
    "nodule": (
        "{mm} mm nodule in the {side} {zone} zone.",
        "Small rounded opacity in the {side} {zone} zone, likely a pulmonary nodule.",
        "Solitary pulmonary nodule in the {side} {zone} zone measuring {mm} mm.",
        "A {mm} mm nodular opacity projects over the {side} {zone} lung.",
    ),
    "mass": (
        "{cm} cm mass in the {side} {zone} zone.",
        "Large lobulated opacity in the {side} lung, concerning for a mass.",
        "{Side} {zone} zone mass measuring {cm} cm.",
        "There is a {cm} cm rounded mass projecting over the {side} {zone} lung.",
    ),
    "pneumothorax": (
        "{Size} {side} pneumothorax.",
        "{Side} apical pneumothorax with a visible pleural line.",
        ("Visible pleural edge in the {side} hemithorax with absent peripheral lung markings, consistent with "
        "a {size} pneumothorax."),
        "There is a {size} {side} pneumothorax.",
    ),
    "consolidation": (
        "Patchy consolidation in the {side} {zone} zone.",
        "{Side} {zone} zone airspace opacity, consistent with consolidation.",
        "Airspace consolidation in the {side} {zone} zone, which may represent pneumonia.",
        "Patchy airspace disease in the {side} {zone} lung.",
    ),
}
_FINDING_IMPRESSION = {
    "cardiomegaly": ("Cardiomegaly.", "{Sev} cardiomegaly.", "Enlarged heart."),
    "effusion": ("{Side} pleural effusion.", "{Size} {side} pleural effusion.", "Pleural effusion."),
    "nodule": ("{Side} pulmonary nodule.", "Pulmonary nodule; CT recommended.", "Solitary nodule."),
    "mass": ("{Side} lung mass.", "Lung mass; further evaluation with CT recommended.", "Pulmonary mass."),
    "pneumothorax": ("{Side} pneumothorax.", "{Size} {side} pneumothorax.", "Pneumothorax."),
    "consolidation": ("{Side} {zone} zone consolidation.", "Consolidation, possibly pneumonia.",
                      "Airspace consolidation."),
}
_INCIDENTAL_ANY = (
    "Incidental note is made of surgical clips in the upper abdomen.",
    "Mild thoracic scoliosis.",
    "Overlying monitoring leads.",
)
_INCIDENTAL_OLD = ("Degenerative changes of the thoracic spine.",)
_INCIDENTAL_AORTA = ("Unfolded thoracic aorta.", "Tortuous thoracic aorta.")
_LAYOUTS = (
    "FINDINGS: {body} IMPRESSION: {impression}",
    "{body}",
    "PA chest radiograph. {body}",
    "Frontal view of the chest. {body} Impression: {impression}",
    "Comparison: none. {body} IMPRESSION: {impression}",
)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def write_reports(rng: np.random.Generator, labels: Sequence[str], details: Sequence[dict[str, str]],
                  age: np.ndarray, aorta: np.ndarray, incidental_rate: float) -> list[str]:
    """One report per sample. ``details[i]`` fills the placeholders of the label's phrasing
    (``side``, ``zone``, ``size``, ``sev``, ``sevly``, ``mm``, ``cm``)."""
    out = []
    for label, d, a, ao in zip(labels, details, age, aorta):
        fill = {**d, **{_cap(k): _cap(v) for k, v in d.items()}}
        if label == "normal":
            k = int(rng.integers(1, 4))
            pick = rng.choice(len(_NORMAL), size=k, replace=False)
            body = [_NORMAL[i][0] for i in pick]
            impression = str(rng.choice(_NORMAL_IMPRESSION))
        else:
            options = _FINDING_TEXT[label]
            body = [options[int(rng.integers(len(options)))].format(**fill)]
            allowed = [s for s, contra in _NORMAL if label not in contra]
            k = int(rng.integers(0, 3))
            body += [allowed[i] for i in rng.choice(len(allowed), size=k, replace=False)]
            imp = _FINDING_IMPRESSION[label]
            impression = imp[int(rng.integers(len(imp)))].format(**fill)
        if rng.random() < incidental_rate:
            pool = _INCIDENTAL_ANY + (_INCIDENTAL_OLD if a >= 55 else ()) + (_INCIDENTAL_AORTA if ao > 1.3 else ())
            body.insert(int(rng.integers(1, len(body) + 1)), str(pool[int(rng.integers(len(pool)))]))
        layout = _LAYOUTS[int(rng.integers(len(_LAYOUTS)))]
        if "{impression}" not in layout and label == "normal" and rng.random() < 0.5:
            body.append(impression)
        out.append(layout.format(body=" ".join(body), impression=impression))
    return out
