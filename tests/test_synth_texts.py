"""synth_cxr's per-sample table held compactly (docs/scale.md, "Serving a split's images"): the reports are
written when read (`ReportTexts`), yet texts, sample ids and images are those of main at 38ec7d2."""

from __future__ import annotations

import hashlib
import pickle
import tracemalloc

import numpy as np
import pytest

from fairbench.data.synth_loader import SynthCXRLoader


def _sha(values) -> str:  # type: ignore[no-untyped-def]
    return hashlib.sha256("\n".join(map(str, values)).encode()).hexdigest()


def _load(split: str, seed: int, n_test: int = 2100):  # type: ignore[no-untyped-def]
    opts = {"n": {"train": 30, "val": 20, "test": n_test}, "image_size": 32, "seed": seed}
    return SynthCXRLoader(opts, source="test").load(split, None)


# sha256 of "\n".join(texts) and of "\n".join(sample_ids), taken by running main's loader (38ec7d2, which held
# the reports as a list of str) on the same options; the test split spans three chunks of 1024 reports
PINNED = {
    (0, "train"): ("5ca821adb43bb2bf510b53099547d51d48c7295a710f9616ef67e5edeebac2d5",
                   "de2ef84c91ac8334534f1270c20306260e3c5ce1eb986e75fe46609d240f3339"),
    (0, "test"): ("d09b3e12ba51cca8d63f2ba0353ae53fb3b935874cf3f274d701660e04f97817",
                  "2892607af86c7cf2408981d04563e62377e07dcede2553a70d1067904aaa2da5"),
    (3, "train"): ("9398235a47aad38b1376116327012ee8c6003b7d576aa93978ab3add2adfaf9a",
                   "de2ef84c91ac8334534f1270c20306260e3c5ce1eb986e75fe46609d240f3339"),
    (3, "test"): ("1caf1a898dd0bbd706e0a77e4a8b9a884d690873f96bb9766a20a5917e00b012",
                  "2892607af86c7cf2408981d04563e62377e07dcede2553a70d1067904aaa2da5"),
}
#: sha256 of every image of the test split at seed 5 (32 px), read in batches of 256, on main
IMAGES_SEED5 = "158effff4de393b04d65e5cf2a1b02b3e074cb8c24d2a9f60b07aaff8e92e123"


@pytest.mark.parametrize("seed,split", sorted(PINNED))
def test_texts_and_ids_equal_mains(seed: int, split: str) -> None:
    raw = _load(split, seed)
    texts_sha, ids_sha = PINNED[(seed, split)]
    assert _sha(raw.texts) == texts_sha
    assert _sha(raw.sample_ids) == ids_sha


def test_images_equal_mains() -> None:
    raw = _load("test", 5)
    h = hashlib.sha256()
    for s in range(0, 2100, 256):
        for img in raw.images.load(np.arange(s, min(2100, s + 256))):
            h.update(img.tobytes())
    assert h.hexdigest() == IMAGES_SEED5


def test_reports_in_any_order_slices_and_pickles() -> None:
    texts = _load("test", 7).texts
    assert not isinstance(texts, list)  # written when read
    first = list(texts)
    fresh = _load("test", 11).texts  # another seed: its chunks are written out of order below
    order = [2090, 5, 1500, -1, 1023, 1024, 0]
    expect = list(fresh)
    fresh2 = pickle.loads(pickle.dumps(_load("test", 11).texts))  # a pickled copy (as sent to a Ray worker)
    assert [fresh2[i] for i in order] == [expect[i] for i in order]
    assert fresh2[1020:1030] == expect[1020:1030] and fresh2[:3] == expect[:3]
    assert len(texts) == 2100 and first[-1] == texts[-1] and first[0] == texts[-2100]
    with pytest.raises(IndexError):
        texts[2100]


def test_table_memory_per_sample() -> None:
    """main held 663 B a sample at 100 000 (reports as str, float64 drawing parameters); now about 350."""
    n = 20_000
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        raw = _load("test", 0, n_test=n)
        sum(len(t) for t in raw.texts)  # reading every report does not keep them
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert held / n < 450, f"{held / n:.0f} bytes a sample"
