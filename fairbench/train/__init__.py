"""Training for the trainable adapters: one shared loop (:mod:`fairbench.train.loop`), its settings,
checkpoints, data parallelism, objectives, and the pieces of FairCLIP and DBPM (:mod:`fairbench.train.fair`,
:mod:`fairbench.train.dbpm`)."""

from fairbench.train.config import LOOP_DEFAULTS, TrainConfig

__all__ = ["LOOP_DEFAULTS", "TrainConfig"]
