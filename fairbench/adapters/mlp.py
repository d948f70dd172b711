"""MLP head on frozen probe features, trained by the shared loop with early stopping on validation.

The image encoder stays frozen: features come from :meth:`AdaptContext.encode` (the embedding cache), so an
MLP cell after a zero-shot or linear-probe cell on the same model encodes no image. Features are standardised
with training-split statistics (as the linear probe does); the head is ``Linear -> ReLU -> Dropout`` per
hidden width, then a linear layer to the classes, trained with cross-entropy. The epoch with the best
validation AUC is kept (``patience`` epochs without improvement stop the run).
"""

from __future__ import annotations

from fairbench.adapters._trainable import TrainableAdapter
from fairbench.adapters.base import AdaptContext
from fairbench.errors import FairbenchError
from fairbench.train.config import LOOP_DEFAULTS
from fairbench.train.objectives import FeatureHead, Objective

__all__ = ["MLPHead", "feature_head"]


def feature_head(ctx: AdaptContext, params: dict, adapter: str) -> FeatureHead:
    """The MLP head on frozen probe features (``hidden``, ``dropout``), features from the embedding cache."""
    hidden = [int(h) for h in params["hidden"]]
    if any(h < 1 for h in hidden):
        raise FairbenchError(f"adapter '{adapter}': hidden widths must be positive, got {params['hidden']!r}")
    dropout = float(params["dropout"])
    if not 0.0 <= dropout < 1.0:
        raise FairbenchError(f"adapter '{adapter}': dropout must be in [0, 1), got {dropout!r}")
    features = {s: ctx.encode(s)["feature"] for s in ("train", "val", "test")}
    return FeatureHead(features, ctx.split("train").labels, len(ctx.task.classes), hidden=hidden, dropout=dropout,
                       device=ctx.model.device)


class MLPHead(TrainableAdapter):
    name = "mlp"
    description = "MLP head on frozen probe features (embedding cache), early stopping on validation AUC"
    defaults = {**LOOP_DEFAULTS, "epochs": 100, "batch_size": 128, "lr": 1e-3, "weight_decay": 1e-4,
                "schedule": "constant", "patience": 10, "hidden": [256], "dropout": 0.1}

    def build_objective(self, ctx: AdaptContext) -> Objective:
        return feature_head(ctx, self.params, self.name)
