"""The six findings of the synthetic generator: their per-sample parameters and how each is drawn.

Each drawing function changes, in place and only on the images listed in ``idx``, three layers of the
renderer: ``lung`` (how much aerated lung darkens a pixel; fluid and consolidation remove it), ``markmask``
(where vessel markings show; a pneumothorax removes them) and ``add`` (extra opacity or lucency).
Cardiomegaly is an anatomical change: the renderer enlarges the heart before drawing it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fairbench.data.synth_shapes import F32, LOWRES, LazyNormalRows, lung_level, ramp, sandwich

__all__ = ["FINDING_NAMES", "MM_PER_UNIT", "draw_finding", "draw_finding_params"]

# 1 canonical unit is about 180 mm of patient (inner thorax is ~1.55 units wide): used for report sizes
MM_PER_UNIT = 180.0


def draw_finding_params(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Parameters of every finding for every sample (used only where the finding is present or recorded).

    Drawing all of them for all samples keeps each stream aligned with the sample index, so changing the
    prevalence or the finding mix does not reshuffle the anatomy of unrelated samples.
    """
    u = lambda lo, hi: rng.uniform(lo, hi, n)
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
        "cons_field": LazyNormalRows(rng, n, (LOWRES, LOWRES)),  # drawn per chunk when rendered
    }


# -- findings: each adds opacity / lucency in place on the images listed in idx ----------------------------
def _side_mask(side: np.ndarray, right: np.ndarray, col: Callable) -> np.ndarray:
    """1 on the finding's hemithorax; side -1 = patient right, +1 = left, 0 = both."""
    s = col(side)
    w_right, w_left = (s <= 0).astype(F32), (s >= 0).astype(F32)
    return w_left + (w_right - w_left) * right


def _effusion(idx, x, y, ax, right, f, lung, markmask, add, up, s, col) -> None:
    amount = col(f["eff_amount"][idx])
    level = 0.40 - 0.40 * amount                                  # fluid top at the medial side
    top = level - (0.10 + 0.10 * amount) * np.clip((ax - 0.15) / 0.6, 0.0, 1.0) ** 2  # meniscus: higher laterally
    fluid = ramp(y - top, 0.05) * _side_mask(f["eff_side"][idx], right, col) * (ax > 0.1)
    k = min(1.0, 0.92 * s)
    lung[idx] *= 1.0 - k * fluid
    add[idx] += 0.05 * s * fluid * (ax < 0.80)


def _nodule(idx, x, y, ax, right, f, lung, markmask, add, up, s, col) -> None:
    d = np.sqrt((ax - col(f["nod_u"][idx])) ** 2 + (y - col(f["nod_y"][idx])) ** 2)
    r = col(f["nod_r"][idx])
    side = _side_mask(f["side"][idx], right, col)
    add[idx] += 0.24 * s * np.clip((r - d) / (0.5 * r), 0.0, 1.0) ** 0.7 * side


def _mass(idx, x, y, ax, right, f, lung, markmask, add, up, s, col) -> None:
    du, dyy = ax - col(f["mass_u"][idx]), y - col(f["mass_y"][idx])
    d = np.sqrt(du * du + dyy * dyy)
    ang = np.arctan2(dyy, du)
    r = col(f["mass_r"][idx]) * (1.0 + 0.13 * np.cos(3 * ang + col(f["mass_lobe"][idx])))
    side = _side_mask(f["side"][idx], right, col)
    add[idx] += 0.28 * s * np.clip((r - d) / (0.25 * r), 0.0, 1.0) * side


def _pneumothorax(idx, x, y, ax, right, f, lung, markmask, add, up, s, col) -> None:
    # the lung collapses towards the hilum; outside it: lucent, no markings; at its edge: the pleural line
    c = col(f["ptx_collapse"][idx])
    hu, hy = 0.30, 0.05
    cu, cyy = hu + (ax - hu) / c, hy + (y - hy) / c                  # coordinates before the collapse
    e = lung_level(cu, cyy, col(f["insp"][idx]))
    side = _side_mask(f["side"][idx], right, col)
    inside = np.clip((1.0 - e) / 0.08, 0.0, 1.0)
    gap = (1.0 - inside) * side * (lung[idx] > 0.2)
    markmask[idx] *= 1.0 - gap
    add[idx] -= 0.06 * s * gap
    line = np.clip(1.0 - np.abs(e - 1.0) / 0.07, 0.0, 1.0) * side * (lung[idx] > 0.2) * (cu > hu)
    add[idx] += 0.16 * s * line


def _consolidation(idx, x, y, ax, right, f, lung, markmask, add, up, s, col) -> None:
    zone = f["cons_zone"][idx]
    y0 = np.array([-0.42, -0.08, 0.24])[zone]
    u0 = np.array([0.42, 0.52, 0.56])[zone] + f["cons_du"][idx]
    r = col(f["cons_r"][idx])
    d = np.sqrt((ax - col(u0)) ** 2 + ((y - col(y0)) * 0.8) ** 2)
    env = np.clip((r - d) / (0.5 * r), 0.0, 1.0)
    patch = np.clip(0.55 + 0.9 * sandwich(up, f["cons_field"][idx]), 0.0, 1.0)
    op = env * patch * _side_mask(f["side"][idx], right, col)
    lung[idx] *= 1.0 - min(1.0, 0.75 * s) * op
    markmask[idx] *= 1.0 - op


_FINDING_FNS = {
    "effusion": _effusion, "nodule": _nodule, "mass": _mass,
    "pneumothorax": _pneumothorax, "consolidation": _consolidation,
}


FINDING_NAMES = ("cardiomegaly", *_FINDING_FNS)  # the order of FINDINGS: code k = FINDING_NAMES[k - 1]


def draw_finding(name: str, idx: np.ndarray, x: np.ndarray, y: np.ndarray, right: np.ndarray,
                 f: dict[str, np.ndarray], lung: np.ndarray, markmask: np.ndarray, add: np.ndarray,
                 up: np.ndarray, strength: float, col: Callable) -> None:
    """Draw finding ``name`` on the images ``idx`` of a chunk (``x``, ``y``, ``right`` already indexed)."""
    if name == "cardiomegaly":  # drawn by the anatomy: the renderer scales the heart before drawing
        return
    _FINDING_FNS[name](idx, x, y, np.abs(x), right, f, lung, markmask, add, up, strength, col)
