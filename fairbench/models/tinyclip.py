"""Contrastive pretraining of ``tinyclip`` on a synthetic task's training image-report pairs.

The weights of the shipped card (``pretrain:synth_cxr`` with the card's settings) come with fairbench, as fp16
safetensors under ``fairbench/models/shipped/`` (sha256-checked at load), so no user machine pretrains and every
machine runs the same weights: pretraining in floating point depends on the CPU's vector kernels. They are rebuilt
only with a bump of ``PRETRAIN_VERSION``, by ``python -m fairbench.models.tinyclip --rebuild`` (docs/models.md).

Any other pretraining (another synthetic task, other settings in a card) is built on first use (CPU, well under
two minutes) and cached as safetensors under ``<cache>/tinyclip/``. The cache key covers the architecture, preprocessing, the pretraining settings, the
synthetic data's fingerprint (options, seed, generator version), the torch thread count and this module's
version, so any change rebuilds. A cache file that cannot be read is rebuilt, and the user is told.

Pretraining always runs on ``PRETRAIN_THREADS`` torch threads (the caller's count is restored afterwards):
floating-point sums in another order give other weights, and a sweep's cells run under different thread
counts (a Ray task gets its CPUs, a local worker CPUs / workers), so the weights, and every number measured
with them, would otherwise depend on which executor built the cache first.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fairbench.cards import card_sha256
from fairbench.errors import WeightsError
from fairbench.models.base import ModelCard
from fairbench.models.family import Family
from fairbench.models.inputs import resolve_inputs
from fairbench.models.openclip import (
    OpenCLIPModel,
    _tokenizer,
    build_open_clip,
    create_architecture,
    load_state_file,
    load_strict,
    open_clip_architecture,
    open_clip_inputs,
)
from fairbench.models.weights import WeightsSource, cache_root, files_info, sha256_file
from fairbench.progress import bar, info, warn
from fairbench.results import atomic_write

__all__ = [
    "FAMILY",
    "PRETRAIN_DEFAULTS",
    "PRETRAIN_THREADS",
    "PRETRAIN_VERSION",
    "SHIPPED_DIR",
    "build_tinyclip",
    "pretrain_cache_path",
    "pretrain_key",
    "pretrain_provenance",
    "pretrained_weights",
    "rebuild_shipped",
    "shipped_weights",
]

#: the pretrained weights that come with fairbench: ``<card>-<task>.safetensors`` (fp16) and a manifest
#: ``<card>-<task>.json`` {key, sha256, pretrain_version, ...} beside each
SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
#: (card, task) pairs whose weights are shipped; ``--rebuild`` builds these
SHIPPED = (("tinyclip", "synth_cxr"),)

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


def pretrain_key(card: ModelCard, task_name: str) -> str:
    """What the pretrained weights depend on, hashed: architecture, preprocessing, pretraining settings, the
    synthetic data's fingerprint, this module's version and the thread count."""
    from fairbench.data.task import get_task

    task = get_task(task_name)
    if not task.synthetic:
        raise WeightsError(f"model '{card.name}': 'pretrain:{task_name}' needs a synthetic task; "
                           f"'{task_name}' is not marked synthetic")
    return card_sha256({
        "architecture": card.architecture,
        "preprocessing": card.preprocessing.__dict__,
        "pretrain": _settings(card),
        "data": task.loader().fingerprint(),
        "code": PRETRAIN_VERSION,
        "threads": PRETRAIN_THREADS,
    })[:16]


def pretrain_cache_path(card: ModelCard, task_name: str) -> Path:
    return cache_root() / "tinyclip" / f"{card.name}-{task_name}-{pretrain_key(card, task_name)}.safetensors"


def _shipped_paths(card_name: str, task_name: str) -> tuple[Path, Path]:
    stem = SHIPPED_DIR / f"{card_name}-{task_name}"
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def shipped_weights(card: ModelCard, task_name: str) -> tuple[Path, dict[str, Any]] | None:
    """The shipped weights file and its manifest when fairbench ships the weights that ``pretrain:<task>``
    with this card's settings would build (same pretraining key), else None. The file's sha256 must equal the
    manifest's: a mismatch is a WeightsError (a damaged or changed installation), never a silent rebuild."""
    path, manifest_path = _shipped_paths(card.name, task_name)
    if not manifest_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        key, want = str(manifest["key"]), str(manifest["sha256"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WeightsError(f"{manifest_path}: not a readable manifest of shipped weights ({exc}); reinstall "
                           f"fairbench") from None
    if key != pretrain_key(card, task_name):
        return None  # other settings or data than the shipped build: pretrain (cached) as for any other task
    if not path.is_file():
        raise WeightsError(f"{path}: shipped weights file is missing (its manifest {manifest_path.name} is "
                           f"there); reinstall fairbench")
    got = sha256_file(path)
    if got != want:
        raise WeightsError(f"{path}: sha256 {got[:16]}... does not match the manifest's {want[:16]}... (a damaged "
                           f"or changed file); reinstall fairbench, or rebuild it with "
                           f"`python -m fairbench.models.tinyclip --rebuild`")
    return path, manifest


def pretrained_weights(card: ModelCard, task_name: str) -> Path:
    """The cached weights file (never the shipped one), pretraining first when it is missing or unreadable. Processes that need the
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
    from safetensors.torch import save

    state, meta = _pretrain_state(card, task_name, where=f"first use only; cached in {path.parent}")
    # the bytes into atomic_write's file (0666 less the umask, as open() makes it); save_file would write 0600
    atomic_write(path, lambda tmp: tmp.write_bytes(save(state, metadata=meta)))


def _pretrain_state(card: ModelCard, task_name: str, *, where: str) -> tuple[dict[str, torch.Tensor],
                                                                             dict[str, str]]:
    """Pretrain from scratch: the state dict (fp32) and the metadata written beside it."""
    import open_clip

    from fairbench.data.task import get_task

    settings = _settings(card)
    task = get_task(task_name)
    train = task.load_split("train")
    if not train.texts:
        raise WeightsError(f"task '{task_name}' has no paired texts to pretrain '{card.name}' on")
    n = len(train) if settings["max_samples"] is None else min(len(train), int(settings["max_samples"]))
    info(f"pretraining '{card.name}' contrastively on {n} synthetic image-report pairs of '{task_name}' "
         f"({where})")
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
    info(f"pretrained '{card.name}' in {time.time() - t0:.0f} s (final contrastive loss {loss.item():.3f})")
    return state, {"card": card.name, "task": task_name, "final_loss": f"{loss.item():.4f}",
                   "pretrain_version": PRETRAIN_VERSION, "threads": str(torch.get_num_threads())}


def build_tinyclip(card: ModelCard, source: WeightsSource, device: torch.device) -> OpenCLIPModel:
    """tinyclip: an open_clip CLIP pretrained by fairbench on a synthetic task's image-report pairs."""
    if source.scheme != "pretrain":
        return build_open_clip(card, source, device)
    shipped = shipped_weights(card, source.value)
    path = shipped[0] if shipped is not None else pretrained_weights(card, task_name=source.value)
    model = create_architecture(card)
    load_strict(model, load_state_file(path), where=str(path), card=card)  # fp16 -> fp32 is exact
    info = {**files_info(f"pretrain:{source.value}", [path], model), "file": str(path)}
    if shipped is not None:
        # the shipped file: its bytes' sha256 (checked against the manifest above) and how it was built
        info.update({"shipped": True, "file_sha256": shipped[1]["sha256"], "dtype": shipped[1].get("dtype"),
                     "pretrain_threads": shipped[1].get("threads")})
    else:
        info.update({"shipped": False, **pretrain_provenance(path)})
    inputs = resolve_inputs(card, source)
    inputs.raise_if_missing()
    return OpenCLIPModel(card, model, _tokenizer(card, inputs.tokenizer), device, {**info, **inputs.info()})


#: tinyclip reads its inputs as the open_clip family does
FAMILY = Family(build=build_tinyclip, inputs=open_clip_inputs, architecture=open_clip_architecture, layout="open_clip")


# -- the shipped weights: rebuilt only with a version bump ------------------------------------------------------
def rebuild_shipped(card_name: str = "tinyclip", task_name: str = "synth_cxr", *, out_dir: Path | None = None) -> Path:
    """Pretrain ``card_name`` on ``task_name`` (on ``PRETRAIN_THREADS`` threads, through the cache like any
    ``pretrain:`` source: a cache that already holds this key's build is used, so release builds run with a fresh
    ``FAIRBENCH_CACHE``), round to fp16 and write the shipped file and its manifest into ``out_dir`` (default
    :data:`SHIPPED_DIR`). Refuses to replace shipped
    weights built for the same pretraining key: bump ``PRETRAIN_VERSION`` first (the shipped weights are part of
    a release; every number measured with them changes)."""
    from safetensors import safe_open
    from safetensors.torch import save

    from fairbench.models.base import get_model_card

    card = get_model_card(card_name)
    key = pretrain_key(card, task_name)
    out_dir = SHIPPED_DIR if out_dir is None else Path(out_dir)
    path = out_dir / f"{card.name}-{task_name}.safetensors"
    manifest_path = path.with_suffix(".json")
    if manifest_path.is_file():
        try:
            old_key = json.loads(manifest_path.read_text(encoding="utf-8")).get("key")
        except (OSError, ValueError, AttributeError):
            old_key = None
        if old_key == key:
            raise WeightsError(f"{manifest_path}: shipped weights for this pretraining key ({key}) exist; bump "
                               f"PRETRAIN_VERSION in fairbench/models/tinyclip.py to rebuild them")
    # the fp32 build is the cache's (pretrained here, on PRETRAIN_THREADS threads, unless the cache already holds
    # the build for this key): run with a fresh FAIRBENCH_CACHE to pretrain from scratch
    built = pretrained_weights(card, task_name)
    with safe_open(str(built), framework="pt") as fh:
        meta = dict(fh.metadata() or {})
    state = load_state_file(built)
    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    atomic_write(path, lambda tmp: tmp.write_bytes(save(half, metadata={**meta, "dtype": "float16"})))
    manifest = {"card": card.name, "task": task_name, "key": key, "sha256": sha256_file(path),
                "dtype": "float16", "pretrain_version": PRETRAIN_VERSION, "threads": PRETRAIN_THREADS,
                "final_loss": meta.get("final_loss"), "built_from": built.name, "torch": torch.__version__,
                "rebuild": "python -m fairbench.models.tinyclip --rebuild"}
    atomic_write(manifest_path, lambda tmp: tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8"))
    info(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, sha256 {manifest['sha256']}) and {manifest_path.name}")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fairbench.models.tinyclip",
                                     description="Rebuild the tinyclip weights shipped with fairbench.")
    parser.add_argument("--rebuild", action="store_true", help="pretrain and write the shipped weights "
                        "(refused unless PRETRAIN_VERSION was bumped since the last build)")
    parser.add_argument("--out-dir", type=Path, default=None, help=f"where to write them (default {SHIPPED_DIR})")
    args = parser.parse_args(argv)
    if not args.rebuild:
        parser.print_help()
        return 2
    try:
        for card_name, task_name in SHIPPED:
            rebuild_shipped(card_name, task_name, out_dir=args.out_dir)
    except WeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
