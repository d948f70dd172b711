"""Inference precision for frozen-encoder passes (``fairbench run --precision``).

``fp32`` (default) runs the image encoder in float32. ``bf16`` and ``fp16`` run it under ``torch.autocast``:
matrix products and convolutions in bfloat16 / float16, reductions and normalisations in float32 (autocast's
own op lists). The outputs are cast back to float32 before anything else sees them (zero-shot heads, probes,
the embedding cache), so only the encoder's arithmetic changes.

- CPU: ``bf16`` only (CPU autocast has no float16 path worth the name: ``fp16`` is refused with one line).
- CUDA: ``bf16`` (on devices that support it) and ``fp16``.

Training has its own switch (the trainable adapters' ``amp`` parameter: float16 autocast with gradient
scaling on CUDA); ``--precision`` governs the frozen-encoder passes of ``zeroshot``, ``linear_probe`` and
``mlp`` (:meth:`fairbench.adapters.base.AdaptContext.encode`). A cell records the precision it used and the
measured effect on a subset against a float32 pass (``metrics.json`` ``precision``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from fairbench.errors import FairbenchError

__all__ = ["DTYPES", "PRECISIONS", "autocast", "check_precision", "inference_batch_size"]

PRECISIONS = ("fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


#: images per frozen-encoder forward pass: on CPU a batch of 256 ViT-B/32 images ran slower than 64 (the
#: activations of a 256-image batch no longer fit the caches; docs/models.md, "Speed and precision")
BATCH_CPU, BATCH_CUDA = 64, 256


def inference_batch_size(device: torch.device) -> int:
    return BATCH_CUDA if device.type == "cuda" else BATCH_CPU


def check_precision(precision: str, device: torch.device) -> None:
    """One clear line when ``precision`` is unknown or unsupported on ``device``."""
    if precision not in PRECISIONS:
        raise FairbenchError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type == "cpu":
        raise FairbenchError("--precision fp16: float16 autocast is for CUDA; on CPU use bf16 (or fp32)")
    if device.type not in ("cpu", "cuda") and precision != "fp32":
        raise FairbenchError(f"--precision {precision}: autocast is offered on cpu and cuda, not on "
                             f"{device.type}; use fp32")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise FairbenchError(f"--precision bf16: {torch.cuda.get_device_name(device)} does not support "
                             f"bfloat16; use fp16 (or fp32)")


@contextlib.contextmanager
def autocast(precision: str, device: torch.device) -> Iterator[None]:
    """``torch.autocast`` for ``precision`` on ``device`` (nothing for fp32)."""
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=DTYPES[precision]):
        yield
