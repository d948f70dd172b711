"""``reweight``: loss weights inversely proportional to the (protected group x label) cell frequency.

Sample ``i`` of cell ``c`` weighs ``n / (K n_c)`` (K cells; the weights average 1 over the training split, as
scikit-learn's "balanced" class weights), every sample is seen once per epoch, and the batch loss is the mean
of the weighted cross-entropies (MEDFAIR's "reweighting" baseline). The weights are recorded per cell.
Backbones and the recorded cells: :mod:`fairbench.adapters._mitigation`.
"""

from __future__ import annotations

from fairbench.adapters._mitigation import MitigationAdapter
from fairbench.adapters.base import AdaptContext
from fairbench.train.groups import Cells, Mitigation, Reweight

__all__ = ["ReweightAdapter"]


class ReweightAdapter(MitigationAdapter):
    name = "reweight"
    description = ("Reweighting: cross-entropy weighted by 1 / (attribute group x label) cell frequency; "
                   "frozen-feature MLP head (backbone=head) or end to end (lora|full)")

    def mitigation(self, cells: Cells, ctx: AdaptContext) -> Mitigation:
        return Reweight(cells, ctx.model.device)
