"""``groupdro``: online GroupDRO (Sagawa, Koh, Hashimoto and Liang, ICLR 2020) over (protected group x label)
cells, as released in ``kohpangwei/group_DRO`` (``loss.py``, ``LossComputer.compute_robust_loss``).

Per step: the mean cross-entropy of each cell's samples in the batch (0 for an absent cell),
``q <- q * exp(eta * (loss_g + C / sqrt(n_g)))`` renormalised, loss ``sum_g q_g loss_g``; ``q`` starts uniform
and carries over steps and epochs (checkpointed). Under data parallelism the cells' loss sums and counts are
all-reduced before the step, so every process holds the one-process ``q`` of the global batch. Defaults as
released: ``eta=0.01`` (``--robust_step_size``), ``adjustment=0`` (``--generalization_adjustment``; applied only
when > 0, as the release applies it only when every adjustment is positive), and cell-balanced batches
(``balanced_sampling=true``: ``--reweight_groups``, used in every command of the release's README). The final
``q`` per cell is recorded in ``adapt.fitted.mitigation``.

``recipe`` (recorded in ``adapt.params`` and ``adapt.fitted.recipe``):

- ``fairbench`` (default): the loop of the other mitigation adapters (AdamW, epoch selected on validation AUC,
  early stopping), so a ``groupdro`` cell differs from a ``resample``/``reweight``/``mlp`` cell only in the
  mitigation;
- ``released``: the release's optimisation (``train.py``): SGD with momentum 0.9, weight decay 1e-4 (its
  README's CelebA and Waterbirds commands), constant learning rate (no ``--scheduler``), every epoch run
  (``patience=0``), and the epoch with the best worst-cell validation accuracy kept (``--save_best``:
  ``min(avg_group_acc)`` over the (group x label) cells; ``select_on=val_worst_cell_acc``). Parameters given
  explicitly still override the recipe's.

Backbones and the recorded cells: :mod:`fairbench.adapters._mitigation`.
"""

from __future__ import annotations

from typing import Any

from fairbench.adapters._mitigation import MitigationAdapter
from fairbench.adapters.base import AdaptContext
from fairbench.errors import FairbenchError
from fairbench.train.config import SGD_MOMENTUM
from fairbench.train.groups import Cells, GroupDRO, GroupDROMitigation, Mitigation

__all__ = ["RECIPES", "RELEASED", "GroupDROAdapter"]

RECIPES = ("fairbench", "released")
#: the loop settings of ``recipe=released`` (kohpangwei/group_DRO, train.py and README)
RELEASED: dict[str, Any] = {"optimizer": "sgd", "weight_decay": 1e-4, "schedule": "constant", "warmup_steps": 0,
                            "patience": 0, "select_on": "val_worst_cell_acc"}


class GroupDROAdapter(MitigationAdapter):
    name = "groupdro"
    description = ("GroupDRO (Sagawa et al. 2020): online weights on the worst (attribute group x label) cells, "
                   "cell-balanced batches; frozen-feature MLP head (backbone=head) or end to end (lora|full); "
                   "recipe=released for the release's SGD and worst-cell accuracy selection")
    own = {"eta": 0.01, "adjustment": 0.0, "balanced_sampling": True, "recipe": "fairbench"}

    def preset(self, defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
        recipe = given.get("recipe", "fairbench")
        if recipe not in RECIPES:
            raise FairbenchError(f"adapter 'groupdro': recipe must be one of {', '.join(RECIPES)}, got {recipe!r}")
        return {**defaults, **RELEASED} if recipe == "released" else defaults

    def mitigation(self, cells: Cells, ctx: AdaptContext) -> Mitigation:
        p = self.params
        self.fitted["recipe"] = {"name": p["recipe"], "optimizer": p["optimizer"],
                                 **({"momentum": SGD_MOMENTUM} if p["optimizer"] == "sgd" else {}),
                                 "weight_decay": p["weight_decay"], "select_on": p["select_on"],
                                 "overridden": sorted(k for k in RELEASED if k in self.given)
                                 if p["recipe"] == "released" else []}
        dro = GroupDRO(cells, float(p["eta"]), float(p["adjustment"]), ctx.model.device)
        return GroupDROMitigation(dro, bool(p["balanced_sampling"]))
