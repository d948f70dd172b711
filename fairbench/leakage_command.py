"""`fairbench leakage`: build the model, encode every split (or read the embedding cache) and probe each protected
attribute (:func:`fairbench.analyses.leakage.attribute_leakage`). Kept apart from :mod:`fairbench.analyses.leakage`,
which the pipeline calls for cells: this command runs the pipeline's pieces, so it sits above the pipeline."""

from __future__ import annotations

import time
from typing import Any

from fairbench.analyses.leakage import leakage_for_cell, leakage_table

__all__ = ["leakage_table", "run_leakage"]


def run_leakage(*, task: str, model: str, weights: str | None = None, seed: int = 0, n_boot: int = 1000,
                features: str = "embedding", tasks_dirs: tuple[Any, ...] = (), data_root: Any = None,
                device: str = "auto", model_args: dict[str, Any] | None = None,
                embedding_cache: bool = True, train_max: int | None = None) -> dict[str, Any]:
    """``fairbench leakage``: build the model, encode (or read from the embedding cache) every split, probe."""
    from fairbench.adapters.base import AdaptContext
    from fairbench.cache import EmbeddingCache
    from fairbench.data.task import get_task
    from fairbench.errors import FairbenchError
    from fairbench.models.base import get_model_card
    from fairbench.models.build import build_model, resolve_device, resolve_model_card
    from fairbench.models.inputs import check_run_inputs
    from fairbench.pipeline import RunConfig, prepared_loader, seed_everything
    from fairbench.precision import inference_batch_size

    if features not in ("embedding", "feature"):
        raise FairbenchError(f"--features must be embedding or feature, got {features!r}")
    t0 = time.perf_counter()
    task_card = get_task(task, tasks_dirs)
    missing = [s for s in ("train", "val", "test") if s not in task_card.splits]
    if missing:
        raise FairbenchError(f"task '{task}': leakage probes need train, val and test splits; it has "
                             f"{', '.join(task_card.splits)}")
    card = resolve_model_card(get_model_card(model), weights, model_args or {})
    dev = resolve_device(device)
    run_cfg = RunConfig(task=task, model=model, data_root=data_root, weights=weights, tasks_dirs=tuple(tasks_dirs),
                        model_args=dict(model_args or {}))
    data = prepared_loader(run_cfg, task_card, card)
    check_run_inputs(card, weights, task=task_card, loader=data, data_root=data_root)
    seed_everything(seed)
    built = build_model(card, weights, dev)
    ctx = AdaptContext(task=task_card, model=built, seed=seed, data_root=data_root, _loader=data,
                       embedding_cache=EmbeddingCache() if embedding_cache else None,
                       batch_size=inference_batch_size(dev))
    result = leakage_for_cell(ctx, n_boot=n_boot, features=features, train_max=train_max)
    return {"task": task_card.name, "model": card.name, "weights": built.weights_info, "seed": seed,
            "n_boot": n_boot, "features": features, "train_max": train_max, "leakage": result, "embedding_cache": ctx.embedding_report(),
            "duration_s": round(time.perf_counter() - t0, 2)}


