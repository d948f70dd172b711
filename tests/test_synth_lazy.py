"""The synthetic loader renders images on demand (issue #24): the same bytes as the whole-split generator of
before, without holding a split's images or its per-sample noise fields in memory."""

from __future__ import annotations

import hashlib
import pickle
import tracemalloc

import numpy as np
import pytest

from fairbench.data import synth, synth_loader
from fairbench.data.synth_loader import SynthCXRLoader
from fairbench.data.synth_shapes import LazyNormalRows

# sha256 of each split's images (uint8 [n, size, size], C order) from fairbench at ab3c32b, before images were
# rendered lazily: `synth.generate_split(config, split, seed).images.tobytes()`
_HAZE = {"n": {"train": 150, "val": 70, "test": 130}, "image_size": 64,
         "bias": [{"attribute": "age", "min": 50, "haze": 0.2, "blur": 1.0, "noise": 0.05},
                  {"attribute": "race", "groups": ["Asian"], "marker_pos": 0.9, "marker_neg": 0.3}]}
_BEFORE = {
    ("default", 0, "val"): "ba228844408d7d0ebdf939a14a9fedca82ea48db784db9ec24d77ce5fa3adb0f",
    ("haze", 0, "train"): "90f862cfe836ba6ee768d25bc3a207c07af3911950c66a71374bc4f170b71b4c",
    ("haze", 0, "val"): "7f1df0f143ff7d7d4ed4cf2b58f6a839835c9026421563dad6b8feb6e9a9f0f9",
    ("haze", 0, "test"): "eb642780b60f8af18345df963e8781402c2ebfa9bd0123bd614b5a372065594a",
    ("haze", 3, "train"): "125c4747a0d2537b8d81c2ea1ad41367c387d203adebdbd2fa837ce484beaccd",
    ("haze", 3, "val"): "7f7abc0362cb994ddc3c68a5d35af359deb77fbcb7436a532bceea1e44c45669",
}
# sha256 over "report|finding|recorded finding|marker\n" of every sample of the default val split, same commit
_BEFORE_ROWS = "176432cecbb563cee669e679531aa0ff689021425d4270642b9add2e96264c25"


def _options(name: str) -> dict:
    # the biased preset as it was at that commit (written out: not read from the module under test)
    default = {"n": {"train": 2000, "val": 500, "test": 1500}, "bias": [
        {"attribute": "age", "min": 60, "contrast": 0.3, "noise": 0.08, "blur": 2.0},
        {"attribute": "sex", "groups": ["F"], "label_noise": 0.08},
        {"attribute": "race", "groups": ["White"], "prevalence": 0.6},
        {"attribute": "race", "groups": ["Asian"], "marker_pos": 0.9, "marker_neg": 0.05}]}
    return default if name == "default" else _HAZE


@pytest.mark.parametrize(("name", "seed", "split"), sorted(_BEFORE))
def test_loader_images_are_the_bytes_of_before(name: str, seed: int, split: str) -> None:
    raw = SynthCXRLoader({**_options(name), "seed": seed}, source="test").load(split, None)
    n = len(raw.images)
    # in batches that straddle chunk boundaries, last batch first (order must not matter)
    batches = [np.arange(s, min(n, s + 100)) for s in range(0, n, 100)][::-1]
    got = {int(i): img for b in batches for i, img in zip(b, raw.images.load(b))}
    pixels = np.stack([got[i] for i in range(n)])
    assert pixels.dtype == np.uint8
    assert hashlib.sha256(pixels.tobytes()).hexdigest() == _BEFORE[(name, seed, split)]
    # the eager generator gives the same bytes
    eager = synth.generate_split(synth.SynthConfig.from_options(_options(name)), split, seed).images
    assert np.array_equal(eager, pixels)


def test_labels_reports_and_markers_are_those_of_before() -> None:
    s = synth.generate_split(synth.SynthConfig.from_options(_options("default")), "val", 0, render=False)
    assert s.images is None and s.renderer is not None
    h = hashlib.sha256()
    for r, f, lf, m in zip(s.reports, s.finding, s.label_finding, s.marker):
        h.update(f"{r}|{f}|{lf}|{m}\n".encode())
    assert h.hexdigest() == _BEFORE_ROWS


def test_random_access_and_subsets_serve_the_right_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synth_loader, "_CHUNKS", synth_loader._Chunks(100_000))  # a few chunks: evictions happen
    raw = SynthCXRLoader({**_HAZE, "seed": 0}, source="test").load("train", None)
    eager = synth.generate_split(synth.SynthConfig.from_options(_HAZE), "train", 0).images
    idx = np.random.default_rng(1).permutation(150)[:90]
    assert all(np.array_equal(a, eager[i]) for a, i in zip(raw.images.load(idx), idx))
    assert np.array_equal(raw.images.load(np.array([-1]))[0], eager[-1])
    sub = raw.images.subset(idx[:40])
    assert len(sub) == 40 and sub.key.startswith(raw.images.key + "[")
    assert all(np.array_equal(a, eager[i]) for a, i in zip(sub.load(np.arange(40)[::-1]), idx[:40][::-1]))
    with pytest.raises(IndexError):
        raw.images.load(np.array([150]))
    # a source pickles (process pools, Ray) and renders the same rows on the other side
    again = pickle.loads(pickle.dumps(sub))
    assert again.key == sub.key and np.array_equal(again.load(np.array([5]))[0], eager[idx[5]])


def test_lazy_noise_rows_equal_one_eager_draw_and_leave_the_stream_where_it_was() -> None:
    n, shape = 200, (20, 20)
    eager_rng, lazy_rng = np.random.default_rng(5), np.random.default_rng(5)
    eager = eager_rng.standard_normal((n, *shape)).astype(np.float32)
    lazy = LazyNormalRows(lazy_rng, n, shape)
    assert np.array_equal(eager_rng.random(10), lazy_rng.random(10))  # the next draws are unchanged
    assert np.array_equal(lazy[0:n], eager)
    assert np.array_equal(lazy[70:130], eager[70:130])
    idx = np.array([199, 3, 64, 63, 128])
    assert np.array_equal(lazy[idx], eager[idx])
    mask = np.zeros(n, dtype=bool)
    mask[[1, 100, 150]] = True
    assert np.array_equal(lazy[mask], eager[mask])


def _peak_mib(n: int) -> float:
    """Peak traced memory (MiB) of loading a synthetic test split of ``n`` 64-px images and streaming through
    all of them in batches of 256, keeping nothing."""
    loader = SynthCXRLoader({"n": {"train": 10, "val": 10, "test": n}, "image_size": 64, "seed": 0}, source="t")
    tracemalloc.start()
    try:
        raw = loader.load("test", None)
        total = 0
        for s in range(0, n, 256):
            total += sum(int(img[0, 0]) for img in raw.images.load(np.arange(s, min(n, s + 256))))
        return tracemalloc.get_traced_memory()[1] / 2 ** 20
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_images_of_a_split(monkeypatch: pytest.MonkeyPatch) -> None:
    """8 000 more images of 64 x 64 are 31 MiB of pixels (and 26 MiB of per-sample 20 x 20 noise fields, as the
    generator held them): streaming through a split of 9 000 may cost only its labels and reports more than one
    of 1 000."""
    monkeypatch.setattr(synth_loader, "_CHUNKS", synth_loader._Chunks(1 << 20))
    monkeypatch.setattr(synth_loader, "_CACHE", {})
    small, large = _peak_mib(1000), _peak_mib(9000)
    assert large - small < 8.0, (small, large)


def test_freed_render_memory_is_handed_back_every_few_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The render threads' freed temporaries stay in glibc's per-thread arenas unless trimmed (docs/scale.md:
    without it, serving 100 000 images grew the process by 65 MiB from 10 000, with it by 33): the loader trims
    once per TRIM_EVERY_CHUNKS rendered chunks, not after every render (+25% CPU) and not never."""
    calls: list[int] = []
    monkeypatch.setattr(synth_loader, "release_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(synth_loader, "_rendered_since_trim", [0])
    monkeypatch.setattr(synth_loader, "TRIM_EVERY_CHUNKS", 3)
    monkeypatch.setattr(synth_loader, "_CHUNKS", synth_loader._Chunks(1))  # nothing kept: every read renders
    raw = SynthCXRLoader({**_HAZE, "seed": 0}, source="test").load("train", None)
    for start in range(0, 150, 64):  # 3 chunks of 64 (the last short), one at a time, twice over
        raw.images.load(np.arange(start, min(150, start + 64)))
    assert len(calls) == 1
    for start in range(0, 150, 64):
        raw.images.load(np.arange(start, min(150, start + 64)))
    assert len(calls) == 2
