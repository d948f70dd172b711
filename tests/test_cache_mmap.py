"""Embedding-cache entries are files read in chunks and memory-mapped (issue #24), in the safetensors layout,
and entries of the earlier ``.npz`` layout are migrated, not encoded again."""

from __future__ import annotations

import json
import tracemalloc
import zlib
from pathlib import Path

import numpy as np

from fairbench.cache import EmbeddingCache

PARTS = {"split": "test", "model": "m", "format": "1"}


def _arrays(n: int, d: int = 64, f: int = 96, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"embedding": rng.standard_normal((n, d)).astype(np.float32),
            "feature": rng.standard_normal((n, f)).astype(np.float32)}


def test_an_entry_is_a_safetensors_file_with_its_manifest(tmp_path: Path) -> None:
    from safetensors import safe_open
    from safetensors.numpy import load_file

    cache = EmbeddingCache(tmp_path)
    arrays = _arrays(50)
    path = cache.store(PARTS, arrays)
    assert path.suffix == ".safetensors"
    read = load_file(path)  # the safetensors package, not fairbench, reads it
    for k, v in arrays.items():
        np.testing.assert_array_equal(read[k], v)
    with safe_open(path, framework="np") as fh:
        manifest = json.loads(fh.metadata()["fairbench"])
    assert manifest["parts"] == PARTS and manifest["key"] == EmbeddingCache.key(PARTS)
    assert manifest["arrays"]["feature"] == {"shape": [50, 96], "crc32": zlib.crc32(arrays["feature"].tobytes())}


def test_a_hit_maps_the_file_instead_of_reading_it_into_memory(tmp_path: Path) -> None:
    n = 40_000  # 40 000 x (64 + 96) float32 = 24 MiB
    cache = EmbeddingCache(tmp_path)
    arrays = _arrays(n)
    path = cache.store(PARTS, arrays)
    del arrays
    tracemalloc.start()
    try:
        got = EmbeddingCache(tmp_path).load(PARTS, n)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got is not None
    assert peak < 8 * 2 ** 20, peak / 2 ** 20  # the checksum pass reads 4 MiB blocks; nothing holds the arrays
    for k, v in _arrays(n).items():
        np.testing.assert_array_equal(got[k], v)
        base = got[k]
        while not isinstance(base, np.memmap) and getattr(base, "base", None) is not None:
            base = base.base
        assert isinstance(base, np.memmap) and Path(base.filename) == path
    # copy-on-write: the arrays can be changed in memory; the entry stays as stored
    got["feature"][0, 0] = 1e6
    again = EmbeddingCache(tmp_path).load(PARTS, n)
    assert again is not None and again["feature"][0, 0] != 1e6


def test_get_or_compute_hands_back_the_mapped_entry(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    out = cache.get_or_compute(PARTS, 30, lambda: {k: v.astype(np.float64) for k, v in _arrays(30).items()})
    assert cache.events[-1]["event"] == "miss"
    for k, v in _arrays(30).items():
        assert out[k].dtype == np.float32
        np.testing.assert_array_equal(out[k], v)
        assert isinstance(out[k].base, np.memmap)


def test_an_npz_entry_of_before_is_migrated_once(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    key = EmbeddingCache.key(PARTS)
    arrays = _arrays(20)
    # the layout fairbench wrote before (fairbench/cache.py at ab3c32b): np.savez with a JSON manifest
    old = tmp_path / key[:2] / f"{key}.npz"
    old.parent.mkdir(parents=True)
    manifest = {"key": key, "parts": PARTS,
                "arrays": {k: {"shape": list(v.shape), "crc32": zlib.crc32(v.tobytes())} for k, v in arrays.items()}}
    with open(old, "wb") as fh:
        np.savez(fh, manifest=np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8), **arrays)

    got = cache.get_or_compute(PARTS, 20, lambda: (_ for _ in ()).throw(AssertionError("encoded again")))
    assert cache.events[-1]["event"] == "hit" and cache.events[-1]["migrated"] == "npz"
    for k, v in arrays.items():
        np.testing.assert_array_equal(got[k], v)
    assert not old.exists() and cache.path(key).is_file()
    cache.load(PARTS, 20)
    assert cache.events[-1] == {"split": "test", "event": "hit", "key": key}


def test_a_damaged_npz_entry_is_rebuilt(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    key = EmbeddingCache.key(PARTS)
    old = tmp_path / key[:2] / f"{key}.npz"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"PK\x03\x04 not really")
    assert cache.load(PARTS, 20) is None
    assert cache.events[-1]["event"] == "rebuilt" and not old.exists()
