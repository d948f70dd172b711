"""A preprocessed-image cache: decode and shrink a split's images once, reuse them from a memory map.

Decoding a 1024 x 1024 PNG and resizing it costs far more than a model's own preprocessing of a small
array. Two kinds of entry:

- with a ``geometry`` (:class:`fairbench.models.preprocess.CacheGeometry`; what a run uses by default): each
  full-resolution image after the geometric part of the model's own pipeline (MedCLIP's padding and bilinear
  resize, GLoRIA's INTER_AREA resize and padding, CLIP's resize and crop), a square the same pipeline then maps
  onto itself. The model sees exactly what it would see uncached (every pipeline resizes with PIL on uint8 and
  the entry stores PIL's output). One entry per model preprocessing (its key includes the pipeline's
  :meth:`~fairbench.models.preprocess.Preprocessing.key`, so a new ``PIPELINE_VERSION`` makes new entries).
- with a ``size`` only (``--image-cache SIZE``): shrunk with Pillow bicubic so the longer side is at most
  ``size``; the model's pipeline then resizes again (an approximation, shared by all models).

Either way one uint8 array ``[n, size, size]`` (``[..., 3]`` for RGB) is saved as ``pixels.npy`` and
read through ``numpy`` memory mapping. Each image sits in the top-left corner of its square slot; its true
height and width are stored in ``shapes.npy`` and the padding is cropped away on load, so a model sees the
aspect-preserving resized image, never the padding. The model's own preprocessing (resize/crop/normalise)
still runs on these arrays, so the cache must be at least as large as the model input
(:func:`auto_cache_size`).

One cache entry per (image source key, file sizes and mtimes, size, colour mode, format version). The source
key holds the dataset, the loader fingerprint (card options, committed split file), the split and hashes of
the sample ids and paths: every model with an input that maps to the same ``size`` shares the entry.
Entries live in ``<cache root>/images/`` (``$FAIRBENCH_CACHE``; see :func:`fairbench.paths.cache_root`).

Integrity: an entry is built in a temporary folder and renamed into place (atomic); ``manifest.json`` is
written last. Each row carries a CRC-32 checked on every load. An entry that fails any check (unreadable
manifest, wrong shapes, truncated arrays, a bad checksum) is rebuilt, with a message.
Images that cannot be decoded while building are recorded in the manifest (:attr:`CachedImages.unreadable`);
loading one raises :class:`~fairbench.data.files.ImageReadError`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from fairbench.cards import card_sha256
from fairbench.data.files import FileImages, ImageReadError, default_workers
from fairbench.progress import bar, info, warn

__all__ = [
    "CACHE_FORMAT",
    "CACHE_SIZES",
    "CachedImages",
    "auto_cache_size",
    "cache_entries",
    "image_cache_dir",
]

#: bump when the stored pixels would change (resampling, layout)
CACHE_FORMAT = "1"
CACHE_SIZES = (256, 320, 384, 448, 512, 640, 768, 1024)
_CHUNK = 256


def auto_cache_size(model_input: int, *, square: bool = False) -> int:
    """The cache size for a model input: the input itself for sources whose images are square (the model's
    resize is then a no-op), else the smallest of :data:`CACHE_SIZES` at least 1.25 x the input, so images
    with an aspect ratio down to 4:5 keep their shorter side at or above the input (no upsampling)."""
    if square:
        return int(model_input)
    need = math.ceil(1.25 * model_input)
    for s in CACHE_SIZES:
        if s >= need:
            return s
    return int(math.ceil(need / 64) * 64)


def image_cache_dir(root: Path | None = None) -> Path:
    from fairbench.paths import cache_root

    return Path(root) if root is not None else cache_root() / "images"


class CacheCorrupt(Exception):
    pass


class CachedImages:
    """An :class:`~fairbench.data.base.ImageSource` over a cache entry of ``source`` at ``size``; opened if
    it exists and is intact, built otherwise. ``hit`` says which."""

    def __init__(self, source: FileImages, size: int, *, root: Path | None = None, verify: bool = True,
                 workers: int | None = None, geometry: Any = None) -> None:
        if geometry is not None:
            size = geometry.side
        if size < 16:
            raise ValueError(f"image cache size must be >= 16, got {size}")
        self.source, self.size, self.verify = source, int(size), verify
        self.geometry = geometry
        self.workers = workers or default_workers()
        self.channels = 1 if source.mode != "RGB" or (geometry is not None and geometry.gray) else 3
        self.fields = {"format": CACHE_FORMAT, "source": source.key, "files": source.signature(),
                       "size": self.size, "mode": source.mode, "n": len(source)}
        if geometry is not None:
            self.fields["geometry"] = geometry.key
        digest = card_sha256(self.fields)
        dataset = source.prefix.split(":", 1)[0] or "images"
        self.path = image_cache_dir(root) / f"{dataset}-{self.size}-{digest[:24]}"
        self.key = f"cache{self.size}:{source.key}" if geometry is None else \
            f"cache{self.size}:{geometry.key}:{source.key}"
        self.hit = False
        self._open_or_build()

    # -- public ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.source)

    @property
    def unreadable(self) -> dict[int, str]:
        return self._unreadable

    def load(self, indices: np.ndarray) -> list[np.ndarray]:
        try:
            return self._load(indices)
        except CacheCorrupt as exc:
            warn(f"image cache {self.path} is corrupt ({exc}); rebuilding it")
            self._close()
            self._build()
            return self._load(indices)

    # -- internals ------------------------------------------------------------------------------
    def _load(self, indices: np.ndarray) -> list[np.ndarray]:
        out = []
        for i in np.asarray(indices).reshape(-1):
            i = int(i)
            if i in self._unreadable:
                raise ImageReadError(self.source.files[i], self._unreadable[i])
            row = self._pixels[i]
            if self.verify and zlib.crc32(row) != int(self._crc[i]):
                raise CacheCorrupt(f"row {i} fails its checksum")
            h, w = (int(v) for v in self._shapes[i])
            out.append(np.array(row[:h, :w]))
        return out

    def _open_or_build(self) -> None:
        if self.path.exists():
            try:
                self._open()
                self.hit = True
                return
            except CacheCorrupt as exc:
                warn(f"image cache {self.path} is corrupt ({exc}); rebuilding it")
                self._close()
        self._build()

    def _expected_shape(self) -> tuple[int, ...]:
        n, s = len(self.source), self.size
        return (n, s, s) if self.channels == 1 else (n, s, s, 3)

    def _open(self) -> None:
        try:
            manifest = json.loads((self.path / "manifest.json").read_text(encoding="utf-8"))
            if manifest.get("fields") != self.fields:
                raise CacheCorrupt("manifest does not match this image source")
            pixels = np.load(self.path / "pixels.npy", mmap_mode="r")
            shapes = np.load(self.path / "shapes.npy")
            crc = np.load(self.path / "crc.npy")
        except CacheCorrupt:
            raise
        except (OSError, ValueError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CacheCorrupt(f"{type(exc).__name__}: {exc}") from None
        n = len(self.source)
        if pixels.shape != self._expected_shape() or pixels.dtype != np.uint8:
            raise CacheCorrupt(f"pixels have shape {pixels.shape} {pixels.dtype}, expected {self._expected_shape()}")
        if shapes.shape != (n, 2) or crc.shape != (n,):
            raise CacheCorrupt("shape or checksum table has the wrong length")
        self._pixels, self._shapes, self._crc = pixels, shapes, crc
        self._unreadable = {int(k): str(v) for k, v in manifest.get("unreadable", {}).items()}

    def _close(self) -> None:
        for attr in ("_pixels", "_shapes", "_crc"):
            if hasattr(self, attr):
                delattr(self, attr)

    def _build(self) -> None:
        n = len(self.source)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.parent / f".tmp-{self.path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        t0 = time.time()
        info(f"building the image cache for {n} images at {self.size} px: {self.path}")
        try:
            pixels = np.lib.format.open_memmap(tmp / "pixels.npy", mode="w+", dtype=np.uint8,
                                               shape=self._expected_shape())
            shapes = np.zeros((n, 2), dtype=np.int32)
            crc = np.zeros(n, dtype=np.uint32)
            unreadable: dict[int, str] = {}

            def decode(i: int) -> tuple[int, np.ndarray | None, str | None]:
                try:
                    if self.geometry is not None:  # full resolution through the model's own geometry
                        return i, self.geometry(self.source.decode(i)), None
                    return i, self.source.decode(i, max_side=self.size), None
                except ImageReadError as exc:
                    return i, None, exc.reason

            with ThreadPoolExecutor(self.workers) as pool, bar("caching images", n) as b:
                for start in range(0, n, _CHUNK):
                    for i, img, reason in pool.map(decode, range(start, min(n, start + _CHUNK))):
                        if img is None:
                            unreadable[i] = reason or "unreadable"
                        else:
                            h, w = img.shape[:2]
                            pixels[i, :h, :w] = img
                            shapes[i] = (h, w)
                        crc[i] = zlib.crc32(pixels[i])
                    b.advance(min(n, start + _CHUNK) - start)
            pixels.flush()
            del pixels
            np.save(tmp / "shapes.npy", shapes)
            np.save(tmp / "crc.npy", crc)
            manifest: dict[str, Any] = {
                "fields": self.fields, "sample_ids": card_sha256(self.source.sample_ids),
                "unreadable": {str(k): v for k, v in sorted(unreadable.items())},
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "build_seconds": round(time.time() - t0, 3),
            }
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
            self._install(tmp)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        self._open()
        self.hit = False

    def _install(self, tmp: Path) -> None:
        """Rename the finished ``tmp`` into place, moving a (corrupt) old entry aside first."""
        if self.path.exists():
            trash = self.path.parent / f".trash-{self.path.name}-{uuid.uuid4().hex[:8]}"
            try:
                os.rename(self.path, trash)
            except OSError:
                pass
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.rename(tmp, self.path)
        except OSError:
            if not self.path.exists():
                raise
            # another process installed the same entry first: it is opened (and checked) next


def cache_entries(root: Path | None = None) -> list[dict[str, Any]]:
    """Every cache entry: folder, size on disk, number of images, image size, build time."""
    out = []
    base = image_cache_dir(root)
    if not base.is_dir():
        return out
    for d in sorted(base.iterdir()):
        if not d.is_dir():
            continue
        entry: dict[str, Any] = {"path": d, "bytes": sum(f.stat().st_size for f in d.iterdir() if f.is_file()),
                                 "partial": d.name.startswith((".tmp-", ".trash-"))}
        try:
            m = json.loads((d / "manifest.json").read_text(encoding="utf-8"))
            entry.update(n=m["fields"]["n"], size=m["fields"]["size"], built_at=m.get("built_at"),
                         unreadable=len(m.get("unreadable", {})))
        except (OSError, ValueError, KeyError, TypeError):
            entry.update(n=None, size=None, built_at=None, unreadable=None)
        out.append(entry)
    return out
