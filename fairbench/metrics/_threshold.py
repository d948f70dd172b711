"""Decision thresholds for binary tasks: fixed, or chosen on the validation split only."""

from __future__ import annotations

import numpy as np

from fairbench.errors import DataError

__all__ = ["THRESHOLD_RULES", "choose_threshold"]

THRESHOLD_RULES = ("val_youden", "val_f1")


def choose_threshold(y_true: np.ndarray, score: np.ndarray, rule: str) -> float:
    """Threshold t (predict positive when score >= t) maximising the rule on these rows.

    ``"youden"`` maximises TPR - FPR, ``"f1"`` the F1 of the positive class. Candidates are the observed
    scores; ties between candidates go to the highest threshold. Call it with validation rows only.
    """
    y = np.asarray(y_true) == 1
    s = np.asarray(score, dtype=np.float64)
    if len(s) == 0:
        raise DataError("cannot choose a threshold: no validation rows with a defined score")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if rule == "youden" and (n_pos == 0 or n_neg == 0):
        raise DataError(f"cannot choose a Youden threshold: validation rows have {n_pos} positives and "
                        f"{n_neg} negatives (both are needed)")
    if rule == "f1" and n_pos == 0:
        raise DataError("cannot choose an F1 threshold: validation rows have no positives")
    order = np.argsort(-s, kind="stable")
    s_desc, y_desc = s[order], y[order]
    last = np.flatnonzero(np.append(s_desc[1:] != s_desc[:-1], True))  # last row of each distinct score
    tp = np.cumsum(y_desc)[last]
    fp = np.cumsum(~y_desc)[last]
    if rule == "youden":
        value = tp / n_pos - fp / max(n_neg, 1)
    elif rule == "f1":
        value = 2 * tp / (tp + fp + n_pos)
    else:
        raise ValueError(f"unknown threshold rule {rule!r}; expected 'youden' or 'f1'")
    return float(s_desc[last][int(np.argmax(value))])  # argmax: first = highest threshold among ties
