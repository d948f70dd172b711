"""One evaluation pass: its metrics as paths into the result, the point estimate, reasons and intervals.

A pass maps the statistics of its slices (slice 0 = all evaluated rows, then one per known group) to
``{path: values}``; paths are tuples such as ``("overall", "auc")`` or
``("attributes", "race", "groups", "Asian", "tpr")``, with a class name appended for per-class metrics.
The same mapping serves the point estimate and every bootstrap chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fairbench.metrics._bootstrap import bootstrap_values, outside_note, percentile_intervals
from fairbench.metrics._kernels import ones_weights, pass_stats
from fairbench.metrics._pass import Pass, Path
from fairbench.metrics._plan import PassData, build_plan
from fairbench.metrics._reasons import explain
from fairbench.metrics._stats import SliceStats

__all__ = ["Pass", "PassResult", "run_pass"]

@dataclass
class PassResult:
    values: dict[Path, float | None]
    counts: dict[Path, int]  # n, n_pos, n_neg or n_per_class entries
    notes: dict[Path, str]
    ci: dict[Path, list[float] | None]


def _counts(p: Pass, stats: SliceStats, out: dict[Path, int]) -> None:
    slices = [0] if p.attribute is None else range(1, len(p.groups) + 1)
    for s in slices:
        base = p.slice_path(s, "n")[:-1]
        true = stats.true_counts[s]
        out[base + ("n",)] = int(round(stats.total[s]))
        if p.binary:
            out[base + ("n_pos",)] = int(round(true[1]))
            out[base + ("n_neg",)] = int(round(true[0]))
        else:
            for j, c in enumerate(p.classes):
                out[base + ("n_per_class", c)] = int(round(true[j]))


def run_pass(p: Pass, data: PassData, no_finding: int | None, n_boot: int, seed: int) -> PassResult:
    plan = build_plan(data)
    bad = plan.slice_bad > 0
    stats = pass_stats(ones_weights(plan), plan, no_finding)
    point = p.evaluate(stats, bad)
    values = {path: (float(v[0]) if np.isfinite(v[0]) else None) for path, v in point.items()}
    counts: dict[Path, int] = {}
    point_stats = stats[0]
    _counts(p, point_stats, counts)
    notes = explain(p, point_stats, plan.slice_bad, values)
    ci: dict[Path, list[float] | None] = {}
    paths = [path for path, v in values.items() if v is not None]
    if n_boot > 0 and paths:
        samples = bootstrap_values(plan, lambda st: p.evaluate(st, bad), paths, n_boot, seed, no_finding)
        bounds, n_undefined = percentile_intervals(samples)
        for j, path in enumerate(paths):
            if np.isnan(bounds[j, 0]):
                ci[path] = None
                notes[("ci",) + path] = f"undefined on all {n_boot} resamples"
                continue
            ci[path] = [float(bounds[j, 0]), float(bounds[j, 1])]
            said = []
            if n_undefined[j]:
                said.append(f"undefined on {int(n_undefined[j])} of {n_boot} resamples; interval from the others")
            outside = outside_note(values[path], *ci[path])  # type: ignore[arg-type]
            if outside:
                said.append(outside)
            if said:
                notes[("ci",) + path] = "; ".join(said)
    return PassResult(values=values, counts=counts, notes=notes, ci=ci)
