"""Benchmark: what the analyses (fairbench/analyses/) add to a frozen-adapter synth_cxr cell.

    python bench/bench_analyses.py [--model tinyclip] [--weights random] [--adapt linear_probe] [--n-boot 200]
                                   [--repeat 20] [--variants]

Runs one whole cell (``run_cell``: model build, adapter, predictions, metrics with B resamples, analyses) on the
synth_cxr task with the chosen model (random weights: nothing is downloaded), after a warm-up cell (imports,
synthetic data). The cell's attribute-leakage probes (``leakage_for_cell``, frozen-encoder adapters) are timed
inside it, including any split they encode that the adapter did not (a zero-shot cell's train split). Then times
``compute_analyses`` on that cell's metrics ``--repeat`` times (and, with ``--variants``,
``compute_variants(fairmedfm)`` on its predictions, which runs only on request). Prints wall and process CPU
seconds and the ratio analyses / (cell - analyses), for the leakage probes, for the other analyses and for both;
the target is at most +50%.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tinyclip")
    ap.add_argument("--weights", default="random")
    ap.add_argument("--adapt", default="linear_probe")
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("FAIRBENCH_PROGRESS", "0")
    work = Path(tempfile.mkdtemp(prefix="fairbench-bench-analyses-"))
    os.environ["FAIRBENCH_CACHE"] = str(work / "cache")
    import pandas as pd
    import torch

    torch.set_num_threads(args.threads)
    from fairbench.analyses import compute_analyses, compute_variants, leakage
    from fairbench.data.task import get_task
    from fairbench.pipeline import RunConfig, run_cell

    probe = leakage.leakage_for_cell
    spent: list[tuple[float, float]] = []

    def timed_probe(*a, **k):  # type: ignore[no-untyped-def]
        t, c = time.perf_counter(), time.process_time()
        try:
            return probe(*a, **k)
        finally:
            spent.append((time.perf_counter() - t, time.process_time() - c))

    leakage.leakage_for_cell = timed_probe  # the pipeline imports it at call time

    def cell(tag: str):  # type: ignore[no-untyped-def]
        return run_cell(RunConfig(task="synth_cxr", model=args.model, adapt=args.adapt, weights=args.weights,
                                  device="cpu", out=work / f"results-{tag}", n_boot=args.n_boot,
                                  embedding_cache=False))

    cell("warmup")
    spent.clear()
    t0, c0 = time.perf_counter(), time.process_time()
    res = cell("timed")
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    l_wall, l_cpu = (sum(x) for x in zip(*spent)) if spent else (0.0, 0.0)
    task = get_task("synth_cxr")
    m = res.metrics["metrics"]
    frame = pd.read_parquet(res.path / "predictions.parquet")
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(args.repeat):  # as metrics_document calls it
        compute_analyses(m, no_finding_class=task.evaluation.no_finding_class, frame=frame,
                         attributes=list(task.attributes),
                         intersections=[list(i) for i in task.evaluation.intersections],
                         threshold=res.metrics["threshold"])  # the underdiagnosis gaps' paired intervals
    a_wall, a_cpu = (time.perf_counter() - t0) / args.repeat, (time.process_time() - c0) / args.repeat
    b_wall, b_cpu = wall - l_wall - a_wall, cpu - l_cpu - a_cpu  # the cell without any analysis
    print(f"cell ({args.adapt}, {args.model} {args.weights}, B={args.n_boot}): wall {wall:.2f} s, CPU {cpu:.2f} s; "
          f"without the analyses: wall {b_wall:.2f} s, CPU {b_cpu:.2f} s")
    print(f"leakage probes (in the cell): wall {l_wall:.2f} s, CPU {l_cpu:.2f} s: "
          f"+{100 * l_wall / b_wall:.1f}% wall, +{100 * l_cpu / b_cpu:.1f}% CPU")
    print(f"analyses (power + underdiagnosis + calibration, mean of {args.repeat}): wall {a_wall * 1e3:.2f} ms, "
          f"CPU {a_cpu * 1e3:.2f} ms: +{100 * a_wall / b_wall:.3f}% wall, +{100 * a_cpu / b_cpu:.3f}% CPU")
    print(f"all analyses added: wall +{100 * (l_wall + a_wall) / b_wall:.1f}%, "
          f"CPU +{100 * (l_cpu + a_cpu) / b_cpu:.1f}% (target <= 50%)")
    if args.variants:
        t0, c0 = time.perf_counter(), time.process_time()
        compute_variants(frame, classes=list(task.classes), attributes=list(task.attributes),
                         intersections=[list(i) for i in task.evaluation.intersections],
                         eval_split=task.evaluation.split, variants=["fairmedfm"])
        v_wall, v_cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"--variants fairmedfm (on request): wall {v_wall * 1e3:.1f} ms, CPU {v_cpu * 1e3:.1f} ms "
              f"(+{100 * v_wall / wall:.2f}% of the cell's wall)")


if __name__ == "__main__":
    main()
