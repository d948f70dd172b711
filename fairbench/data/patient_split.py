"""Deterministic patient-level splits.

Each patient lands in one split from a hash of ``salt`` and its id (SHA-256, first 8 bytes as a number in
[0, 1)), compared with the cumulative split fractions. The assignment of one patient never depends on which
other patients are present, on row order, on a random generator's version or on the platform: the same
(salt, id) always gives the same split, so splits are patient-disjoint by construction and reproducible.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fairbench.cards import Fields

__all__ = ["PatientSplit", "unit_hash"]


def unit_hash(salt: str, key: Any) -> float:
    """A number in [0, 1) from SHA-256 of ``"salt|key"``."""
    digest = hashlib.sha256(f"{salt}|{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


@dataclass(frozen=True)
class PatientSplit:
    fractions: tuple[tuple[str, float], ...]
    salt: str

    @classmethod
    def parse(cls, f: Fields, splits: tuple[str, ...] = ("train", "val", "test")) -> PatientSplit:
        """From a card mapping like ``{train: 0.7, val: 0.1, test: 0.2, salt: "name-v1"}``."""
        salt = f.get("salt", str)
        fracs = []
        for s in splits:
            x = f.get(s, float)
            if not 0.0 <= x <= 1.0:
                f.fail(s, f"must be a fraction in [0, 1], got {x}")
            fracs.append((s, float(x)))
        f.no_unknown()
        total = sum(x for _, x in fracs)
        if abs(total - 1.0) > 1e-9:
            f.fail("", f"fractions must sum to 1, got {total:g}")
        return cls(tuple(fracs), salt)

    def assign(self, patient_ids: Iterable[Any]) -> np.ndarray:
        """The split name of each patient id (object array)."""
        ids = pd.Series(list(patient_ids) if not isinstance(patient_ids, pd.Series) else patient_ids.to_numpy())
        names = np.asarray([s for s, _ in self.fractions], dtype=object)
        edges = np.cumsum([x for _, x in self.fractions])
        uniq = ids.drop_duplicates()
        u = np.fromiter((unit_hash(self.salt, pid) for pid in uniq), dtype=np.float64, count=len(uniq))
        j = np.minimum(np.searchsorted(edges, u, side="right"), len(names) - 1)
        lookup = pd.Series(names[j], index=uniq.to_numpy())
        return lookup.reindex(ids.to_numpy()).to_numpy(dtype=object)

    def as_dict(self) -> dict[str, Any]:
        return {**dict(self.fractions), "salt": self.salt}
