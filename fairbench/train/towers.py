"""Which parameters belong to which tower, and LoRA injection on a model card's targets.

The model interface has no notion of towers, so they are found by use: one backward pass from the image
outputs and one from the text embedding mark the parameters each reaches (:func:`probe_towers`). Full
fine-tuning with a classification head trains exactly the parameters that reach the probe feature; LoRA on
the text tower adapts the ``nn.Linear`` modules that only the text path uses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["Towers", "probe_towers", "inject_lora", "freeze_all", "set_norm_eval"]

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


def freeze_all(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


def set_norm_eval(module: nn.Module) -> None:
    """Batch-norm layers to eval mode (frozen running statistics), e.g. under LoRA."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


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
