"""Settings of the shared training loop, read from an adapter's parameters.

Every trainable adapter declares these parameters (with its own defaults) next to its objective's; they are
recorded in metrics.json under ``adapt.params`` like every other parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fairbench.errors import FairbenchError

__all__ = ["LOOP_DEFAULTS", "OPTIMIZERS", "SCHEDULES", "SELECT_SPLITS", "SGD_MOMENTUM", "TrainConfig"]

OPTIMIZERS = ("adamw", "adam", "sgd")
#: momentum of ``optimizer=sgd``: 0.9, as GroupDRO's release hard-codes it (kohpangwei/group_DRO, train.py)
SGD_MOMENTUM = 0.9
SCHEDULES = ("constant", "cosine", "linear")
SELECT_SPLITS = ("val", "test", "val_worst_group", "val_worst_cell_acc")

#: the loop's parameters and fairbench's defaults for them (adapters override what their method prescribes)
LOOP_DEFAULTS: dict[str, Any] = {
    "epochs": 10,
    "batch_size": 32,
    "lr": 1e-4,
    "weight_decay": 0.01,
    # adamw: decoupled weight decay; adam: torch.optim.Adam with L2 weight decay (FairCLIP's released setting);
    # sgd: torch.optim.SGD with momentum 0.9 and L2 weight decay (GroupDRO's released setting; betas/eps unused)
    "optimizer": "adamw",
    "betas": [0.9, 0.999],
    "eps": 1e-8,
    "schedule": "cosine",
    "warmup_steps": 0,
    "grad_accum": 1,
    "max_grad_norm": 0.0,
    # mixed precision (float16 autocast + gradient scaling) on CUDA; CPU runs stay in float32
    "amp": True,
    # epochs without a better selection score before stopping (0: run every epoch, keep the best)
    "patience": 3,
    # what picks the epoch: val (validation AUC, default), val_worst_group (the worst group's validation AUC,
    # adapters with an attribute), val_worst_cell_acc (the lowest validation accuracy over the attribute's
    # (group x label) cells: GroupDRO's released --save_best) or test (FairCLIP's published protocol; warned, recorded)
    "select_on": "val",
    "eval_batch_size": 128,
    "keep_checkpoints": False,
}


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    optimizer: str
    betas: tuple[float, float]
    eps: float
    schedule: str
    warmup_steps: int
    grad_accum: int
    max_grad_norm: float
    amp: bool
    patience: int
    select_on: str
    eval_batch_size: int
    keep_checkpoints: bool

    @classmethod
    def from_params(cls, adapter: str, params: dict[str, Any]) -> TrainConfig:
        def fail(key: str, why: str) -> FairbenchError:
            return FairbenchError(f"adapter '{adapter}': parameter '{key}' {why}, got {params[key]!r}")

        # numeric ranges (epochs >= 1, lr > 0, betas in [0, 1), ...) are checked once, when the adapter parses its
        # parameters (fairbench.adapters.base.PARAM_RANGES); here only the choices and the shape of betas
        if params["optimizer"] not in OPTIMIZERS:
            raise fail("optimizer", f"must be one of {', '.join(OPTIMIZERS)}")
        if params["schedule"] not in SCHEDULES:
            raise fail("schedule", f"must be one of {', '.join(SCHEDULES)}")
        if params["select_on"] not in SELECT_SPLITS:
            raise fail("select_on", f"must be one of {', '.join(SELECT_SPLITS)}")
        betas = [float(b) for b in params["betas"]]
        if len(betas) != 2:
            raise fail("betas", "must be two numbers in [0, 1)")
        return cls(epochs=int(params["epochs"]), batch_size=int(params["batch_size"]), lr=float(params["lr"]),
                   weight_decay=float(params["weight_decay"]), optimizer=str(params["optimizer"]),
                   betas=(betas[0], betas[1]), eps=float(params["eps"]), schedule=str(params["schedule"]),
                   warmup_steps=int(params["warmup_steps"]), grad_accum=int(params["grad_accum"]),
                   max_grad_norm=float(params["max_grad_norm"]), amp=bool(params["amp"]),
                   patience=int(params["patience"]), select_on=str(params["select_on"]),
                   eval_batch_size=int(params["eval_batch_size"]), keep_checkpoints=bool(params["keep_checkpoints"]))
