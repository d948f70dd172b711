"""`fairbench compare A B`: is B really better (or fairer) than A, on the same test samples?

A and B are result cells (folders with predictions.parquet), predictions.parquet files, metrics.json files
beside their predictions, or folders holding ``seed<N>`` cells (one task x model x adapter). For one pair of
cells the answer is a paired bootstrap of every metric the suite computes (:mod:`fairbench.metrics.paired`)
plus DeLong's test for the overall and per-group AUCs (:mod:`fairbench.metrics._delong`). For folders of
seeds the cells are paired seed by seed, and the mean delta over seeds gets an interval that combines the seeds'
spread with each seed's paired-bootstrap variance (:func:`across_seeds`; seeds that give the same delta fall back
to one seed's paired bootstrap, and say so). A cell against a folder of seeds is compared with the folder's cell
of the same seed. Each cell keeps the threshold its metrics.json records.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fairbench.errors import FairbenchError
from fairbench.metrics.paired import CI_LEVEL, paired_metrics, paired_predictions, parse_predictions, rule_threshold
from fairbench.results import ResultCell, read_predictions, resolve_cells, resolve_side

__all__ = [
    "P_VALUE",
    "SUMMARY_METRICS",
    "across_seeds",
    "compare",
    "compare_pair",
    "paired_metrics",
    "resolve_cells",
]

P_VALUE = "two-sided bootstrap: min(1, 2 (min(#{d* <= 0}, #{d* >= 0}) + 1) / (B + 1))"
#: what the printed table and the leaderboard's "versus" tables show (the JSON has every metric)
SUMMARY_METRICS = ("auc", "es_auc", "auc_gap", "dpd", "deodds")


def _matching_seed(cell_side: dict[int | None, ResultCell], cell_path: Path | str,
                   folder: dict[int | None, ResultCell], folder_path: Path | str) -> ResultCell:
    """The cell of a seed folder whose seed is the lone cell's, or a one-line refusal."""
    (seed, _), = cell_side.items()
    have = sorted(k for k in folder if k is not None)
    if seed is None:
        raise FairbenchError(f"{cell_path} is one cell with no recorded seed and {folder_path} a folder of seeds "
                             f"({', '.join(map(str, have))}): compare it with one of them (e.g. "
                             f"{str(folder_path).rstrip('/')}/seed{have[0]})")
    if seed not in folder:
        raise FairbenchError(f"{cell_path} is a seed-{seed} cell and {folder_path} a folder of seeds without "
                             f"seed{seed} (seeds {', '.join(map(str, have))}): compare cells of the same seed, "
                             f"or two folders of seeds")
    return folder[seed]


# -- one pair ---------------------------------------------------------------------------------------------------
def _read_frame(cell: ResultCell, classes: list[str], attributes: list[str], card: Any) -> pd.DataFrame:
    """The rows compare reads: the evaluated split's, and validation's too when the threshold must be chosen by
    the card's rule (no metrics.json records one), with only the columns the metrics read."""
    splits = [card.evaluation.split]
    recorded = (cell.doc or {}).get("threshold")
    if not (isinstance(recorded, dict) and "value" in recorded) and "val" not in splits:
        splits.append("val")
    return read_predictions(cell.predictions, classes, attributes, splits=splits)


def _threshold(cell: ResultCell, frame: pd.DataFrame, card: Any) -> tuple[float | None, dict[str, Any]]:
    """The threshold the cell's metrics.json records; without one, the task card's rule on this frame."""
    recorded = (cell.doc or {}).get("threshold")
    if isinstance(recorded, dict) and "value" in recorded:
        value = recorded["value"]
        return (None if value is None else float(value)), {**recorded, "from": "metrics.json"}
    ev = card.evaluation
    value, record = rule_threshold(frame, list(card.classes), list(card.attributes), ev.threshold, ev.split)
    return value, {**record, "from": "task card rule"}


def _sorted_ids(ids: pd.Series) -> tuple[np.ndarray, Any]:
    """The row order that sorts the ids (as str, by code point, as Python compares them) and the sorted ids, in
    arrow (no Python str per row)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pa.array(ids, type=pa.large_string()) if isinstance(ids.dtype, pd.StringDtype) else pa.array(
        ids.astype(str).to_numpy(dtype=object), type=pa.large_string())
    order = pc.sort_indices(arr).to_numpy()  # stable; by UTF-8 bytes, the order of code points
    return order, arr.take(pa.array(order))


def _aligned(a: ResultCell, b: ResultCell, fa: pd.DataFrame, fb: pd.DataFrame,
             card: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The evaluated rows of both, in the same order (by sample id), after checking they are the same samples
    with the same labels and groups."""
    import pyarrow.compute as pc

    split = card.evaluation.split
    out, keys = [], []
    for cell, frame in ((a, fa), (b, fb)):
        keep = (frame["split"].astype(str) == split).to_numpy(dtype=bool)
        if not keep.any():
            raise FairbenchError(f"{cell.name}: no rows with split == {split!r}")
        ev = frame if keep.all() else frame[keep]
        order, ids = _sorted_ids(ev["sample_id"])
        if len(ids) > 1 and pc.any(pc.equal(ids[1:], ids[:-1])).as_py():
            named = ev["sample_id"].astype(str)
            dup = named[named.duplicated()].unique().tolist()
            raise FairbenchError(f"{cell.name}: duplicate sample id(s) in split {split!r}: {', '.join(dup[:5])}")
        ev = ev.take(order).reset_index(drop=True)
        ev["sample_id"] = pd.Series(ids.to_pandas(types_mapper=pd.ArrowDtype), name="sample_id").astype(str)
        out.append(ev)
        keys.append(ids)
    ea, eb = out
    ka, kb = keys
    if len(ka) != len(kb) or not pc.all(pc.equal(ka, kb)).as_py():
        set_a, set_b = set(ka.to_pylist()), set(kb.to_pylist())
        only_a, only_b = sorted(set_a - set_b), sorted(set_b - set_a)
        raise FairbenchError(
            f"{a.name} and {b.name} were evaluated on different samples ({len(only_a)} only in A"
            + (f", e.g. {only_a[0]}" if only_a else "") + f"; {len(only_b)} only in B"
            + (f", e.g. {only_b[0]}" if only_b else "") + "): a paired comparison needs the same test samples")
    del keys, ka, kb
    if not np.array_equal(ea["label"].to_numpy(), eb["label"].to_numpy()):
        i = int(np.flatnonzero(ea["label"].to_numpy() != eb["label"].to_numpy())[0])
        raise FairbenchError(f"{a.name} and {b.name} disagree on the label of sample {ea['sample_id'][i]}")
    for attr in card.attributes:
        col = f"attr_{attr}"
        va, vb = _as_text(ea[col]), _as_text(eb[col])
        if not np.array_equal(va, vb):
            i = int(np.flatnonzero(va != vb)[0])
            raise FairbenchError(f"{a.name} and {b.name} disagree on {attr} of sample {ea['sample_id'][i]} "
                                 f"({va[i]} vs {vb[i]})")
    return ea, eb


def _as_text(column: pd.Series) -> np.ndarray:
    """Each row's value as text, ``<unknown>`` where missing (an object array of the few distinct strs)."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        names = column.cat.categories.astype("string").fillna("<unknown>").to_numpy()
        return np.append(names.astype(object), "<unknown>")[column.cat.codes.to_numpy()]
    return column.astype("string").fillna("<unknown>").to_numpy()


def compare_pair(a: ResultCell, b: ResultCell, card: Any, *, n_boot: int, seed: int) -> dict[str, Any]:
    """Paired bootstrap (every metric) and DeLong (AUCs) of B - A on the same evaluated samples."""
    classes, attributes = list(card.classes), list(card.attributes)
    ev = card.evaluation
    fa, fb = _read_frame(a, classes, attributes, card), _read_frame(b, classes, attributes, card)
    ta, rec_a = _threshold(a, fa, card)
    tb, rec_b = _threshold(b, fb, card)
    ea, eb = _aligned(a, b, fa, fb, card)
    del fa, fb  # what is held from here on is the evaluated rows, parsed (docs/scale.md, "compare and metrics")
    n = int(len(ea))
    inter = [list(i) for i in ev.intersections] or None
    pa = parse_predictions(ea, classes, attributes, inter)
    del ea
    pb = parse_predictions(eb, classes, attributes, inter)
    del eb
    metrics, delong = paired_predictions(
        pa, pb, classes=classes, eval_split=ev.split, threshold_a=ta, threshold_b=tb, ece_bins=ev.ece_bins,
        no_finding_class=ev.no_finding_class, n_boot=n_boot, seed=seed)
    return {"a": a.identity(), "b": b.identity(), "task": card.name, "eval_split": ev.split, "n": n,
            "n_boot": n_boot, "seed": seed, "ci_level": CI_LEVEL if n_boot else None,
            "ci_method": "percentile of the paired resampled deltas (same samples for A and B; strata true class "
                         "x group per attribute, true class overall); an interval that does not contain its delta "
                         "is flagged ci_excludes_delta" if n_boot else None,
            "p_value": P_VALUE if n_boot else None, "thresholds": {"a": rec_a, "b": rec_b},
            "metrics": metrics, "delong": delong}


# -- seeds ------------------------------------------------------------------------------------------------------
#: per-seed deltas closer than this are "the same": the seeds show no spread (deterministic adapters on fixed
#: weights), and the first seed's paired bootstrap stands for all of them (as the leaderboard's "versus" tables)
SAME_DELTA = 1e-12
ACROSS_METHOD = {
    "combined": "mean of the per-seed deltas; 95% t interval and t-test p with standard error sqrt(s^2/k + "
                "mean of the seeds' paired-bootstrap variances) and Welch-Satterthwaite degrees of freedom: "
                "covers seed-to-seed variation and test-sample variation",
    "same": "every seed gave the same delta (no seed-to-seed variation to measure): the first seed's paired "
            "bootstrap interval and p, which cover test-sample variation only",
    "bootstrap": "one paired seed: its paired bootstrap interval and p (test-sample variation only)",
    "seeds": "no bootstrap (n_boot 0): Student t interval and one-sample t-test across seeds (seed-to-seed "
             "variation only)",
}


def _t_quantile(df: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.975, df)) if math.isfinite(df) else float(stats.norm.ppf(0.975))


def _t_p(t: float, df: float) -> float:
    from scipy import stats

    return float(2 * (stats.t.sf(abs(t), df) if math.isfinite(df) else stats.norm.sf(abs(t))))


def _across(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """One metric over k paired seeds (``entries``: each seed's paired entry, delta defined in all)."""
    values = [float(e["delta"]) for e in entries]
    k = len(values)
    mean = float(np.mean(values))
    out: dict[str, Any] = {"mean_delta": mean, "deltas": values, "n_seeds": k, "ci": None, "p": None}
    if k == 1 or max(values) - min(values) <= SAME_DELTA:
        first = entries[0]
        out.update(method="bootstrap" if k == 1 else "same", ci=first.get("ci"), p=first.get("p"),
                   se_within=first.get("se"), se_seeds=0.0 if k > 1 else None, covers="test samples")
        return out
    sd = float(np.std(values, ddof=1))
    ses = [e.get("se") for e in entries]
    within = float(np.mean([s * s for s in ses])) if all(isinstance(s, (int, float)) for s in ses) else None
    var_seeds = sd * sd / k
    # the t interval across seeds alone (what the seeds' spread says), kept for reference
    half_t = _t_quantile(k - 1) * math.sqrt(var_seeds)
    out.update(t_ci=[mean - half_t, mean + half_t], t_p=_t_p(mean / math.sqrt(var_seeds), k - 1),
               se_seeds=math.sqrt(var_seeds), se_within=None if within is None else math.sqrt(within))
    if within is None:
        out.update(method="seeds", ci=out["t_ci"], p=out["t_p"], df=k - 1, covers="seeds")
        return out
    var = var_seeds + within
    df = (k - 1) * var * var / (var_seeds * var_seeds)  # Welch-Satterthwaite, the bootstrap variance taken as known
    half = _t_quantile(df) * math.sqrt(var)
    out.update(method="combined", ci=[mean - half, mean + half], p=_t_p(mean / math.sqrt(var), df), df=df,
               covers="seeds and test samples")
    return out


def _nest(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _walk(tree: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    out = []
    for key, value in tree.items():
        if isinstance(value, dict) and "delta" in value and "a" in value:
            out.append((path + (key,), value))
        elif isinstance(value, dict):
            out += _walk(value, path + (key,))
    return out


def across_seeds(per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Per metric path: the mean delta over the paired seeds with an interval and p-value that never claim more
    certainty than the data show (:data:`ACROSS_METHOD`, recorded per entry under ``method``): seeds that vary
    give an interval combining their spread with each seed's paired-bootstrap variance; seeds that give the same
    delta, or a single seed, give the (first) seed's paired bootstrap."""
    entries: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for _, result in sorted(per_seed.items()):
        for path, entry in _walk(result["metrics"]):
            if entry.get("delta") is not None:
                entries.setdefault(path, []).append(entry)
    out: dict[str, Any] = {}
    for path, found in sorted(entries.items()):
        if len(found) == len(per_seed):
            _nest(out, path, _across(found))
    return out


def compare(a: Path | str, b: Path | str, *, task: str | None = None, n_boot: int | None = None,
            seed: int | None = None, tasks_dirs: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Compare two cells, or two folders of seed cells paired seed by seed. Raises before computing anything
    when the two sides cannot be compared."""
    from fairbench.data.task import get_task

    (side_a, folder_a), (side_b, folder_b) = resolve_side(a), resolve_side(b)
    matched: dict[str, Any] | None = None
    if folder_a != folder_b:  # one cell against a folder of seeds: the folder's cell of the same seed
        if folder_b:
            side_b = {None: _matching_seed(side_a, a, side_b, b)}
            matched = {"side": "b", "folder": str(b), "seed": side_b[None].seed}
        else:
            side_a = {None: _matching_seed(side_b, b, side_a, a)}
            matched = {"side": "a", "folder": str(a), "seed": side_a[None].seed}
    cells = list(side_a.values()) + list(side_b.values())
    names = {c.doc["task"]["name"] for c in cells if c.doc and (c.doc.get("task") or {}).get("name")}
    if task is None:
        if len(names) > 1:
            raise FairbenchError(f"{a} and {b} are cells of different tasks ({', '.join(sorted(names))}): a paired "
                                 f"comparison needs the same task and test samples")
        if not names:
            raise FairbenchError(f"{a}, {b}: no metrics.json names the task; pass --task")
        task = names.pop()
    elif names - {task}:
        raise FairbenchError(f"--task {task}, but the cells are of task(s) {', '.join(sorted(names - {task}))}")
    card = get_task(task, tasks_dirs)
    if n_boot is None:
        n_boot = int(card.evaluation.n_boot)
    if n_boot < 0:
        raise FairbenchError(f"--n-boot must be >= 0, got {n_boot}")
    seed = 0 if seed is None else int(seed)
    if not (folder_a and folder_b):
        result = compare_pair(next(iter(side_a.values())), next(iter(side_b.values())), card, n_boot=n_boot,
                              seed=seed)
        if matched is not None:
            result["matched_seed"] = matched
        return result
    common = sorted(s for s in side_a.keys() & side_b.keys() if s is not None)
    if not common:
        raise FairbenchError(f"{a} (seeds {sorted(k for k in side_a if k is not None)}) and {b} (seeds "
                             f"{sorted(k for k in side_b if k is not None)}) share no seed to pair")
    per_seed = {s: compare_pair(side_a[s], side_b[s], card, n_boot=n_boot, seed=seed) for s in common}
    unpaired = {"a": sorted(k for k in side_a if k not in common and k is not None),
                "b": sorted(k for k in side_b if k not in common and k is not None)}
    first = per_seed[common[0]]
    return {"a": {**first["a"], "path": str(a), "seeds": common}, "b": {**first["b"], "path": str(b), "seeds": common},
            "task": card.name, "eval_split": first["eval_split"], "n": first["n"], "n_boot": n_boot, "seed": seed,
            "seeds": common, "unpaired_seeds": unpaired,
            "across_seeds": {"methods": ACROSS_METHOD, "metrics": across_seeds(per_seed)},
            "per_seed": {str(s): r for s, r in per_seed.items()}}
