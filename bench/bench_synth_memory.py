"""Peak memory of serving a synthetic split's images as the encode loop reads them (issue #24 item 1): per N, a
fresh process loads ``synth_cxr``'s test split resized to N images and reads every image in batches of 256,
keeping nothing, then (``--cache``) stores and reads back an embedding-cache entry of N rows of tinyclip's width
(64 + 64 float32) and sums it. Prints CPU seconds and peak RSS (``ru_maxrss``) per N.

    nice python bench/bench_synth_memory.py --sizes 1000 10000 100000 [--image-size 64] [--cache]

Run it with another fairbench first on ``PYTHONPATH`` to measure that one (the script uses only the loader's and
the cache's public calls).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

_CHILD = r"""
import json, resource, sys, tempfile, time
from pathlib import Path
import numpy as np
from fairbench.data.synth_loader import SynthCXRLoader

n, size, cache = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
t0 = time.process_time()
raw = SynthCXRLoader({"n": {"train": 10, "val": 10, "test": n}, "image_size": size, "seed": 0},
                     source="bench").load("test", None)
total = 0
for s in range(0, n, 256):
    total += sum(int(img[0, 0]) for img in raw.images.load(np.arange(s, min(n, s + 256))))
out = {"n": n, "images_cpu_s": time.process_time() - t0,
       "images_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
if cache:
    from fairbench.cache import EmbeddingCache
    parts = {"split": "test", "bench": str(n)}
    with tempfile.TemporaryDirectory() as d:
        rng = np.random.default_rng(0)
        c = EmbeddingCache(Path(d))
        c.store(parts, {k: rng.standard_normal((n, 64), dtype=np.float32) for k in ("embedding", "feature")})
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        arrays = c.load(parts, n)
        out["cache_sum"] = float(sum(float(a.sum()) for a in arrays.values()))
        out["cache_rss_mib_before_read"] = before
        out["cache_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--cache", action="store_true", help="also store and read an embedding-cache entry of N rows")
    a = ap.parse_args()
    for n in a.sizes:
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-c", _CHILD, str(n), str(a.image_size), "1" if a.cache else "0"],
                             check=False, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
        if res.returncode != 0:
            raise SystemExit(res.stderr[-2000:])
        row = json.loads(res.stdout.strip().splitlines()[-1])
        row["wall_s"] = time.perf_counter() - t0
        print(json.dumps(row), flush=True)
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
