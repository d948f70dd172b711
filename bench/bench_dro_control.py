"""Benchmark: GroupDRO's online weights against static cell weights, on the GroupDRO control and elsewhere.

    python bench/bench_dro_control.py [--task synth_cxr_dro_control] [--seeds 0,1,2] [--n-boot 500]
        [--pairs reweight:groupdro_released,...] [--out DIR]

Runs every variant named in ``--pairs`` (tinyclip with its card's weights, frozen-feature head, attribute race)
for each seed, then pairs them seed by seed on the same test samples (``fairbench compare``). Variants:

- ``mlp``, ``reweight``, ``groupdro``: the adapters at their defaults (the fairbench loop: AdamW, validation
  AUC selection, patience 10);
- ``groupdro_unbalanced``: ``groupdro balanced_sampling=false``;
- ``reweight_released``: ``reweight`` in the loop of GroupDRO's release (SGD momentum 0.9, weight decay 1e-4,
  constant lr, every epoch, worst-cell validation accuracy selection), so that it differs from
  ``groupdro_released`` only in the weights: static inverse cell frequencies against online ``q``;
- ``groupdro_released``: ``groupdro recipe=released``; ``groupdro_released_unbalanced``: the same with
  ``balanced_sampling=false``.

Printed per pair: the mean over seeds of AUC and worst-group AUC on race, the paired differences (mean of the
per-seed deltas, 95% t interval across seeds, how many seeds' paired bootstrap intervals exclude 0) for AUC,
worst-group AUC, AUC gap and the worst group's own AUC, and for GroupDRO variants the final ``q``: the ratio of
its largest to its smallest cell weight (mean over seeds) and the cell with the largest weight.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

RELEASED_LOOP = {"optimizer": "sgd", "weight_decay": "1e-4", "schedule": "constant", "patience": "0",
                 "select_on": "val_worst_cell_acc"}
VARIANTS = {
    "mlp": ("mlp", {}),
    "reweight": ("reweight", {}),
    "groupdro": ("groupdro", {}),
    "groupdro_unbalanced": ("groupdro", {"balanced_sampling": "false"}),
    "reweight_released": ("reweight", RELEASED_LOOP),
    "groupdro_released": ("groupdro", {"recipe": "released"}),
    "groupdro_released_unbalanced": ("groupdro", {"recipe": "released", "balanced_sampling": "false"}),
}
PAIRS = "mlp:reweight,reweight:groupdro,reweight_released:groupdro_released,reweight_released:groupdro_released_unbalanced"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="synth_cxr_dro_control")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--n-boot", type=int, default=500)
    ap.add_argument("--pairs", default=PAIRS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("results/dro_control"))
    args = ap.parse_args()
    import torch
    from bench_mitigation import cell, fmt

    from fairbench.compare import compare
    from fairbench.pipeline import RunConfig, run_cell

    torch.set_num_threads(args.threads)
    pairs = [tuple(p.split(":")) for p in args.pairs.split(",")]
    names = list(dict.fromkeys(n for p in pairs for n in p))
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        sys.exit(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    q: dict[str, list[dict[str, float]]] = {}
    for name in names:
        adapter, params = VARIANTS[name]
        for seed in seeds:
            r = run_cell(RunConfig(task=args.task, model="tinyclip", adapt=adapter, seed=seed, out=args.out / name,
                                   device="cpu", n_boot=0, adapt_args=dict(params)))
            fitted = json.loads((r.path / "metrics.json").read_text())["adapt"]["fitted"]
            if "q" in fitted.get("mitigation", {}):
                q.setdefault(name, []).append(fitted["mitigation"]["q"])
    paths = {"AUC": ("overall", "auc"), "worst-group AUC": ("attributes", "race", "worst_group_auc"),
             "AUC gap": ("attributes", "race", "auc_gap")}
    print(f"{args.task}, tinyclip, seeds {args.seeds} paired one by one, B = {args.n_boot}; race; values x100")
    print("| B vs A | A: AUC / worst | B: AUC / worst | " + " | ".join(f"Δ {k}" for k in paths)
          + " | B's q: max / min (largest) |")
    print("|---|---|---|" + "---|" * len(paths) + "---|")
    for ref, other in pairs:
        folder = {n: args.out / n / args.task / "tinyclip" / VARIANTS[n][0] for n in (ref, other)}
        r = compare(folder[ref], folder[other], n_boot=args.n_boot)
        per = [r["per_seed"][k]["metrics"] for k in r["per_seed"]]
        mean = {side: {k: sum(cell(m, p)[side] for m in per) / len(per) for k, p in paths.items()}
                for side in ("a", "b")}
        deltas = [fmt(cell(r["across_seeds"]["metrics"], p), [cell(m, p) for m in per]) for p in paths.values()]
        qs = q.get(other)
        q_text = "-"
        if qs:
            ratio = sum(max(d.values()) / min(d.values()) for d in qs) / len(qs)
            q_text = f"{ratio:.1f}x ({max(qs[0], key=qs[0].get)})"
        sides = [f"{100 * mean[s]['AUC']:.1f} / {100 * mean[s]['worst-group AUC']:.1f}" for s in ("a", "b")]
        print(f"| {other} vs {ref} | {sides[0]} | {sides[1]} | " + " | ".join(deltas) + f" | {q_text} |", flush=True)


if __name__ == "__main__":
    main()
