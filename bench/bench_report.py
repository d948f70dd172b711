"""Benchmark: `fairbench report` against `fairbench plot` on the same result cells, back to back.

    python bench/bench_report.py [--cells 100] [--format png --format svg] [--keep DIR]

Cells: one fabricated cell (``tests/fixtures_results.fabricate_cell``: synth_cxr, 400 test samples, attributes
sex, age, race and sex*age, B = 20 bootstrap resamples) copied to N cells (10 models x 2 adapters x N/20 seeds),
each copy's metrics varied (every number in ``metrics`` scaled by a factor in [0.85, 1], a different one per
cell) so the leaderboard rows differ; predictions.parquet is shared by content, as the figures' ROC and
reliability panels read it. Then, each as a subprocess (what a user runs):

1. ``fairbench plot CELLS --out FIG`` (by default PNG and SVG, as the command's default);
2. ``fairbench report CELLS --out SITE --figures FIG``: the site, reusing plot's SVGs (none drawn).

Target: the report takes under 10% of the plot's wall time. Printed: wall and CPU seconds (the child's user +
system) of each, the ratio, the site's size and how many figures were reused and drawn.
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
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from fixtures_results import fabricate_cell

from fairbench.results import METRICS, PREDICTIONS, cell_dir, write_json


def _scale(tree, factor: float):  # type: ignore[no-untyped-def]
    if isinstance(tree, dict):
        return {k: (v if k == "n" or k.startswith("n_") else _scale(v, factor)) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_scale(v, factor) for v in tree]
    if isinstance(tree, float):
        return tree * factor
    return tree


def make_cells(root: Path, n: int) -> int:
    base = fabricate_cell(root / "_base", strength=0.8, bias=0.5, n_boot=20)
    doc = json.loads((base / METRICS).read_text())
    made = 0
    models, adapts = [f"model{i}" for i in range(10)], ["zeroshot", "linear_probe"]
    seeds = range(max(1, -(-n // (len(models) * len(adapts)))))
    for seed in seeds:
        for m in models:
            for a in adapts:
                if made == n:
                    return made
                cell = cell_dir(root / "results", "synth_cxr", m, a, seed)
                cell.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(base / PREDICTIONS, cell / PREDICTIONS)
                d = json.loads(json.dumps(doc))
                d["model"]["name"], d["adapt"]["name"], d["seed"] = m, a, seed
                d["metrics"] = {**d["metrics"], **_scale({k: d["metrics"][k] for k in ("overall", "attributes", "ci")},
                                                         1.0 - 0.15 * made / max(1, n - 1))}
                write_json(cell / METRICS, d)
                made += 1
    return made


def timed(args: list[str]) -> tuple[float, float, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "fairbench", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"fairbench {' '.join(args)} failed:\n{proc.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stderr.strip().splitlines()[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=100)
    ap.add_argument("--format", action="append", dest="formats", help="fairbench plot's --format (default both)")
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_report-"))
    try:
        t0 = time.perf_counter()
        n = make_cells(work, args.cells)
        print(f"{n} cells fabricated in {time.perf_counter() - t0:.1f} s under {work / 'results'}; "
              f"CPUs {os.cpu_count()}")
        results, figs, site = str(work / "results"), str(work / "figures"), str(work / "site")
        fmt = [x for f in (args.formats or []) for x in ("--format", f)]
        p_wall, p_cpu, p_last = timed(["plot", results, "--out", figs, *fmt])
        print(f"fairbench plot:   wall {p_wall:7.1f} s  CPU {p_cpu:7.1f} s  ({p_last})")
        r_wall, r_cpu, r_last = timed(["report", results, "--out", site, "--figures", figs])
        print(f"fairbench report: wall {r_wall:7.1f} s  CPU {r_cpu:7.1f} s  ({r_last})")
        size = sum(p.stat().st_size for p in Path(site).rglob("*") if p.is_file())
        print(f"report / plot: wall {r_wall / p_wall:.3f}, CPU {r_cpu / p_cpu:.3f} (target: wall < 0.10); "
              f"site {size / 1e6:.1f} MB")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
