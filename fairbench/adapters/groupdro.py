"""``groupdro``: online GroupDRO (Sagawa, Koh, Hashimoto and Liang, ICLR 2020) over (protected group x label)
cells, as released in ``kohpangwei/group_DRO`` (``loss.py``, ``LossComputer.compute_robust_loss``).

Per step: the mean cross-entropy of each cell's samples in the batch (0 for an absent cell),
``q <- q * exp(eta * (loss_g + C / sqrt(n_g)))`` renormalised, loss ``sum_g q_g loss_g``; ``q`` starts uniform
and carries over steps and epochs (checkpointed). Defaults as released: ``eta=0.01`` (``--robust_step_size``),
``adjustment=0`` (``--generalization_adjustment``; applied only when > 0, as the release applies it only when
every adjustment is positive), and cell-balanced batches (``balanced_sampling=true``: ``--reweight_groups``,
used in every command of the release's README). The final ``q`` per cell is recorded in
``adapt.fitted.mitigation``. ``select_on=val_worst_group`` selects the epoch on the worst group's validation AUC.
Backbones and the recorded cells: :mod:`fairbench.adapters._mitigation`.
"""

from __future__ import annotations


from fairbench.adapters._mitigation import MitigationAdapter
from fairbench.adapters.base import AdaptContext
from fairbench.train.groups import Cells, GroupDRO, GroupDROMitigation, Mitigation

__all__ = ["GroupDROAdapter"]


class GroupDROAdapter(MitigationAdapter):
    name = "groupdro"
    description = ("GroupDRO (Sagawa et al. 2020): online weights on the worst (attribute group x label) cells, "
                   "cell-balanced batches; frozen-feature MLP head (backbone=head) or end to end (lora|full)")
    own = {"eta": 0.01, "adjustment": 0.0, "balanced_sampling": True}

    def mitigation(self, cells: Cells, ctx: AdaptContext) -> Mitigation:
        dro = GroupDRO(cells, float(self.params["eta"]), float(self.params["adjustment"]), ctx.model.device)
        return GroupDROMitigation(dro, bool(self.params["balanced_sampling"]))
