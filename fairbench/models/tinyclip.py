"""Contrastive pretraining of ``tinyclip`` on a synthetic task's training image-report pairs.

The weights are built once on first use (CPU, well under two minutes) and cached as safetensors under
``<cache>/tinyclip/``. The cache key covers the architecture, preprocessing, the pretraining settings, the
synthetic data's fingerprint (options, seed, generator version), the torch thread count and this module's
version, so any change rebuilds. A cache file that cannot be read is rebuilt, and the user is told.

Pretraining always runs on ``PRETRAIN_THREADS`` torch threads (the caller's count is restored afterwards):
floating-point sums in another order give other weights, and a sweep's cells run under different thread
counts (a Ray task gets its CPUs, a local worker CPUs / workers), so the weights, and every number measured
with them, would otherwise depend on which executor built the cache first.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fairbench.cards import card_sha256
from fairbench.errors import WeightsError
from fairbench.models.base import ModelCard
from fairbench.models.inputs import resolve_inputs
from fairbench.models.family import Family
from fairbench.models.openclip import (OpenCLIPModel, _tokenizer, open_clip_inputs, build_open_clip, create_architecture, load_state_file,
                                       load_strict)
from fairbench.models.weights import WeightsSource, cache_root, files_info
from fairbench.progress import bar, info, warn

__all__ = ["FAMILY", "build_tinyclip", "PRETRAIN_DEFAULTS", "PRETRAIN_THREADS", "PRETRAIN_VERSION", "pretrain_cache_path",
           "pretrain_provenance", "pretrained_weights"]

#: bump when the pretraining procedure changes in a way that changes the weights
PRETRAIN_VERSION = "2"
#: torch threads pretraining runs on, whatever the caller's count (deterministic weights on a given machine)
PRETRAIN_THREADS = 1
PRETRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 12,
    "batch_size": 64,
    "lr": 1e-3,
    "weight_decay": 0.1,
    "warmup_steps": 20,
    "seed": 0,
    "max_samples": None,
}


def _settings(card: ModelCard) -> dict[str, Any]:
    given = dict(card.options.get("pretrain", {}))
    unknown = sorted(set(given) - set(PRETRAIN_DEFAULTS))
    if unknown:
        raise WeightsError(f"{card.path}: options.pretrain.{unknown[0]} is not a pretraining setting "
                           f"(known: {', '.join(PRETRAIN_DEFAULTS)})")
    return {**PRETRAIN_DEFAULTS, **given}


def pretrain_cache_path(card: ModelCard, task_name: str) -> Path:
    from fairbench.data.task import get_task

    task = get_task(task_name)
    if not task.synthetic:
        raise WeightsError(f"model '{card.name}': 'pretrain:{task_name}' needs a synthetic task; "
                           f"'{task_name}' is not marked synthetic")
    key = card_sha256({
        "architecture": card.architecture,
        "preprocessing": card.preprocessing.__dict__,
        "pretrain": _settings(card),
        "data": task.loader().fingerprint(),
        "code": PRETRAIN_VERSION,
        "threads": PRETRAIN_THREADS,
    })[:16]
    return cache_root() / "tinyclip" / f"{card.name}-{task_name}-{key}.safetensors"


def pretrained_weights(card: ModelCard, task_name: str) -> Path:
    """The cached weights file, pretraining first when it is missing or unreadable. Processes that need the
    same file at once (a sweep's workers) build it once: the others wait on a lock file beside it."""
    path = pretrain_cache_path(card, task_name)
    if _readable(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(path.with_name(path.name + ".lock"), card.name):
        if not _readable(path):  # another process may have built it while this one waited
            with _torch_threads(PRETRAIN_THREADS):
                _pretrain(card, task_name, path)
    return path


def pretrain_provenance(path: Path) -> dict[str, Any]:
    """What metrics.json records about how a cached file was built (its torch thread count)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    threads = meta.get("threads")
    return {"pretrain_threads": int(threads) if threads and threads.isdigit() else None}


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _readable(path: Path) -> bool:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.exists():
        return False
    try:
        load_file(str(path))
        return True
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        warn(f"cached weights {path} are unreadable ({exc}); rebuilding them")
        path.unlink(missing_ok=True)
        return False


@contextlib.contextmanager
def _exclusive(lock: Path, name: str) -> Iterator[None]:
    """An advisory lock (``fcntl.flock``; released by the OS if the holder dies). Where ``fcntl`` does not
    exist (Windows) there is no lock: concurrent builds then both write the same file atomically."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(lock, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info(f"waiting for another process that is pretraining '{name}' ({lock})")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _pretrain(card: ModelCard, task_name: str, path: Path) -> None:
    import open_clip
    from safetensors.torch import save_file

    from fairbench.data.task import get_task

    settings = _settings(card)
    task = get_task(task_name)
    train = task.load_split("train")
    if not train.texts:
        raise WeightsError(f"task '{task_name}' has no paired texts to pretrain '{card.name}' on")
    n = len(train) if settings["max_samples"] is None else min(len(train), int(settings["max_samples"]))
    info(f"pretraining '{card.name}' contrastively on {n} synthetic image-report pairs of '{task_name}' "
         f"(first use only; cached in {path.parent})")
    t0 = time.time()
    torch.manual_seed(settings["seed"])
    gen = torch.Generator().manual_seed(settings["seed"])
    model = create_architecture(card)
    model.train()
    images = card.preprocessing(train.images.load(np.arange(n)))
    tokenizer = open_clip.get_tokenizer(card.architecture["model_name"])
    ctx = int(card.architecture.get("text_cfg", {}).get("context_length", 77))
    tokens = tokenizer(list(train.texts[:n]), context_length=ctx)
    loss_fn = open_clip.ClipLoss()
    params_decay = [p for name, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in name]
    params_other = [p for name, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in name)]
    opt = torch.optim.AdamW([{"params": params_decay, "weight_decay": settings["weight_decay"]},
                             {"params": params_other, "weight_decay": 0.0}], lr=settings["lr"])
    bs = int(settings["batch_size"])
    steps_per_epoch = max(1, n // bs)
    total = steps_per_epoch * int(settings["epochs"])
    warmup = int(settings["warmup_steps"])

    def lr_at(step: int) -> float:
        if step < warmup:
            return settings["lr"] * (step + 1) / warmup
        return 0.5 * settings["lr"] * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    step = 0
    with bar(f"pretraining {card.name}", total) as b:
        for _epoch in range(int(settings["epochs"])):
            order = torch.randperm(n, generator=gen)
            for s in range(steps_per_epoch):
                idx = order[s * bs:(s + 1) * bs]
                for g in opt.param_groups:
                    g["lr"] = lr_at(step)
                fi = model.encode_image(images[idx], normalize=True)
                ft = model.encode_text(tokens[idx], normalize=True)
                loss = loss_fn(fi, ft, model.logit_scale.exp())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    model.logit_scale.clamp_(0, math.log(100))
                step += 1
                b.advance()
                b.postfix(f"loss {loss.item():.3f}")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(state, tmp, metadata={"card": card.name, "task": task_name, "final_loss": f"{loss.item():.4f}",
                                        "pretrain_version": PRETRAIN_VERSION,
                                        "threads": str(torch.get_num_threads())})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    info(f"pretrained '{card.name}' in {time.time() - t0:.0f} s (final contrastive loss {loss.item():.3f})")


def build_tinyclip(card: ModelCard, source: WeightsSource, device: torch.device) -> OpenCLIPModel:
    """tinyclip: an open_clip CLIP pretrained by fairbench on a synthetic task's image-report pairs."""
    if source.scheme != "pretrain":
        return build_open_clip(card, source, device)
    path = pretrained_weights(card, task_name=source.value)
    model = create_architecture(card)
    load_strict(model, load_state_file(path), where=str(path), card=card)
    info = {**files_info(f"pretrain:{source.value}", [path], model), "file": str(path)}
    info.update(pretrain_provenance(path))
    inputs = resolve_inputs(card, source)
    inputs.raise_if_missing()
    return OpenCLIPModel(card, model, _tokenizer(card, inputs.tokenizer), device, {**info, **inputs.info()})


#: tinyclip reads its inputs as the open_clip family does
FAMILY = Family(build=build_tinyclip, inputs=open_clip_inputs)
