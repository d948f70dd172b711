"""Which model cards a state dict fits, for the one-line error when a checkpoint does not load.

A card's tensor names and shapes come from building its architecture on PyTorch's ``meta`` device (no memory
is allocated and nothing is initialised: well under a second for a ViT-B/16). A file *fits* a card when it has
exactly the card's tensor names with the card's shapes, the test :func:`fairbench.models.openclip.load_strict`
applies. Only cards whose checkpoints use the same key layout as the card being loaded are compared (open_clip
and tinyclip share open_clip's layout; MedCLIP and GLoRIA files are compared after their own key conversion);
BLIP-2 cards are not compared (their modules are built from transformers configs, not from the card alone).
"""

from __future__ import annotations

from typing import Any

import torch

from fairbench.models.base import ModelCard, get_model_card, model_names

__all__ = ["architecture_shapes", "fitting_cards", "mismatch_message"]

def _family(name: str):  # type: ignore[no-untyped-def]
    from fairbench.models.base import FAMILIES

    return FAMILIES.get(name) if name in FAMILIES else None


def _layout(family: str) -> str | None:
    fam = _family(family)
    return fam.layout if fam is not None and fam.architecture is not None else None


def _build(card: ModelCard) -> torch.nn.Module:
    fam = _family(card.family)
    if fam is None or fam.architecture is None:
        raise KeyError(card.family)
    return fam.architecture(card)


def architecture_shapes(card: ModelCard) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of the card's architecture, built on the meta device."""
    import logging

    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)  # open_clip warns that no pretrained weights were loaded
    try:
        with torch.device("meta"):
            module = _build(card)
    finally:
        logger.setLevel(level)
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def fitting_cards(state: dict[str, Any], family: str) -> tuple[list[str], list[str]]:
    """(cards the state dict fits, cards compared): the cards whose checkpoints share ``family``'s layout."""
    layout = _layout(family)
    fits, checked = [], []
    if layout is None:
        return fits, checked
    shapes = {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}
    for name in model_names():
        card = get_model_card(name)
        if _layout(card.family) != layout:
            continue
        try:
            theirs = architecture_shapes(card)
        except Exception:  # noqa: BLE001, S112 - a card that cannot be built offline is simply not compared
            continue
        checked.append(name)
        if theirs == shapes:
            fits.append(name)
    return fits, checked


def _shape(s: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in s) + ")"


def mismatch_message(model: torch.nn.Module, state: dict[str, Any], *, where: str,
                     card: ModelCard | None = None) -> str | None:
    """One line describing how ``state`` differs from ``model`` (None when it loads strictly): the first tensors
    whose shapes differ (name, the architecture's shape, the file's shape), missing and unexpected keys, and the
    model card(s) the file fits."""
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}
    wrong = [(k, own[k], theirs[k]) for k in theirs if k in own and own[k] != theirs[k]]
    missing = [k for k in own if k not in theirs]
    unexpected = [k for k in state if k not in own]
    if not (wrong or missing or unexpected):
        return None
    target = f"model card '{card.name}'" if card is not None else "the architecture"
    parts = []
    if wrong:
        first = "; ".join(f"{k}: card {_shape(a)}, file {_shape(b)}" for k, a, b in wrong[:2])
        parts.append(f"{len(wrong)} tensors differ in shape (first {first})")
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
    msg = f"{where}: checkpoint does not match {target}: " + ", ".join(parts)
    if card is not None:
        fits, checked = fitting_cards(state, card.family)
        fits = [n for n in fits if n != card.name]
        if fits:
            msg += f"; the file fits model card {', '.join(repr(n) for n in fits)} (use --model {fits[0]})"
        elif checked:
            msg += f"; it fits none of the cards with the same key layout ({', '.join(checked)})"
    return msg
