"""Why a value is undefined, and which groups or classes a summary left out: the ``notes`` of a result."""

from __future__ import annotations

import numpy as np

from fairbench.metrics._pass import Pass, Path
from fairbench.metrics._spec import MetricSpec
from fairbench.metrics._stats import SliceStats

__all__ = ["explain"]


def _slice_reason(p: Pass, spec: MetricSpec, st: SliceStats, bad: int, cls: str | None) -> str:
    if bad:
        return f"{bad} row(s) with NaN probabilities in this slice"
    n = int(round(float(st.total)))
    if n == 0:
        return "empty slice"
    true, pred = st.true_counts, st.pred_counts
    if cls is not None:
        j = p.classes.index(cls)
        return f"{spec.undefined} (class {cls!r}: {int(true[j])} of {n} samples, {int(pred[j])} predicted)"
    if p.binary:
        return f"{spec.undefined} (n={n}, n_pos={int(true[1])}, n_neg={int(true[0])})"
    if spec.name == "auc":
        missing = [c for j, c in enumerate(p.classes) if np.isnan(st.auc[j])]
        return f"one-vs-rest AUC undefined for class(es) {missing} (absent, or the only class present; n={n})"
    return f"{spec.undefined} (n={n})"


def _group_values(p: Pass, values: dict[Path, float | None], name: str, cls: str | None) -> list[float | None]:
    assert p.attribute is not None
    tail = (name,) if cls is None else (name, cls)
    return [values[("attributes", p.attribute, "groups", g) + tail] for g in p.groups]


def _summary_note(p: Pass, spec: MetricSpec, st: SliceStats, bad0: int, values: dict[Path, float | None],
                  path: Path, cls: str | None) -> str | None:
    defined = values[path] is not None
    attr = p.attribute
    assert attr is not None
    if spec.name.endswith("_mean_ovr"):
        family = spec.name[: -len("_mean_ovr")] + "_per_class"
        missing = [c for c in p.classes if values.get(("attributes", attr, family, c)) is None]
        if not defined:
            return f"{family} is undefined for every class"
        return f"mean over classes with a defined {family}; left out: {missing}" if missing else None
    problems, left_out = [], []
    for inp in spec.inputs:
        if spec.uses_overall:
            v0 = np.asarray(next(s for s in p.slice_specs if s.name == inp).fn(st))[0]
            if bad0 or np.isnan(v0):
                problems.append(f"{inp} on all evaluated rows is undefined")
        base_name = inp.removesuffix("_per_class")
        group_vals = _group_values(p, values, inp, cls if inp.endswith("_per_class") else None)
        ok = [g for g, v in zip(p.groups, group_vals, strict=True) if v is not None]
        bad_groups = [g for g, v in zip(p.groups, group_vals, strict=True) if v is None]
        if len(ok) < spec.min_groups:
            problems.append(f"needs at least {spec.min_groups} group(s) with a defined {base_name}; "
                            f"{len(ok)} of {len(p.groups)} have one")
        elif bad_groups:
            left_out.append(f"{bad_groups} (undefined {base_name})")
    if not defined:
        return "; ".join(problems) or "undefined"
    return "groups left out: " + "; ".join(left_out) if left_out else None


def explain(p: Pass, stats: SliceStats, slice_bad: np.ndarray, values: dict[Path, float | None]) -> dict[Path, str]:
    """Notes for one pass: a reason for every undefined value, and what each summary left out."""
    notes: dict[Path, str] = {}
    slice_specs = {s.name: s for s in p.slice_specs}
    summary_specs = {s.name: s for s in p.summary_specs}
    for path, v in values.items():
        if p.attribute is None or path[2] == "groups":
            if v is not None:
                continue
            s_idx = 0 if p.attribute is None else p.groups.index(path[3]) + 1
            rest = path[1:] if p.attribute is None else path[4:]
            spec = slice_specs[rest[0]]
            cls = rest[1] if len(rest) > 1 else None
            notes[path] = _slice_reason(p, spec, stats[s_idx], int(slice_bad[s_idx]), cls)
        else:
            spec = summary_specs[path[2]]
            cls = path[3] if len(path) > 3 else None
            note = _summary_note(p, spec, stats, int(slice_bad[0]), values, path, cls)
            if note:
                notes[path] = note
    return notes
