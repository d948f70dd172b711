"""Where a training cell's memory goes (issue #24 item 1, docs/scale.md "Memory of training").

Runs ``fairbench run ARGS...`` in this process while a thread samples the resident set every 50 ms, and marks
when the model is built, LoRA is injected, each optimizer step ends and each split is predicted; prints, per
mark, the resident set then and the highest sample since the previous mark, and the overall peak.

    nice python bench/bench_train_memory.py run --task synth_cxr --model medclip_vit --weights random \\
        --adapt lora --task-arg n.train=160 --task-arg n.val=160 --task-arg n.test=160 \\
        --task-arg image_size=224 --adapt-arg epochs=1 --n-boot 0 --device cpu --no-embedding-cache --overwrite

``--json FILE`` (first argument) also writes the samples and marks. Needs psutil.
"""

from __future__ import annotations

import functools
import importlib
import json
import sys
import threading
import time
from typing import Any

import psutil

_PROC = psutil.Process()
SAMPLES: list[tuple[float, int]] = []
MARKS: list[tuple[float, str, int]] = []
_stop = threading.Event()


def _sample() -> None:
    while not _stop.is_set():
        SAMPLES.append((time.time(), _PROC.memory_info().rss))
        time.sleep(0.05)


def mark(label: str) -> None:
    MARKS.append((time.time(), label, _PROC.memory_info().rss))


def _wrap(spec: str) -> None:
    module, owner_name, name = spec.split(":")
    mod = importlib.import_module(module)
    owner: Any = getattr(mod, owner_name) if owner_name else mod
    if not hasattr(owner, name):
        return
    fn = getattr(owner, name)

    @functools.wraps(fn)
    def marked(*a: Any, **k: Any) -> Any:
        mark(f"> {owner_name}.{name}")
        try:
            return fn(*a, **k)
        finally:
            mark(f"< {owner_name}.{name}")

    setattr(owner, name, marked)


WRAPPED = ("fairbench.pipeline::build_model", "fairbench.train.towers::inject_lora",
           "fairbench.train.objectives:ImageHead:__init__", "fairbench.train.objectives:ImageHead:predict",
           "fairbench.train.objectives:ClipObjective:predict", "fairbench.train.loop:Trainer:run",
           "fairbench.pipeline::metrics_document")


def main(argv: list[str]) -> None:
    out = None
    if argv[:1] == ["--json"]:
        out, argv = argv[1], argv[2:]
    threading.Thread(target=_sample, daemon=True).start()
    for spec in WRAPPED:
        _wrap(spec)
    from fairbench.train import loop

    loop.STEP_HOOKS.append(lambda epoch, step: mark(f"step {epoch}:{step}"))
    from fairbench.cli import app

    t0 = time.time()
    try:
        app(argv, standalone_mode=False)
    finally:
        _stop.set()
        mib = 2**20
        print(f"peak sampled RSS {max(r for _, r in SAMPLES) / mib:.0f} MiB")
        prev = t0
        for t, label, rss in MARKS:
            since = [r for ts, r in SAMPLES if prev <= ts <= t]
            print(f"{t - t0:8.1f}s  {label:40s} RSS {rss / mib:7.0f} MiB   highest since previous mark "
                  f"{(max(since) if since else rss) / mib:7.0f} MiB")
            prev = t
        if out:
            with open(out, "w") as f:
                json.dump({"t0": t0, "samples": SAMPLES, "marks": MARKS}, f)


if __name__ == "__main__":
    main(sys.argv[1:])
