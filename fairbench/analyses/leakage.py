"""Attribute leakage: how well a linear probe reads each protected attribute from frozen image embeddings.

For every attribute of the task: a logistic regression (features standardised with the fitting data's
statistics, ``C`` chosen by stratified 3-fold cross-validation on train+val, lbfgs) is fitted from the image
embeddings of the train and val splits to the attribute's groups and scored on the test split by ROC AUC
(binary attributes: the AUC of the second group in sorted order; more than two groups: macro one-vs-rest).
The interval is a percentile bootstrap over test samples (the probe is not refitted; the resamples' AUCs are
computed together from sample counts, :func:`bootstrap_aucs`). Chance is 0.5.
Samples whose group is unknown are left out, and so are test samples of a group the probe never saw.

In a cell (:data:`CELL_TRAIN_MAX`), the probe is fitted on the val split and a fixed random subsample of at most
500 training images (:func:`train_rows`: drawn with :data:`SUBSAMPLE_SEED`, the same in every cell of a model and
task, in whole chunks where the image source renders chunks, and encoded through the embedding cache as an entry
of its own): a zero-shot cell encodes only val and test for itself, and encoding the whole training split for the
probe doubled its cost on synth_cxr.
``fairbench leakage`` fits on all of train + val unless ``--train-max`` caps it.

This follows the "linear probe on frozen features" design of Gichoya et al. 2022 (experiment A3) and
Glocker et al. 2023 (SPLIT), with a logistic regression in place of their trained dense layer. It measures
what a linear read-out can recover, not what the model uses for its predictions.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np

__all__ = ["FROZEN_ADAPTERS", "attribute_leakage", "fit_description", "frozen_encoder", "known_group", "leakage_for_cell",
           "leakage_table", "train_rows"]

#: adapters whose image encoder stays frozen, so the cached embeddings are the cell's own
FROZEN_ADAPTERS = ("zeroshot", "linear_probe", "mlp")
C_GRID = (1e-2, 1e-1, 1.0)
N_FOLDS = 3
#: training images a cell's probe is fitted on at most, beside the val split (None: all)
CELL_TRAIN_MAX = 500
#: the seed of the training subsample (fixed: the same rows whatever the cell's seed)
SUBSAMPLE_SEED = 0
#: about how many bytes of [resamples, n] work arrays the bootstrap holds at once (:func:`bootstrap_aucs`)
BOOT_BLOCK_BYTES = 32 << 20
_BOOT_ARRAYS = 8  # [b, n] 8-byte arrays alive at once in a block (draws, counts, their reorder, masks, sums)
#: test rows the probe predicts at a time (each chunk cast to float64 alone)
PREDICT_ROWS = 8192


def known_group(value: Any) -> bool:
    """A group label that is set (not None, NaN or empty)."""
    return value is not None and not (isinstance(value, float) and np.isnan(value)) and str(value) != ""


def frozen_encoder(adapter: Any) -> bool:
    """Whether ``adapter`` leaves the image encoder as built (the mitigation adapters on the ``head`` backbone too)."""
    if adapter.name in FROZEN_ADAPTERS:
        return True
    return adapter.name in ("resample", "reweight", "groupdro") and adapter.params.get("backbone") == "head"


def _auc(y: np.ndarray, p: np.ndarray, n_classes: int) -> float:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y)) < 2:
        return float("nan")
    if n_classes == 2:
        return float(roc_auc_score(y, p[:, 1]))
    present = np.unique(y)
    if len(present) < n_classes:  # a group absent from this resample: macro over the groups present
        sub = p[:, present] / p[:, present].sum(axis=1, keepdims=True)
        y = np.searchsorted(present, y)
        if len(present) == 2:
            return float(roc_auc_score(y, sub[:, 1]))
        return float(roc_auc_score(y, sub, multi_class="ovr", average="macro"))
    return float(roc_auc_score(y, p, multi_class="ovr", average="macro"))


def _weighted_ovr_auc(w: np.ndarray, positive: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Per row of ``w`` (sample counts ``[B, n]`` of bootstrap resamples): the ROC AUC of ``score`` for
    ``positive`` against the rest on that resample, ties counted one half (Mann-Whitney, as sklearn's
    trapezoidal ROC area). NaN where a resample lacks positives or negatives."""
    order = np.argsort(score, kind="stable")
    s = score[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # first index of each run of tied scores
    wo = w[:, order]
    pos = positive[order]
    wp = np.add.reduceat(np.where(pos, wo, 0), starts, axis=1).astype(np.float64)
    wn = np.add.reduceat(np.where(pos, 0, wo), starts, axis=1).astype(np.float64)
    below = np.cumsum(wn, axis=1) - wn  # negatives scored strictly below each tie run
    n_pos, n_neg = wp.sum(axis=1), wn.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (wp * (below + 0.5 * wn)).sum(axis=1) / (n_pos * n_neg)
    auc[(n_pos == 0) | (n_neg == 0)] = np.nan
    return auc


def bootstrap_aucs(y: np.ndarray, p: np.ndarray, n_classes: int, n_boot: int, seed: int) -> np.ndarray:
    """:func:`_auc` on ``n_boot`` resamples of the test samples (``rng.integers(0, n, n)`` each: drawn block by
    block, the same resamples as one draw per resample), vectorised over the resamples of a block; NaN where
    undefined. A block holds as many resamples as keep its ``[b, n]`` work arrays near
    :data:`BOOT_BLOCK_BYTES` (at most 250), so memory does not grow with ``n_boot x n``."""
    n = len(y)
    if n_boot <= 0 or n == 0:
        return np.empty(0)
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    step = int(np.clip(BOOT_BLOCK_BYTES // (n * 8 * _BOOT_ARRAYS), 1, 250))
    for lo in range(0, n_boot, step):
        b = min(step, n_boot - lo)
        rows = rng.integers(0, n, (b, n))
        w = np.bincount((np.arange(b)[:, None] * n + rows).ravel(), minlength=b * n).reshape(b, n)
        if n_classes == 2:
            out[lo:lo + b] = _weighted_ovr_auc(w, y == 1, p[:, 1])
            continue
        present = np.stack([(w[:, y == c].sum(axis=1) > 0) for c in range(n_classes)], axis=1)
        per_class = np.stack([_weighted_ovr_auc(w, y == c, p[:, c]) for c in range(n_classes)], axis=1)
        out[lo:lo + b] = per_class.mean(axis=1)
        for r in np.flatnonzero(~present.all(axis=1)):  # a group absent from this resample: as _auc does it
            out[lo + r] = _auc(y[rows[r]], p[rows[r]], n_classes)
    return out


def attribute_leakage(x_fit: np.ndarray, g_fit: np.ndarray, x_test: np.ndarray, g_test: np.ndarray, *,
                      n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict[str, Any]:
    """The probe's test AUC for one attribute. ``g_*`` are group labels (None / '' = unknown, left out)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    known_fit = np.array([known_group(g) for g in g_fit])
    groups = sorted({str(g) for g in np.asarray(g_fit)[known_fit]})
    out: dict[str, Any] = {"chance": 0.5, "groups": groups, "method": "logistic regression, C in (0.01, 0.1, 1) by "
                           "3-fold CV on train+val, test AUC (macro one-vs-rest for > 2 groups), percentile bootstrap"}
    if len(groups) < 2:
        return {**out, "auc": None, "ci": None, "n": 0, "note": "fewer than two groups in train+val"}
    index = {g: i for i, g in enumerate(groups)}
    y_fit = np.array([index[str(g)] for g in np.asarray(g_fit)[known_fit]])
    keep = np.array([g is not None and str(g) in index for g in g_test])
    y_test = np.array([index[str(g)] for g in np.asarray(g_test)[keep]], dtype=int)
    counts = np.bincount(y_fit, minlength=len(groups))
    folds = int(min(N_FOLDS, counts.min()))
    if folds < 2:
        return {**out, "auc": None, "ci": None, "n": int(keep.sum()),
                "note": f"a group has {int(counts.min())} train+val sample(s); cross-validation needs 2"}
    t0 = time.perf_counter()
    clf = make_pipeline(StandardScaler(), LogisticRegressionCV(
        Cs=list(C_GRID), cv=StratifiedKFold(folds, shuffle=True, random_state=seed), scoring="roc_auc_ovr"
        if len(groups) > 2 else "roc_auc", max_iter=1000, tol=1e-3))
    from threadpoolctl import threadpool_limits

    # one BLAS thread: on 64-512-d embeddings the threads' start-up and contention cost more than they gain
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", FutureWarning)
        clf.fit(x_fit[known_fit], y_fit)
    # in chunks of rows, each cast to float64 on its own: no float64 copy of the whole test split
    rows = np.flatnonzero(keep)
    p = np.concatenate([clf.predict_proba(np.asarray(x_test[rows[i:i + PREDICT_ROWS]], dtype=np.float64))
                        for i in range(0, len(rows), PREDICT_ROWS)]) if len(rows) else np.zeros((0, len(groups)))
    k = len(groups)
    auc = _auc(y_test, p, k)
    n = len(y_test)
    boots = bootstrap_aucs(y_test, p, k, n_boot if n else 0, seed)
    boots = boots[~np.isnan(boots)]
    ci = [float(np.quantile(boots, alpha / 2)), float(np.quantile(boots, 1 - alpha / 2))] if len(boots) else None
    c = float(np.ravel(clf[-1].C_)[0])
    return {**out, "auc": None if np.isnan(auc) else auc, "ci": ci, "n": int(n), "n_fit": int(known_fit.sum()),
            "C": c, "n_boot": len(boots), "test_counts": {g: int((y_test == i).sum()) for g, i in index.items()},
            "fit_s": round(time.perf_counter() - t0, 3)}


def train_rows(n: int, train_max: int | None, block: int = 1) -> np.ndarray | None:
    """The training rows a probe is fitted on: None for all of them (``train_max`` None or >= ``n``), else
    ``train_max`` rows drawn without replacement with :data:`SUBSAMPLE_SEED`, sorted. ``block`` > 1: whole runs
    of ``block`` consecutive rows (an image source that renders that many at once, like the synthetic loader's
    chunks of 64) in a random order, the last one cut short, so the subsample renders ``train_max`` images, not
    every chunk it touches."""
    if train_max is None or n <= train_max:
        return None
    if train_max < 0:
        raise ValueError(f"train_max must be >= 0, got {train_max}")
    rng = np.random.default_rng(SUBSAMPLE_SEED)
    if block <= 1:
        return np.sort(rng.choice(n, size=train_max, replace=False))
    starts = rng.permutation(-(-n // block)) * block
    rows = np.concatenate([np.arange(s, min(n, s + block)) for s in starts])
    return np.sort(rows[:train_max])


def leakage_for_cell(ctx: Any, *, n_boot: int = 1000, features: str = "embedding",
                     train_max: int | None = None) -> dict[str, Any]:
    """Per attribute of ``ctx.task``: :func:`attribute_leakage` on the cached ``features`` of train+val -> test,
    the training split cut to :func:`train_rows` (``train_max`` None: all of it; cells pass
    :data:`CELL_TRAIN_MAX`)."""
    train = ctx.split("train")
    rows = train_rows(len(train), train_max, int(getattr(train.images, "block", 1) or 1))
    enc_train = ctx.encode("train") if rows is None else ctx.encode_rows("train", rows, tag="leakage-fit")
    enc = {"train": enc_train[features], "val": ctx.encode("val")[features], "test": ctx.encode("test")[features]}
    x_fit = np.concatenate([enc["train"], enc["val"]]).astype(np.float64)
    fit_train = {"n": len(train) if rows is None else len(rows), "of": len(train),
                 **({} if rows is None else {"subsample_seed": SUBSAMPLE_SEED})}
    out: dict[str, Any] = {}
    for a in ctx.task.attributes:
        g_train = np.asarray(train.attributes[a], dtype=object)
        g_fit = np.concatenate([g_train if rows is None else g_train[rows],
                                np.asarray(ctx.split("val").attributes[a], dtype=object)])
        g_test = np.asarray(ctx.split("test").attributes[a], dtype=object)
        out[a] = {**attribute_leakage(x_fit, g_fit, enc["test"], g_test, n_boot=n_boot,
                                      seed=ctx.seed), "features": features, "fit_train": fit_train}
    return out


def fit_description(records: dict[str, Any]) -> str:
    """What the probes of ``records`` (``analyses.leakage``) were fitted on, for titles and intros: "train + val",
    or "val + 500 of 2000 training images" when the training split was cut (records without ``fit_train``, written
    before it was recorded: "train + val")."""
    fit = next((r.get("fit_train") for r in records.values() if isinstance(r, dict) and r.get("fit_train")), None)
    if not fit or fit.get("n") == fit.get("of"):
        return "train + val"
    return f"val + {fit['n']} of {fit['of']} training images"


def leakage_table(doc: dict[str, Any]) -> str:
    """Plain-text table: one row per attribute."""
    rows = [f"{'attribute':<12} {'AUC':>6} {'95% CI':>17} {'chance':>7} {'n':>6}  groups"]
    for a, r in doc["leakage"].items():
        auc = "-" if r.get("auc") is None else f"{r['auc']:.3f}"
        ci = "-" if not r.get("ci") else f"[{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]"
        rows.append(f"{a:<12} {auc:>6} {ci:>17} {r['chance']:>7.1f} {r['n']:>6}  {', '.join(r['groups'])}"
                    + (f"  ({r['note']})" if r.get("note") else ""))
    return "\n".join(rows)
