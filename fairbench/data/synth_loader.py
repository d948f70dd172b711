"""The ``synth_cxr`` dataset loader: wraps the procedural generator (:mod:`fairbench.data.synth`).

Card options are the generator's options (see ``docs/synthetic.md``) plus ``seed``. A split's labels,
attributes and per-sample drawing parameters are generated when it is loaded and kept for the life of
the process (up to eight splits), so the pipeline and tinyclip pretraining share them; its reports are written
when read (:class:`fairbench.data.synth.ReportTexts`, a few chunks of 1024 kept), and its images are not held:
:class:`SynthImages` renders them ``CHUNK`` (64) at a time when they are asked for, keeping the most recently
rendered chunks of all splits together under :data:`PIXEL_CHUNK_BYTES`. Memory does not grow with the split:
a 100 000-image split is never held whole. The bytes are those of :func:`fairbench.data.synth.generate_split`.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from fairbench.cards import card_sha256
from fairbench.data.base import RawSplit
from fairbench.errors import CardError, DataError
from fairbench.resources import release_freed_memory

__all__ = ["PIXEL_CHUNK_BYTES", "SynthCXRLoader", "SynthImages"]

#: rendered chunks kept for reuse, all synthetic splits of the process together (bytes of uint8 pixels)
PIXEL_CHUNK_BYTES = 32 << 20


class SynthCXRLoader:
    needs_data_root = False
    #: dataset options ``--task-arg KEY=VALUE`` may override (dotted: nested), with their types
    task_args: ClassVar[dict[str, type]] = {"n.train": int, "n.val": int, "n.test": int, "image_size": int}

    def __init__(self, options: dict[str, Any], *, source: str) -> None:
        from fairbench.data import synth

        opts = dict(options)
        seed = opts.pop("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise CardError(f"{source}: field 'seed' must be a non-negative integer, got {seed!r}")
        try:
            self.config = synth.SynthConfig.from_options(opts)
        except DataError as exc:
            raise CardError(f"{source}: {exc}") from None
        self.seed = seed
        self._fingerprint = card_sha256({"options": opts, "seed": seed,
                                         "generator": getattr(synth, "GENERATOR_VERSION", "1")})

    def fingerprint(self) -> str:
        return self._fingerprint

    def load(self, split: str, data_root: Path | None) -> RawSplit:
        return _generate(self._fingerprint, self.config, split, self.seed)


_CACHE: dict[tuple[str, str, int], RawSplit] = {}
_CACHE_SIZE = 8


def _generate(fingerprint: str, config: Any, split: str, seed: int) -> RawSplit:
    key = (fingerprint, split, seed)
    if key not in _CACHE:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = _build(fingerprint, config, split, seed)
    return _CACHE[key]


def _build(fingerprint: str, config: Any, split: str, seed: int) -> RawSplit:
    from fairbench.data import synth

    if split not in config.n:
        raise CardError(f"synth_cxr: no split named {split!r} (the generator has {', '.join(config.n)})")
    s = synth.generate_split(config, split, seed, render=False)
    true_finding = _objects(s.finding)
    columns = {
        "finding": _objects(s.label_finding),
        "true_finding": true_finding,
        **{k: np.asarray(v) for k, v in s.attributes.items()},
    }
    extra = {"true_finding": true_finding, "marker": np.asarray(s.marker, dtype=bool)}
    images = SynthImages(s.renderer, key=f"synth_cxr:{fingerprint[:16]}:{split}:{seed}")
    # the reports are a ReportTexts: written when read, chunk by chunk, not held as a list of str
    return RawSplit(sample_ids=np.asarray(s.sample_ids), columns=columns, images=images, texts=s.reports,
                    extra=extra)


def _objects(values: np.ndarray) -> np.ndarray:
    """An object array of ``values`` whose equal strings are one object (8 bytes a row, not a str per row)."""
    names, inverse = np.unique(np.asarray(values), return_inverse=True)
    return names.astype(object)[inverse.reshape(-1)]


class _Chunks:
    """Recently rendered chunks, least recently used dropped first beyond ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0
        self.items: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple[str, int]) -> np.ndarray | None:
        with self.lock:
            pixels = self.items.get(key)
            if pixels is not None:
                self.items.move_to_end(key)
            return pixels

    def put(self, key: tuple[str, int], pixels: np.ndarray) -> None:
        with self.lock:
            if key in self.items:
                return
            self.items[key] = pixels
            self.used += pixels.nbytes
            while self.used > self.limit and len(self.items) > 1:
                _, old = self.items.popitem(last=False)
                self.used -= old.nbytes


_CHUNKS = _Chunks(PIXEL_CHUNK_BYTES)
#: chunks rendered between two hand-backs of freed memory (:func:`_trim_now_and_then`)
TRIM_EVERY_CHUNKS = 16
_rendered_since_trim = [0]


def _trim_now_and_then(rendered: int) -> None:
    """The render threads free their temporaries into per-thread malloc arenas, which glibc keeps, so without a
    trim the resident set grows with the number of images served (docs/scale.md); a trim after every render
    cost 24-32% more CPU (the pages are faulted in again), one per 16 chunks nothing measurable."""
    _rendered_since_trim[0] += rendered
    if _rendered_since_trim[0] >= TRIM_EVERY_CHUNKS:
        _rendered_since_trim[0] = 0
        release_freed_memory()


class SynthImages:
    """A synthetic split's images, rendered on demand chunk by chunk (an :class:`~fairbench.data.base.ImageSource`).

    ``rows`` maps this source's indices to the split's (a subset); ``key`` names the pixels as
    :class:`~fairbench.data.base.ArrayImages` named them, so cache keys are unchanged."""

    def __init__(self, renderer: Any, key: str, rows: np.ndarray | None = None, *, base: str | None = None) -> None:
        self.renderer, self.key, self.rows = renderer, key, rows
        self.base = key if base is None else base  # the whole split's key: names its chunks in the shared store

    def __len__(self) -> int:
        return self.renderer.n if self.rows is None else len(self.rows)

    @property
    def block(self) -> int:
        """Consecutive indices rendered together (a whole split: its chunks; a subset: 1, no such runs)."""
        from fairbench.data.synth_shapes import CHUNK

        return CHUNK if self.rows is None else 1

    def load(self, indices: np.ndarray) -> list[np.ndarray]:
        from fairbench.data.synth_shapes import CHUNK

        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if len(idx) and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"image index out of range for {n} images ({self.key})")
        idx = np.where(idx < 0, idx + n, idx)
        rows = idx if self.rows is None else self.rows[idx]
        which = rows // CHUNK
        ident = self.base
        have = {int(ci): _CHUNKS.get((ident, int(ci))) for ci in np.unique(which)}
        missing = [ci for ci, pixels in have.items() if pixels is None]

        def store(ci: int, pixels: np.ndarray) -> None:
            have[ci] = pixels
            _CHUNKS.put((ident, ci), pixels)

        if missing:
            self.renderer.chunks(missing, store)
            _trim_now_and_then(len(missing))
        return [have[int(c)][int(r) - int(c) * CHUNK].copy() for c, r in zip(which, rows)]

    def subset(self, indices: np.ndarray) -> SynthImages:
        idx = np.asarray(indices, dtype=np.int64)
        digest = hashlib.sha256(idx.astype(np.int64).tobytes()).hexdigest()[:16]
        rows = idx if self.rows is None else self.rows[idx]
        return SynthImages(self.renderer, f"{self.key}[{digest}]", rows, base=self.base)
