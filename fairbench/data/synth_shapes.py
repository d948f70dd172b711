"""Array primitives shared by the synthetic renderer and the findings: soft masks, the lung outline,
smooth upsampling and blur. Every function works on a stack of images ``[m, H, W]`` at once."""

from __future__ import annotations

import numpy as np

__all__ = ["CHUNK", "F32", "LOWRES", "LazyNormalRows", "gauss_blur", "lung_level", "ramp", "sandwich", "upsample2", "upsampler"]

F32 = np.float32
LOWRES = 20   # side of the low-resolution noise fields upsampled into lung markings / patchy opacities
CHUNK = 64   # images rendered at once; fixed, so the noise stream of each chunk does not depend on n


class LazyNormalRows:
    """Rows of ``rng.standard_normal((n, *shape)).astype(float32)``, drawn when asked for, ``CHUNK`` rows at a time.

    Built where the eager code drew the whole array from ``rng``: it walks the stream once (drawing and
    discarding each chunk of rows, keeping the generator's state at each chunk's start), so ``rng`` is left
    where the eager draw left it and later draws from it are unchanged. Indexing (a slice, integer indices or
    a boolean mask) redraws only the chunks it touches: the same values as the eager array, without holding it.
    """

    def __init__(self, rng: np.random.Generator, n: int, shape: tuple[int, ...]) -> None:
        self.n, self.shape = int(n), tuple(shape)
        self._bitgen = type(rng.bit_generator)
        self._states = []
        for start in range(0, self.n, CHUNK):
            self._states.append(rng.bit_generator.state)
            rng.standard_normal((min(CHUNK, self.n - start), *self.shape))

    def __len__(self) -> int:
        return self.n

    def chunk(self, ci: int) -> np.ndarray:
        bitgen = self._bitgen()
        bitgen.state = self._states[ci]
        rows = min(CHUNK, self.n - ci * CHUNK)
        return np.random.Generator(bitgen).standard_normal((rows, *self.shape)).astype(F32)

    def __getitem__(self, key: slice | np.ndarray) -> np.ndarray:
        if isinstance(key, slice):
            idx = np.arange(*key.indices(self.n))
        else:
            idx = np.asarray(key)
            idx = np.flatnonzero(idx) if idx.dtype == bool else idx.astype(np.int64)
            idx = np.where(idx < 0, idx + self.n, idx)
        out = np.empty((len(idx), *self.shape), dtype=F32)
        which = idx // CHUNK
        for ci in np.unique(which):
            rows = which == ci
            out[rows] = self.chunk(int(ci))[idx[rows] - ci * CHUNK]
        return out


# -- primitives --------------------------------------------------------------------------------------------
def ramp(d: np.ndarray, width: float) -> np.ndarray:
    """Soft inside-indicator of a signed distance ``d`` (positive inside), 0..1 over ``width``."""
    return np.clip(d * (1.0 / width) + 0.5, 0.0, 1.0)


def upsampler(size: int, low: int = LOWRES) -> np.ndarray:
    """Bilinear interpolation matrix [size, low] (smooth noise = U @ field @ U.T)."""
    pos = (np.arange(size) + 0.5) / size * (low - 1)
    i0 = np.clip(np.floor(pos).astype(int), 0, low - 2)
    t = pos - i0
    m = np.zeros((size, low), dtype=F32)
    m[np.arange(size), i0] = 1.0 - t
    m[np.arange(size), i0 + 1] = t
    return m


def sandwich(u: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``u @ x[i] @ u.T`` for every image ``i``, as two plain matrix products (a broadcast ``matmul`` over a
    stack of images is many times slower)."""
    n, l1, l2 = x.shape
    size = u.shape[0]
    y = (x.reshape(n * l1, l2) @ u.T).reshape(n, l1, size)                 # x @ u.T
    y = y.transpose(0, 2, 1).reshape(n * size, l1) @ u.T                     # (u @ x @ u.T) transposed
    return np.ascontiguousarray(y.reshape(n, size, size).transpose(0, 2, 1))


def lung_level(u: np.ndarray, y: np.ndarray, insp: np.ndarray) -> np.ndarray:
    """Level function of one lung (< 1 inside): elliptic apex, squarer base with costophrenic corners."""
    dy = y - (-0.06 + 0.01 * insp)
    ex = ((u - 0.45) / 0.36) ** 2
    inv = (1.0 / 0.95) + (1.0 / (0.64 + 0.02 * insp) - 1.0 / 0.95) * (dy < 0)   # taller below the centre
    ey = (dy * inv) ** 2
    low = np.clip(dy * (1.0 / 0.35), 0.0, 1.0)
    return ex + low * (ex * ex - ex) + ey


def upsample2(x: np.ndarray) -> np.ndarray:
    """Bilinear 2x upsampling of [m, h, h] to [m, 2h, 2h] (pixel centres aligned, edges replicated)."""
    for axis in (1, 2):
        lo = np.concatenate([np.take(x, [0], axis=axis), np.take(x, np.arange(x.shape[axis] - 1), axis=axis)],
                            axis=axis)
        hi = np.concatenate([np.take(x, np.arange(1, x.shape[axis]), axis=axis), np.take(x, [-1], axis=axis)],
                            axis=axis)
        even, odd = 0.75 * x + 0.25 * lo, 0.75 * x + 0.25 * hi
        x = np.stack([even, odd], axis=axis + 1).reshape(
            x.shape[:axis] + (2 * x.shape[axis],) + x.shape[axis + 1:])
    return x


def gauss_blur(imgs: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of [m, S, S] with edge replication (loops over the kernel taps only)."""
    radius = max(1, int(np.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k = (k / k.sum()).astype(F32)
    size = imgs.shape[-1]
    for axis in (1, 2):
        pad = [(0, 0)] * 3
        pad[axis] = (radius, radius)
        padded = np.pad(imgs, pad, mode="edge")
        out = np.zeros_like(imgs)
        for j, w in enumerate(k):
            sl = [slice(None)] * 3
            sl[axis] = slice(j, j + size)
            out += w * padded[tuple(sl)]
        imgs = out
    return imgs
