"""Data parallelism for the trainable adapters: torch.distributed when ``WORLD_SIZE`` > 1.

``accelerate launch`` and ``torchrun`` start one process per device and set ``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; every process runs the same ``fairbench run`` command.
The trainer then initialises the default process group (NCCL on CUDA, gloo on CPU), wraps the trainable
modules in ``DistributedDataParallel`` and gives each process its share of every batch. Only the main process
(rank 0) writes checkpoints and results; the others compute the same predictions and return.
"""

from __future__ import annotations

import os
from typing import Any

import torch

__all__ = [
    "all_gather_objects",
    "barrier",
    "broadcast_object",
    "ensure_process_group",
    "is_main_process",
    "local_device",
    "rank",
    "world_size",
]


def world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return int(torch.distributed.get_world_size())
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return int(torch.distributed.get_rank())
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def is_main_process() -> bool:
    """True in single-process runs and on rank 0: the one process that writes files."""
    return rank() == 0


def local_device(device: torch.device) -> torch.device:
    """Under a multi-process launch, ``cuda`` means this process's GPU (``cuda:LOCAL_RANK``)."""
    if device.type != "cuda" or world_size() <= 1 or device.index is not None:
        return device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local)
    return torch.device("cuda", local)


def ensure_process_group(device: torch.device) -> bool:
    """Initialise the default process group when launched with ``WORLD_SIZE`` > 1; True when distributed."""
    if world_size() <= 1:
        return False
    if not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend)
    return True


def barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every rank (itself when not distributed)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` when not distributed)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [obj]
    out: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out
