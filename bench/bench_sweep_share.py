"""Sweeps that share work (issue #24 item 2): the sweep ``zeroshot, linear_probe, mlp, resample, reweight, groupdro,
fair_threshold`` on one model and task, against encoding the task once.

Three measurements, each in processes of its own, CPU seconds (user + system) of the whole process tree:

- **E**, one cold encode: a process builds the model (``--weights random``, seed 0, as the cells do), then
  generates and encodes every split of the task into a fresh embedding cache. E is the CPU of that part alone
  (``time.process_time`` around it, one torch thread): imports and model building are left out, which makes
  the ratio below stricter.
- **S**, the sweep, cold: ``fairbench.sweep.run_sweep`` (what ``fairbench sweep`` runs) of the seven adapters,
  in a process of its own, with a fresh embedding cache and results folder.
- **W**, the same sweep, warm: a fresh results folder, the embedding cache S left. Every cell runs as in S
  (model building, data generation, training, the leakage probes, bootstrap metrics), but encodes nothing.

and the figures printed:

- ``encodes``: per split, how many cells missed the embedding cache (encoded) in S, from the cells' metrics.json
  (``embedding_cache.events``); 1 means the first encode served every other cell. ``waited`` counts the cells
  that found the entry's lock held and waited for it instead of encoding.
- ``ratio = (S - W) / E``: what the sweep spent on the images beyond the warm sweep, in units of one cold encode
  of the task (target <= 1.2; a sweep whose seven cells each encoded would be near 7).
- ``S / (E + W)``: the sweep against one encode plus everything else.
- ``(Sc - Wc) / E``: the same difference over the cells' own CPU only (``Outcome.cpu_s``: what each worker
  process spent on its cell), leaving out the executor's processes. Ray's (GCS, raylet, idle workers) burn CPU in
  proportion to the wall time, which the machine's load sets, so S - W under Ray moves with the load; Sc - Wc
  does not.
- ``(S - W) / E_enc``, where ``E_enc`` is E less the time loading the splits takes (``generate_cpu_s``): a
  loader that renders every split when it is loaded (``synth_cxr`` before it rendered lazily) does that in every
  worker process, cold or warm, so it is in W, and only the encoding is left in ``S - W``.

The sweep's CPU over its process tree: the bench makes itself a child subreaper (``PR_SET_CHILD_SUBREAPER``), so
processes the driver leaves behind are reaped by the bench and counted in its children's rusage. Under Ray that
count came out below the cells' own CPU in one run (docs/scale.md): some of Ray's CPU escapes it, so for Ray the
cells' own figure is the one to read.

    nice python bench/bench_sweep_share.py --executors local ray --n-train 4000 --n-val 1000 --n-test 4000

Cells run with one torch thread each, two at a time (local: 2 worker processes; ray: a Ray instance of the
sweep's own with 2 CPUs, 1 CPU per cell).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ADAPTS = ("zeroshot", "linear_probe", "mlp", "resample", "reweight", "groupdro", "fair_threshold")
_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise SystemExit("bench_sweep_share: prctl(PR_SET_CHILD_SUBREAPER) failed (Linux only)")


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def reap_all(deadline_s: float = 60.0) -> int:
    """Wait for every remaining descendant (orphans reparented to this subreaper); kill those still alive after
    ``deadline_s``. Returns how many were reaped."""
    reaped, end = 0, time.monotonic() + deadline_s
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid:
            reaped += 1
            continue
        if time.monotonic() > end:
            for p in _own_children():
                print(f"  killing leftover descendant {p}", flush=True)
                try:
                    os.kill(p, 9)
                except ProcessLookupError:
                    pass
            end = time.monotonic() + 30
        time.sleep(0.2)


def _own_children() -> list[int]:
    me, out = os.getpid(), []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == me:
                out.append(int(d.name))
    return out


def run_tree(cmd: list[str], env: dict[str, str], log: Path) -> dict[str, float]:
    """Run ``cmd`` and every process it starts to their end; wall and CPU seconds of the whole tree."""
    before, t0 = children_cpu(), time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
        rc = proc.wait()
    wall = time.perf_counter() - t0
    orphans = reap_all()
    if rc != 0:
        sys.stderr.write(log.read_text(errors="replace")[-3000:])
        raise SystemExit(f"failed ({rc}): {' '.join(cmd)}")
    return {"wall_s": wall, "cpu_s": children_cpu() - before, "orphans_reaped": orphans}


ENCODE_ONCE = r"""
import json, sys, time
import torch
torch.set_num_threads(1)
from fairbench.adapters.base import AdaptContext
from fairbench.cache import EmbeddingCache
from fairbench.data.task import get_task
from fairbench.models.base import get_model_card
from fairbench.models.build import build_model, resolve_device
from fairbench.pipeline import RunConfig, prepared_loader, seed_everything
from fairbench.precision import inference_batch_size

task_args = json.loads(sys.argv[1])
task = get_task("synth_cxr").with_args(task_args)
card = get_model_card(sys.argv[2])
device = resolve_device("cpu")
seed_everything(0)
model = build_model(card, "random", device)
cfg = RunConfig(task="synth_cxr", model=card.name, weights="random", task_args=task_args)
t0, w0 = time.process_time(), time.perf_counter()
data = prepared_loader(cfg, task, card)
ctx = AdaptContext(task=task, model=model, seed=0, _loader=data, embedding_cache=EmbeddingCache(),
                   batch_size=inference_batch_size(device))
gen = 0.0
for split in task.splits:
    g0 = time.process_time()
    ctx.split(split)
    gen += time.process_time() - g0
    ctx.encode(split)
print(json.dumps({"cpu_s": time.process_time() - t0, "wall_s": time.perf_counter() - w0, "generate_cpu_s": gen,
                  "events": ctx.embedding_cache.events, "n": {s: len(ctx.split(s)) for s in task.splits}}))
"""


def encode_once(model: str, task_args: dict[str, int], env: dict[str, str], log: Path) -> dict[str, float]:
    before, t0 = children_cpu(), time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", ENCODE_ONCE, json.dumps(task_args), model], env=env, cwd=ROOT,
                          capture_output=True, text=True, check=False)
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"the encode-once process failed: {proc.stderr[-3000:]}")
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    doc["process_cpu_s"] = children_cpu() - before
    doc["process_wall_s"] = time.perf_counter() - t0
    return doc


def cache_events(results: Path, model: str, adapts: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """Per split: how many cells missed (encoded), hit, and waited for another cell's encode."""
    out: dict[str, dict[str, int]] = {}
    for a in adapts:
        doc = json.loads((results / "synth_cxr" / model / a / "seed0" / "metrics.json").read_text())
        for e in doc["embedding_cache"]["events"]:
            c = out.setdefault(e["split"], {"miss": 0, "hit": 0, "rebuilt": 0, "waited": 0})
            c[e["event"]] += 1
            c["waited"] += "waited_s" in e
    return out


SWEEP = r"""
import json, sys
from pathlib import Path
from fairbench.sweep import SweepSpec, run_sweep

if __name__ == "__main__":
    a = json.loads(sys.argv[1])
    spec = SweepSpec(tasks=["synth_cxr"], models=[a["model"]], adapts=a["adapts"], seeds=[0],
                     options={"out": Path(a["out"]), "weights": "random", "device": "cpu", "n_boot": a["n_boot"],
                              "task_args": a["task_args"]},
                     adapt_args={k: {"epochs": a["epochs"]} for k in ("mlp", "resample", "reweight", "groupdro")
                                 if k in a["adapts"]},
                     executor=a["executor"], executor_options=a["executor_options"], threads=1)
    report = run_sweep(spec)
    print(json.dumps({"ok": report.ok, "cells_cpu_s": sum(o.cpu_s for o in report.outcomes),
                      "cells": {o.key: round(o.cpu_s, 2) for o in report.outcomes}}))
    sys.exit(0 if report.ok else 1)
"""


def sweep_cmd(executor: str, out: Path, model: str, task_args: dict[str, int], n_boot: int, epochs: int,
              adapts: tuple[str, ...], script: Path) -> list[str]:
    """``fairbench.sweep.run_sweep`` (what ``fairbench sweep`` runs) in a process of its own, which prints the
    CPU seconds each cell's worker spent on it (``Outcome.cpu_s``)."""
    options = {"workers": 2} if executor == "local" else {"local_cpus": 2, "num_cpus": 1}
    args = {"model": model, "adapts": list(adapts), "out": str(out), "n_boot": n_boot, "task_args": task_args,
            "epochs": epochs, "executor": executor, "executor_options": options}
    return [sys.executable, str(script), json.dumps(args)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--executors", nargs="+", default=["local", "ray"], choices=["local", "ray"])
    ap.add_argument("--model", default="tinyclip")
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--n-val", type=int, default=1000)
    ap.add_argument("--n-test", type=int, default=4000)
    ap.add_argument("--n-boot", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=5, help="epochs of the trained heads (a fixed number)")
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one, removed)")
    ap.add_argument("--json", type=Path, default=None, help="also write the measurements here")
    a = ap.parse_args()
    become_subreaper()
    task_args = {"n.train": a.n_train, "n.val": a.n_val, "n.test": a.n_test}
    work = a.work or Path(tempfile.mkdtemp(prefix="fairbench-sweep-share-"))
    base_env = {**os.environ, "OMP_NUM_THREADS": "1", "CI": "true", "RAY_USAGE_STATS_ENABLED": "0",
                "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    work.mkdir(parents=True, exist_ok=True)
    script = work / "sweep_child.py"
    script.write_text(SWEEP)
    doc: dict[str, object] = {"task_args": task_args, "n_boot": a.n_boot, "epochs": a.epochs, "model": a.model}
    try:
        env = {**base_env, "FAIRBENCH_CACHE": str(work / "cache-once")}
        e = encode_once(a.model, task_args, env, work / "encode-once.log")
        doc["encode_once"] = e
        print(f"E  encode once ({sum(e['n'].values())} images: {e['n']}): {e['cpu_s']:.1f} CPU s "
              f"(generating {e['generate_cpu_s']:.1f}), {e['wall_s']:.1f} s wall; the whole process "
              f"{e['process_cpu_s']:.1f} CPU s", flush=True)
        for ex in a.executors:
            env = {**base_env, "FAIRBENCH_CACHE": str(work / f"cache-{ex}")}
            row: dict[str, object] = {}
            for phase in ("cold", "warm"):
                out = work / f"results-{ex}-{phase}"
                log = work / f"sweep-{ex}-{phase}.log"
                m = run_tree(sweep_cmd(ex, out, a.model, task_args, a.n_boot, a.epochs, ADAPTS, script), env, log)
                cells = json.loads([ln for ln in log.read_text().splitlines() if ln.startswith('{"ok"')][-1])
                m["cells_cpu_s"], m["cells"] = cells["cells_cpu_s"], cells["cells"]
                m["events"] = cache_events(out, a.model, ADAPTS)
                row[phase] = m
                print(f"{'S' if phase == 'cold' else 'W'}  sweep {ex:<5} {phase}: {m['cpu_s']:.1f} CPU s, "
                      f"{m['wall_s']:.1f} s wall ({m['orphans_reaped']} orphaned processes reaped); the cells' own "
                      f"{m['cells_cpu_s']:.1f} CPU s; cache per split {m['events']}", flush=True)
            s, w = row["cold"]["cpu_s"], row["warm"]["cpu_s"]  # type: ignore[index]
            row["ratio"] = (s - w) / e["cpu_s"]
            row["vs_encode_plus_rest"] = s / (e["cpu_s"] + w)
            sc, wc = row["cold"]["cells_cpu_s"], row["warm"]["cells_cpu_s"]  # type: ignore[index]
            row["ratio_cells"] = (sc - wc) / e["cpu_s"]
            enc_only = e["cpu_s"] - e["generate_cpu_s"]
            row["ratio_encode_only"] = (s - w) / enc_only if enc_only > 0 else None
            row["encodes"] = {k: v["miss"] + v["rebuilt"] for k, v in row["cold"]["events"].items()}  # type: ignore[index]
            doc[ex] = row
            print(f"== {ex}: encodes per split {row['encodes']}; (S - W) / E = ({s:.1f} - {w:.1f}) / "
                  f"{e['cpu_s']:.1f} = {row['ratio']:.2f}; S / (E + W) = {row['vs_encode_plus_rest']:.2f}; "
                  f"(S - W) / E_enc = {row['ratio_encode_only'] or float('nan'):.2f}; the cells' own CPU: "
                  f"(Sc - Wc) / E = ({sc:.1f} - {wc:.1f}) / {e['cpu_s']:.1f} = {row['ratio_cells']:.2f}",
                  flush=True)
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)
    doc["loadavg"] = os.getloadavg()
    print(f"load average (1, 5, 15 min) at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{os.cpu_count()} CPUs; n_boot {a.n_boot}; heads' epochs {a.epochs}")
    if a.json:
        a.json.write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
