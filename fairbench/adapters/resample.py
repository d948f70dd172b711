"""``resample``: training batches balanced over the (protected group x label) cells of one attribute.

Each epoch draws as many samples as the training split holds, with replacement, every cell equally likely
(Sagawa et al.'s ``--reweight_groups`` sampler without the robust loss; MEDFAIR's "resampling" baseline);
the loss is the plain mean cross-entropy. Backbones and the recorded cells: :mod:`fairbench.adapters._mitigation`.
"""

from __future__ import annotations

from fairbench.adapters._mitigation import MitigationAdapter
from fairbench.adapters.base import AdaptContext
from fairbench.train.groups import Cells, Mitigation, Resample

__all__ = ["ResampleAdapter"]


class ResampleAdapter(MitigationAdapter):
    name = "resample"
    description = ("Resampling: batches balanced over (attribute group x label) cells; frozen-feature MLP head "
                   "(backbone=head) or end to end (lora|full)")

    def mitigation(self, cells: Cells, ctx: AdaptContext) -> Mitigation:
        return Resample(cells)
