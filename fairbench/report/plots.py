"""`fairbench plot`: figures from result cells (PNG and SVG, Agg backend, Okabe-Ito colours).

Per cell and protected attribute, one figure with three panels: group metrics with 95% bootstrap intervals
(bars), ROC curves per group (from predictions.parquet) and reliability diagrams per group (the suite's ECE
bins, :func:`fairbench.metrics.reliability_curve`). Across the cells of a task, a fairness-utility scatter:
overall AUC against ES-AUC per attribute, one point per model x adapter (mean over seeds). Per trained cell
(``adapt.fitted.epochs`` in metrics.json), training curves: the losses, the fairness term and ``lambda x
term``, the gradient ratio ``||grad(lambda x term)|| / ||grad(CLIP loss)||``, the selection AUC and DBPM's
flagged pairs with their mean weight, each panel where the cell recorded it. Per cell, one figure per analysis
it recorded (underdiagnosis, calibration, leakage, power, prompt sensitivity: :mod:`fairbench.report.plots_analyses`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from fairbench.errors import DataError
from fairbench.report.collect import ResultCell
from fairbench.report.formatting import SCALE, SCALE_LABEL, arrow, direction, metric_label, slug
from fairbench.report.summary import lookup, random_weights
from fairbench.report.tables import aggregate
from fairbench.report.versus import Versus
from fairbench.results import read_predictions
from fairbench.results.cells import adapt_label

__all__ = [
    "OKABE_ITO",
    "plot_cell",
    "plot_tradeoff",
    "plot_training",
    "plot_versus",
    "random_note",
]

#: Okabe & Ito (2008) colour-blind-safe palette, yellow last (weak on white)
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442"]
LINESTYLES = ["-", "--", "-.", ":"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
FORMATS = ("png", "svg")
MIN_BIN = 5  # reliability points from fewer samples are noise
STYLE = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 8.5,
          "axes.spines.top": False, "axes.spines.right": False, "svg.hashsalt": "fairbench",
          "svg.fonttype": "none"}
_BINARY_BARS = (("auc", "AUC"), ("acc", "ACC"), ("tpr", "TPR"), ("fpr", "FPR"), ("ece", "ECE"))
_MULTI_BARS = (("auc", "AUC"), ("acc", "ACC"), ("macro_f1", "macro F1"), ("ece", "ECE"))


def save_figure(fig: Any, stem: Path, formats: Sequence[str]) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        fig.savefig(path, dpi=150, metadata={"Date": None} if fmt == "svg" else None, bbox_inches="tight")
        out.append(path)
    plt.close(fig)
    return out


def palette_colour(i: int) -> str:
    return OKABE_ITO[i % len(OKABE_ITO)]


#: the ring and note that mark a point lying outside its own interval
OUTSIDE_COLOUR = "#666666"
OUTSIDE_NOTE = "◯ point outside its own interval (error bar clipped)"


def clip_err(value: float, low: float, high: float) -> tuple[float, float, bool]:
    """Error-bar lengths (below, above) for ``value`` with interval [low, high], each at least 0 (matplotlib
    refuses negative lengths), and whether one was clipped: a bootstrap percentile interval of a gap statistic
    can miss its own point estimate, and an edited file can say anything."""
    below, above = value - low, high - value
    return max(0.0, below), max(0.0, above), min(below, above) < -1e-9


def mark_outside(ax: Any, x: float, y: float) -> None:
    """Ring a point that lies outside its own interval, and say so once in the panel."""
    ax.plot([x], [y], marker="o", markersize=14, markerfacecolor="none", markeredgecolor=OUTSIDE_COLOUR,
            markeredgewidth=1.2, linestyle="", zorder=4)
    if not getattr(ax, "_fairbench_outside_noted", False):
        ax.text(0.01, 0.01, OUTSIDE_NOTE, transform=ax.transAxes, fontsize=7.5, color=OUTSIDE_COLOUR,
                ha="left", va="bottom")
        ax._fairbench_outside_noted = True


def _style(i: int) -> str:
    return LINESTYLES[i % len(LINESTYLES)]


def _pct(x: Any) -> str:
    """A metric value as the tables show it: x100, one decimal."""
    return "n/a" if x is None else f"{SCALE * float(x):.1f}"


def cell_title(cell: ResultCell) -> str:
    synth = " — SYNTHETIC data" if lookup(cell.doc, "task", "synthetic") else ""
    return f"{cell.task} · {cell.model} · {adapt_label(cell.adapt)} · seed {cell.seed}{synth}{random_note([cell])}"


def random_note(cells: Sequence[ResultCell]) -> str:
    """A title's mark for cells whose model ran with random (untrained) weights."""
    n = sum(random_weights(c.doc) for c in cells)
    if not n:
        return ""
    return " — RANDOM weights (untrained)" + ("" if n == len(cells) else f" in {n} of {len(cells)} cells")


# -- per cell -----------------------------------------------------------------------------------------------
def eval_rows(cell: ResultCell) -> tuple[pd.DataFrame | None, str | None]:
    if not cell.predictions.is_file():
        return None, f"{cell.predictions}: no predictions file (ROC and reliability panels left empty)"
    try:
        frame = read_predictions(cell.predictions)
    except DataError as exc:
        return None, str(exc)
    split = lookup(cell.doc, "task", "eval_split") or "test"
    return frame[frame["split"] == split].reset_index(drop=True), None


def _scores(frame: pd.DataFrame, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(y, score) for binary tasks; (one-hot y, probabilities) flattened one-vs-rest for multiclass."""
    probs = frame[[f"prob_{c}" for c in classes]].to_numpy(dtype=float)
    y = frame["label"].to_numpy()
    if len(classes) == 2:
        return (y == 1).astype(int), probs[:, 1]
    onehot = np.eye(len(classes), dtype=int)[y]
    return onehot.ravel(), probs.ravel()


def group_masks(frame: pd.DataFrame, attr: str, groups: list[str]) -> dict[str, np.ndarray]:
    if "*" in attr:
        parts = attr.split("*")
        cols = [frame.get(f"attr_{p}") for p in parts]
        if any(c is None for c in cols):
            return {}
        joined = cols[0].astype("string")
        for c in cols[1:]:
            joined = joined + "*" + c.astype("string")
        values = joined
    else:
        if f"attr_{attr}" not in frame:
            return {}
        values = frame[f"attr_{attr}"].astype("string")
    return {g: (values == g).fillna(False).to_numpy(dtype=bool) for g in groups}


def _bars(ax: Any, cell: ResultCell, attr: str, groups: dict[str, Any], binary: bool) -> None:
    metrics = _BINARY_BARS if binary else _MULTI_BARS
    k = max(1, len(groups))
    width = 0.8 / k
    x = np.arange(len(metrics))
    any_ci = False
    for i, (g, gm) in enumerate(groups.items()):
        vals, lo, hi, outside = [], [], [], []
        for key, _ in metrics:
            v = (gm or {}).get(key)
            ci = lookup(cell.metrics.get("ci") or {}, "attributes", attr, "groups", g, key)
            vals.append(np.nan if v is None else SCALE * float(v))
            ok = isinstance(ci, list) and None not in ci and v is not None
            below, above, clipped = (clip_err(SCALE * float(v), SCALE * ci[0], SCALE * ci[1]) if ok  # type: ignore
                                     else (np.nan, np.nan, False))
            lo.append(below)
            hi.append(above)
            outside.append(clipped)
        has_ci = not all(np.isnan(lo))
        any_ci |= has_ci
        small = " small" if g in (lookup(cell.metrics, "flags", "small_groups", attr) or {}) else ""
        xs = x - 0.4 + width * (i + 0.5)
        ax.bar(xs, vals, width, color=palette_colour(i), edgecolor="white", linewidth=0.5,
               yerr=[lo, hi] if has_ci else None, capsize=2, error_kw={"elinewidth": 0.9, "ecolor": "#222222"},
               label=f"{g} (n={(gm or {}).get('n', '?')}{small})")
        for j in np.flatnonzero(outside):
            mark_outside(ax, float(xs[j]), vals[j])
    ax.set_xticks(x, [label for _, label in metrics])
    ax.set_ylim(0, SCALE * (1.0 + 0.07 * math.ceil(k / 3) + 0.05))
    ax.set_yticks(np.linspace(0, SCALE, 6))
    ax.set_ylabel(f"value ({SCALE_LABEL})")
    n_boot = cell.metrics.get("n_boot") or 0
    ax.set_title(f"Group metrics, 95% bootstrap CI (B={n_boot})" if any_ci else "Group metrics (no bootstrap CI)")
    ax.legend(loc="upper center", ncol=min(3, k), frameon=False, bbox_to_anchor=(0.5, 1.0),
              title=f"{attr} group (n in the evaluated split)", title_fontsize=8.5)
    ax.grid(axis="y", alpha=0.3)


def _roc(ax: Any, frame: pd.DataFrame, classes: list[str], attr: str, groups: dict[str, Any],
         masks: dict[str, np.ndarray]) -> None:
    from sklearn.metrics import roc_curve

    binary = len(classes) == 2
    k = len(classes)
    for i, g in enumerate(groups):
        m = masks.get(g)
        if m is None or not m.any():
            continue
        y, s = _scores(frame[m], classes)
        if len(np.unique(y)) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, s)
        auc = (groups[g] or {}).get("auc")
        ax.plot(SCALE * fpr, SCALE * tpr, color=palette_colour(i), linestyle=_style(i), linewidth=1.6,
                label=f"{g} (n={int(m.sum())}, {'AUC' if binary else 'macro AUC'} {_pct(auc)})")
    ax.plot([0, SCALE], [0, SCALE], color="#999999", linewidth=0.8, linestyle=":", label="chance")
    ax.set_xlim(0, SCALE)
    ax.set_ylim(0, 1.01 * SCALE)
    ax.set_xlabel(f"false positive rate ({SCALE_LABEL})")
    ax.set_ylabel(f"true positive rate ({SCALE_LABEL})")
    ax.set_title("ROC per group" if binary else f"ROC per group (one-vs-rest, {k} classes pooled)")
    ax.legend(loc="lower right", frameon=False)
    ax.set_aspect("equal")


def reliability_panel(ax: Any, frame: pd.DataFrame, classes: list[str], groups: dict[str, Any],
                      masks: dict[str, np.ndarray], n_bins: int, notes: dict[str, str] | None = None) -> None:
    """Reliability curve per group in the suite's ECE bins (bins with < MIN_BIN samples hidden), the group's
    ECE in the legend, followed by ``notes[group]`` where given."""
    from fairbench.metrics import reliability_curve

    binary = len(classes) == 2
    ax.plot([0, SCALE], [0, SCALE], color="#999999", linewidth=0.8, linestyle=":", label="perfect calibration")
    for i, g in enumerate(groups):
        m = masks.get(g)
        if m is None or not m.any():
            continue
        sub = frame[m]
        probs = sub[[f"prob_{c}" for c in classes]].to_numpy(dtype=float)
        curve = reliability_curve(sub["label"].to_numpy(), probs[:, 1] if binary else probs, n_bins=n_bins)
        pts = [(c, f) for c, f, n in zip(curve["confidence"], curve["frequency"], curve["count"], strict=True)
               if c is not None and n >= MIN_BIN]
        if not pts:
            continue
        xs, ys = (np.asarray(v, dtype=float) * SCALE for v in zip(*pts, strict=True))
        ax.plot(xs, ys, color=palette_colour(i), linestyle=_style(i), marker=MARKERS[i % len(MARKERS)], markersize=3.5,
                linewidth=1.4, label=f"{g} (n={int(m.sum())}, ECE {_pct(curve['ece'])}{(notes or {}).get(g, '')})")
    ax.set_xlim(0, SCALE)
    ax.set_ylim(0, 1.01 * SCALE)
    ax.set_xlabel(f"mean predicted probability, positive class ({SCALE_LABEL})" if binary
                  else f"mean top-label confidence ({SCALE_LABEL})")
    ax.set_ylabel(f"observed fraction positive ({SCALE_LABEL})" if binary else f"observed accuracy ({SCALE_LABEL})")
    ax.set_title(f"Reliability per group ({n_bins} bins, those with < {MIN_BIN} samples hidden)")
    ax.legend(loc="upper left", frameon=False)
    ax.set_aspect("equal")


def plot_cell(cell: ResultCell, out: Path, formats: Sequence[str] = FORMATS,
              attributes: Sequence[str] | None = None) -> tuple[list[Path], list[str]]:
    """One figure per protected attribute (or those in ``attributes``); returns (files written, problems)."""
    problems: list[str] = []
    frame, problem = eval_rows(cell)
    if problem:
        problems.append(problem)
    classes = list(cell.metrics.get("classes") or [])
    binary = len(classes) == 2
    n_bins = int(cell.metrics.get("ece_bins") or 15)
    written: list[Path] = []
    base = out / cell.task / cell.model / cell.adapt / f"seed{cell.seed}"
    for attr, a in (cell.metrics.get("attributes") or {}).items():
        groups = dict((a or {}).get("groups") or {})
        if not groups or (attributes and attr not in attributes):
            continue
        with plt.rc_context(STYLE):
            fig, axes = plt.subplots(1, 3, figsize=(16, 5.2), gridspec_kw={"width_ratios": [1.25, 1, 1]})
            _bars(axes[0], cell, attr, groups, binary)
            if frame is not None and classes:
                masks = group_masks(frame, attr, list(groups))
                _roc(axes[1], frame, classes, attr, groups, masks)
                reliability_panel(axes[2], frame, classes, groups, masks, n_bins)
            else:
                for ax in axes[1:]:
                    ax.text(0.5, 0.5, "no predictions.parquet:\nROC and reliability need per-sample predictions",
                            ha="center", va="center", transform=ax.transAxes)
                    ax.set_axis_off()
            summary = " · ".join(f"{label} {_pct(a.get(key))}" for key, label in
                                 (("es_auc", "ES-AUC"), ("auc_gap", "AUC gap"), ("dpd", "DPD"),
                                  ("dpd_mean_ovr", "DPD (mean OvR)"), ("deodds", "DEOdds"),
                                  ("deodds_mean_ovr", "DEOdds (mean OvR)")) if key in a)
            fig.suptitle(f"{cell_title(cell)}\nprotected attribute: {attr}" + (f"   (x100: {summary})" if summary else ""),
                         fontsize=12)
            fig.tight_layout()
            written += save_figure(fig, base / slug(attr), formats)
    return written, problems


# -- training curves ----------------------------------------------------------------------------------------
def _series(epochs: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pts = [(int(e.get("epoch", i)) + 1, float(e[key])) for i, e in enumerate(epochs)
           if isinstance(e.get(key), (int, float)) and math.isfinite(float(e[key]))]
    return [x for x, _ in pts], [y for _, y in pts]


def _line(ax: Any, epochs: list[dict[str, Any]], key: str, label: str, i: int, positive: bool = False,
          scale: float = 1.0) -> bool:
    xs, ys = _series(epochs, key)
    ys = [scale * y for y in ys]
    if positive:
        xs, ys = [x for x, y in zip(xs, ys, strict=True) if y > 0], [y for y in ys if y > 0]
    if not xs:
        return False
    ax.plot(xs, ys, color=palette_colour(i), linestyle=_style(i), marker=MARKERS[i % len(MARKERS)], markersize=4,
            linewidth=1.5, label=label)
    return True


def _epoch_axis(ax: Any, n: int) -> None:
    ax.set_xlabel("epoch")
    ax.set_xticks(range(1, n + 1) if n <= 12 else np.linspace(1, n, 7).round().astype(int))
    ax.grid(alpha=0.3)


def plot_training(cell: ResultCell, out: Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Training curves of a trained cell (``adapt.fitted.epochs``); nothing for cells without them."""
    epochs = lookup(cell.doc, "adapt", "fitted", "epochs")
    if not isinstance(epochs, list) or not epochs or not all(isinstance(e, dict) for e in epochs):
        return []
    has = {k for e in epochs for k, v in e.items() if v is not None}
    select = next((k for k in ("val_auc", "val_worst_group_auc", "val_worst_cell_acc", "test_auc") if k in has), None)
    panels = ["loss"] + [name for name, keys in (("term", {"fair_term", "lambda_fair"}), ("grad", {"grad_norm_clip"}),
                                                 ("dbpm", {"n_flagged"})) if keys & has]
    if select:
        panels.insert(1, "auc")
    n = len(epochs)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.4), squeeze=False)
        for ax, panel in zip(axes[0], panels, strict=True):
            if panel == "loss":
                _line(ax, epochs, "train_loss", "training loss (optimised)", 0)
                _line(ax, epochs, "clip_loss", "CLIP loss", 1)
                _line(ax, epochs, "dbpm_loss", "CLIP loss after DBPM", 2)
                ax.set_title("Loss (epoch mean)")
            elif panel == "auc":
                if select == "val_worst_cell_acc":
                    _line(ax, epochs, select, "val, worst cell accuracy", 0, scale=SCALE)
                    ax.set_ylabel(f"accuracy ({SCALE_LABEL})")
                    ax.set_title("Selection score (val, worst cell accuracy)")
                else:
                    what = {"val_auc": "val", "test_auc": "test", "val_worst_group_auc": "val, worst group"}[select]
                    _line(ax, epochs, select, f"{what} AUC", 0, scale=SCALE)  # type: ignore[arg-type]
                    ax.set_ylabel(f"AUC ({SCALE_LABEL})")
                    ax.set_title(f"Selection AUC ({what})")
            elif panel == "term":
                drawn = _line(ax, epochs, "fair_term", "fairness term", 0, positive=True)
                drawn |= _line(ax, epochs, "lambda_x_fair", "lambda x term", 1, positive=True)
                lam = next((e.get("lambda_fair") for e in epochs if e.get("lambda_fair") is not None), None)
                if drawn:
                    ax.set_yscale("log")
                else:
                    ax.text(0.5, 0.5, "term off (lambda_fair = 0)" if lam == 0 else "term not recorded",
                            ha="center", va="center", transform=ax.transAxes)
                ax.set_title(f"Fairness term (epoch mean, lambda {lam:g})" if isinstance(lam, (int, float))
                             else "Fairness term (epoch mean)")
            elif panel == "grad":
                if _line(ax, epochs, "grad_ratio", "||grad(lambda x term)|| / ||grad(CLIP)||", 3, positive=True):
                    ax.set_yscale("log")
                    ax.axhline(1.0, color="#999999", linewidth=0.8, linestyle=":", label="equal gradients")
                else:
                    ax.text(0.5, 0.5, "no gradient from the term\n(ratio 0 or not measured)", ha="center",
                            va="center", transform=ax.transAxes)
                ax.set_title("Gradient share of the term (first batch)")
            else:
                xs, ys = _series(epochs, "n_flagged")
                ax.bar(xs, ys, color=palette_colour(5), alpha=0.8, label="pairs (or slots) flagged")
                ax.set_ylabel("flagged")
                twin = ax.twinx()
                if _line(twin, epochs, "mean_weight", "mean DBPM weight of flagged losses", 6, positive=True):
                    twin.set_yscale("log")
                twin.set_ylabel("mean weight (log)")
                handles = ax.get_legend_handles_labels()
                extra = twin.get_legend_handles_labels()
                ax.legend(handles[0] + extra[0], handles[1] + extra[1], loc="upper left", frameon=False)
                ax.set_title("DBPM: flagged pairs and their weight")
            _epoch_axis(ax, n)
            if panel != "dbpm" and ax.get_legend_handles_labels()[0]:
                ax.legend(loc="best", frameon=False)
        fig.suptitle(f"{cell_title(cell)}\ntraining curves ({n} epochs)", fontsize=12)
        fig.tight_layout()
        return save_figure(fig, out / cell.task / cell.model / cell.adapt / f"seed{cell.seed}" / "training", formats)


# -- across cells -------------------------------------------------------------------------------------------
def _spread(cells: list[ResultCell], path: tuple[str, ...]) -> tuple[float | None, float | None, float | None]:
    """(mean, low, high) x100: min-max over seeds with 2+ seeds, else the cell's bootstrap interval (if any)."""
    a = aggregate(cells, path)
    if a.mean is None:
        return None, None, None
    values = [v for c in cells if isinstance(v := lookup(c.metrics, *path), (int, float))]
    if len(values) >= 2:
        return SCALE * a.mean, SCALE * min(values), SCALE * max(values)
    return (SCALE * a.mean, None if a.low is None else SCALE * a.low, None if a.high is None else SCALE * a.high)


def plot_tradeoff(task: str, cells: list[ResultCell], out: Path, formats: Sequence[str] = FORMATS,
                  attributes: Sequence[str] | None = None) -> list[Path]:
    """Overall AUC (x) against ES-AUC (y) per attribute, one labelled point per model x adapter."""
    from matplotlib.patches import Patch

    rows: dict[tuple[str, str], list[ResultCell]] = {}
    for c in cells:
        rows.setdefault((c.model, c.adapt), []).append(c)
    attrs: dict[str, None] = {}
    for c in cells:
        attrs.update(dict.fromkeys(c.metrics.get("attributes") or {}))
    attrs_list = [a for a in attrs if any(lookup(c.metrics, "attributes", a, "es_auc") is not None for c in cells)
                  and (not attributes or a in attributes)]
    if not attrs_list:
        return []
    models = sorted({m for m, _ in rows})
    adapts = sorted({a for _, a in rows})
    by_model = len(models) > 1  # colour carries the model only where models differ; else it repeats the adapter

    def colour(model: str, adapt: str) -> str:
        return palette_colour(models.index(model) if by_model else adapts.index(adapt))

    ncols = min(2, len(attrs_list))
    nrows = math.ceil(len(attrs_list) / ncols)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(nrows, ncols, figsize=(6.2 * ncols, 5.6 * nrows + 1.2), squeeze=False)
        for k, attr in enumerate(attrs_list):
            ax = axes[k // ncols][k % ncols]
            points: list[tuple[float, float, str]] = []
            extent: list[float] = []
            for (model, adapt), cs in sorted(rows.items()):
                x, xlo, xhi = _spread(cs, ("overall", "auc"))
                y, ylo, yhi = _spread(cs, ("attributes", attr, "es_auc"))
                if x is None or y is None:
                    continue
                xerr = yerr = None
                x_out = y_out = False
                if xlo is not None and xhi is not None:
                    below, above, x_out = clip_err(x, xlo, xhi)
                    xerr = [[below], [above]]
                if ylo is not None and yhi is not None:
                    below, above, y_out = clip_err(y, ylo, yhi)
                    yerr = [[below], [above]]
                ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt=MARKERS[adapts.index(adapt) % len(MARKERS)],
                            color=colour(model, adapt), markersize=8, elinewidth=1.0, capsize=2.5,
                            markeredgecolor="white", zorder=3)
                if x_out or y_out:
                    mark_outside(ax, x, y)
                points.append((x, y, f"{model} / {adapt}" if by_model else adapt))
                extent += [v for v in (x, y, xlo, xhi, ylo, yhi) if v is not None]
            ax.plot([0, SCALE], [0, SCALE], color="#bbbbbb", linewidth=0.8, linestyle=":", zorder=1)
            ax.set_xlabel(f"overall AUC ({SCALE_LABEL})")
            ax.set_ylabel(f"ES-AUC for {attr} ({SCALE_LABEL})")
            ax.set_title(f"{attr}: fairness vs utility")
            ax.grid(alpha=0.3)
            _fit_limits(ax, extent)
            _label_points(ax, points)
        for k in range(len(attrs_list), nrows * ncols):
            axes[k // ncols][k % ncols].set_axis_off()
        if by_model:
            handles: list[Any] = [Patch(color=palette_colour(i), label=m) for i, m in enumerate(models)]
            handles += [plt.Line2D([], [], color="#555555", marker=MARKERS[i % len(MARKERS)], linestyle="",
                                   label=a) for i, a in enumerate(adapts)]
            title = "colour = model, marker = adapter"
        else:
            handles = [plt.Line2D([], [], color=palette_colour(i), marker=MARKERS[i % len(MARKERS)], linestyle="", label=a)
                       for i, a in enumerate(adapts)]
            title = f"{models[0]}: colour and marker = adapter"
        # beside the panels, at the top: it reads with them instead of under the last row
        fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 0.9), frameon=False, title=title,
                   alignment="left")
        synth = " — SYNTHETIC data" if any(lookup(c.doc, "task", "synthetic") for c in cells) else ""
        fig.suptitle(f"{task}: equity-scaled AUC against AUC{synth}{random_note(cells)}\n"
                     "points: mean over seeds; bars: min–max over seeds (one seed: 95% bootstrap CI)\n"
                     "ES-AUC = AUC / (1 + Σ|AUC − AUC_g|); on the dotted diagonal every group has the overall AUC",
                     fontsize=10.5)
        fig.tight_layout()
        return save_figure(fig, out / task / "fairness_utility", formats)


def _fit_limits(ax: Any, extent: list[float]) -> None:
    """Square limits around the points and their bars (the diagonal stays meaningful), within [0, 100]."""
    if not extent:
        return
    lo, hi = min(extent), max(extent)
    pad = max(0.03 * SCALE, 0.1 * (hi - lo))
    lo, hi = max(0.0, lo - pad), min(SCALE, hi + pad)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")


#: where a point's label may go, in points from the point: beside it first, then further out with a leader line
_LABEL_SPOTS = [(7, 4, "left"), (7, -12, "left"), (-7, 4, "right"), (-7, -12, "right")] + [
    (dx, dy, ha) for r in range(1, 9) for dx, dy, ha in ((10, 10 + 11 * r, "left"), (10, -16 - 11 * r, "left"),
                                                          (-10, 10 + 11 * r, "right"), (-10, -16 - 11 * r, "right"))]
MARKER_CLEARANCE = 5.0  # points around a marker (radius 4 at markersize 8) that no label may cover


def _label_points(ax: Any, points: list[tuple[float, float, str]]) -> None:
    """Label each point where the label covers no marker and no label already placed (first free spot of
    :data:`_LABEL_SPOTS`; the last spot when none is free)."""
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    r = MARKER_CLEARANCE * fig.dpi / 72
    placed: list[Any] = []
    for x, y, _ in points:
        px, py = ax.transData.transform((x, y))
        placed.append(Bbox.from_extents(px - r, py - r, px + r, py + r))
    for x, y, text in sorted(points, key=lambda p: (-p[1], p[0])):
        for k, (dx, dy, ha) in enumerate(_LABEL_SPOTS):
            far = abs(dy) > 12
            ann = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=8, ha=ha,
                              va="bottom", color="#222222", zorder=4,
                              arrowprops={"arrowstyle": "-", "color": "#999999", "lw": 0.5} if far else None)
            ann.update_positions(renderer)
            box = Text.get_window_extent(ann, renderer=renderer)  # the text, without its leader line
            inside = ax.get_window_extent(renderer=renderer).contains(box.x0, box.y0) and \
                ax.get_window_extent(renderer=renderer).contains(box.x1, box.y1)
            if (inside and not any(box.overlaps(b) for b in placed)) or k == len(_LABEL_SPOTS) - 1:
                placed.append(box)
                break
            ann.remove()


# -- versus a reference adapter ------------------------------------------------------------------------------
def plot_versus(v: Versus, out: Path, formats: Sequence[str] = FORMATS,
                attributes: Sequence[str] | None = None, synthetic: bool = False, note: str = "") -> list[Path]:
    """Forest plot of the paired differences B - reference (:func:`fairbench.report.versus.compute_versus`): one
    panel per protected attribute, one row per (model, adapter) x metric, point = delta x100, bar = its 95%
    interval, a line at 0; a filled point and ``*`` where the interval excludes 0."""
    attrs = [a for a in v.attributes if not attributes or a in attributes]
    rows = [r for r in v.rows if r.ok]
    if v.unavailable or not rows or not attrs:
        return []
    tables = {a: v.table(a) for a in attrs}
    labels: list[str] = []
    for r in rows:
        seeds = f"{len(r.seeds)} seeds, t" if r.method == "seeds" else f"seed {r.seeds[0]}, bootstrap"
        for path in tables[attrs[0]].paths:
            key = path[-1]
            labels.append(f"{r.model} / {r.adapt_label} · {metric_label(key)}{arrow(key)} ({seeds})")
    n = len(labels)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(attrs), figsize=(3.6 * len(attrs) + 3.4, 0.27 * n + 2.6), sharey=True,
                                 squeeze=False)
        for ax, attr in zip(axes[0], attrs, strict=True):
            by_row = {id(r): deltas for r, deltas, _ in tables[attr].rows}
            y = 0
            for i, r in enumerate(rows):
                if i:
                    ax.axhline(-(y - 0.5), color="#dddddd", linewidth=0.6, zorder=0)
                for j, d in enumerate(by_row[id(r)]):
                    colour, marker = palette_colour(j), MARKERS[j % len(MARKERS)]
                    if d is None or d.delta is None:
                        ax.text(0, -y, "n/a", ha="center", va="center", fontsize=7, color="#777777")
                    else:
                        x = 100 * d.delta
                        xerr, clipped = None, False
                        if d.ci is not None:
                            below, above, clipped = clip_err(x, 100 * d.ci[0], 100 * d.ci[1])
                            xerr = [[below], [above]]
                        ax.errorbar(x, -y, xerr=xerr, fmt=marker, color=colour, markersize=5.5, elinewidth=1.3,
                                    capsize=2, markerfacecolor=colour if d.excludes_zero else "white", zorder=3)
                        if clipped:
                            mark_outside(ax, x, -y)
                        if d.excludes_zero:
                            right = 100 * d.ci[1] if d.ci is not None else x
                            ax.annotate("*", (right, -y), xytext=(3, -3), textcoords="offset points",
                                        fontsize=10, color="#222222", va="center")
                    y += 1
            ax.axvline(0, color="#555555", linewidth=0.9, zorder=1)
            ax.set_title(f"{attr}: Δ (x100)")
            ax.set_xlabel(f"B − {v.reference}, x100")
            ax.grid(axis="x", alpha=0.3)
            ax.margins(x=0.12)
        axes[0][0].set_yticks([-i for i in range(n)], labels)
        axes[0][0].set_ylim(-(n - 0.5), 0.5)
        skipped = [f"{r.model} / {r.adapt_label} ({r.status})" for r in v.rows if not r.ok]
        if skipped:
            fig.text(0.01, 0.005, "not shown: " + "; ".join(skipped), fontsize=8, color="#555555", ha="left",
                     va="bottom")
        lower = ", ".join(metric_label(p[-1]) for p in tables[attrs[0]].paths if direction(p[-1]) is False)
        fig.suptitle(f"{v.task}: B − {v.reference}, paired on the same test samples"
                     f"{' — SYNTHETIC data' if synthetic else ''}{note}\n"
                     f"point: Δ; bar: 95% interval (one paired seed: paired bootstrap, B={v.n_boot}; 2+ seeds: t "
                     "interval across seeds); filled point and * = interval excludes 0\n"
                     f"↓ lower is better ({lower}): a negative Δ is better; ↑ higher is better: a positive Δ is "
                     "better\na difference on this task, not a ranking of methods across tasks", fontsize=10)
        fig.tight_layout(rect=(0, 0.03 if skipped else 0, 1, 1))
        return save_figure(fig, out / v.task / f"versus_{slug(v.reference)}", formats)
