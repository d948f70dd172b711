"""Vectorised rendering of synthetic chest radiographs.

Anatomy is drawn in a canonical frame ``x, y`` in about [-1, 1] (PA view: image left is the patient's
right, ``y`` grows downwards); each image gets its own shift, rotation and scale of that frame, so every
structure is a few array expressions over a whole chunk of images at once. There is no Python loop over
images or pixels: the loops are over fixed-size chunks (to bound memory) and over the handful of finding
types, each applied to the images that have it.

Intensities are built additively on a [0, 1] scale (bright = dense): body soft tissue, darker lungs with
vessel markings, bright mediastinum, heart, spine, ribs and clavicles, then findings, exposure, the
per-group degradation (contrast, haze, blur, noise) and finally the burned-in marker.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from fairbench.data.synth_findings import FINDING_NAMES, draw_finding
from fairbench.data.synth_shapes import (
    CHUNK,
    F32,
    LOWRES,
    LazyNormalRows,
    gauss_blur,
    lung_level,
    ramp,
    sandwich,
    upsample2,
    upsampler,
)

__all__ = ["CHUNK", "Renderer", "draw_anatomy"]

HAZE_RES = 6  # side of the low-resolution field of the haze degradation


# -- per-sample parameters ------------------------------------------------------------------------------
def draw_anatomy(rng: np.random.Generator, sex: np.ndarray, age: np.ndarray,
                 by_attribute: bool) -> dict[str, np.ndarray]:
    """Patient-to-patient variation: pose, size, breathing, tissue and exposure, one value per sample."""
    n = len(sex)
    g = lambda sd: rng.standard_normal(n) * sd
    male = (sex == "M").astype(float) if by_attribute else np.full(n, 0.5)
    old = np.clip((age - 18) / 77.0, 0.0, 1.0) if by_attribute else np.full(n, 0.45)
    a = {
        "tx": g(0.035), "ty": g(0.03) - 0.01, "theta": g(0.035),
        "scale": 1.0 + g(0.035) + 0.045 * (male - 0.5),
        "body_w": 1.0 + g(0.04) + 0.03 * (male - 0.5),
        "soft": 0.50 + g(0.035),                                # soft-tissue brightness (habitus)
        "lung_dark": 0.34 + g(0.03),                            # how much darker aerated lung is
        "insp": g(1.0) - 0.3 * (old - 0.45),                    # breathing depth (+ = deep inspiration)
        "heart_w": 1.0 + g(0.05), "heart_h": 1.0 + g(0.05),
        "med_shift": g(0.02),                                   # patient rotation: mediastinum vs spine
        "aorta": 1.0 + g(0.12) + 0.35 * old,                    # aortic knob size (unfolds with age)
        "rib_amp": (0.07 + g(0.01)) * (1.0 - 0.35 * old),     # rib brightness (bone density)
        "rib_phase": rng.uniform(0.0, 1.0, n),
        "breast": (1.0 - male) * (0.035 + g(0.01)),             # breast shadows over the lower zones
        "gain": 1.0 + g(0.06), "offset": g(0.025), "gamma": np.exp(g(0.08)),
    }
    # the two noise fields are drawn per chunk when rendered (the same values, not held for the whole split)
    a["marks"] = LazyNormalRows(rng, n, (LOWRES, LOWRES))
    a["haze_field"] = LazyNormalRows(rng, n, (HAZE_RES, HAZE_RES))  # used only under a haze rule
    return a


# -- rendering ------------------------------------------------------------------------------------------
def _pose(size: int, a: dict[str, np.ndarray], col: Callable) -> tuple[np.ndarray, np.ndarray]:
    """Canonical coordinates of every pixel of each image: shift, rotation and scale per image."""
    grid = ((np.arange(size, dtype=F32) + 0.5) / size) * 2.0 - 1.0
    gx, gy = grid[None, None, :], grid[None, :, None]
    cos, sin, sc = col(np.cos(a["theta"])), col(np.sin(a["theta"])), col(a["scale"])
    xs, ys = gx - col(a["tx"]), gy - col(a["ty"])
    return (cos * xs + sin * ys) / sc, (cos * ys - sin * xs) / sc


def _render_chunk(size: int, a: dict[str, np.ndarray], f: dict[str, np.ndarray], codes: np.ndarray,
                  strength: float, degrade: dict[str, np.ndarray],
                  marker: np.ndarray, marker_xy: np.ndarray, rng: np.random.Generator,
                  up: np.ndarray) -> np.ndarray:
    col = lambda v: np.asarray(v, dtype=F32)[:, None, None]
    # per-image pose: shift, rotate, scale the canonical frame (full and half resolution)
    x, y = _pose(size, a, col)
    half = size // 2  # image_size is even (checked by the config)
    xh, yh = _pose(half, a, col)
    axh = np.abs(xh)
    ax = np.abs(x)
    right = x < 0  # patient right

    # body outline: neck, shoulders, chest wall
    neck = np.clip((y + 1.08) / 0.42, 0.0, 1.0)
    neck = neck * neck * (3 - 2 * neck)
    half_w = col(a["body_w"]) * (0.27 + 0.64 * np.sqrt(neck) - 0.05 * np.clip(y - 0.4, 0.0, None))
    body = ramp(half_w - ax, 0.03)
    depth = np.sqrt(np.clip(1.0 - (ax / half_w) ** 2, 0.0, 1.0))      # path length through the body
    img = col(a["soft"]) * (0.45 + 0.55 * depth) * body
    del depth, neck

    # diaphragm (right dome higher) and lungs
    insp = col(a["insp"])
    dome_c = 0.40
    d_lat = 0.58 + 0.035 * insp
    dome = d_lat - 0.16 * np.clip(1.0 - ((ax - dome_c) / 0.47) ** 2, 0.0, 1.0) - F32(0.04) * right
    above = ramp(dome - y, 0.025)
    ell = lung_level(ax, y, insp)
    lung_ell = np.clip((1.0 - ell) / 0.10, 0.0, 1.0)
    lung_core = 0.7 + 0.3 * np.clip((1.0 - ell) / 0.4, 0.0, 1.0)
    del ell

    # mediastinum, trachea, aortic knob, heart
    ms = col(a["med_shift"])
    xm = x - ms
    med = ramp(0.12 + 0.06 * np.clip(y + 0.45, 0.0, 0.5) - np.abs(xm), 0.03)
    knob = ramp(0.075 * col(a["aorta"]) - np.sqrt((xm - 0.11) ** 2 + ((y + 0.36) * 1.1) ** 2), 0.03)
    hw, hh = 0.37 * col(a["heart_w"]), 0.36 * col(a["heart_h"])
    hx = xm - (0.14 + 0.18 * (col(a["heart_w"]) - 1.0))
    hy = y - (0.36 - 0.015 * insp)
    hxr, hyr = 0.99 * hx + 0.12 * hy, 0.99 * hy - 0.12 * hx                 # heart axis tilted
    heart_full = np.clip((1.0 - (hxr / hw) ** 2 - (hyr / hh) ** 2) / 0.12, 0.0, 1.0)
    heart = heart_full * above
    del hx, hy, hxr, hyr
    med_knob = np.maximum(med, knob)
    central = np.maximum(med_knob, heart)

    lung = lung_ell * above * (1.0 - central) * body
    markmask = np.ones_like(lung)
    add = np.zeros_like(lung)

    # findings, each on the images that have it
    s = strength
    fc = {**f, "insp": a["insp"]}
    for code, name in enumerate(FINDING_NAMES, start=1):
        idx = np.flatnonzero(codes == code)
        if len(idx):
            draw_finding(name, idx, x[idx], y[idx], right[idx], fc, lung, markmask, add, up, s, col)

    # lung markings: ridged smooth noise, denser towards the hila, plus hilar shadows
    # vessels: radial branches from the hilum, wiggled by smooth noise, tapering towards the periphery
    # (smooth structures: drawn at half resolution and interpolated up)
    noise = sandwich(upsampler(half), a["marks"])
    du, dv = axh - 0.16, yh + 0.02
    r = np.sqrt(du * du + dv * dv)
    ang = np.arctan2(dv, du)
    vessels = np.clip(1.0 - 2.5 * np.abs(np.sin(8.0 * ang + 0.7 * noise)), 0.0, 1.0) \
        + 0.6 * np.clip(1.0 - 2.5 * np.abs(np.sin(19.0 * ang + 1.3 * noise)), 0.0, 1.0) * np.clip(r * 3 - 0.6, 0, 1)
    hilum = np.exp(-((axh - 0.17) ** 2 / 0.006 + (yh + 0.03) ** 2 / 0.02))
    marks = (0.17 * np.exp(-2.5 * r)) * vessels + 0.10 * hilum
    marks = upsample2(marks)
    del du, dv, r, ang, vessels, hilum, noise
    img = img - col(a["lung_dark"]) * lung * lung_core + marks * lung * markmask

    # bones: spine, ribs (posterior arcs, fainter anterior), clavicles
    img = img + 0.07 * ramp(0.065 - np.abs(x), 0.02) * body * (0.4 + 0.6 * above)
    phase = col(a["rib_phase"])
    yy = yh + 0.95
    v_post = (yy + 0.20 * yy * yy - (-0.90 * axh + 1.30 * axh * axh)) / 0.17 + phase
    v_ant = (yy + 0.15 * yy * yy + 0.45 * axh) / 0.19 + phase * 0.7
    ribs = np.clip(2.5 * (np.cos(2 * np.pi * v_post) - 0.25), 0.0, 1.0) \
        + 0.4 * np.clip(2.0 * (np.cos(2 * np.pi * v_ant) - 0.55), 0.0, 1.0)
    ribs = upsample2(ribs)
    cage = np.clip(lung_ell * 1.6, 0.0, 1.0) * ramp(dome + 0.05 - y, 0.05) * (ax > 0.06)
    img = img + col(a["rib_amp"]) * ribs * cage * (1.0 - 0.8 * central)
    clav_y = -0.64 - 0.45 * ax + 0.30 * ax * ax
    clav = ramp(0.022 - np.abs(y - clav_y), 0.02) * (ax > 0.07) * (ax < 0.62)
    img = img + 0.12 * clav * body
    del ribs, v_post, v_ant, cage, clav, yy

    # soft tissue extras: central densities, trachea, abdomen, gastric bubble, breast shadows
    img = img + 0.09 * np.maximum(heart_full, 1.0 - above) * body + 0.08 * med_knob
    img = img - 0.09 * ramp(0.03 - np.abs(xm), 0.02) * (y < -0.36) * body
    bubble = ramp(1.0 - ((x - 0.36) / 0.10) ** 2 - ((y - d_lat - 0.04) / 0.05) ** 2, 0.5)
    img = img - 0.12 * bubble * (1.0 - above)
    breast = ramp(0.36 - np.sqrt((ax - 0.52) ** 2 + (y - 0.30) ** 2), 0.12)
    img = img + col(a["breast"]) * breast
    img = img + add

    # exposure
    img = np.clip(img * col(a["gain"]) + col(a["offset"]), 0.0, 1.0)
    img = img ** col(a["gamma"])

    # per-group degradation: contrast about the image mean, haze, blur, noise
    mean = img.mean(axis=(1, 2), keepdims=True)
    img = mean + col(degrade["contrast"]) * (img - mean)
    hazy = np.flatnonzero(degrade["haze"] > 0)
    if len(hazy):  # uneven exposure / scatter: smooth blotches over the body, on the scale of findings
        field = sandwich(upsampler(size, HAZE_RES), a["haze_field"][hazy]) * 1.5  # about unit SD
        img[hazy] += col(degrade["haze"][hazy]) * field * body[hazy]
    blur = degrade["blur"]
    for sigma in np.unique(blur[blur > 0]):
        idx = np.flatnonzero(blur == sigma)
        img[idx] = gauss_blur(img[idx], float(sigma) * size / 128.0)
    img = img + rng.standard_normal(img.shape, dtype=F32) * col(degrade["noise"])

    # burned-in "L" marker, top right corner, on the images that carry it
    if marker.any():
        idx = np.flatnonzero(marker)
        px = np.arange(size)[None, None, :]
        py = np.arange(size)[:, None][None]
        x0 = (marker_xy[idx, 0] * size).astype(int)[:, None, None]
        y0 = (marker_xy[idx, 1] * size).astype(int)[:, None, None]
        h, w, t = max(5, round(0.10 * size)), max(4, round(0.065 * size)), max(2, round(0.022 * size))
        stem = (px >= x0) & (px < x0 + t) & (py >= y0) & (py < y0 + h)
        foot = (px >= x0) & (px < x0 + w) & (py >= y0 + h - t) & (py < y0 + h)
        img[idx] = np.where(stem | foot, np.float32(0.96), img[idx])

    assert img.dtype == F32, img.dtype
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


#: anatomy parameters that rendering reads only through ``np.asarray(v, dtype=float32)`` (``col``), so holding them
#: as float32 changes no pixel; ``theta`` (cos and sin in float64) and ``aorta`` (reports compare it in float64)
#: are not among them
_F32_PARAMS = ("tx", "ty", "scale", "body_w", "soft", "lung_dark", "insp", "heart_w", "heart_h", "med_shift",
               "rib_amp", "rib_phase", "breast", "gain", "offset", "gamma")
#: the same for finding parameters (the others are also read in float64: by the reports, or before a cast)
_F32_FINDINGS = ("nod_u", "mass_u", "mass_lobe", "cons_r")


class _Coded:
    """A float64 array of few distinct values held as its values and a uint8 code per row; indexing gives the
    float64 values themselves."""

    def __init__(self, values: np.ndarray, codes: np.ndarray) -> None:
        self.values, self.codes = values, codes

    @staticmethod
    def of(v: np.ndarray) -> _Coded | np.ndarray:
        if v.dtype != np.float64 or v.ndim != 1:
            return v
        values, codes = np.unique(v, return_inverse=True)
        codes = codes.reshape(-1)
        if len(values) > 256 or not np.array_equal(values[codes].view(np.int64), v.view(np.int64)):
            return v  # many values, or values unique() merges (-0.0 and 0.0, NaNs): held as they are
        return _Coded(values, codes.astype(np.uint8))

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, key: Any) -> np.ndarray:
        return self.values[self.codes[key]]


class Renderer:
    """Renders a split's images ``CHUNK`` at a time; chunk ``i`` is images ``[i * CHUNK, (i + 1) * CHUNK)``.

    ``codes``: 0 = normal, k = k-th finding of FINDINGS. ``degrade`` holds per-image ``contrast``, ``haze``,
    ``blur`` and ``noise`` (total pixel-noise SD); ``marker_xy`` the marker's top-left corner as fractions of
    the image; ``chunk_rng(i)`` gives the pixel-noise generator of chunk ``i``. A chunk's pixels depend only on
    its own samples' parameters and its own noise stream, so any chunk renders alone, in any order, to the
    same bytes as in a whole-split render.
    """

    def __init__(self, size: int, anatomy: dict[str, np.ndarray], findings: dict[str, np.ndarray],
                 codes: np.ndarray, strength: float, degrade: dict[str, np.ndarray], marker: np.ndarray,
                 marker_xy: np.ndarray, chunk_rng: Callable[[int], np.random.Generator]) -> None:
        a = dict(anatomy)
        # cardiomegaly is an anatomical change: scale the heart before rendering
        cm = codes == 1
        grow = np.where(cm, findings["cardio_factor"] ** (0.5 + 0.5 * min(strength, 2.0)), 1.0)
        a["heart_w"] = anatomy["heart_w"] * grow
        a["heart_h"] = anatomy["heart_h"] * np.where(cm, 1.0 + 0.4 * (grow - 1.0), 1.0)
        # held compactly, with the same rendered bytes: parameters that rendering only ever casts to float32
        # first are stored as float32; the degradation parameters (a few distinct values, set by the bias rules)
        # as a table and one code per image
        for k in _F32_PARAMS:
            a[k] = np.asarray(a[k], dtype=F32)
        findings = dict(findings)
        for k in _F32_FINDINGS:
            findings[k] = np.asarray(findings[k], dtype=F32)
        for k in ("side", "eff_side"):  # -1, 0 or 1
            findings[k] = _Coded.of(np.asarray(findings[k]))
        findings["cons_zone"] = np.asarray(findings["cons_zone"]).astype(np.int8)  # 0, 1, 2: an index
        degrade = {k: _Coded.of(np.asarray(v)) for k, v in degrade.items()}
        self.size, self.a, self.findings, self.codes, self.strength = size, a, findings, codes, strength
        self.degrade, self.marker, self.marker_xy, self.chunk_rng = degrade, marker, marker_xy, chunk_rng
        self.n = len(codes)
        self.n_chunks = -(-self.n // CHUNK)
        self._up: np.ndarray | None = None

    def chunk(self, ci: int) -> np.ndarray:
        """uint8 [rows, size, size]: the images of chunk ``ci``."""
        if self._up is None:
            self._up = upsampler(self.size)
        sl = slice(ci * CHUNK, min(self.n, (ci + 1) * CHUNK))
        return _render_chunk(
            self.size, {k: v[sl] for k, v in self.a.items()}, {k: v[sl] for k, v in self.findings.items()},
            self.codes[sl], self.strength, {k: v[sl] for k, v in self.degrade.items()}, self.marker[sl],
            self.marker_xy[sl], self.chunk_rng(ci), self._up,
        )

    def chunks(self, ids: list[int], store: Callable[[int, np.ndarray], None]) -> None:
        """Render chunks ``ids``, handing each to ``store(ci, pixels)``; on up to 4 threads."""
        # chunks are independent (own noise stream, own output), so threads change nothing but speed;
        # numpy releases the GIL inside its array operations
        # (the matrix products are small: BLAS threads on top of the chunk threads only spin)
        workers = min(len(ids), os.cpu_count() or 1, 4)
        with _one_blas_thread():
            if workers <= 1:
                for ci in ids:
                    store(ci, self.chunk(ci))
            else:
                if self._up is None:
                    self._up = upsampler(self.size)
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    for ci, pixels in zip(ids, pool.map(self.chunk, ids)):
                        store(ci, pixels)

    def render_all(self) -> np.ndarray:
        """Every image, in one uint8 array [n, size, size]."""
        out = np.empty((self.n, self.size, self.size), dtype=np.uint8)

        def store(ci: int, pixels: np.ndarray) -> None:
            out[ci * CHUNK:ci * CHUNK + len(pixels)] = pixels

        self.chunks(list(range(self.n_chunks)), store)
        return out


def _one_blas_thread() -> contextlib.AbstractContextManager:
    try:
        from threadpoolctl import threadpool_limits  # installed with scikit-learn
    except ImportError:  # pragma: no cover - only slower
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")
