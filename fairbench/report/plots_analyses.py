"""Figures of a cell's ``analyses`` (docs/metrics.md, "Analyses"), drawn by `fairbench plot` and the HTML report.

One figure per analysis the cell recorded (:func:`fairbench.report.analyses_view.figure_names`; older cells
without an analysis simply get no figure for it), saved beside the cell's other figures as
``analysis_<name>.png/svg``:

- ``underdiagnosis``: the bar chart of Seyyed-Kalantari et al. (Nature Medicine 2021): per attribute and
  intersection, the underdiagnosis rate of each group with its 95% bootstrap interval (x100), the rate of all
  patients as a dotted line;
- ``calibration``: per attribute and intersection, a reliability diagram per group (binned from
  predictions.parquet in the suite's ECE bins), with the group's ECE, calibration slope and intercept in the legend;
- ``leakage``: per attribute, the probe AUC with its interval against chance;
- ``power``: per attribute, the minimum detectable AUC gap (shaded span from 0) beside the observed gap with its
  Wald interval, and the same for DPD and DEOdds;
- ``prompts``: per prompt set, the zero-shot AUC and each attribute's AUC gap.

Each ``*_figure`` function returns the matplotlib figure (tests read its artists); :func:`plot_analyses` saves
and closes them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fairbench.analyses.leakage import fit_description
from fairbench.analyses.power import underpowered
from fairbench.errors import DataError
from fairbench.report.analyses_view import figure_names, figure_stem, panel_attributes
from fairbench.report.collect import ResultCell
from fairbench.report.formatting import SCALE, SCALE_LABEL
from fairbench.report.plots import (
    FORMATS,
    OKABE_ITO,
    STYLE,
    cell_title,
    clip_err,
    eval_rows,
    group_masks,
    mark_outside,
    palette_colour,
    plt,
    reliability_panel,
    save_figure,
)
from fairbench.report.summary import lookup

__all__ = ["calibration_figure", "leakage_figure", "plot_analyses", "plot_prompt_sensitivity", "power_figure",
           "prompts_figure", "underdiagnosis_figure"]

SHADE = "#d9d9d9"
UNDERPOWERED_COLOUR = "#D55E00"


def _x(v: Any) -> float:
    """A fraction x100 (NaN where undefined)."""
    return SCALE * float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def _ci(ci: Any) -> tuple[float, float] | None:
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(c, (int, float)) for c in ci):
        return SCALE * float(ci[0]), SCALE * float(ci[1])
    return None


def _grid(n: int, ncols: int, width: float, height: float, ratios: list[float] | None = None) -> tuple[Any, list[Any]]:
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    kw = {"gridspec_kw": {"width_ratios": ratios}} if ratios and nrows == 1 else {}
    total = sum(ratios) if ratios and nrows == 1 else ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * total + 0.6, height * nrows + 1.2), squeeze=False, **kw)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_axis_off()
    return fig, flat[:n]


# -- underdiagnosis -------------------------------------------------------------------------------------------
def underdiagnosis_figure(cell: ResultCell, attributes: Sequence[str] | None = None) -> Any | None:
    """Seyyed-Kalantari et al.'s bar chart: underdiagnosis rate per group (x100) with 95% bootstrap intervals,
    one panel per attribute and intersection; None when the cell recorded no rates."""
    under = (cell.doc.get("analyses") or {}).get("underdiagnosis") or {}
    attrs = [a for a in panel_attributes(under, attributes)
             if any(isinstance((v or {}).get("rate"), (int, float)) for v in (under[a].get("groups") or {}).values())]
    if not attrs:
        return None
    overall = lookup(cell.metrics, "overall", "underdiagnosis_rate")
    nf = next((under[a].get("no_finding_class") for a in attrs if under[a].get("no_finding_class")), "no finding")
    threshold = lookup(cell.doc, "threshold", "value")
    with plt.rc_context(STYLE):
        ratios = [max(2.0, 0.9 * len(under[a].get("groups") or {})) for a in attrs]
        fig, axes = _grid(len(attrs), 5, 1.25, 4.4, ratios)
        top = 0.0
        for ax, attr in zip(axes, attrs, strict=True):
            r = under[attr]
            groups = list((r.get("groups") or {}).items())
            xs = np.arange(len(groups))
            heights = [_x((v or {}).get("rate")) for _, v in groups]
            below, above, outside = [], [], []
            for (_, v), h in zip(groups, heights, strict=True):
                ci = _ci((v or {}).get("ci"))
                lo, hi, out = clip_err(h, *ci) if ci and not math.isnan(h) else (math.nan, math.nan, False)
                below.append(lo)
                above.append(hi)
                outside.append(out)
                top = max(top, h if not math.isnan(h) else 0.0, ci[1] if ci else 0.0)
            ax.bar(xs, heights, 0.7, color=[palette_colour(i) for i in range(len(groups))], edgecolor="white",
                          yerr=[below, above], capsize=3, error_kw={"elinewidth": 1.0, "ecolor": "#222222"})
            for x, h, hi in zip(xs, heights, above, strict=True):
                tip = (0.0 if math.isnan(h) else h) + (0.0 if math.isnan(hi) else hi)
                ax.annotate("n/a" if math.isnan(h) else f"{h:.1f}", (float(x), tip), xytext=(0, 2),
                            textcoords="offset points", ha="center", va="bottom", fontsize=7.5)
            for j in np.flatnonzero(outside):
                mark_outside(ax, float(xs[j]), heights[j])
            if isinstance(overall, (int, float)):
                ax.axhline(_x(overall), color="#555555", linewidth=0.9, linestyle=":",
                           label=f"all patients {_x(overall):.1f}")
                ax.legend(loc="upper right", frameon=False, fontsize=7.5)
            ax.set_xticks(xs, [f"{g}\nn={(v or {}).get('n_finding', '?')}" for g, v in groups], fontsize=8)
            gap = _x(r.get("gap"))
            gci = _ci(r.get("gap_ci"))
            ax.set_title(attr + ("" if math.isnan(gap) else f"\ngap {gap:.1f}" +
                                 (f" [{gci[0]:.1f}, {gci[1]:.1f}]" if gci else "")), fontsize=10)
            ax.grid(axis="y", alpha=0.3)
        for ax in axes:
            ax.set_ylim(0, max(1.0, top) * 1.18)
        axes[0].set_ylabel(f"underdiagnosis rate ({SCALE_LABEL})")
        n_boot = cell.metrics.get("n_boot") or 0
        fig.suptitle(f"{cell_title(cell)}\nUnderdiagnosis (Seyyed-Kalantari et al. 2021): share of patients with a "
                     f"finding called '{nf}' at threshold {threshold}; bars: 95% bootstrap CI (B={n_boot}); "
                     "n = patients with a finding", fontsize=10)
        fig.tight_layout()
    return fig


# -- calibration ----------------------------------------------------------------------------------------------
def calibration_figure(cell: ResultCell, frame: Any, attributes: Sequence[str] | None = None) -> Any | None:
    """Reliability diagrams per group, one panel per attribute and intersection, from the evaluated rows of
    ``frame`` (predictions.parquet); legend: n, ECE (x100), calibration slope and intercept per group."""
    cal = (cell.doc.get("analyses") or {}).get("calibration") or {}
    attrs = panel_attributes(cal, attributes)
    classes = list(cell.metrics.get("classes") or [])
    if not attrs or frame is None or not classes:
        return None
    n_bins = int(cell.metrics.get("ece_bins") or 15)
    with plt.rc_context(STYLE):
        fig, axes = _grid(len(attrs), 3, 5.4, 5.4)
        for ax, attr in zip(axes, attrs, strict=True):
            fits = cal[attr].get("groups") or {}
            notes = {}
            for g, f in fits.items():
                s, i = (f or {}).get("slope"), (f or {}).get("intercept")
                notes[g] = (f", slope {'n/a' if s is None else f'{s:.2f}'}, "
                            f"intercept {'n/a' if i is None else f'{i:.2f}'}")
            reliability_panel(ax, frame, classes, fits, group_masks(frame, attr, list(fits)), n_bins, notes)
            ax.set_title(attr)
            ax.legend(loc="upper left", frameon=False, fontsize=7)
        fig.suptitle(f"{cell_title(cell)}\nReliability per group: mean predicted P({classes[-1]}) against the observed "
                     f"fraction {classes[-1]} in {n_bins} equal-width bins (bins with < 5 samples hidden); slope 1 and "
                     "intercept 0 = calibrated", fontsize=10)
        fig.tight_layout()
    return fig


# -- leakage --------------------------------------------------------------------------------------------------
def leakage_figure(cell: ResultCell, attributes: Sequence[str] | None = None) -> Any | None:
    """Probe AUC (x100) with its 95% bootstrap interval per attribute, against chance."""
    leak = (cell.doc.get("analyses") or {}).get("leakage") or {}
    attrs = panel_attributes(leak, attributes)
    if not attrs:
        return None
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(8.5, 0.55 * len(attrs) + 2.0))
        chance = SCALE * float(next((leak[a].get("chance") for a in attrs if leak[a].get("chance") is not None), 0.5))
        lows = [chance]
        for y, attr in enumerate(attrs):
            r = leak[attr]
            auc, ci = _x(r.get("auc")), _ci(r.get("ci"))
            if math.isnan(auc):
                ax.text(chance, y, f"n/a ({r.get('note', 'no probe')})", va="center", fontsize=8, color="#555555")
                continue
            xerr = None
            if ci:
                lo, hi, out = clip_err(auc, *ci)
                xerr = [[lo], [hi]]
                lows.append(ci[0])
                if out:
                    mark_outside(ax, auc, y)
            above = bool(ci and ci[0] > chance)
            ax.errorbar(auc, y, xerr=xerr, fmt="o", color=OKABE_ITO[0], markersize=7, capsize=3, elinewidth=1.3,
                        markerfacecolor=OKABE_ITO[0] if above else "white", zorder=3)
            text = f"{auc:.1f}" + (f" [{ci[0]:.1f}, {ci[1]:.1f}]" if ci else "") + f", n={r.get('n', '?')}"
            ax.annotate(text, (ci[1] if ci else auc, y), xytext=(6, 0), textcoords="offset points", va="center",
                        fontsize=8)
        ax.axvline(chance, color="#555555", linewidth=0.9, linestyle=":", label=f"chance ({chance:.0f})")
        ax.set_yticks(range(len(attrs)), attrs)
        ax.set_ylim(len(attrs) - 0.5, -0.5)
        ax.set_xlim(max(0.0, min(lows) - 5), SCALE * 1.22)
        ax.set_xlabel(f"probe AUC on the test split ({SCALE_LABEL})")
        ax.grid(axis="x", alpha=0.3)
        ax.legend(loc="lower right", frameon=False)
        fig.suptitle(f"{cell_title(cell)}\nAttribute leakage: logistic probe on the frozen image embeddings "
                     f"({fit_description(leak)} -> test); filled point: 95% interval above chance", fontsize=10)
        fig.tight_layout()
    return fig


# -- power ----------------------------------------------------------------------------------------------------
def _mde_row(ax: Any, y: float, mde: Any, observed: Any, ci: Any, colour: str, limit: float | None = None) -> float:
    """The MDE as a shaded span from 0 and the observed value with its interval on row ``y``; returns the
    largest x drawn."""
    m, v, c = _x(mde), _x(observed), _ci(ci)
    right = 0.0
    if not math.isnan(m):
        ax.barh(y, m, 0.6, color=SHADE, edgecolor="#999999", linewidth=0.6, zorder=1)
        right = m
    elif limit is not None:
        ax.barh(y, limit, 0.6, color="none", edgecolor="#999999", hatch="///", linewidth=0.6, zorder=1)
        right = limit
    if not math.isnan(v):
        xerr = None
        if c:
            lo, hi, out = clip_err(v, *c)
            xerr = [[lo], [hi]]
            right = max(right, c[1])
            if out:
                mark_outside(ax, v, y)
        ax.errorbar(v, y, xerr=xerr, fmt="o", color=colour, markersize=6, capsize=3, elinewidth=1.2, zorder=3)
        right = max(right, v)
    return right


def power_figure(cell: ResultCell, attributes: Sequence[str] | None = None) -> Any | None:
    """Per attribute: the minimum detectable AUC gap at 80% power (shaded from 0) and the observed best - worst
    gap with its Wald interval (left); the MDEs of DPD and DEOdds beside the observed values with their bootstrap
    intervals (right). "underpowered" where the gap's interval includes 0 and the gap lies below the MDE."""
    power = (cell.doc.get("analyses") or {}).get("power") or {}
    attrs = panel_attributes(power, attributes)
    if not attrs:
        return None
    m, ci = cell.metrics, (cell.metrics.get("ci") or {})
    with plt.rc_context(STYLE):
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 0.6 * len(attrs) + 2.4), sharey=False,
                                      gridspec_kw={"width_ratios": [1.2, 1]})
        right = 1.0
        for y, attr in enumerate(attrs):
            r = power[attr]
            limit = _x(r.get("ref_auc")) - SCALE * 0.5 if r.get("ref_auc") is not None else None
            right = max(right, _mde_row(ax, y, r.get("mde_auc_gap"), r.get("observed_gap"), r.get("observed_gap_ci"),
                                        OKABE_ITO[0], limit))
            if underpowered(r.get("observed_gap"), r.get("observed_gap_ci"), r.get("mde_auc_gap")) or (
                    r.get("mde_auc_gap") is None and r.get("observed_gap") is not None):
                ax.text(1.0, y, "underpowered ", transform=ax.get_yaxis_transform(), ha="right", va="bottom",
                        fontsize=8, color=UNDERPOWERED_COLOUR, fontweight="bold")
        ax.axvline(0, color="#555555", linewidth=0.9)
        ax.set_yticks(range(len(attrs)), [a + ("\n(no MDE above chance)" if
                                                power[a].get("mde_auc_gap") is None else "") for a in attrs])
        ax.set_ylim(len(attrs) - 0.5, -0.5)
        lows = [c[0] for a in attrs if (c := _ci(power[a].get("observed_gap_ci"))) is not None]
        ax.set_xlim(min([0.0, *lows]) - 2, right * 1.25)
        ax.set_xlabel(f"AUC gap, best − worst group ({SCALE_LABEL})")
        ax.set_title("AUC gap: MDE (shaded from 0) and observed [95% Wald CI]")
        ax.grid(axis="x", alpha=0.3)
        labels, y, right2 = [], 0, 1.0
        for attr in attrs:
            r = power[attr]
            for key, mde_key, colour in (("dpd", "mde_dpd", OKABE_ITO[1]), ("deodds", "mde_deodds", OKABE_ITO[2])):
                right2 = max(right2, _mde_row(ax2, y, r.get(mde_key), lookup(m, "attributes", attr, key),
                                              lookup(ci, "attributes", attr, key), colour))
                labels.append(f"{attr}: {'DPD' if key == 'dpd' else 'DEOdds'}")
                y += 1
        ax2.axvline(0, color="#555555", linewidth=0.9)
        ax2.set_yticks(range(len(labels)), labels, fontsize=8)
        ax2.set_ylim(len(labels) - 0.5, -0.5)
        ax2.set_xlim(0, right2 * 1.15)
        ax2.set_xlabel(f"difference ({SCALE_LABEL})")
        ax2.set_title("DPD and DEOdds: MDE (shaded) and observed [95% bootstrap CI]")
        ax2.grid(axis="x", alpha=0.3)
        fig.suptitle(f"{cell_title(cell)}\nStatistical power: the smallest gap this test set detects at 80% power "
                     "(two-sided alpha 0.05); a gap inside the shaded span with an interval over 0 could not be seen"
                     + (";\nhatched: not even a gap down to chance (AUC 50) was detectable"
                        if any(power[a].get("mde_auc_gap") is None for a in attrs) else ""),
                     fontsize=10)
        fig.tight_layout()
    return fig


# -- prompt sensitivity ---------------------------------------------------------------------------------------
def prompts_figure(prompts: dict[str, Any], title: str = "", attributes: Sequence[str] | None = None) -> Any:
    """A zero-shot cell's ``analyses.prompts`` (``templates=all``): per prompt set, the AUC (left) and each
    attribute's AUC gap, best - worst group (right), x100; the ensemble (the cell's predictions) drawn last,
    hatched; the spread (min-max, SD) and sign consistency per attribute in the title."""
    records = list(prompts.get("templates") or [])
    if not records:
        raise DataError("analyses.prompts has no templates to plot (run zeroshot with --adapt-arg templates=all)")
    labels = [("ensemble (the cell's predictions)" if r.get("kind") == "ensemble"
               else f"{r.get('kind')}: {r.get('template')}")[:52] for r in records]
    attrs = [a for a in dict.fromkeys(a for r in records for a in (r.get("gaps") or {}))
             if not attributes or a in attributes]
    y = np.arange(len(records))
    spread = prompts.get("spread") or {}
    lines = []
    auc = spread.get("auc") or {}
    if auc.get("min") is not None:
        lines.append(f"AUC {_x(auc['min']):.1f}–{_x(auc['max']):.1f} (SD {_x(auc.get('sd')):.1f})")
    for a in attrs:
        s = (spread.get("gaps") or {}).get(a) or {}
        if s.get("min") is not None:
            same = {True: "same worst group", False: "worst group changes"}.get(s.get("same_sign"), "")
            lines.append(f"{a} gap {_x(s['min']):.1f}–{_x(s['max']):.1f} (SD {_x(s.get('sd')):.1f}; {same})")
    with plt.rc_context(STYLE):
        fig, (ax_auc, ax_gap) = plt.subplots(1, 2, figsize=(12, 0.36 * len(records) + 2.4), sharey=True)
        aucs = [_x(r.get("auc")) for r in records]
        bars = ax_auc.barh(y, aucs, color=[OKABE_ITO[0]] * len(records))
        if records[-1].get("kind") == "ensemble":
            bars[-1].set_hatch("//")
            bars[-1].set_edgecolor("white")
        ax_auc.axvline(SCALE * 0.5, color="grey", lw=0.8, ls=":", label="chance")
        ax_auc.set_xlabel(f"AUC ({SCALE_LABEL})")
        ax_auc.set_xlim(0, SCALE)
        ax_auc.set_yticks(y, labels, fontsize=7)
        ax_auc.invert_yaxis()
        ax_auc.legend(loc="lower right", frameon=False, fontsize=7)
        height = 0.8 / max(1, len(attrs))
        for i, a in enumerate(attrs):
            gaps = [_x(((r.get("gaps") or {}).get(a) or {}).get("gap")) for r in records]
            ax_gap.barh(y - 0.4 + height * (i + 0.5), gaps, height=height, color=palette_colour(i + 1), label=a)
        ax_gap.set_xlabel(f"AUC gap, best − worst group ({SCALE_LABEL})")
        ax_gap.legend(fontsize=7, loc="lower right", frameon=False)
        ax_gap.grid(axis="x", alpha=0.3)
        fig.suptitle((title or "Prompt sensitivity of zero-shot AUC and AUC gaps") + "\nover the single prompt sets: "
                     + "\n".join("; ".join(lines[i:i + 2]) for i in range(0, len(lines), 2)), fontsize=9)
        fig.tight_layout()
    return fig


# -- all of a cell's ------------------------------------------------------------------------------------------
def plot_analyses(cell: ResultCell, out: Path, formats: Sequence[str] = FORMATS,
                  attributes: Sequence[str] | None = None) -> tuple[list[Path], list[str]]:
    """Every analysis figure of ``cell`` (those it recorded) into its folder under ``out``; (files, problems)."""
    base = Path(out) / cell.task / cell.model / cell.adapt / f"seed{cell.seed}"
    written: list[Path] = []
    problems: list[str] = []
    for name in figure_names(cell, attributes):
        try:
            if name == "calibration":
                frame, problem = eval_rows(cell)
                if problem:
                    problems.append(f"{problem} (no calibration figure)")
                fig = calibration_figure(cell, frame, attributes)
            elif name == "prompts":
                fig = prompts_figure(cell.doc["analyses"]["prompts"], f"{cell_title(cell)}\nPrompt sensitivity of "
                                     "zero-shot AUC and AUC gaps (templates=all)", attributes)
            else:
                fig = {"underdiagnosis": underdiagnosis_figure, "leakage": leakage_figure,
                       "power": power_figure}[name](cell, attributes)
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
            plt.close("all")
            problems.append(f"{cell.path / 'metrics.json'}: analyses.{name} could not be drawn "
                            f"({type(exc).__name__}: {exc}); figure skipped")
            continue
        if fig is not None:
            written += save_figure(fig, base / figure_stem(name), formats)
    return written, problems


def plot_prompt_sensitivity(prompts: dict[str, Any], stem: Path, formats: Sequence[str] = ("png",),
                            title: str = "") -> list[Path]:
    """A zero-shot cell's ``analyses.prompts`` (``templates=all``) drawn by
    :func:`fairbench.report.plots_analyses.prompts_figure` and saved under ``stem``."""
    return save_figure(prompts_figure(prompts, title), stem, formats)
