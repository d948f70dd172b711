"""Benchmark: robust_fair and fairclip against plain CLIP fine-tuning (full_ft) on the biased synth_cxr task.

    python bench/bench_fairness_training.py [--model tinyclip] [--weights pretrain:synth_cxr] [--seeds 0,1,2]
        [--epochs 3] [--lr 1e-5] [--attribute age] [--n 2000,500,1500] [--n-boot 200] [--threads 2]
        [--variants zeroshot,full_ft,fairclip,fairclip_paper,robust_fair,robust_fair_code] [--task synth_cxr]
        [--out DIR]

Input: ``--task`` (default synth_cxr: degraded images for age >= 60, noisy labels for women, a train-only
shortcut for one race group), ``--n`` train,val,test images; the model fine-tuned contrastively on the paired
synthetic reports. Every trained variant gets the same budget: the same epochs, batch size 32, training pairs,
trained parameters (the released scripts' set: ``trainable=released``), optimizer (FairCLIP's released Adam:
betas (0.1, 0.1), eps 1e-6, weight decay 6e-5, constant ``--lr``) and validation-AUC epoch selection; they
differ only in the objective:

- ``full_ft``: the CLIP loss alone (``objective=clip texts=reports trainable=released``: the released
  ``finetune_CLIP.py``);
- ``fairclip``: + lambda x Sinkhorn per group of ``--attribute`` (mode ``code``, lambda 1e-7, blur 1e-4);
- ``fairclip_paper``: the paper's cosine-score term at the same lambda;
- ``fairclip_bn_update``: ``fairclip`` with ``group_bn=update`` (the group batches move batch-norm statistics:
  the literal released loop on a ResNet tower), to show that side effect;
- ``robust_fair``: DBPM (per pair, warm-up 62.5% of the epochs) + Sinkhorn on group loss distributions
  (mode ``paper``, lambda auto = 1);
- ``robust_fair_code``: the released variant (batch-slot DBPM + FairCLIP's similarity term, lambda 1e-7);
- ``zeroshot``: the untouched model, for reference.

Extra variants: ``NAME:adapter:key=value,key=value`` (e.g. ``rf_l1:robust_fair:lambda_fair=1``).

Reports, per variant, the mean over seeds of test AUC, ES-AUC and AUC gap on ``--attribute`` with a 95% t
interval across seeds, and the mean per-seed bootstrap interval (``--n-boot`` resamples), plus seconds per cell;
whether the fairness term acts: the mean over epochs and seeds of ||grad(lambda x term)|| / ||grad(CLIP)|| on
each epoch's first batch, and DBPM's flagged pairs per epoch with the mean weight it gave them; and the paired
difference against ``--reference`` (default full_ft) on the same test samples (``fairbench compare``): the mean
over seeds of each seed's delta with a t interval across seeds, and how many seeds' paired bootstrap intervals
exclude 0.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

COMMON = {"batch_size": "32", "optimizer": "adam", "betas": "0.1,0.1", "eps": "1e-6", "weight_decay": "6e-5",
          "schedule": "constant", "patience": "0"}
VARIANTS = {
    "zeroshot": ("zeroshot", {}),
    "full_ft": ("full_ft", {"objective": "clip", "texts": "reports", "trainable": "released"}),
    "fairclip": ("fairclip", {"mode": "code"}),
    "fairclip_paper": ("fairclip", {"mode": "paper"}),
    "fairclip_bn_update": ("fairclip", {"mode": "code", "group_bn": "update"}),
    "robust_fair": ("robust_fair", {"mode": "paper"}),
    "robust_fair_code": ("robust_fair", {"mode": "code"}),
}
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def parse_variant(spec: str) -> tuple[str, str, dict[str, str]]:
    if spec in VARIANTS:
        adapter, args = VARIANTS[spec]
        return spec, adapter, dict(args)
    name, adapter, kv = (spec.split(":") + ["", ""])[:3]
    base = dict(VARIANTS.get(adapter, (adapter, {}))[1])
    base.update(dict(item.split("=", 1) for item in kv.split(",") if item))
    return name, adapter, base


def summarise(values: list[float]) -> str:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return "n/a"
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return f"{mean:.3f}"
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    half = T975.get(len(vals) - 1, 1.96) * sd / math.sqrt(len(vals))
    return f"{mean:.3f} [{mean - half:.3f}, {mean + half:.3f}]"


def mean_interval(intervals: list[list[float] | None]) -> str:
    got = [i for i in intervals if i and None not in i]
    if not got:
        return "n/a"
    return f"[{sum(i[0] for i in got) / len(got):.3f}, {sum(i[1] for i in got) / len(got):.3f}]"


def term_activity(docs: list[dict]) -> tuple[str, str]:
    """(mean gradient ratio over epochs and seeds, DBPM flagged pairs per epoch and their mean weight)."""
    ratios, flagged, weights = [], [], []
    for d in docs:
        for e in d["adapt"].get("fitted", {}).get("epochs", []):
            if e.get("grad_ratio") is not None:
                ratios.append(e["grad_ratio"])
            if "n_flagged" in e:
                flagged.append(e["n_flagged"])
                if e.get("mean_weight") is not None:
                    weights.append(e["mean_weight"])
    ratio = f"{sum(ratios) / len(ratios):.3g}" if ratios else "-"
    dbpm = (f"{sum(flagged) / len(flagged):.1f}/epoch, w {sum(weights) / len(weights):.2g}" if weights
            else (f"{sum(flagged) / len(flagged):.1f}/epoch" if flagged else "-"))
    return ratio, dbpm


def paired(reference: Path, other: Path, tasks: Path, n_boot: int, attribute: str) -> dict[str, str]:
    """Deltas other - reference on the same test samples, seed by seed (fairbench compare)."""
    from fairbench.compare import compare

    r = compare(reference, other, task="synth_fairbench", n_boot=n_boot, tasks_dirs=(tasks,))
    out = {}
    for key, path in (("d_auc", ("overall", "auc")), ("d_es_auc", ("attributes", attribute, "es_auc")),
                      ("d_gap", ("attributes", attribute, "auc_gap"))):
        if "across_seeds" in r:
            s = r["across_seeds"]["metrics"]
            per = [r["per_seed"][k]["metrics"] for k in r["per_seed"]]
        else:
            s, per = None, [r["metrics"]]
        for part in path:
            s = s[part] if s is not None else None
        entries = []
        for m in per:
            for part in path:
                m = m[part]
            entries.append(m)
        excl = sum(1 for e in entries if e["ci"] and (e["ci"][0] > 0 or e["ci"][1] < 0))
        if s is not None and s.get("ci"):
            text = f"{s['mean_delta']:+.3f} [{s['ci'][0]:+.3f}, {s['ci'][1]:+.3f}]"
        else:
            e = entries[0]
            text = f"{e['delta']:+.3f}" + (f" [{e['ci'][0]:+.3f}, {e['ci'][1]:+.3f}]" if e["ci"] else "")
        out[key] = f"{text} ({excl}/{len(entries)})"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tinyclip")
    ap.add_argument("--weights", default="pretrain:synth_cxr")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", default="1e-5")
    ap.add_argument("--attribute", default="age")
    ap.add_argument("--n", default="2000,500,1500", help="train,val,test images")
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default="zeroshot,full_ft,fairclip,fairclip_paper,fairclip_bn_update,robust_fair,"
                                          "robust_fair_code")
    ap.add_argument("--reference", default="full_ft", help="the variant the paired differences are taken against")
    ap.add_argument("--task", default="synth_cxr", help="the synthetic task card to resize and train on")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("FAIRBENCH_PROGRESS", "0")
    import torch

    torch.set_num_threads(args.threads)
    from fairbench.data.task import builtin_tasks_dir
    from fairbench.pipeline import RunConfig, run_cell

    out = args.out or Path(tempfile.mkdtemp(prefix="fairbench-bench-fair-"))
    tasks = out / "tasks"
    (tasks / "synth_fairbench").mkdir(parents=True, exist_ok=True)
    n_train, n_val, n_test = (int(x) for x in args.n.split(","))
    (tasks / "synth_fairbench" / "synth_fairbench.yaml").write_text(
        f"include: {builtin_tasks_dir() / args.task / (args.task + '.yaml')}\nname: synth_fairbench\n"
        f"dataset:\n  options:\n    n: {{train: {n_train}, val: {n_val}, test: {n_test}}}\n")
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    folders: dict[str, Path] = {}
    for spec in args.variants.split(","):
        name, adapter, extra = parse_variant(spec)
        params = {} if adapter == "zeroshot" else {**COMMON, "epochs": str(args.epochs), "lr": args.lr, **extra}
        if adapter in ("fairclip", "robust_fair"):
            params.setdefault("attribute", args.attribute)
        docs, seconds = [], []
        for seed in seeds:
            t0 = time.perf_counter()
            res = run_cell(RunConfig(task="synth_fairbench", model=args.model, adapt=adapter, seed=seed,
                                     out=out / "results" / name, weights=args.weights, device="cpu",
                                     tasks_dirs=(tasks,), n_boot=args.n_boot, adapt_args=params))
            seconds.append(time.perf_counter() - t0)
            docs.append(res.metrics)
            folders[name] = res.path.parent
            print(f"  {name} seed {seed}: {seconds[-1]:.0f} s, test auc {res.metrics['metrics']['overall']['auc']:.3f}",
                  file=sys.stderr, flush=True)
        m = [d["metrics"] for d in docs]
        a = args.attribute
        ratio, dbpm = term_activity(docs)
        rows.append({
            "variant": name, "adapter": adapter, "params": extra,
            "auc": summarise([x["overall"]["auc"] for x in m]),
            "auc_boot": mean_interval([x["ci"].get("overall", {}).get("auc") for x in m]),
            "es_auc": summarise([x["attributes"][a]["es_auc"] for x in m]),
            "es_auc_boot": mean_interval([x["ci"].get("attributes", {}).get(a, {}).get("es_auc") for x in m]),
            "auc_gap": summarise([x["attributes"][a]["auc_gap"] for x in m]),
            "auc_gap_boot": mean_interval([x["ci"].get("attributes", {}).get(a, {}).get("auc_gap") for x in m]),
            "best_epochs": [d["adapt"].get("fitted", {}).get("train", {}).get("best_epoch") for d in docs],
            "grad_ratio": ratio, "dbpm": dbpm,
            "seconds_per_cell": round(sum(seconds) / len(seconds), 1),
        })
    for r in rows:
        ref = folders.get(args.reference)
        r.update(paired(ref, folders[r["variant"]], tasks, args.n_boot, args.attribute)
                 if ref is not None and r["variant"] != args.reference else {})
    print(f"model {args.model} ({args.weights}); {args.task} n={args.n}; seeds {args.seeds}; {args.epochs} epochs, "
          f"lr {args.lr}, batch 32, Adam (0.1, 0.1); attribute {args.attribute}; n_boot {args.n_boot}; CPU, "
          f"{args.threads} threads")
    print("mean over seeds [95% t interval across seeds]; 'boot' = mean per-seed bootstrap interval")
    header = ["variant", "AUC", "AUC boot", f"ES-AUC({args.attribute})", "ES-AUC boot", "AUC gap", "gap boot",
              "best epochs", "grad ratio", "DBPM flagged", "s/cell"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print(f"| {r['variant']} | {r['auc']} | {r['auc_boot']} | {r['es_auc']} | {r['es_auc_boot']} | "
              f"{r['auc_gap']} | {r['auc_gap_boot']} | {r['best_epochs']} | {r['grad_ratio']} | {r['dbpm']} | "
              f"{r['seconds_per_cell']} |")
    a = args.attribute
    print(f"\npaired against {args.reference} on the same test samples: mean over seeds of each seed's delta "
          f"[95% t interval across seeds] (seeds whose paired bootstrap interval, B={args.n_boot}, excludes 0)")
    header = ["variant", "Δ AUC", f"Δ ES-AUC({a})", f"Δ AUC gap({a})"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        if "d_auc" in r:
            print(f"| {r['variant']} | {r['d_auc']} | {r['d_es_auc']} | {r['d_gap']} |")
    (out / "summary.json").write_text(json.dumps(rows, indent=2))
    print(f"cells and summary.json under {out}")


if __name__ == "__main__":
    main()
