"""Full fine-tuning (``full_ft``): every weight that the objective reaches trains (see
:mod:`fairbench.adapters._finetune` for the objectives ``head`` and ``clip``); with ``objective=clip``,
``trainable=released`` restricts it to the parameter set of FairCLIP's released scripts."""

from __future__ import annotations

from typing import Any

from fairbench.adapters._finetune import FINETUNE_DEFAULTS, FineTuneAdapter
from fairbench.adapters._trainable import check_trainable
from fairbench.adapters.base import AdaptContext

__all__ = ["FullFineTune"]


class FullFineTune(FineTuneAdapter):
    name = "full_ft"
    description = ("Full fine-tuning: linear head on the probe feature (objective=head) or CLIP loss with prompts "
                   "(objective=clip)")
    defaults = {**FINETUNE_DEFAULTS, "lr": 1e-5, "trainable": "all"}

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        super().__init__(params)
        check_trainable(self.name, self.params["trainable"])

    def prepare_model(self, ctx: AdaptContext) -> dict[str, Any]:
        from fairbench.train.towers import select_trainable, train_probe_feature

        if self.params["objective"] == "head":
            return train_probe_feature(ctx.model)
        return select_trainable(ctx.model, str(self.params["trainable"]))
