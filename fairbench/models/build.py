"""Build a model from its card and a weights source."""

from __future__ import annotations

import torch

from fairbench.errors import FairbenchError
from fairbench.models.base import FAMILIES, ModelCard, VLModel
from fairbench.models.weights import parse_weights

__all__ = ["build_model", "resolve_device"]


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

