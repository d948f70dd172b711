"""How fairbench's cost grows with the data (issue #24 item 1): one frozen-adapter cell and one trained cell on
``synth_cxr`` resized with ``--task-arg`` (train = test = N, val = N/4), then ``metrics``, ``compare``,
``leaderboard`` and ``report`` on the results; per stage wall seconds, CPU seconds (user + system) and peak RSS,
and each stage's cost relative to the 10x smaller run.

Every stage runs as its own ``python -m fairbench`` process, measured with ``os.wait4`` (the child's own
rusage: CPU time and ``ru_maxrss``, its peak resident set). Each N gets a fresh results folder and a fresh
embedding cache, so the frozen cell pays for generating and encoding the images; the trained cell (``mlp`` by
default, a head on the frozen features) then reads them from the embedding cache, as it does in a sweep.

    nice python bench/bench_scale.py --sizes 1000 10000 [--trained mlp] [--n-boot 200] [--image-size 64] [--work DIR]

Models run with ``--weights random`` (cost, not accuracy, is measured) on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(args: list[str], env: dict[str, str]) -> dict[str, float]:
    """Run ``python -m fairbench ARGS``; wall s, CPU s (user + sys) and peak RSS (MiB) of that process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "fairbench", *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(output.decode(errors="replace")[-3000:])
        raise SystemExit(f"stage failed ({proc.returncode}): fairbench {' '.join(args)}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "rss_mib": usage.ru_maxrss / 1024}


def stages(n: int, out: Path, *, model: str, frozen: str, trained: str, n_boot: int,
           trained_args: list[str], image_size: int | None = None) -> list[tuple[str, list[str]]]:
    task_args = [f"--task-arg=n.train={n}", f"--task-arg=n.val={max(n // 4, 50)}", f"--task-arg=n.test={n}"]
    if image_size is not None:
        task_args.append(f"--task-arg=image_size={image_size}")
    common = ["--task", "synth_cxr", "--model", model, "--weights", "random", "--device", "cpu",
              "--n-boot", str(n_boot), "--out", str(out / "results"), *task_args]
    cell = out / "results" / "synth_cxr" / model
    return [
        (f"run {frozen}", ["run", *common, "--adapt", frozen]),
        (f"run {trained}", ["run", *common, "--adapt", trained, *(f"--adapt-arg={x}" for x in trained_args)]),
        ("metrics", ["metrics", str(cell / frozen / "seed0" / "predictions.parquet"), "--n-boot", str(n_boot),
                     "--out", str(out / "metrics.json")]),
        ("compare", ["compare", str(cell / frozen / "seed0"), str(cell / trained / "seed0"), "--n-boot",
                     str(n_boot), "--out", str(out / "compare.json")]),
        ("leaderboard", ["leaderboard", str(out / "results"), "--out", str(out / "leaderboards")]),
        ("report", ["report", str(out / "results"), "--out", str(out / "site")]),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--model", default="tinyclip")
    ap.add_argument("--frozen", default="linear_probe")
    ap.add_argument("--trained", default="mlp")
    ap.add_argument("--trained-arg", action="append", default=None,
                    help="--adapt-arg of the trained cell, repeatable (default epochs=5: a fixed number of epochs, "
                         "so the cost per epoch is what grows, not how many epochs early stopping runs)")
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--image-size", type=int, default=None,
                    help="side of the generated images (default: the card's, 128); the model resizes to its input")
    ap.add_argument("--threads", type=int, default=2, help="torch threads per stage (OMP_NUM_THREADS)")
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one, removed)")
    ap.add_argument("--json", type=Path, default=None, help="also write the measurements here")
    a = ap.parse_args()
    trained_args = a.trained_arg if a.trained_arg is not None else ["epochs=5"]

    work = a.work or Path(tempfile.mkdtemp(prefix="fairbench-scale-"))
    rows: dict[int, dict[str, dict[str, float]]] = {}
    try:
        for n in a.sizes:
            out = work / f"n{n}"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            env = {**os.environ, "FAIRBENCH_CACHE": str(out / "cache"), "OMP_NUM_THREADS": str(a.threads),
                   "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), "CI": "true"}
            rows[n] = {}
            for name, args in stages(n, out, model=a.model, frozen=a.frozen, trained=a.trained, n_boot=a.n_boot,
                                       trained_args=trained_args, image_size=a.image_size):
                rows[n][name] = m = measure(args, env)
                print(f"N={n:>7} {name:<18} wall {m['wall_s']:8.1f} s  cpu {m['cpu_s']:8.1f} s  "
                      f"peak RSS {m['rss_mib']:7.0f} MiB", flush=True)
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\nload average (1, 5, 15 min) at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{os.cpu_count()} CPUs; threads per stage {a.threads}; n_boot {a.n_boot}; "
          f"{a.trained} args {' '.join(trained_args) or 'none'}; image size {a.image_size or 128}")
    sizes = list(rows)
    print("\n| stage | N | wall s | CPU s | peak RSS MiB | wall x | CPU x | RSS x |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in rows[sizes[0]]:
        for i, n in enumerate(sizes):
            m = rows[n][name]
            prev = rows[sizes[i - 1]][name] if i else None
            ratios = [f"{m[k] / prev[k]:.2f}" if prev and prev[k] > 0 else "" for k in ("wall_s", "cpu_s", "rss_mib")]
            print(f"| {name} | {n} | {m['wall_s']:.1f} | {m['cpu_s']:.1f} | {m['rss_mib']:.0f} | "
                  f"{' | '.join(ratios)} |")
    if a.json:
        a.json.write_text(json.dumps({"rows": rows, "loadavg": os.getloadavg(), "n_boot": a.n_boot,
                                      "threads": a.threads, "trained_args": trained_args,
                                      "image_size": a.image_size}, indent=1))


if __name__ == "__main__":
    main()
