"""Benchmark: zero-shot + linear probe + MLP head on one model vs zero-shot alone (the embedding cache).

    python bench/bench_adapters.py [--model clip_vit_b16] [--weights random] [--n 400,200,400] [--n-boot 0]
                                   [--threads 2]

Input: the synth_cxr task (its generator, bias and image size) with ``--n`` train,val,test images, one model
(default: the ViT-B/16 CLIP card with random weights, so nothing is downloaded and the encoder costs what a
real one costs), CPU.

Four timings, each in a fresh cache directory, all cells in this one process (imports and the synthetic data
are warm before the clock starts):

- ``zeroshot``: one zero-shot cell (encodes val and test, and for its leakage probe the training split, or a
  500-image subsample of it when it is larger);
- ``encode all splits once``: build the model and encode train, val and test once, nothing else (the floor for
  anything that needs every split);
- ``all three, cache``: zero-shot, then linear probe, then MLP head (the embedding cache is on, so the probe
  encodes only the training split and the MLP head encodes nothing);
- ``all three, no cache``: the same three cells with ``--no-embedding-cache`` (each encodes what it needs).

Each cell is a whole ``run_cell`` (model build, adapter, predictions, metrics). Prints wall and process CPU
seconds (the machine may be shared: CPU seconds are the steadier of the two), images encoded
and the ratios to zero-shot alone; the target is ``all three, cache`` <= 1.3 x ``zeroshot``. The linear probe and
the MLP head need the whole training split; a zero-shot cell encodes it too (its leakage probe) when it has at
most 500 images, as here by default, else a 500-image subsample; the ratio to ``encode all splits once`` shows
what the three adapters cost beyond encoding every image once. CPU seconds are the ratio to read.
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
    ap.add_argument("--model", default="clip_vit_b16")
    ap.add_argument("--weights", default="random")
    ap.add_argument("--n", default="400,200,400", help="train,val,test images")
    ap.add_argument("--n-boot", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mlp-epochs", type=int, default=100)
    args = ap.parse_args()
    os.environ.setdefault("FAIRBENCH_PROGRESS", "0")
    import torch

    torch.set_num_threads(args.threads)
    from fairbench.data.task import builtin_tasks_dir
    from fairbench.pipeline import RunConfig, run_cell

    n_train, n_val, n_test = (int(x) for x in args.n.split(","))
    work = Path(tempfile.mkdtemp(prefix="fairbench-bench-adapters-"))
    tasks = work / "tasks"
    (tasks / "synth_bench").mkdir(parents=True)
    (tasks / "synth_bench" / "synth_bench.yaml").write_text(
        f"include: {builtin_tasks_dir() / 'synth_cxr' / 'synth_cxr.yaml'}\nname: synth_bench\n"
        f"dataset:\n  options:\n    n: {{train: {n_train}, val: {n_val}, test: {n_test}}}\n")

    encoded = [0]

    def count(cls: type) -> None:
        original = cls.image_outputs

        def wrapper(self, pixels):  # type: ignore[no-untyped-def]
            encoded[0] += int(pixels.shape[0])
            return original(self, pixels)

        cls.image_outputs = wrapper  # type: ignore[method-assign]

    from fairbench.models.base import get_model_card
    from fairbench.models.build import build_model

    card = get_model_card(args.model)
    probe = build_model(card, args.weights, torch.device("cpu"))
    count(type(probe))
    del probe

    def cells(adapters: list[str], cache: bool, tag: str) -> tuple[float, float, int]:
        os.environ["FAIRBENCH_CACHE"] = str(work / f"cache-{tag}")
        encoded[0] = 0
        t0, c0 = time.perf_counter(), time.process_time()
        for adapt in adapters:
            run_cell(RunConfig(task="synth_bench", model=args.model, adapt=adapt, weights=args.weights, device="cpu",
                               out=work / f"results-{tag}", tasks_dirs=(tasks,), n_boot=args.n_boot,
                               embedding_cache=cache,
                               adapt_args={"epochs": str(args.mlp_epochs)} if adapt == "mlp" else {}))
        return time.perf_counter() - t0, time.process_time() - c0, encoded[0]

    def encode_all() -> tuple[float, float, int]:
        """The floor: build the model and encode every image of every split once (what the three need)."""
        from fairbench.adapters.base import AdaptContext
        from fairbench.data.task import get_task

        encoded[0] = 0
        t0, c0 = time.perf_counter(), time.process_time()
        model = build_model(card, args.weights, torch.device("cpu"))
        ctx = AdaptContext(task=get_task("synth_bench", (tasks,)), model=model, seed=0, embedding_cache=None)
        for split in ("train", "val", "test"):
            ctx.encode(split)
        return time.perf_counter() - t0, time.process_time() - c0, encoded[0]

    # warm-up: generate the synthetic splits and import everything once (not timed)
    cells(["zeroshot"], True, "warmup")
    rows = [("zeroshot", *cells(["zeroshot"], True, "zs")),
            ("encode all splits once", *encode_all()),
            ("all three, cache", *cells(["zeroshot", "linear_probe", "mlp"], True, "all")),
            ("all three, no cache", *cells(["zeroshot", "linear_probe", "mlp"], False, "nocache"))]
    base, base_cpu = rows[0][1], rows[0][2]
    print(f"model {args.model} (weights {args.weights}), synth_cxr n={args.n}, n_boot={args.n_boot}, "
          f"{args.threads} threads, CPU")
    print(f"{'run':<24}{'wall s':>9}{'cpu s':>9}{'images encoded':>16}{'x zeroshot (wall)':>19}{'(cpu)':>7}")
    for name, seconds, cpu, n in rows:
        print(f"{name:<24}{seconds:>9.1f}{cpu:>9.1f}{n:>16}{seconds / base:>19.2f}{cpu / base_cpu:>7.2f}")
    cached, floor, cached_cpu, floor_cpu = rows[2][1], rows[1][1], rows[2][2], rows[1][2]
    print(f"target all three (cache) <= 1.3 x zeroshot: {'met' if cached_cpu <= 1.3 * base_cpu else 'NOT met'} "
          f"({cached_cpu / base_cpu:.2f}x CPU, {cached / base:.2f}x wall; images encoded "
          f"{rows[2][3]} against zero-shot's {rows[0][3]})")
    print(f"all three (cache) vs encoding every image once: {cached_cpu / floor_cpu:.2f}x CPU, {cached / floor:.2f}x wall")


if __name__ == "__main__":
    main()
