"""Benchmark: batches of model-ready tensors from a warm preprocessed-image cache vs decoding 1024 px PNGs.

    python bench/bench_image_cache.py [--n 64] [--batch 16] [--model-input 224] [--repeats 3]

Input: N synthetic 1024 x 1024 8-bit grayscale PNGs (smooth anatomy-like shading plus noise, so they compress
like radiographs, about 0.6-1 MB each), written to a temporary folder.

- baseline: what a run does without the cache: decode each PNG (Pillow, threaded like FileImages.load) and
  run the model's preprocessing (resize the shortest side to the input, centre crop, normalise) -> tensors.
- cached: the same tensors from a warm cache built once: read the memory-mapped uint8 rows (CRC-checked), crop
  the padding, run the same model preprocessing. Two cache sizes are timed:
  * ``auto`` for a square source like NIH (every image 1024 x 1024): the model input itself (224), so the
    model's resize is a no-op and only the crop and normalisation remain. This is the headline ratio.
  * the ``auto`` size for sources that are not square (1.25 x input, 320 px for 224): the model's own torch
    resize from 320 to 224 then dominates the cached path.

Both produce identical-shape float tensors [batch, 3, input, input]; the time is the best of ``--repeats``
full passes over all N images. Prints milliseconds per image and the ratios (baseline / cached).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image

from fairbench.data.files import FileImages
from fairbench.data.image_cache import CachedImages, auto_cache_size
from fairbench.models.base import Preprocessing


def write_pngs(folder: Path, n: int, size: int = 1024, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    paths = []
    for i in range(n):
        cx, cy = 0.5 + 0.05 * rng.standard_normal(2)
        body = np.exp(-(((xx - cx) / 0.35) ** 2 + ((yy - cy) / 0.45) ** 2))
        lungs = np.exp(-(((np.abs(xx - cx) - 0.18) / 0.1) ** 2 + ((yy - cy + 0.05) / 0.25) ** 2))
        img = 40 + 170 * body - 90 * lungs + rng.normal(0, 6, (size, size))
        p = folder / f"{i:05d}.png"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "L").save(p)
        paths.append(p)
    return paths


def one_pass(source, preprocess: Preprocessing, n: int, batch: int) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        idx = np.arange(start, min(n, start + batch))
        x = preprocess(source.load(idx))
        assert x.shape == (len(idx), 3, preprocess.image_size, preprocess.image_size)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--model-input", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["FAIRBENCH_CACHE"] = str(Path(tmp) / "cache")
        os.environ.setdefault("FAIRBENCH_PROGRESS", "0")
        t0 = time.perf_counter()
        paths = write_pngs(Path(tmp), args.n)
        mb = sum(p.stat().st_size for p in paths) / len(paths) / 1e6
        print(f"wrote {args.n} PNGs of 1024x1024 ({mb:.2f} MB each) in {time.perf_counter() - t0:.1f}s; "
              f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}")
        source = FileImages(paths, prefix="bench:0:test", sample_ids=[p.stem for p in paths], square=True)
        pre = Preprocessing(image_size=args.model_input, resize="shortest", interpolation="bicubic", channels=3)
        sizes = {"auto, square source": auto_cache_size(args.model_input, square=True),
                 "auto, non-square source": auto_cache_size(args.model_input, square=False)}
        caches = {}
        for label, size in sizes.items():
            t0 = time.perf_counter()
            caches[label] = CachedImages(source, size)
            build = time.perf_counter() - t0
            assert CachedImages(source, size).hit
            print(f"cache {label}: {size} px, built once in {build:.2f}s ({build / args.n * 1e3:.1f} ms/image)")

        for cached in caches.values():  # warm the page cache and torch kernels
            one_pass(cached, pre, args.n, args.batch)
        one_pass(source, pre, min(args.n, args.batch), args.batch)
        base = min(one_pass(source, pre, args.n, args.batch) for _ in range(args.repeats))
        print(f"decode 1024 px PNG + preprocess:   {base / args.n * 1e3:8.2f} ms/image")
        ratios = {}
        for label, cached in caches.items():
            warm = min(one_pass(cached, pre, args.n, args.batch) for _ in range(args.repeats))
            ratios[label] = base / warm
            print(f"warm cache ({sizes[label]:4d} px) + preprocess: {warm / args.n * 1e3:8.2f} ms/image  "
                  f"ratio {base / warm:5.1f}x  [{label}]")
        print(f"ratio (decode / warm cache, {args.model_input} px model, square source): "
              f"{ratios['auto, square source']:.1f}x")


if __name__ == "__main__":
    main()
