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

import numpy as np

__all__ = ["LOWRES", "CHUNK", "draw_anatomy", "draw_finding_params", "render_images"]

HAZE_RES = 6  # side of the low-resolution field of the haze degradation
LOWRES = 20   # side of the low-resolution noise fields upsampled into lung markings / patchy opacities
CHUNK = 64   # images rendered at once; fixed, so the noise stream of each chunk does not depend on n
_F32 = np.float32
# 1 canonical unit is about 180 mm of patient (inner thorax is ~1.55 units wide): used for report sizes
MM_PER_UNIT = 180.0


# -- per-sample parameters ------------------------------------------------------------------------------
def draw_anatomy(rng: np.random.Generator, sex: np.ndarray, age: np.ndarray,
                 by_attribute: bool) -> dict[str, np.ndarray]:
    """Patient-to-patient variation: pose, size, breathing, tissue and exposure, one value per sample."""
    n = len(sex)
    g = lambda sd: rng.standard_normal(n) * sd  # noqa: E731
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
    a["marks"] = rng.standard_normal((n, LOWRES, LOWRES)).astype(_F32)
    a["haze_field"] = rng.standard_normal((n, HAZE_RES, HAZE_RES)).astype(_F32)  # used only under a haze rule
    return a


def draw_finding_params(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Parameters of every finding for every sample (used only where the finding is present or recorded).

    Drawing all of them for all samples keeps each stream aligned with the sample index, so changing the
    prevalence or the finding mix does not reshuffle the anatomy of unrelated samples.
    """
    u = lambda lo, hi: rng.uniform(lo, hi, n)  # noqa: E731
    side = np.where(rng.random(n) < 0.5, -1.0, 1.0)            # -1 = patient right (image left)
    nod_y = u(-0.55, 0.25)
    # behind the heart (image right, low) there is no lung to put a nodule in: keep those lateral
    nod_u = np.where((side > 0) & (nod_y > 0.0), u(0.50, 0.66), u(0.26, 0.64))
    mass_y = u(-0.45, 0.15)
    mass_u = np.where((side > 0) & (mass_y > 0.0), u(0.50, 0.58), u(0.36, 0.52))
    return {
        "side": side,
        "cardio_factor": u(1.30, 1.62),
        "eff_side": rng.choice(np.array([-1.0, 1.0, 0.0]), size=n, p=[0.4, 0.4, 0.2]),  # 0 = bilateral
        "eff_amount": u(0.0, 1.0),
        "nod_u": nod_u, "nod_y": nod_y, "nod_r": u(0.04, 0.065),
        "mass_u": mass_u, "mass_y": mass_y, "mass_r": u(0.095, 0.16), "mass_lobe": u(0.0, 2 * np.pi),
        "ptx_collapse": u(0.55, 0.84),
        "cons_zone": rng.integers(0, 3, n),                     # 0 upper, 1 middle, 2 lower
        "cons_r": u(0.16, 0.26), "cons_du": u(-0.06, 0.06),
        "cons_field": rng.standard_normal((n, LOWRES, LOWRES)).astype(_F32),
    }


# -- helpers --------------------------------------------------------------------------------------------
def _ramp(d: np.ndarray, width: float) -> np.ndarray:
    """Soft inside-indicator of a signed distance ``d`` (positive inside), 0..1 over ``width``."""
    return np.clip(d * (1.0 / width) + 0.5, 0.0, 1.0)


def _upsampler(size: int, low: int = LOWRES) -> np.ndarray:
    """Bilinear interpolation matrix [size, low] (smooth noise = U @ field @ U.T)."""
    pos = (np.arange(size) + 0.5) / size * (low - 1)
    i0 = np.clip(np.floor(pos).astype(int), 0, low - 2)
    t = pos - i0
    m = np.zeros((size, low), dtype=_F32)
    m[np.arange(size), i0] = 1.0 - t
    m[np.arange(size), i0 + 1] = t
    return m


def _sandwich(u: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``u @ x[i] @ u.T`` for every image ``i``, as two plain matrix products (a broadcast ``matmul`` over a
    stack of images is many times slower)."""
    n, l1, l2 = x.shape
    size = u.shape[0]
    y = (x.reshape(n * l1, l2) @ u.T).reshape(n, l1, size)                 # x @ u.T
    y = y.transpose(0, 2, 1).reshape(n * size, l1) @ u.T                     # (u @ x @ u.T) transposed
    return np.ascontiguousarray(y.reshape(n, size, size).transpose(0, 2, 1))


def _lung_level(u: np.ndarray, y: np.ndarray, insp: np.ndarray) -> np.ndarray:
    """Level function of one lung (< 1 inside): elliptic apex, squarer base with costophrenic corners."""
    dy = y - (-0.06 + 0.01 * insp)
    ex = ((u - 0.45) / 0.36) ** 2
    inv = (1.0 / 0.95) + (1.0 / (0.64 + 0.02 * insp) - 1.0 / 0.95) * (dy < 0)   # taller below the centre
    ey = (dy * inv) ** 2
    low = np.clip(dy * (1.0 / 0.35), 0.0, 1.0)
    return ex + low * (ex * ex - ex) + ey


def _upsample2(x: np.ndarray) -> np.ndarray:
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


def _gauss_blur(imgs: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of [m, S, S] with edge replication (loops over the kernel taps only)."""
    radius = max(1, int(np.ceil(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k = (k / k.sum()).astype(_F32)
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


# -- rendering ------------------------------------------------------------------------------------------
def _pose(size: int, a: dict[str, np.ndarray], col: Callable) -> tuple[np.ndarray, np.ndarray]:
    """Canonical coordinates of every pixel of each image: shift, rotation and scale per image."""
    grid = ((np.arange(size, dtype=_F32) + 0.5) / size) * 2.0 - 1.0
    gx, gy = grid[None, None, :], grid[None, :, None]
    cos, sin, sc = col(np.cos(a["theta"])), col(np.sin(a["theta"])), col(a["scale"])
    xs, ys = gx - col(a["tx"]), gy - col(a["ty"])
    return (cos * xs + sin * ys) / sc, (cos * ys - sin * xs) / sc


def _render_chunk(size: int, a: dict[str, np.ndarray], f: dict[str, np.ndarray], codes: np.ndarray,
                  strength: float, degrade: dict[str, np.ndarray],
                  marker: np.ndarray, marker_xy: np.ndarray, rng: np.random.Generator,
                  up: np.ndarray) -> np.ndarray:
    m = len(codes)
    col = lambda v: np.asarray(v, dtype=_F32)[:, None, None]  # noqa: E731
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
    body = _ramp(half_w - ax, 0.03)
    depth = np.sqrt(np.clip(1.0 - (ax / half_w) ** 2, 0.0, 1.0))      # path length through the body
    img = col(a["soft"]) * (0.45 + 0.55 * depth) * body
    del depth, neck

    # diaphragm (right dome higher) and lungs
    insp = col(a["insp"])
    dome_c = 0.40
    d_lat = 0.58 + 0.035 * insp
    dome = d_lat - 0.16 * np.clip(1.0 - ((ax - dome_c) / 0.47) ** 2, 0.0, 1.0) - _F32(0.04) * right
    above = _ramp(dome - y, 0.025)
    ell = _lung_level(ax, y, insp)
    lung_ell = np.clip((1.0 - ell) / 0.10, 0.0, 1.0)
    lung_core = 0.7 + 0.3 * np.clip((1.0 - ell) / 0.4, 0.0, 1.0)
    del ell

    # mediastinum, trachea, aortic knob, heart
    ms = col(a["med_shift"])
    xm = x - ms
    med = _ramp(0.12 + 0.06 * np.clip(y + 0.45, 0.0, 0.5) - np.abs(xm), 0.03)
    knob = _ramp(0.075 * col(a["aorta"]) - np.sqrt((xm - 0.11) ** 2 + ((y + 0.36) * 1.1) ** 2), 0.03)
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
    for code, name in enumerate(_FINDING_FNS, start=1):
        idx = np.flatnonzero(codes == code)
        if len(idx):
            _FINDING_FNS[name](idx, x[idx], y[idx], ax[idx], right[idx], fc, lung, markmask, add,
                               dome[idx], up, s, col)

    # lung markings: ridged smooth noise, denser towards the hila, plus hilar shadows
    # vessels: radial branches from the hilum, wiggled by smooth noise, tapering towards the periphery
    # (smooth structures: drawn at half resolution and interpolated up)
    noise = _sandwich(_upsampler(half), a["marks"])
    du, dv = axh - 0.16, yh + 0.02
    r = np.sqrt(du * du + dv * dv)
    ang = np.arctan2(dv, du)
    vessels = np.clip(1.0 - 2.5 * np.abs(np.sin(8.0 * ang + 0.7 * noise)), 0.0, 1.0) \
        + 0.6 * np.clip(1.0 - 2.5 * np.abs(np.sin(19.0 * ang + 1.3 * noise)), 0.0, 1.0) * np.clip(r * 3 - 0.6, 0, 1)
    hilum = np.exp(-((axh - 0.17) ** 2 / 0.006 + (yh + 0.03) ** 2 / 0.02))
    marks = (0.17 * np.exp(-2.5 * r)) * vessels + 0.10 * hilum
    marks = _upsample2(marks)
    del du, dv, r, ang, vessels, hilum, noise
    img = img - col(a["lung_dark"]) * lung * lung_core + marks * lung * markmask

    # bones: spine, ribs (posterior arcs, fainter anterior), clavicles
    img = img + 0.07 * _ramp(0.065 - np.abs(x), 0.02) * body * (0.4 + 0.6 * above)
    phase = col(a["rib_phase"])
    yy = yh + 0.95
    v_post = (yy + 0.20 * yy * yy - (-0.90 * axh + 1.30 * axh * axh)) / 0.17 + phase
    v_ant = (yy + 0.15 * yy * yy + 0.45 * axh) / 0.19 + phase * 0.7
    ribs = np.clip(2.5 * (np.cos(2 * np.pi * v_post) - 0.25), 0.0, 1.0) \
        + 0.4 * np.clip(2.0 * (np.cos(2 * np.pi * v_ant) - 0.55), 0.0, 1.0)
    ribs = _upsample2(ribs)
    cage = np.clip(lung_ell * 1.6, 0.0, 1.0) * _ramp(dome + 0.05 - y, 0.05) * (ax > 0.06)
    img = img + col(a["rib_amp"]) * ribs * cage * (1.0 - 0.8 * central)
    clav_y = -0.64 - 0.45 * ax + 0.30 * ax * ax
    clav = _ramp(0.022 - np.abs(y - clav_y), 0.02) * (ax > 0.07) * (ax < 0.62)
    img = img + 0.12 * clav * body
    del ribs, v_post, v_ant, cage, clav, yy

    # soft tissue extras: central densities, trachea, abdomen, gastric bubble, breast shadows
    img = img + 0.09 * np.maximum(heart_full, 1.0 - above) * body + 0.08 * med_knob
    img = img - 0.09 * _ramp(0.03 - np.abs(xm), 0.02) * (y < -0.36) * body
    bubble = _ramp(1.0 - ((x - 0.36) / 0.10) ** 2 - ((y - d_lat - 0.04) / 0.05) ** 2, 0.5)
    img = img - 0.12 * bubble * (1.0 - above)
    breast = _ramp(0.36 - np.sqrt((ax - 0.52) ** 2 + (y - 0.30) ** 2), 0.12)
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
        field = _sandwich(_upsampler(size, HAZE_RES), a["haze_field"][hazy]) * 1.5  # about unit SD
        img[hazy] += col(degrade["haze"][hazy]) * field * body[hazy]
    blur = degrade["blur"]
    for sigma in np.unique(blur[blur > 0]):
        idx = np.flatnonzero(blur == sigma)
        img[idx] = _gauss_blur(img[idx], float(sigma) * size / 128.0)
    img = img + rng.standard_normal(img.shape, dtype=_F32) * col(degrade["noise"])

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

    assert img.dtype == _F32, img.dtype
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


# -- findings: each adds opacity / lucency in place on the images listed in idx ----------------------------
def _side_mask(side: np.ndarray, right: np.ndarray, col: Callable) -> np.ndarray:
    """1 on the finding's hemithorax; side -1 = patient right, +1 = left, 0 = both."""
    s = col(side)
    w_right, w_left = (s <= 0).astype(_F32), (s >= 0).astype(_F32)
    return w_left + (w_right - w_left) * right


def _cardiomegaly(idx, x, y, ax, right, f, lung, markmask, add, dome, up, s, col) -> None:
    # the enlarged heart is drawn by the anatomy (heart_w/heart_h are scaled before rendering)
    return None


def _effusion(idx, x, y, ax, right, f, lung, markmask, add, dome, up, s, col) -> None:
    amount = col(f["eff_amount"][idx])
    level = 0.40 - 0.40 * amount                                  # fluid top at the medial side
    top = level - (0.10 + 0.10 * amount) * np.clip((ax - 0.15) / 0.6, 0.0, 1.0) ** 2  # meniscus: higher laterally
    fluid = _ramp(y - top, 0.05) * _side_mask(f["eff_side"][idx], right, col) * (ax > 0.1)
    k = min(1.0, 0.92 * s)
    lung[idx] *= 1.0 - k * fluid
    add[idx] += 0.05 * s * fluid * (ax < 0.80)


def _nodule(idx, x, y, ax, right, f, lung, markmask, add, dome, up, s, col) -> None:
    d = np.sqrt((ax - col(f["nod_u"][idx])) ** 2 + (y - col(f["nod_y"][idx])) ** 2)
    r = col(f["nod_r"][idx])
    side = _side_mask(f["side"][idx], right, col)
    add[idx] += 0.24 * s * np.clip((r - d) / (0.5 * r), 0.0, 1.0) ** 0.7 * side


def _mass(idx, x, y, ax, right, f, lung, markmask, add, dome, up, s, col) -> None:
    du, dyy = ax - col(f["mass_u"][idx]), y - col(f["mass_y"][idx])
    d = np.sqrt(du * du + dyy * dyy)
    ang = np.arctan2(dyy, du)
    r = col(f["mass_r"][idx]) * (1.0 + 0.13 * np.cos(3 * ang + col(f["mass_lobe"][idx])))
    side = _side_mask(f["side"][idx], right, col)
    add[idx] += 0.28 * s * np.clip((r - d) / (0.25 * r), 0.0, 1.0) * side


def _pneumothorax(idx, x, y, ax, right, f, lung, markmask, add, dome, up, s, col) -> None:
    # the lung collapses towards the hilum; outside it: lucent, no markings; at its edge: the pleural line
    c = col(f["ptx_collapse"][idx])
    hu, hy = 0.30, 0.05
    cu, cyy = hu + (ax - hu) / c, hy + (y - hy) / c                  # coordinates before the collapse
    e = _lung_level(cu, cyy, col(f["insp"][idx]))
    side = _side_mask(f["side"][idx], right, col)
    inside = np.clip((1.0 - e) / 0.08, 0.0, 1.0)
    gap = (1.0 - inside) * side * (lung[idx] > 0.2)
    markmask[idx] *= 1.0 - gap
    add[idx] -= 0.06 * s * gap
    line = np.clip(1.0 - np.abs(e - 1.0) / 0.07, 0.0, 1.0) * side * (lung[idx] > 0.2) * (cu > hu)
    add[idx] += 0.16 * s * line


def _consolidation(idx, x, y, ax, right, f, lung, markmask, add, dome, up, s, col) -> None:
    zone = f["cons_zone"][idx]
    y0 = np.array([-0.42, -0.08, 0.24])[zone]
    u0 = np.array([0.42, 0.52, 0.56])[zone] + f["cons_du"][idx]
    r = col(f["cons_r"][idx])
    d = np.sqrt((ax - col(u0)) ** 2 + ((y - col(y0)) * 0.8) ** 2)
    env = np.clip((r - d) / (0.5 * r), 0.0, 1.0)
    patch = np.clip(0.55 + 0.9 * _sandwich(up, f["cons_field"][idx]), 0.0, 1.0)
    op = env * patch * _side_mask(f["side"][idx], right, col)
    lung[idx] *= 1.0 - min(1.0, 0.75 * s) * op
    markmask[idx] *= 1.0 - op


_FINDING_FNS = {
    "cardiomegaly": _cardiomegaly, "effusion": _effusion, "nodule": _nodule, "mass": _mass,
    "pneumothorax": _pneumothorax, "consolidation": _consolidation,
}


def render_images(size: int, anatomy: dict[str, np.ndarray], findings: dict[str, np.ndarray],
                  codes: np.ndarray, strength: float, degrade: dict[str, np.ndarray], marker: np.ndarray,
                  marker_xy: np.ndarray, chunk_rng: Callable[[int], np.random.Generator]) -> np.ndarray:
    """Render all images, ``CHUNK`` at a time. ``codes``: 0 = normal, k = k-th finding of FINDINGS.

    ``degrade`` holds per-image ``contrast``, ``haze``, ``blur`` and ``noise`` (total pixel-noise SD);
    ``marker_xy`` the marker's top-left corner as fractions of the image; ``chunk_rng(i)`` gives the
    pixel-noise generator of chunk ``i``.
    """
    n = len(codes)
    a = dict(anatomy)
    # cardiomegaly is an anatomical change: scale the heart before rendering
    cm = codes == 1
    grow = np.where(cm, findings["cardio_factor"] ** (0.5 + 0.5 * min(strength, 2.0)), 1.0)
    a["heart_w"] = anatomy["heart_w"] * grow
    a["heart_h"] = anatomy["heart_h"] * np.where(cm, 1.0 + 0.4 * (grow - 1.0), 1.0)
    up = _upsampler(size)
    out = np.empty((n, size, size), dtype=np.uint8)

    def work(ci: int) -> None:
        sl = slice(ci * CHUNK, min(n, (ci + 1) * CHUNK))
        out[sl] = _render_chunk(
            size, {k: v[sl] for k, v in a.items()}, {k: v[sl] for k, v in findings.items()}, codes[sl],
            strength, {k: v[sl] for k, v in degrade.items()}, marker[sl], marker_xy[sl], chunk_rng(ci), up,
        )

    # chunks are independent (own noise stream, own output slice), so threads change nothing but speed;
    # numpy releases the GIL inside its array operations
    # (the matrix products are small: BLAS threads on top of the chunk threads only spin)
    n_chunks = -(-n // CHUNK)
    workers = min(n_chunks, os.cpu_count() or 1, 4)
    with _one_blas_thread():
        if workers <= 1:
            for ci in range(n_chunks):
                work(ci)
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(work, range(n_chunks)))
    return out


def _one_blas_thread() -> contextlib.AbstractContextManager:
    try:
        from threadpoolctl import threadpool_limits  # installed with scikit-learn
    except ImportError:  # pragma: no cover - only slower
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")
