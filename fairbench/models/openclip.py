"""The open_clip family: OpenAI CLIP, BiomedCLIP and the tiny ``tinyclip`` used by tests and the default run."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import torch

from fairbench.errors import WeightsError
from fairbench.models.base import ModelCard, VLModel
from fairbench.models.weights import WeightsSource, require_file, sha256_file

__all__ = ["OpenCLIPModel", "build_open_clip", "build_tinyclip", "create_architecture", "load_state_file"]


class OpenCLIPModel(VLModel):
    def __init__(self, card: ModelCard, model: Any, tokenizer: Any, device: torch.device,
                 weights_info: dict[str, Any]) -> None:
        self.card = card
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device
        self.weights_info = weights_info
        self.context_length = int(card.architecture.get("text_cfg", {}).get("context_length", 77))

    @property
    def module(self) -> torch.nn.Module:
        return self.model

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(list(texts), context_length=self.context_length).to(self.device)

    def image_outputs(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        pixels = pixels.to(self.device)
        if self.card.probe_feature == "embedding":
            emb = self.model.encode_image(pixels)
            return {"embedding": emb, "feature": emb}
        if self.card.probe_feature != "pre_projection":
            raise WeightsError(f"model '{self.card.name}': unknown probe_feature {self.card.probe_feature!r}")
        visual = self.model.visual
        with _without_projection(visual) as proj:
            pooled = visual(pixels)
        emb = proj(pooled) if callable(proj) else pooled @ proj
        return {"embedding": emb, "feature": pooled}

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens)

    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale.exp()


@contextlib.contextmanager
def _without_projection(visual: torch.nn.Module):  # type: ignore[no-untyped-def]
    """Run the vision tower without its final projection, in the same forward pass (one encode gives both
    the probe feature and the joint embedding). Yields the projection (a Parameter or a module)."""
    if isinstance(getattr(visual, "proj", None), torch.nn.Parameter):
        proj = visual.proj
        visual.proj = None
        try:
            yield proj
        finally:
            visual.proj = proj
    elif hasattr(visual, "head"):  # timm-backed towers (BiomedCLIP): head is the projection
        head = visual.head
        visual.head = torch.nn.Identity()
        try:
            yield head
        finally:
            visual.head = head
    else:
        raise WeightsError(f"{type(visual).__name__}: cannot separate the projection for probe features")


def create_architecture(card: ModelCard) -> Any:
    import open_clip

    arch = dict(card.architecture)
    model_name = arch.pop("model_name")
    # open_clip warns that no pretrained weights were loaded: fairbench loads them itself
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return open_clip.create_model(model_name, pretrained=None, **arch)
    finally:
        logger.setLevel(level)


def load_state_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from safetensors or a ``torch.save`` file, never unpickling arbitrary objects."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure here is a bad or unsafe file
        raise WeightsError(f"{path}: cannot be read as a state dict with weights_only=True ({exc})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def load_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], *, where: str) -> None:
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise WeightsError(f"{where}: checkpoint does not match the architecture: "
                           f"{len(result.missing_keys)} missing keys (e.g. {result.missing_keys[:3]}), "
                           f"{len(result.unexpected_keys)} unexpected keys (e.g. {result.unexpected_keys[:3]})")


def _tokenizer(card: ModelCard) -> Any:
    import open_clip

    return open_clip.get_tokenizer(card.architecture["model_name"])


def build_open_clip(card: ModelCard, source: WeightsSource, device: torch.device) -> OpenCLIPModel:
    model = create_architecture(card)
    if source.scheme == "random":
        info = {"source": "random", "sha256": "random"}
    elif source.scheme == "file":
        path = require_file(Path(source.value), card=card.name, obtain=card.weights_obtain)
        load_strict(model, load_state_file(path), where=str(path))
        info = {"source": str(path), "sha256": sha256_file(path)}
    else:
        raise WeightsError(f"model '{card.name}': weights source '{source.describe()}' is not supported by the "
                           f"open_clip family yet (use a checkpoint file or 'random')")
    return OpenCLIPModel(card, model, _tokenizer(card), device, info)


def build_tinyclip(card: ModelCard, source: WeightsSource, device: torch.device) -> OpenCLIPModel:
    """tinyclip: an open_clip CLIP pretrained by fairbench on a synthetic task's image-report pairs."""
    if source.scheme != "pretrain":
        return build_open_clip(card, source, device)
    from fairbench.models.tinyclip import pretrained_weights

    path = pretrained_weights(card, task_name=source.value)
    model = create_architecture(card)
    load_strict(model, load_state_file(path), where=str(path))
    info = {"source": f"pretrain:{source.value}", "file": str(path), "sha256": sha256_file(path)}
    return OpenCLIPModel(card, model, _tokenizer(card), device, info)
