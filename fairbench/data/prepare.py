"""What a run does to a task's data before a model sees it: screen, cache, and skip only when allowed.

:class:`PreparedLoader` wraps a dataset loader for one run (the pipeline hands it to the adapter context):

- file-backed images (:class:`~fairbench.data.files.FileImages`) are served from the preprocessed-image cache
  (:mod:`fairbench.data.image_cache`; with ``auto`` and the model's cache ``geometry``, an entry holding what
  the model's own resize/pad/crop makes of each image) unless the run says ``--image-cache off``; building
  the cache decodes every image once, which is also the screen for unreadable ones. Without the cache,
  missing files are found up front (and, when skipping is allowed, every file is verified without decoding);
- samples whose files are missing, truncated or not images stop the run with a message naming them, unless
  the user passed ``--allow-skip-unreadable``: then they are left out and every one is listed in
  :meth:`report`, which the pipeline writes to ``metrics.json`` under ``data.skipped``. Nothing is dropped
  silently.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from fairbench.data.base import RawSplit
from fairbench.data.files import MISSING, FileImages, default_workers, subset_images
from fairbench.data.image_cache import CachedImages, auto_cache_size
from fairbench.errors import DataError, FairbenchError

__all__ = ["PreparedLoader", "parse_image_cache", "subset_raw"]


def parse_image_cache(spec: str | int | None, model_input: int) -> str | int | None:
    """Validate ``--image-cache``: ``auto`` (default; the size is chosen per image source by
    :func:`auto_cache_size`), ``off`` -> None, or a number of pixels (at least the model input)."""
    if spec is None or spec == "auto":
        return "auto"
    if spec in ("off", "none", "0", 0):
        return None
    try:
        size = int(spec)
    except (TypeError, ValueError):
        raise FairbenchError(f"--image-cache {spec!r}: expected auto, off or a size in pixels") from None
    if size < model_input:
        raise FairbenchError(f"--image-cache {size}: smaller than the model input ({model_input} px); the cache "
                             f"would lose resolution (use auto or a size >= {model_input})")
    return size


def subset_raw(raw: RawSplit, keep: np.ndarray, images: Any = None) -> RawSplit:
    keep = np.asarray(keep, dtype=np.int64)
    return RawSplit(sample_ids=np.asarray(raw.sample_ids)[keep],
                    columns={k: np.asarray(v)[keep] for k, v in raw.columns.items()},
                    images=subset_images(images if images is not None else raw.images, keep),
                    texts=[raw.texts[i] for i in keep] if raw.texts is not None else None,
                    extra={k: np.asarray(v)[keep] for k, v in raw.extra.items()})


class PreparedLoader:
    """A dataset loader as a run uses it (same interface as the wrapped loader)."""

    def __init__(self, inner: Any, *, split_names: dict[str, str] | None = None,
                 image_cache: str | int | None = "auto", model_input: int = 224, allow_skip: bool = False,
                 cache_root: Path | None = None, geometry: Any = None) -> None:
        self.inner = inner
        self.image_cache, self.model_input = image_cache, int(model_input)
        # "auto" with the model's cache geometry (fairbench.models.preprocess.CacheGeometry, built by the caller:
        # the data layer does not import the models): cache what the model's own geometry makes of each image
        self.geometry = geometry if image_cache == "auto" else None
        self.allow_skip, self.cache_root = allow_skip, cache_root
        self.canonical = {v: k for k, v in (split_names or {}).items()}  # loader split name -> train/val/test
        self.skipped: list[dict[str, str]] = []
        self.caches: dict[str, dict[str, Any]] = {}

    @property
    def needs_data_root(self) -> bool:
        return bool(self.inner.needs_data_root)

    def fingerprint(self) -> str:
        return str(self.inner.fingerprint())

    def load(self, split: str, data_root: Path | None) -> RawSplit:
        name = self.canonical.get(split, split)
        if hasattr(self.inner, "tolerate_unreadable"):
            self.inner.tolerate_unreadable = self.allow_skip
        raw = self.inner.load(split, data_root)
        problems = [(str(sid), str(reason))
                    for sid, reason in getattr(self.inner, "unreadable_samples", {}).get(split, [])]
        images, bad = raw.images, {}
        if isinstance(images, FileImages) and len(images):
            size = self.cache_size(images)
            if size:
                images = CachedImages(images, size, root=self.cache_root, geometry=self.geometry)
                bad = dict(images.unreadable)
                self.caches[name] = {"size": images.size, "path": str(images.path), "hit": images.hit,
                                     "geometry": self.geometry.key if self.geometry is not None else None}
            else:
                bad = _screen(images, verify=self.allow_skip)
        problems += [(str(raw.sample_ids[i]), reason) for i, reason in sorted(bad.items())]
        if problems and not self.allow_skip:
            shown = "; ".join(f"{sid}: {reason}" for sid, reason in problems[:3])
            raise DataError(f"{len(problems)} sample(s) of split '{name}' cannot be read ({shown}"
                            f"{'; ...' if len(problems) > 3 else ''}). Run `fairbench data check` for the full "
                            f"list and fix or restore them, or pass --allow-skip-unreadable to leave them out "
                            f"(each is then listed in metrics.json under data.skipped)")
        self.skipped += [{"split": name, "sample_id": sid, "reason": reason} for sid, reason in problems]
        if bad:
            keep = np.asarray([i for i in range(len(raw.sample_ids)) if i not in bad], dtype=np.int64)
            return subset_raw(raw, keep, images)
        if images is raw.images:
            return raw
        return RawSplit(sample_ids=raw.sample_ids, columns=raw.columns, images=images, texts=raw.texts,
                        extra=raw.extra)

    def cache_size(self, images: FileImages) -> int | None:
        if self.image_cache == "auto":
            return auto_cache_size(self.model_input, square=images.square)
        return int(self.image_cache) if self.image_cache else None

    def report(self) -> dict[str, Any]:
        """For metrics.json: every skipped sample and how images were served."""
        return {"allow_skip_unreadable": self.allow_skip, "n_skipped": len(self.skipped), "skipped": self.skipped,
                "image_cache": {"setting": self.image_cache or "off", "model_input": self.model_input,
                                "splits": self.caches}}


def _screen(images: FileImages, *, verify: bool) -> dict[int, str]:
    """Index -> reason for files that are missing (always) or fail a header and checksum check (``verify``)."""
    if not verify:
        return {i: MISSING for i, p in enumerate(images.files) if not os.path.isfile(p)}
    with ThreadPoolExecutor(default_workers()) as pool:
        reasons = list(pool.map(lambda i: images.inspect(i, quick=True), range(len(images))))
    return {i: r for i, r in enumerate(reasons) if r is not None}
