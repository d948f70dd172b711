"""Build a model from its card and a weights source."""

from __future__ import annotations

from typing import Any

import torch

from fairbench.errors import CardError, FairbenchError
from fairbench.models.base import FAMILIES, ModelCard, VLModel
from fairbench.models.weights import WeightsSource, parse_weights

__all__ = ["build_model", "resolve_device", "resolve_model_card"]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise FairbenchError(f"--device {device!r} is not a torch device (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise FairbenchError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
    return dev


def build_model(card: ModelCard, weights: str | None, device: torch.device) -> VLModel:
    """``weights`` overrides the card's source (a file, ``local-dir:``, ``hf-hub:``, ``random``...)."""
    source = parse_weights(weights or card.weights_source)
    return FAMILIES.get(card.family).build(card, source, device)


def resolve_model_card(card: ModelCard, weights: str | None, model_args: dict[str, Any] | None = None) -> ModelCard:
    """``card`` as a run uses it. A generic family (``hf_clip``, ``hf_vision``, ``open_clip`` with ``--model-arg
    arch=``) completes its card from the checkpoint and ``model_args`` (:attr:`Family.resolve_card`); every other
    card is complete already and takes no model arguments."""
    family = FAMILIES.get(card.family)
    args = dict(model_args or {})
    if family.resolve_card is None:
        if args:
            raise CardError(f"--model-arg {next(iter(args))}: model '{card.name}' takes no model arguments (its card "
                            f"fixes the architecture; hf_clip, hf_vision and open_clip are the generic models)")
        return card
    spec = weights or card.weights_source
    return family.resolve_card(card, parse_weights(spec) if spec else WeightsSource("file", ""), args)
