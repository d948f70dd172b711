"""The balanced, patient-disjoint NIH subset recipe behind ``nih6x200`` (``fairbench tasks build``).

Given the NIH metadata and a card's ``dataset.options.recipe``::

    recipe:
      findings: [Atelectasis, Effusion, ...]     # single-label images of these findings only
      per_cell: {train: 20, val: 10, test: 20}   # images per finding x sex x age group, per split
      age_cut: 60                                # young = age < 60, old = age >= 60
      patient_split: {train: 0.4, val: 0.2, test: 0.4, salt: nih6x200-v1}
      views: [PA, AP]                            # optional filter (default: both)

1. Candidates: rows whose ``Finding Labels`` is exactly one of ``findings``, sex M or F, view in ``views``.
2. Every patient goes to one split by a salted hash of the patient id (:mod:`fairbench.data.patient_split`),
   so the splits are patient-disjoint whatever is sampled later.
3. Every candidate gets a rank: SHA-256 of ``"salt|image index"``.
4. Cells (split x finding x sex x age group) are filled scarcest first (fewest distinct candidate patients;
   ties in split, finding, sex, age order), each with its ``per_cell[split]`` lowest-ranked candidates,
   taking at most one image per patient across the whole task (so no patient appears twice anywhere).
   A cell that cannot be filled is an error naming it; nothing is filled partially.
5. Rows are written sorted by split (train, val, test), finding (recipe order), sex, age group and image
   index, as plain CSV with ``\\n`` line ends: the output is a pure function of the metadata and the recipe.
"""

from __future__ import annotations

import csv
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fairbench.cards import Fields
from fairbench.data.patient_split import PatientSplit
from fairbench.errors import CardError, DataError

__all__ = ["Recipe", "build", "cell_counts", "select", "write_split_csv"]

SEXES = ("F", "M")
AGE_GROUPS = ("young", "old")


@dataclass(frozen=True)
class Recipe:
    findings: tuple[str, ...]
    per_cell: tuple[tuple[str, int], ...]
    age_cut: float
    patient_split: PatientSplit
    views: tuple[str, ...] = ("PA", "AP")
    source: str = ""

    @classmethod
    def parse(cls, f: Fields) -> Recipe:
        findings = f.str_list("findings")
        if not findings or len(set(findings)) != len(findings):
            f.fail("findings", "must list distinct NIH finding names")
        if "No Finding" in findings:
            f.fail("findings", "must not include 'No Finding' (the recipe picks single-finding images)")
        pc = f.sub("per_cell")
        per_cell = []
        for s in ("train", "val", "test"):
            n = pc.get(s, int)
            if n < 0:
                pc.fail(s, f"must be >= 0, got {n}")
            per_cell.append((s, n))
        pc.no_unknown()
        age_cut = f.get("age_cut", float, 60.0)
        ps = PatientSplit.parse(f.sub("patient_split"))
        views = tuple(f.str_list("views", ["PA", "AP"]))
        if set(views) - {"PA", "AP"} or not views:
            f.fail("views", f"must list PA and/or AP, got {list(views)}")
        f.no_unknown()
        return cls(tuple(findings), tuple(per_cell), age_cut, ps, views, source=f.source)

    def check_against(self, card: Any) -> None:
        """The recipe's findings must be exactly the card's classes (through its label map, if any)."""
        label_map = card.label_map or {}
        mapped = [label_map.get(x, label_map.get("*", x)) for x in self.findings]
        if sorted(mapped) != sorted(card.classes):
            raise CardError(f"{self.source}: field 'recipe.findings' {list(self.findings)} must be the card's "
                            f"classes {list(card.classes)} (one finding per class)")


def _rank(salt: str, key: str) -> str:
    return hashlib.sha256(f"{salt}|{key}".encode()).hexdigest()


def candidates(meta: pd.DataFrame, recipe: Recipe) -> pd.DataFrame:
    df = meta[meta["finding"].isin(recipe.findings) & meta["sex"].isin(SEXES) & meta["view"].isin(recipe.views)]
    df = df.copy()
    df["age_group"] = [AGE_GROUPS[int(a >= recipe.age_cut)] for a in df["age"]]
    df["split"] = recipe.patient_split.assign(df["patient_id"])
    salt = recipe.patient_split.salt
    df["rank"] = [_rank(salt, name) for name in df["image_index"]]
    return df.sort_values("rank", kind="stable")


def select(meta: pd.DataFrame, recipe: Recipe) -> pd.DataFrame:
    """The recipe's samples (columns image_index, patient_id, finding, sex, age, view, split), sorted."""
    df = candidates(meta, recipe)
    splits = [s for s, _ in recipe.per_cell]
    need = dict(recipe.per_cell)
    groups = {key: g for key, g in df.groupby(["split", "finding", "sex", "age_group"], sort=False)}
    cells = [(s, f, x, a) for s in splits for f in recipe.findings for x in SEXES for a in AGE_GROUPS]
    order = {k: i for i, k in enumerate(cells)}
    avail = {c: (groups[c]["patient_id"].nunique() if c in groups else 0) for c in cells}
    used: set[int] = set()
    chosen = []
    for cell in sorted(cells, key=lambda c: (avail[c], order[c])):
        n = need[cell[0]]
        if n == 0:
            continue
        g = groups.get(cell)
        picked = []
        if g is not None:
            for idx, pid in zip(g.index, g["patient_id"]):
                if pid in used:
                    continue
                used.add(pid)
                picked.append(idx)
                if len(picked) == n:
                    break
        if len(picked) < n:
            split, finding, sex, age = cell
            raise DataError(f"{recipe.source}: recipe cannot fill split {split}, {finding}, sex {sex}, age "
                            f"{age}: {len(picked)} of {n} images from distinct unused patients "
                            f"({avail[cell]} patients are candidates); lower per_cell or change the findings")
        chosen.extend(picked)
    out = df.loc[chosen]
    key = pd.DataFrame({
        "s": out["split"].map({s: i for i, s in enumerate(splits)}),
        "f": out["finding"].map({f: i for i, f in enumerate(recipe.findings)}),
        "x": out["sex"].map({s: i for i, s in enumerate(SEXES)}),
        "a": out["age_group"].map({a: i for i, a in enumerate(AGE_GROUPS)}),
        "i": out["image_index"],
    }, index=out.index)
    out = out.loc[key.sort_values(["s", "f", "x", "a", "i"], kind="stable").index]
    return out[["image_index", "patient_id", "finding", "sex", "age", "view", "split"]].reset_index(drop=True)


def cell_counts(samples: pd.DataFrame, age_cut: float = 60.0) -> pd.DataFrame:
    """Images per (split, finding, sex, age group): the balance a recipe promises."""
    age_group = [AGE_GROUPS[int(int(a) >= age_cut)] for a in samples["age"]]
    return samples.assign(age_group=age_group).groupby(["split", "finding", "sex", "age_group"]).size()


def write_split_csv(samples: pd.DataFrame, path: Path) -> None:
    """Plain CSV, ``\\n`` line ends, written atomically (a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(samples.columns)
            for row in samples.itertuples(index=False):
                w.writerow([str(v) for v in row])
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build(meta: pd.DataFrame, recipe: Recipe, path: Path) -> Path:
    write_split_csv(select(meta, recipe), path)
    return path
