"""File-backed images: decoding, the :class:`FileImages` image source, and per-file integrity checks.

Real datasets keep one image per file (PNG/JPEG) or per ``.npz`` (an array under a named key). Every way a
file can fail becomes an :class:`ImageReadError` (a :class:`~fairbench.errors.DataError`) naming the file and
one of a few reasons, so ``fairbench data check``, the run-time screen and the image cache report alike.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fairbench.errors import DataError

__all__ = [
    "FileImages",
    "ImageReadError",
    "decode_image",
    "default_workers",
    "inspect_image",
    "root_above",
    "subfolder_error",
    "subset_images",
    "to_uint8",
]

#: reasons an image cannot be used
MISSING, EMPTY, NOT_IMAGE, TRUNCATED, CORRUPT = "missing", "empty", "not an image", "truncated", "corrupt"


class ImageReadError(DataError):
    def __init__(self, path: Path | str, reason: str, detail: str = "") -> None:
        self.path, self.reason = str(path), reason
        super().__init__(f"image {reason}: {path}" + (f" ({detail})" if detail else ""))


def root_above(data_root: Path | str, *expected: str, levels: int = 2) -> Path | None:
    """The nearest folder above ``data_root`` (at most ``levels`` up) holding one of ``expected`` (paths relative
    to it; glob patterns allowed): the dataset root, when the user's ``--data-root`` is one of its subfolders."""
    here = Path(data_root).absolute()
    for up in list(here.parents)[:levels]:
        for pattern in expected:
            if any(ch in pattern for ch in "*?[") and any(p.exists() for p in up.glob(pattern)):
                return up
            if (up / pattern).exists():
                return up
    return None


def subfolder_error(data_root: Path | str, root: Path, holds: str) -> DataError:
    """One message for "--data-root is a subfolder of the dataset root" (instead of one line per missing file)."""
    return DataError(f"--data-root {data_root} is a subfolder of the dataset: pass --data-root {root} (the dataset "
                     f"root holds {holds})")


def torchxrayvision_data(name: str, what: str) -> Path:
    """A metadata file that ships inside the ``torchxrayvision`` package (``torchxrayvision/data/<name>``),
    located without importing the (heavy) package; one-line errors when it is not there. ``what``: the file as a
    user knows it, for the messages."""
    import importlib.util

    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"{what} ships with the 'torchxrayvision' package, which is not installed (pip install "
                        f"torchxrayvision), or pass your own copy")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / name
    if not path.is_file():
        raise DataError(f"torchxrayvision is installed but has no {path.name} at {path}")
    return path


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def to_uint8(array: np.ndarray) -> np.ndarray:
    """uint8 pixels from any stored dtype: uint8 as is, bool x255, integers in [0, 255] cast, floats in
    [0, 1] x255, anything else min-max scaled to [0, 255]."""
    a = np.asarray(array)
    if a.dtype == np.uint8:
        return a
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    if a.size == 0:
        return a.astype(np.uint8)
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    if np.issubdtype(a.dtype, np.integer) and lo >= 0 and hi <= 255:
        return a.astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating) and lo >= 0 and hi <= 1:
        return np.rint(np.nan_to_num(a) * 255).astype(np.uint8)
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return np.rint((np.nan_to_num(a, nan=lo) - lo) * scale).astype(np.uint8)


def _to_mode(img: Image.Image, mode: str) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return Image.fromarray(to_uint8(np.asarray(img))).convert(mode)
    return img if img.mode == mode else img.convert(mode)


def _fit(img: Image.Image, max_side: int | None) -> Image.Image:
    """Resize so the longer side is ``max_side`` (aspect kept); never upsample."""
    if not max_side or max(img.size) <= max_side:
        return img
    w, h = img.size
    s = max_side / max(w, h)
    return img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BICUBIC, reducing_gap=3.0)


def decode_image(path: Path | str, *, mode: str = "L", npz_key: str | None = None,
                 max_side: int | None = None) -> np.ndarray:
    """Decode one file to uint8 ``[H, W]`` (mode ``L``) or ``[H, W, 3]`` (mode ``RGB``); with ``max_side``
    the image is shrunk so its longer side fits. Raises :class:`ImageReadError`."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageReadError(path, MISSING) from None
    if size == 0:
        raise ImageReadError(path, EMPTY)
    if npz_key is not None:
        return _decode_npz(path, npz_key, mode, max_side)
    try:
        with Image.open(path) as img:
            if max_side and img.format == "JPEG":
                img.draft(mode, (max_side, max_side))  # DCT-domain downscaling: much faster, deterministic
            img.load()
            img = _fit(_to_mode(img, mode), max_side)
            return np.asarray(img, dtype=np.uint8).copy()
    except UnidentifiedImageError:
        raise ImageReadError(path, NOT_IMAGE) from None
    except (OSError, SyntaxError, ValueError) as exc:
        reason = TRUNCATED if "truncat" in str(exc).lower() else CORRUPT
        raise ImageReadError(path, reason, str(exc)) from None


def _decode_npz(path: Path, key: str, mode: str, max_side: int | None) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as z:
            if key not in z.files:
                raise ImageReadError(path, CORRUPT, f"no array '{key}' (has: {', '.join(z.files)})")
            arr = to_uint8(z[key])
    except ImageReadError:
        raise
    except (zipfile.BadZipFile, EOFError) as exc:
        raise ImageReadError(path, TRUNCATED if isinstance(exc, EOFError) else CORRUPT, str(exc)) from None
    except (OSError, ValueError) as exc:
        reason = NOT_IMAGE if "pickle" in str(exc) or "Failed to interpret" in str(exc) else CORRUPT
        raise ImageReadError(path, reason, str(exc)) from None
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = np.moveaxis(arr, 0, -1)  # channels-first -> channels-last
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3):
        raise ImageReadError(path, NOT_IMAGE, f"array '{key}' has shape {arr.shape}")
    img = Image.fromarray(arr).convert(mode)
    return np.asarray(_fit(img, max_side), dtype=np.uint8).copy()


def inspect_image(path: Path | str, *, npz_key: str | None = None, quick: bool = False) -> str | None:
    """The reason ``path`` is unusable, or None. ``quick`` checks existence, header and (for PNG) chunk
    checksums without decompressing pixels; the default decodes fully."""
    try:
        if quick and npz_key is None:
            p = Path(path)
            if not p.exists():
                return MISSING
            if p.stat().st_size == 0:
                return EMPTY
            try:
                with Image.open(p) as img:
                    img.verify()
            except UnidentifiedImageError:
                return NOT_IMAGE
            except (OSError, SyntaxError, ValueError) as exc:
                return TRUNCATED if "truncat" in str(exc).lower() or isinstance(exc, EOFError) else CORRUPT
            return None
        decode_image(path, npz_key=npz_key, max_side=64 if quick else None)
        return None
    except ImageReadError as exc:
        return exc.reason


class FileImages:
    """One image per file, decoded on demand (an :class:`~fairbench.data.base.ImageSource`).

    ``key`` combines the loader's ``prefix`` (dataset, fingerprint, split) with hashes of the sample ids and
    the paths; the image cache adds the files' sizes and modification times (:meth:`signature`).
    """

    def __init__(self, paths: Sequence[Path | str], *, prefix: str, sample_ids: Sequence[str],
                 mode: str = "L", npz_key: str | None = None, square: bool = False) -> None:
        if mode not in ("L", "RGB"):
            raise ValueError(f"mode must be 'L' or 'RGB', got {mode!r}")
        if len(paths) != len(sample_ids):
            raise ValueError(f"{len(paths)} paths for {len(sample_ids)} sample ids")
        self.files = [str(p) for p in paths]  # strings: a Path per file costs seconds for 100k+ images
        self.sample_ids = [str(s) for s in sample_ids]
        self.mode, self.npz_key, self.prefix = mode, npz_key, prefix
        #: the dataset's images are square by definition (NIH: 1024 x 1024); lets the cache store them at
        #: exactly the model input
        self.square = square
        self.key = f"{prefix}:ids={_digest(self.sample_ids)}:paths={_digest(self.files)}:{mode}"

    def __len__(self) -> int:
        return len(self.files)

    @property
    def paths(self) -> list[Path]:
        return [Path(p) for p in self.files]

    def load(self, indices: np.ndarray, *, max_side: int | None = None) -> list[np.ndarray]:
        idx = [int(i) for i in np.asarray(indices).reshape(-1)]
        if len(idx) <= 2:
            return [self.decode(i, max_side=max_side) for i in idx]
        with ThreadPoolExecutor(min(default_workers(), len(idx))) as pool:  # PIL decodes without the GIL
            return list(pool.map(lambda i: self.decode(i, max_side=max_side), idx))

    def decode(self, i: int, *, max_side: int | None = None) -> np.ndarray:
        return decode_image(self.files[i], mode=self.mode, npz_key=self.npz_key, max_side=max_side)

    def inspect(self, i: int, *, quick: bool = False) -> str | None:
        return inspect_image(self.files[i], npz_key=self.npz_key, quick=quick)

    def signature(self) -> str:
        """A digest of every file's size and modification time (-1 for a missing file)."""
        h = hashlib.sha256()
        for p in self.files:
            try:
                st = os.stat(p)
                h.update(f"{st.st_size}:{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(b"-1\n")
        return h.hexdigest()

    def subset(self, indices: np.ndarray) -> FileImages:
        idx = [int(i) for i in np.asarray(indices).reshape(-1)]
        return FileImages([self.files[i] for i in idx], prefix=self.prefix,
                          sample_ids=[self.sample_ids[i] for i in idx], mode=self.mode, npz_key=self.npz_key,
                          square=self.square)


class _Subset:
    """Rows ``indices`` of any image source."""

    def __init__(self, source, indices: np.ndarray) -> None:  # type: ignore[no-untyped-def]
        self.source, self.indices = source, np.asarray(indices, dtype=np.int64)
        self.key = f"{source.key}[{hashlib.sha256(self.indices.tobytes()).hexdigest()[:16]}]"

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, indices: np.ndarray) -> list[np.ndarray]:
        return self.source.load(self.indices[np.asarray(indices, dtype=np.int64)])


def subset_images(source, indices: np.ndarray):  # type: ignore[no-untyped-def]
    """Rows ``indices`` of an image source, using its own ``subset`` when it has one."""
    if hasattr(source, "subset"):
        return source.subset(np.asarray(indices, dtype=np.int64))
    return _Subset(source, indices)


def _digest(items) -> str:  # type: ignore[no-untyped-def]
    h = hashlib.sha256()
    for s in items:
        h.update(s.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]
