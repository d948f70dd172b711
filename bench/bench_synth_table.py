"""Memory of ``synth_cxr``'s per-sample table alone (labels, attributes, sample ids, reports, drawing parameters):
loads the test split resized to N samples without reading any image or report, under tracemalloc, and prints
what stays allocated (MiB and bytes a sample) and the peak while loading (issue #24 item 1).

    nice python bench/bench_synth_table.py --n 100000

Run it with another fairbench first on ``PYTHONPATH`` to measure that one.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--image-size", type=int, default=64)
    a = ap.parse_args()
    from fairbench.data.synth_loader import SynthCXRLoader

    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    t0 = time.process_time()
    raw = SynthCXRLoader({"n": {"train": 10, "val": 10, "test": a.n}, "image_size": a.image_size, "seed": 0},
                         source="bench").load("test", None)
    cpu = time.process_time() - t0
    held, peak = tracemalloc.get_traced_memory()
    held, peak = held - base, peak - base
    print(f"n={a.n}: held {held / 2**20:.1f} MiB ({held / a.n:.0f} B a sample), peak while loading "
          f"{peak / 2**20:.1f} MiB, load CPU {cpu:.1f} s under tracemalloc ({len(raw.sample_ids)} samples)")


if __name__ == "__main__":
    main()
