"""Which parameters belong to which tower, and LoRA injection on a model card's targets.

The model interface has no notion of towers, so they are found by use: one backward pass from the image
outputs and one from the text embedding mark the parameters each reaches (:func:`probe_towers`). Full
fine-tuning with a classification head trains exactly the parameters that reach the probe feature; LoRA on
the text tower adapts the ``nn.Linear`` modules that only the text path uses.

:func:`select_trainable` sets which parameters the CLIP-loss adapters train: ``all`` of them, or the
``released`` set of FairCLIP's and robust-fair's scripts (their optimiser covers ``model.transformer`` and
``model.visual`` of OpenAI's CLIP) and the analogous towers of the other families (:data:`RELEASED_SETS`).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "RELEASED_SETS",
    "TRAINABLE_SETS",
    "Towers",
    "freeze_all",
    "inject_lora",
    "keep_norm_statistics",
    "probe_towers",
    "released_names",
    "select_trainable",
    "set_norm_eval",
    "train_probe_feature",
]

TRAINABLE_SETS = ("released", "all")

#: per family: (parameter-name prefixes that train, what they are). FairCLIP's ``finetune_FairCLIP.py`` and
#: robust-fair's ``finetune_RobustFairCLIP.py`` build ``optim.Adam([model.transformer, model.visual])``: the
#: vision tower with its projection and the text transformer blocks; the logit scale, token and positional
#: embeddings, ``ln_final`` and ``text_projection`` stay frozen. The other families get the analogous split:
#: the whole vision tower (with its projection, as ``visual.proj`` is inside ``model.visual``) and the text
#: transformer blocks (no embeddings, no final projection, no logit scale). BLIP-2 follows robust-fair's LAVIS
#: stage-1 config (``freeze_vit: True``): everything but the vision encoder.
RELEASED_SETS: dict[str, tuple[tuple[str, ...], str]] = {
    "open_clip": (("visual.", "transformer.", "text.transformer.encoder."),
                  ("CLIP: visual + transformer (released FairCLIP/robust-fair optimiser); BiomedCLIP: visual + "
                  "the text BERT's encoder blocks")),
    "tinyclip": (("visual.", "transformer."), "visual + transformer (released FairCLIP/robust-fair optimiser)"),
    "medclip": (("vision_model.", "text_model.model.encoder."),
                "vision_model (with its projection head) + the text BERT's encoder blocks"),
    "gloria": (("img_encoder.", "text_encoder.model.encoder."),
               "img_encoder (with its embedders) + the text BERT's encoder blocks"),
    "blip2": (("query_tokens", "qformer.", "embeddings.", "vision_projection.", "text_projection."),
              "everything but the vision encoder (robust-fair's LAVIS stage-1 config, freeze_vit: True)"),
}

_PROBE_TEXTS = ["a chest x-ray showing clear lungs", "no acute cardiopulmonary abnormality"]


@dataclass(frozen=True)
class Towers:
    feature: frozenset[str]  # parameters reached by image_outputs()["feature"]
    vision: frozenset[str]  # ... by any image output
    text: frozenset[str]  # ... by encode_text


def _reached(module: nn.Module, loss: torch.Tensor) -> frozenset[str]:
    module.zero_grad(set_to_none=True)
    loss.backward()
    out = frozenset(n for n, p in module.named_parameters() if p.grad is not None)
    module.zero_grad(set_to_none=True)
    return out


def probe_towers(model: Any) -> Towers:
    module: nn.Module = model.module
    was_training = module.training
    flags = {n: p.requires_grad for n, p in module.named_parameters()}
    for p in module.parameters():
        p.requires_grad_(True)
    module.eval()
    try:
        size = model.card.preprocessing.image_size
        pixels = torch.zeros(2, model.card.preprocessing.channels, size, size)
        feature = _reached(module, model.image_outputs(pixels)["feature"].float().sum())
        out = model.image_outputs(pixels)
        vision = _reached(module, sum(v.float().sum() for v in out.values()))
        text = _reached(module, model.encode_text(model.tokenize(_PROBE_TEXTS)).float().sum())
    finally:
        for n, p in module.named_parameters():
            p.requires_grad_(flags[n])
        module.train(was_training)
    return Towers(feature=feature, vision=vision, text=text)


def train_probe_feature(model: Any) -> dict[str, Any]:
    """``requires_grad`` on exactly the parameters that reach the probe feature (full fine-tuning with a head);
    returns what to record."""
    module: nn.Module = model.module
    reach = probe_towers(model).feature
    for name, param in module.named_parameters():
        param.requires_grad_(name in reach)
    return {"n_trainable_parameters": sum(p.numel() for p in module.parameters() if p.requires_grad),
            "n_parameters": sum(p.numel() for p in module.parameters())}


def freeze_all(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


def set_norm_eval(module: nn.Module) -> None:
    """Batch-norm layers to eval mode (frozen running statistics), e.g. under LoRA."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


@contextlib.contextmanager
def keep_norm_statistics(module: nn.Module) -> Iterator[int]:
    """Forward passes inside leave every batch-norm layer's running statistics as they were (the layers still
    normalise with the batch's own statistics in training mode). The layers run on copies of their buffers,
    and the original buffer tensors are put back afterwards: nothing is written in place, so the autograd
    graph of the forward stays valid. Yields the number of such layers."""
    layers = [m for m in module.modules()
              if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    originals = [dict(m._buffers) for m in layers]
    for m, buffers in zip(layers, originals, strict=True):
        for k, b in buffers.items():
            if b is not None:
                m._buffers[k] = b.clone()
    try:
        yield len(layers)
    finally:
        for m, buffers in zip(layers, originals, strict=True):
            m._buffers.update(buffers)


def _text_only_linears(module: nn.Module, towers: Towers) -> list[str]:
    only_text = towers.text - towers.vision
    return [name for name, m in module.named_modules()
            if isinstance(m, nn.Linear) and f"{name}.weight" in only_text]


def inject_lora(model: Any, *, r: int, alpha: float, dropout: float, text: bool,
                towers: Towers | None = None) -> dict[str, Any]:
    """LoRA adapters (peft) on the card's vision targets (:meth:`VLModel.lora_target_modules`) and, with
    ``text``, on every ``nn.Linear`` used only by the text path. Everything else is frozen; only the LoRA
    weights train. Returns what to record."""
    from peft import LoraConfig, inject_adapter_in_model

    module: nn.Module = model.module
    pattern = model.lora_target_modules()
    text_targets: list[str] = []
    if text:
        towers = towers or probe_towers(model)
        text_targets = _text_only_linears(module, towers)
        if text_targets:
            pattern = f"{pattern}|" + "|".join(f"(?:{re.escape(n)})" for n in text_targets)
    freeze_all(module)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=pattern, bias="none")
    inject_adapter_in_model(config, module)
    n_trainable = 0
    for name, p in module.named_parameters():
        p.requires_grad_("lora_" in name)
        n_trainable += p.numel() if p.requires_grad else 0
    from peft.tuners.lora import LoraLayer

    adapted = [n for n, m in module.named_modules() if isinstance(m, LoraLayer) and ".base_layer." not in n]
    return {"target_modules": pattern, "n_adapted_modules": len(adapted),
            "n_text_modules": len(text_targets), "n_trainable_parameters": n_trainable}


def released_names(model: Any) -> tuple[frozenset[str], str]:
    """The parameter names of :data:`RELEASED_SETS` for the model's family, and the rule that chose them."""
    family = model.card.family
    if family not in RELEASED_SETS:
        raise ValueError(f"no released parameter set for model family '{family}'")
    prefixes, rule = RELEASED_SETS[family]
    names = frozenset(n for n, _ in model.module.named_parameters()
                      if any(n == p or n.startswith(p) for p in prefixes))
    return names, rule


def select_trainable(model: Any, which: str) -> dict[str, Any]:
    """``requires_grad`` on the ``released`` set (:func:`released_names`) or on ``all`` parameters, off on the
    rest. Returns what to record."""
    module: nn.Module = model.module
    if which == "all":
        names, rule = frozenset(n for n, _ in module.named_parameters()), "every parameter"
    elif which == "released":
        names, rule = released_names(model)
    else:
        raise ValueError(f"trainable must be one of {TRAINABLE_SETS}, got {which!r}")
    for name, p in module.named_parameters():
        p.requires_grad_(name in names)
    return {"trainable": which, "rule": rule,
            "n_trainable_parameters": sum(p.numel() for p in module.parameters() if p.requires_grad),
            "n_parameters": sum(p.numel() for p in module.parameters())}
