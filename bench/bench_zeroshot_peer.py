"""Zero-shot encoding speed side by side with LAION's CLIP_benchmark: same images, same ViT-B-32 weights, CPU.

    PYTHONPATH=. python bench/bench_zeroshot_peer.py [--n 256] [--repeats 2] [--precision fp32|bf16]
                                                     [--threads N] [--workers 4]

- Weights: open_clip ``ViT-B-32-quickgelu`` (the ``clip_vit_b32`` card's architecture), randomly initialised
  once (seed 0) and saved as a state dict to a temporary file; fairbench loads it with ``--weights FILE``'s
  loader, CLIP_benchmark through ``open_clip.create_model_and_transforms(..., pretrained=FILE)`` (what its
  ``--pretrained FILE`` does).
- Images: the test split of a small ``synth_cxr`` (``--n`` images, 128 px grayscale, generated in memory).
  CLIP_benchmark gets the same uint8 arrays as RGB PIL images through a ``torch.utils.data.DataLoader``
  (batch 64, ``--workers`` processes, its CLI defaults) and open_clip's PIL preprocessing; fairbench runs its
  own path (:meth:`fairbench.adapters.base.AdaptContext.encode`: batched torch preprocessing, its inference
  batch size, no embedding cache).
- Prompts: the task card's prompts, passed to both as the same texts per class (CLIP_benchmark's ``templates``
  dict form); the classifier is built before timing in both tools.
- Timed: images -> class logits (fairbench: encode + zero-shot head + softmax; CLIP_benchmark:
  ``run_classification``), ``--repeats`` passes per tool, alternating, best pass reported; wall seconds and
  CPU seconds (this process plus its DataLoader workers).
- ``--precision bf16``: fairbench ``--precision bf16`` against CLIP_benchmark ``--amp`` (bfloat16 autocast on
  CPU); fp32 (default) runs both in float32 (CLIP_benchmark ``--no_amp``).

Prints images/s per tool, the ratio fairbench / CLIP_benchmark (above 1: fairbench faster) and how often the
two tools predict the same class (the classes, not the probabilities: CLIP_benchmark scales the cosine logits by
100, fairbench by the model's own logit scale). Without clip_benchmark installed, only fairbench is timed (with a message).
Against an older fairbench checkout on PYTHONPATH (no ``--precision``), fp32 still runs, for before/after.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("fairbench") is None:  # PYTHONPATH may name another checkout (before/after runs)
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("FAIRBENCH_PROGRESS", "0")
os.environ.setdefault("TQDM_DISABLE", "1")  # CLIP_benchmark's progress bars

import numpy as np
import torch

TASK = """\
include: {base}
name: peer_bench
dataset:
  options:
    n: {{train: 8, val: 8, test: {n}}}
evaluation:
  n_boot: 0
"""


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn):
    w0, c0 = time.perf_counter(), cpu_seconds()
    out = fn()
    return out, time.perf_counter() - w0, cpu_seconds() - c0


class FairbenchSide:
    def __init__(self, task, weights: Path, precision: str) -> None:
        from fairbench.adapters.base import AdaptContext
        from fairbench.models.base import get_model_card
        from fairbench.models.build import build_model

        device = torch.device("cpu")
        self.model = build_model(get_model_card("clip_vit_b32"), str(weights), device)
        kwargs = {}
        try:
            from fairbench.precision import inference_batch_size

            kwargs = {"batch_size": inference_batch_size(device), "precision": precision}
        except ImportError:  # an older fairbench: float32, its default batch
            if precision != "fp32":
                raise SystemExit("this fairbench has no --precision; run with --precision fp32") from None
        self.ctx_args = dict(task=task, model=self.model, seed=0, embedding_cache=None, **kwargs)
        self.head = self.model.zeroshot_head(task)
        self.batch = AdaptContext(**self.ctx_args).batch_size

    @torch.no_grad()
    def run(self) -> np.ndarray:
        from fairbench.adapters.base import AdaptContext

        ctx = AdaptContext(**self.ctx_args)  # a fresh context: nothing encoded yet
        enc = ctx.encode("test")
        logits = self.head.score({k: torch.from_numpy(enc[k]) for k in self.head.needs})
        return torch.softmax(self.head.finalize(logits).float(), dim=1).numpy()


class PeerSide:
    def __init__(self, samples, prompts: list[list[str]], classes: list[str], weights: Path, amp: bool,
                 workers: int) -> None:
        import open_clip
        from clip_benchmark.metrics.zeroshot_classification import zero_shot_classifier
        from PIL import Image

        self.model, _, transform = open_clip.create_model_and_transforms("ViT-B-32-quickgelu", pretrained=str(weights))
        self.model.eval()
        tokenizer = open_clip.get_tokenizer("ViT-B-32-quickgelu")
        self.amp, self.workers = amp, workers
        images = samples.images.load(np.arange(len(samples)))
        labels = np.asarray(samples.labels)

        class Images(torch.utils.data.Dataset):
            def __len__(self) -> int:
                return len(images)

            def __getitem__(self, i: int):
                return transform(Image.fromarray(images[i]).convert("RGB")), int(labels[i])

        self.dataset = Images()
        self.classifier = zero_shot_classifier(self.model, tokenizer, classes, dict(zip(classes, prompts)), "cpu",
                                               amp=amp)

    def run(self) -> np.ndarray:
        from clip_benchmark.metrics.zeroshot_classification import run_classification

        warnings.filterwarnings("ignore", message="This DataLoader will create")  # more workers than cores
        loader = torch.utils.data.DataLoader(self.dataset, batch_size=64, shuffle=False, num_workers=self.workers)
        logits, _ = run_classification(self.model, self.classifier, loader, "cpu", amp=self.amp)
        return torch.softmax(logits, dim=1).numpy()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=256, help="test images (default 256)")
    p.add_argument("--repeats", type=int, default=2, help="timed passes per tool (best reported)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--workers", type=int, default=4, help="CLIP_benchmark DataLoader workers (its default 4)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        import clip_benchmark  # noqa: F401
        have_peer = True
    except ImportError:
        have_peer = False
        print("clip_benchmark is not installed (pip install clip-benchmark): timing fairbench only")

    import fairbench
    from fairbench.data.task import builtin_tasks_dir, get_task
    from fairbench.models.base import get_model_card
    from fairbench.models.openclip import create_architecture
    from fairbench.models.zeroshot import task_prompts

    with tempfile.TemporaryDirectory(prefix="fairbench-peer-") as tmp:
        tasks = Path(tmp) / "tasks"
        (tasks / "peer_bench").mkdir(parents=True)
        base = builtin_tasks_dir() / "synth_cxr" / "synth_cxr.yaml"
        (tasks / "peer_bench" / "peer_bench.yaml").write_text(TASK.format(base=base, n=a.n))
        task = get_task("peer_bench", (tasks,))
        samples = task.load_split("test")
        torch.manual_seed(0)
        weights = Path(tmp) / "vit_b32_random.pt"
        torch.save(create_architecture(get_model_card("clip_vit_b32")).state_dict(), weights)

        sides = {"fairbench": FairbenchSide(task, weights, a.precision)}
        if have_peer:
            sides["CLIP_benchmark"] = PeerSide(samples, task_prompts(task), list(task.classes), weights,
                                               a.precision == "bf16", a.workers)
        print(f"fairbench from {Path(fairbench.__file__).parent}")
        print(f"{a.n} images of {samples.images.load(np.arange(1))[0].shape} px, ViT-B-32-quickgelu random "
              f"weights, {a.precision}, {torch.get_num_threads()} torch threads, fairbench batch "
              f"{sides['fairbench'].batch}" + (f", CLIP_benchmark batch 64 with {a.workers} workers" if have_peer
                                               else ""), flush=True)
        best: dict[str, tuple[float, float]] = {}
        probs: dict[str, np.ndarray] = {}
        for r in range(a.repeats):
            for name, side in sides.items():
                probs[name], wall, cpu = timed(side.run)
                print(f"  pass {r + 1} {name:<15} {a.n / wall:7.2f} img/s  wall {wall:6.2f} s  cpu {cpu:6.2f} s",
                      flush=True)
                if name not in best or wall < best[name][0]:
                    best[name] = (wall, cpu)
        print()
        for name, (wall, cpu) in best.items():
            print(f"{name:<15} {a.n / wall:7.2f} img/s  (best of {a.repeats}: wall {wall:.2f} s, cpu {cpu:.2f} s)")
        if have_peer:
            ratio = best["CLIP_benchmark"][0] / best["fairbench"][0]
            agree = int(np.sum(probs["fairbench"].argmax(1) == probs["CLIP_benchmark"].argmax(1)))
            print(f"ratio fairbench / CLIP_benchmark (images/s): {ratio:.3f}")
            # (probabilities differ in scale: CLIP_benchmark multiplies by 100, fairbench by the model's logit scale)
            print(f"same predicted class: {agree}/{a.n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
