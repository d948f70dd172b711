"""Benchmark: the mitigation baselines against plain training on the positive control and the unbiased task.

    python bench/bench_mitigation.py RESULTS [--attribute race] [--n-boot 1000]

RESULTS is the results folder of ``leaderboards/sweeps/synthetic.sweep.yaml`` (tinyclip, seeds 0-2, every
adapter at its defaults). Per task, each of ``resample``, ``reweight`` and ``groupdro`` is paired with ``mlp``
(the same head trained plainly: the ERM reference) and ``fair_threshold`` with its base ``linear_probe``, seed
by seed on the same test samples (``fairbench compare``). Printed per row: the mean over seeds of AUC and of
the worst group's AUC on ``--attribute``, and the paired differences (mean of the per-seed deltas, 95% t
interval across seeds, and how many seeds' paired bootstrap intervals exclude 0) for AUC, worst-group AUC,
AUC gap and DEOdds. Where every seed gives the same delta (fair_threshold on linear_probe, both deterministic
on fixed weights) the interval is the first seed's paired bootstrap, marked ``b``.

What the positive control must show (the mitigation issue): on synth_cxr_shortcut, resample and groupdro raise
the worst-group AUC over mlp by more than the interval of the difference; on synth_cxr_fair, each baseline
costs at most 1 AUC point; on synth_cxr, fair_threshold (equalized odds) lowers DEOdds against its base.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PAIRS = (("mlp", "resample"), ("mlp", "reweight"), ("mlp", "groupdro"), ("linear_probe", "fair_threshold"))
TASKS = ("synth_cxr_shortcut", "synth_cxr_fair", "synth_cxr")


def cell(d: dict, path: tuple[str, ...]) -> dict:
    for k in path:
        d = d[k]
    return d


def fmt(entry: dict, per_seed: list[dict]) -> str:
    """Mean delta [t interval across seeds] (seeds whose paired bootstrap interval excludes 0); when every seed
    gives the same delta (a deterministic adapter pair) the first seed's bootstrap interval, marked b."""
    excl = sum(1 for e in per_seed if e.get("ci") and (e["ci"][0] > 0 or e["ci"][1] < 0))
    ci, mark = entry.get("ci"), ""
    if len({round(e["delta"], 12) for e in per_seed}) == 1 and per_seed[0].get("ci"):
        ci, mark = per_seed[0]["ci"], "b"
    if ci:
        return (f"{100 * entry['mean_delta']:+.1f} [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]{mark} "
                f"({excl}/{len(per_seed)})")
    return f"{100 * entry['mean_delta']:+.1f} ({excl}/{len(per_seed)})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path)
    ap.add_argument("--attribute", default="race")
    ap.add_argument("--n-boot", type=int, default=1000)
    args = ap.parse_args()
    from fairbench.compare import compare

    a = args.attribute
    paths = {"AUC": ("overall", "auc"), "worst-group AUC": ("attributes", a, "worst_group_auc"),
             "AUC gap": ("attributes", a, "auc_gap"), "DEOdds": ("attributes", a, "deodds")}
    print(f"tinyclip, seeds paired one by one, B = {args.n_boot}; attribute {a}; values x100")
    print("| task | B vs A | A: AUC / worst | B: AUC / worst | " + " | ".join(f"Δ {k}" for k in paths) + " |")
    print("|---|---|---|---|" + "---|" * len(paths))
    for task in TASKS:
        for ref, other in PAIRS:
            r = compare(args.results / task / "tinyclip" / ref, args.results / task / "tinyclip" / other,
                        n_boot=args.n_boot)
            seeds = [r["per_seed"][k]["metrics"] for k in r["per_seed"]]
            mean = {side: {k: sum(cell(m, p)[side] for m in seeds) / len(seeds) for k, p in paths.items()}
                    for side in ("a", "b")}
            deltas = [fmt(cell(r["across_seeds"]["metrics"], p), [cell(m, p) for m in seeds]) for p in paths.values()]
            a_side = f"{100 * mean['a']['AUC']:.1f} / {100 * mean['a']['worst-group AUC']:.1f}"
            b_side = f"{100 * mean['b']['AUC']:.1f} / {100 * mean['b']['worst-group AUC']:.1f}"
            print(f"| {task} | {other} vs {ref} | {a_side} | {b_side} | " + " | ".join(deltas) + " |", flush=True)


if __name__ == "__main__":
    main()
