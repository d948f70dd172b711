"""GPU check: zero-shot, LoRA and robust_fair on CUDA with mixed precision, and the two-process DDP path.

    PYTHONPATH=. python3 bench/gpu_check.py                        # a CUDA machine, from the repository root
    PYTHONPATH=. python3 bench/gpu_check.py --device cpu --small   # smoke test without a GPU (tiny model)

Needs nothing but the project's dependencies (fairbench need not be pip-installed) and, without ``--small``,
a CUDA device: the model is ``clip_vit_b16`` with random weights (no download), the data a small synthetic task
written to a temporary folder. Every cell runs through ``fairbench.pipeline.run_cell``, as ``fairbench run``
does, once on the device and once on the CPU in float32 (the reference); the two predictions files are compared
probability by probability.

Rows (each prints images/s, peak device memory, max |delta probability| against its reference, the tolerance
and PASS/FAIL; the script exits 1 when any row fails):

- ``zeroshot fp32``: the device in float32 against the CPU (cuDNN's TF32 convolutions, the torch default, are
  left on: the tolerance allows for them).
- ``zeroshot amp``: ``--precision fp16`` on CUDA (bf16 on CPU) against the CPU in float32.
- ``encode fp32`` / ``encode amp``: throughput of the frozen-encoder pass as a run does it (preprocessing on
  the CPU, then the forward pass), over a few batches of 256 (64 on CPU).
- ``lora amp`` / ``robust_fair amp``: one epoch of training (LoRA dropout 0, so no random stream differs between
  devices), the loop's own float16 autocast and gradient scaling on CUDA, against the same cell trained on the
  CPU in float32. Images/s: training images over the epoch's seconds (which include scoring the validation split).
- ``ddp 2-proc lora``: two processes (``torch.multiprocessing`` spawn, ``WORLD_SIZE=2``), each taking half of
  every batch, against the one-process ``lora amp`` cell with the whole batch. With two or more GPUs the
  processes use ``cuda:0``/``cuda:1`` and NCCL; with one GPU both share ``cuda:0`` over gloo (NCCL refuses two
  ranks on one device); ``--ddp-backend`` overrides. On CPU: gloo.

Tolerances (max |delta probability| over every validation and test sample and class): float32 1e-2 (TF32
convolutions; random weights give logits of 14 x cosine), float16 autocast 3e-2, bfloat16 autocast 5e-2 (on
synth_cxr, tinyclip's bf16 probabilities moved by up to 0.031), one epoch of mixed-precision training 5e-2, DDP
against one process 5e-2. The table prints each measured delta, so the margin is visible.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("FAIRBENCH_PROGRESS", "0")

import numpy as np
import torch

TOL = {"fp32": 1e-2, "fp16": 3e-2, "bf16": 5e-2, "train": 5e-2, "ddp": 5e-2}

TASK = """\
# gpu_check: a small synth_cxr
include: {base}
name: {name}
dataset:
  options:
    n: {{train: {train}, val: {val}, test: {test}}}
    image_size: {size}
evaluation:
  n_boot: 0
  min_group_size: 2
"""


@dataclass
class Row:
    name: str
    images_per_s: float | None = None
    peak_mib: float | None = None
    delta: float | None = None
    tol: float | None = None
    ok: bool = True
    note: str = ""


@dataclass
class Setup:
    device: str
    model: str
    tasks_dir: Path
    task: str
    out: Path
    n: tuple[int, int, int]
    batch: int
    encode_batch: int
    encode_batches: int


def write_task(root: Path, name: str, n: tuple[int, int, int], size: int) -> Path:
    from fairbench.data.task import builtin_tasks_dir

    (root / name).mkdir(parents=True, exist_ok=True)
    base = builtin_tasks_dir() / "synth_cxr" / "synth_cxr.yaml"
    (root / name / f"{name}.yaml").write_text(TASK.format(base=base, name=name, train=n[0], val=n[1], test=n[2],
                                                           size=size))
    return root


def _reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _peak_mib(device: str) -> float | None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20
    return None


def run(s: Setup, adapt: str, device: str, tag: str, precision: str = "fp32", args: dict | None = None):
    """One cell through the pipeline; its metrics, predictions, wall seconds and peak device memory."""
    import pandas as pd

    from fairbench.pipeline import RunConfig, run_cell

    cfg = RunConfig(task=s.task, model=s.model, adapt=adapt, weights="random", device=device,
                    out=s.out / tag, tasks_dirs=(s.tasks_dir,), n_boot=0, overwrite=True, embedding_cache=False,
                    precision=precision, adapt_args=dict(args or {}))
    _reset_peak(device)
    t0 = time.perf_counter()
    result = run_cell(cfg)
    wall = time.perf_counter() - t0
    peak = _peak_mib(device)
    return result.metrics, pd.read_parquet(result.path / "predictions.parquet"), wall, peak


def max_delta(a, b) -> float:
    """Largest |difference| of the probability columns, samples matched by (split, sample_id)."""
    cols = [c for c in a.columns if c.startswith("prob_")]
    m = a.merge(b, on=["split", "sample_id"], suffixes=("_a", "_b"), validate="one_to_one")
    if len(m) != len(a) or len(m) != len(b):
        raise AssertionError(f"the two runs predicted different samples ({len(a)} vs {len(b)})")
    return float(max(np.max(np.abs(m[f"{c}_a"].to_numpy() - m[f"{c}_b"].to_numpy())) for c in cols))


def epoch_images_per_s(metrics: dict, n_train: int) -> float | None:
    """Training images per second from the recorded epoch history (the epoch's ``seconds``)."""
    found: list[float] = []

    def walk(x) -> None:
        if isinstance(x, dict):
            if "seconds" in x and "epoch" in x:
                found.append(float(x["seconds"]))
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(metrics.get("adapt", {}).get("fitted", {}))
    return n_train * len(found) / sum(found) if found and sum(found) > 0 else None


def amp_precision(device: str) -> str:
    return "fp16" if device.startswith("cuda") else "bf16"


def section_zeroshot(s: Setup, ref: dict) -> list[Row]:
    rows = []
    ref["zeroshot"] = run(s, "zeroshot", "cpu", "cpu-zeroshot")
    for precision in ("fp32", amp_precision(s.device)):
        label = "fp32" if precision == "fp32" else "amp"
        metrics, preds, wall, peak = run(s, "zeroshot", s.device, f"dev-zeroshot-{precision}", precision)
        d = max_delta(preds, ref["zeroshot"][1])
        effect = metrics.get("precision", {}).get("effect", {})
        note = f"{precision}; {sum(s.n[1:])} images in {wall:.1f} s (with model build)"
        if effect:
            note += f"; recorded effect max|dp| {effect.get('max_abs_delta_prob', float('nan')):.2e}"
        rows.append(Row(f"zeroshot {label}", None, peak, d, TOL[precision], d <= TOL[precision], note))
    return rows


@torch.no_grad()  # as a run encodes (not inference_mode: slower under bf16 autocast on CPU)
def section_encode(s: Setup) -> list[Row]:
    """Frozen-encoder throughput as a run encodes: load, preprocess on the CPU, forward at the precision."""
    from fairbench.adapters.base import AdaptContext
    from fairbench.data.task import get_task
    from fairbench.models.base import get_model_card
    from fairbench.models.build import build_model

    task = get_task(s.task, (s.tasks_dir,))
    device = torch.device(s.device)
    model = build_model(get_model_card(s.model), "random", device)
    samples = task.load_split("test")
    idx = np.resize(np.arange(len(samples)), s.encode_batch)
    rows = []
    for precision in ("fp32", amp_precision(s.device)):
        ctx = AdaptContext(task=task, model=model, seed=0, embedding_cache=None, precision=precision)
        ctx.image_outputs(model.preprocess(samples.images.load(idx)))  # warm-up
        _reset_peak(s.device)
        t0 = time.perf_counter()
        for _ in range(s.encode_batches):
            out = ctx.image_outputs(model.preprocess(samples.images.load(idx)))
            out["embedding"].cpu()
        wall = time.perf_counter() - t0
        rows.append(Row(f"encode {'fp32' if precision == 'fp32' else 'amp'}", s.encode_batch * s.encode_batches / wall,
                        _peak_mib(s.device), None, None, True,
                        f"{precision}; {s.encode_batches} batches of {s.encode_batch}"))
    del model
    return rows


def train_args(s: Setup, adapt: str, batch: int) -> dict:
    args = {"epochs": 1, "batch_size": batch}
    if adapt == "lora":
        args["lora_dropout"] = 0.0
    if adapt == "robust_fair":
        args["fair_batch_size"] = batch
    return args


def section_train(s: Setup, adapt: str, ref: dict) -> Row:
    args = train_args(s, adapt, s.batch)
    ref[adapt] = run(s, adapt, "cpu", f"cpu-{adapt}", args=args)
    metrics, preds, wall, peak = run(s, adapt, s.device, f"dev-{adapt}", args=args)
    ref[f"dev-{adapt}"] = (metrics, preds, wall, peak)
    d = max_delta(preds, ref[adapt][1])
    return Row(f"{adapt} amp", epoch_images_per_s(metrics, s.n[0]), peak, d, TOL["train"], d <= TOL["train"],
               f"1 epoch, batch {s.batch}, {wall:.1f} s cell")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ddp_worker(rank: int, world: int, port: int, backend: str, setup: Setup, args: dict) -> None:
    local = rank if backend == "nccl" else 0
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(local))
    if setup.device.startswith("cuda"):
        torch.cuda.set_device(local)
    torch.distributed.init_process_group(backend=backend, rank=rank, world_size=world)
    try:
        from fairbench.pipeline import RunConfig, run_cell

        cfg = RunConfig(task=setup.task, model=setup.model, adapt="lora", weights="random", device=setup.device,
                        out=setup.out / "ddp", tasks_dirs=(setup.tasks_dir,), n_boot=0, overwrite=True,
                        embedding_cache=False, adapt_args=args)
        _reset_peak(setup.device)
        t0 = time.perf_counter()
        run_cell(cfg)
        wall = time.perf_counter() - t0
        peak = _peak_mib(setup.device)
        (setup.out / f"ddp-rank{rank}.txt").write_text(f"{wall} {peak if peak is not None else -1}\n")
    finally:
        torch.distributed.destroy_process_group()


def ddp_backend(device: str, choice: str) -> str:
    if choice != "auto":
        return choice
    if device.startswith("cuda") and torch.cuda.device_count() >= 2 and torch.distributed.is_nccl_available():
        return "nccl"
    return "gloo"


def section_ddp(s: Setup, ref: dict, backend: str) -> Row:
    import pandas as pd
    import torch.multiprocessing as mp

    from fairbench.results import cell_dir

    if "dev-lora" not in ref:
        raise RuntimeError("needs the lora row (the one-process reference)")
    args = train_args(s, "lora", s.batch // 2)
    mp.start_processes(_ddp_worker, args=(2, _free_port(), backend, s, args), nprocs=2, join=True,
                       start_method="spawn")
    cell = cell_dir(s.out / "ddp", s.task, s.model, "lora", 0)
    preds = pd.read_parquet(cell / "predictions.parquet")
    d = max_delta(preds, ref["dev-lora"][1])
    wall, peak = (float(v) for v in (s.out / "ddp-rank0.txt").read_text().split())
    import json

    metrics = json.loads((cell / "metrics.json").read_text())
    world = [v for v in _find(metrics, "world_size")]
    return Row("ddp 2-proc lora", epoch_images_per_s(metrics, s.n[0]), peak if peak >= 0 else None, d, TOL["ddp"],
               d <= TOL["ddp"] and world[:1] == [2],
               f"{backend}, {s.batch // 2} per process, world_size {world[:1]}, {wall:.1f} s cell (rank 0)")


def _find(x, key: str):
    if isinstance(x, dict):
        for k, v in x.items():
            if k == key:
                yield v
            yield from _find(v, key)
    elif isinstance(x, list):
        for v in x:
            yield from _find(v, key)


def fmt(v: float | None, spec: str) -> str:
    width = int(spec.split(".")[0])
    return f"{'-':>{width}}" if v is None else format(v, spec)


def print_table(rows: list[Row], header: str) -> None:
    print(header)
    print(f"{'check':<18} {'img/s':>9} {'peak MiB':>9} {'max|dp|':>9} {'tol':>8}  result  note")
    for r in rows:
        print(f"{r.name:<18} {fmt(r.images_per_s, '9.1f')} {fmt(r.peak_mib, '9.0f')} {fmt(r.delta, '9.2e')} "
              f"{fmt(r.tol, '8.0e')}  {'PASS' if r.ok else 'FAIL':<6}  {r.note}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--small", action="store_true", help="tiny model and data (a CPU smoke test)")
    p.add_argument("--model", default=None, help="model card (default clip_vit_b16; tiny_openai_clip with --small)")
    p.add_argument("--ddp-backend", default="auto", choices=("auto", "nccl", "gloo"))
    p.add_argument("--skip", default="", help="comma-separated sections to skip: zeroshot,encode,lora,robust_fair,ddp")
    a = p.parse_args(argv)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"error: --device {a.device}: no CUDA device here (use --device cpu --small for a smoke test)")
        return 2
    skip = {x for x in a.skip.split(",") if x}
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="fairbench-gpucheck-") as tmp:
        os.environ.setdefault("FAIRBENCH_CACHE", str(Path(tmp) / "cache"))
        n, size = ((16, 8, 8), 32) if a.small else ((128, 64, 64), 64)
        s = Setup(device=a.device, model=a.model or ("tiny_openai_clip" if a.small else "clip_vit_b16"),
                  tasks_dir=write_task(Path(tmp) / "tasks", "gpucheck", n, size), task="gpucheck",
                  out=Path(tmp) / "out", n=n, batch=8 if a.small else 32,
                  encode_batch=64 if a.small or not a.device.startswith("cuda") else 256,
                  encode_batches=2 if a.small else 8)
        dev = torch.cuda.get_device_name(torch.device(a.device)) if a.device.startswith("cuda") else "cpu"
        header = (f"gpu_check: {s.model} (random weights) on {a.device} [{dev}], torch {torch.__version__}, "
                  f"task {n[0]}/{n[1]}/{n[2]} images of {size} px")
        print(header, flush=True)
        rows: list[Row] = []
        ref: dict = {}
        sections = [("zeroshot", lambda: section_zeroshot(s, ref)), ("encode", lambda: section_encode(s)),
                    ("lora", lambda: [section_train(s, "lora", ref)]),
                    ("robust_fair", lambda: [section_train(s, "robust_fair", ref)]),
                    ("ddp", lambda: [section_ddp(s, ref, ddp_backend(a.device, a.ddp_backend))])]
        for name, fn in sections:
            if name in skip:
                continue
            t0 = time.perf_counter()
            try:
                new = fn()
            except Exception as exc:  # noqa: BLE001 - a failed section is a FAIL row, the others still run
                traceback.print_exc()
                new = [Row(name, ok=False, note=f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}")]
            rows += new
            print(f"  {name}: {time.perf_counter() - t0:.1f} s", flush=True)
        print()
        print_table(rows, header)
        failed = [r.name for r in rows if not r.ok]
        print(f"{'FAIL: ' + ', '.join(failed) if failed else 'all PASS'}")
        return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
