"""LoRA fine-tuning (``lora``) via peft on the model card's ``lora_targets`` (vision tower; the text tower's
linear layers with ``lora_text=true``). Objectives ``head`` and ``clip``: see :mod:`fairbench.adapters._finetune`."""

from __future__ import annotations

from typing import Any

from fairbench.adapters._finetune import FINETUNE_DEFAULTS, FineTuneAdapter
from fairbench.adapters.base import AdaptContext
from fairbench.errors import FairbenchError

__all__ = ["LoRA"]


class LoRA(FineTuneAdapter):
    name = "lora"
    description = ("LoRA (peft) on the card's vision targets (text tower optional): linear head (objective=head) "
                   "or CLIP loss with prompts (objective=clip)")
    defaults = {**FINETUNE_DEFAULTS, "lr": 1e-4, "r": 8, "alpha": 16.0, "lora_dropout": 0.1, "lora_text": False}
    freeze_norm = True

    def prepare_model(self, ctx: AdaptContext) -> dict[str, Any]:
        from fairbench.train.towers import inject_lora

        p = self.params
        if int(p["r"]) < 1:
            raise FairbenchError(f"adapter 'lora': r must be at least 1, got {p['r']!r}")
        return inject_lora(ctx.model, r=int(p["r"]), alpha=float(p["alpha"]), dropout=float(p["lora_dropout"]),
                           text=bool(p["lora_text"]))
