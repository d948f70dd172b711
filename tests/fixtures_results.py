"""Fabricated result cells (predictions.parquet + metrics.json, written as the pipeline writes them) for the
leaderboard, plot and check tests: no model runs, so each cell takes milliseconds.

Scores follow a known recipe: ``strength`` sets how well the score separates the classes, ``bias`` how much of
that separation the age >= 60 group loses, so tests know which entry must come out best.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from fairbench.data.task import get_task
from fairbench.pipeline import _samples_sha256, metrics_document
from fairbench.results import METRICS, PREDICTIONS, cell_dir, write_json

STARTED = "2026-01-0{day}T12:00:00+00:00"


def predictions(task: str, *, strength: float, bias: float, seed: int, n_test: int = 400, n_val: int = 200,
                salt: str = "", same_samples: bool = False) -> pd.DataFrame:
    """``same_samples``: labels and groups depend on (task, seed) only, so cells of different models are
    evaluated on the same samples (what a paired comparison needs); only the scores differ."""
    card = get_task(task)
    rng = np.random.default_rng(zlib.crc32(f"{task}/{salt}/{seed}".encode()))
    sample_rng = np.random.default_rng(zlib.crc32(f"{task}/samples/{seed}".encode())) if same_samples else rng
    frames = []
    for split, n in (("val", n_val), ("test", n_test)):
        k = len(card.classes)
        label = sample_rng.integers(0, k, n)
        sex = sample_rng.choice(["F", "M"], n)
        old = sample_rng.random(n) < 0.45
        race = sample_rng.choice(["Asian", "Black", "White"], n, p=[0.3, 0.2, 0.5])
        signal = strength * np.where(old, 1.0 - bias, 1.0)
        logits = rng.normal(0.0, 1.0, (n, k))
        logits[np.arange(n), label] += 2.0 * signal
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        cols: dict = {"sample_id": [f"{split}-{i:05d}" for i in range(n)], "split": split, "label": label}
        for j, c in enumerate(card.classes):
            cols[f"prob_{c}"] = probs[:, j]
        attrs = {"sex": sex, "age": np.where(old, ">=60", "<60"), "race": race}
        for a in card.attributes:
            cols[f"attr_{a}"] = pd.array(attrs[a], dtype="string")
        frames.append(pd.DataFrame(cols))
    return pd.concat(frames, ignore_index=True)


def fabricate_cell(root: Path, *, task: str = "synth_cxr", model: str = "tinyclip", adapt: str = "zeroshot",
                   seed: int = 0, strength: float = 1.0, bias: float = 0.5, n_boot: int = 0, day: int = 1,
                   n_test: int = 400, same_samples: bool = False) -> Path:
    card = get_task(task)
    frame = predictions(task, strength=strength, bias=bias, seed=seed, n_test=n_test, salt=f"{model}/{adapt}",
                        same_samples=same_samples)
    doc = metrics_document(frame, card, n_boot=n_boot, seed=seed, samples_sha256=_samples_sha256(frame, "test"),
                           model={"name": model, "weights": {"source": "random", "sha256": "random"}},
                           adapt={"name": adapt, "params": {}}, config={"seed": seed})
    doc["provenance"] = {"fairbench_version": "0.1.0", "git_commit": "0123456789abcdef", "git_dirty": False,
                         "device": "cpu", "started_at": STARTED.format(day=day), "duration_s": 1.5}
    cell = cell_dir(root, task, model, adapt, seed)
    cell.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(cell / PREDICTIONS, index=False)
    write_json(cell / METRICS, doc)
    return cell


def fabricate_sweep(root: Path, seeds=(0, 1), n_boot: int = 0) -> list[Path]:
    """Three entries with a known order: 'good' (separates well, no age bias), 'biased' (separates well for
    the young only) and 'weak' (separates poorly)."""
    cells = []
    for model, adapt, strength, bias in (("good", "linear_probe", 0.8, 0.0), ("biased", "zeroshot", 0.8, 0.8),
                                         ("weak", "zeroshot", 0.3, 0.0)):
        for s in seeds:
            cells.append(fabricate_cell(root, model=model, adapt=adapt, seed=s, strength=strength, bias=bias,
                                        n_boot=n_boot, day=1 + s))
    return cells
