"""``fairbench embed``: a model's image embeddings of a task's samples, one parquet row per sample.

Columns: ``sample_id``, ``split``, ``label``, the task's ``attr_*`` columns and ``image_embedding`` (a list
column, float32): what the model's own image-features call returns, before any normalisation (open_clip
``encode_image``; transformers ``get_image_features(...).pooler_output``; the families' own encoders otherwise:
the ``embedding`` of :meth:`fairbench.models.base.VLModel.image_outputs`). Families whose probe feature is another
layer add ``image_feature``.

The parquet metadata key ``fairbench`` holds JSON: the model (name, card sha256, weights and inputs provenance,
model arguments, resolved architecture and preprocessing), the task, how the model compares images with texts
(``similarity``: whether it L2-normalises both before its scaled dot product), the text embeddings of each
class's prompts (``text_embeddings``: per class, one raw ``encode_text`` row per prompt, unnormalised; None for
image-only models, with the reason), the embedding cache report and the run provenance.

Image outputs come through :meth:`fairbench.adapters.base.AdaptContext.encode`, so the embedding cache is the
one runs use: a second call on the same inputs encodes nothing.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fairbench.errors import FairbenchError

__all__ = ["METADATA_KEY", "EmbedConfig", "embed"]

METADATA_KEY = b"fairbench"


@dataclass
class EmbedConfig:
    task: str
    model: str
    out: Path
    splits: tuple[str, ...] = ()
    weights: str | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    data_root: Path | None = None
    tasks_dirs: tuple[Path, ...] = ()
    device: str = "auto"
    embedding_cache: bool = True
    image_cache: str = "auto"


def _similarity_rule(model: Any) -> dict[str, Any]:
    from fairbench.models.base import VLModel
    from fairbench.models.hf import HFCLIPModel

    cls = type(model)
    if cls.similarity is VLModel.similarity:
        return {"normalises": True, "rule": "logit_scale * cos(image, text): both L2-normalised first"}
    if issubclass(cls, HFCLIPModel):
        rule = "logit_scale * cos(image, text)" + (" + logit_bias (SigLIP)" if model.head == "sigmoid" else "")
        return {"normalises": True, "rule": rule + ": both L2-normalised first"}
    return {"normalises": None, "rule": f"{cls.__name__}.similarity (family-specific; docs/models.md)"}


def _text_embeddings(model: Any, task: Any) -> tuple[dict[str, Any] | None, str]:
    import torch

    from fairbench.models.zeroshot import family_prompts

    try:
        prompts, _ = family_prompts(model, task)
        with torch.no_grad():
            out = {c: {"prompts": list(p), "embeddings": model.encode_text(model.tokenize(p)).float().cpu().tolist()}
                   for c, p in zip(task.classes, prompts)}
    except FairbenchError as exc:
        return None, str(exc)
    return out, "raw encode_text of each prompt (unnormalised), per class"


def embed(cfg: EmbedConfig) -> dict[str, Any]:
    """Write ``cfg.out``; returns the metadata written."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fairbench.adapters.base import AdaptContext
    from fairbench.cache import EmbeddingCache
    from fairbench.data.task import get_task
    from fairbench.models.base import get_model_card
    from fairbench.models.build import build_model, resolve_device, resolve_model_card
    from fairbench.models.inputs import check_run_inputs
    from fairbench.pipeline import RunConfig, prepared_loader
    from fairbench.precision import inference_batch_size
    from fairbench.results import atomic_write, now_iso, provenance

    started, t0 = now_iso(), time.time()
    task = get_task(cfg.task, cfg.tasks_dirs)
    card = resolve_model_card(get_model_card(cfg.model), cfg.weights, cfg.model_args)
    splits = cfg.splits or tuple(task.splits)
    unknown = [s for s in splits if s not in task.splits]
    if unknown:
        raise FairbenchError(f"--split {unknown[0]}: task '{task.name}' has splits {', '.join(task.splits)}")
    device = resolve_device(cfg.device)
    run_cfg = RunConfig(task=cfg.task, model=cfg.model, data_root=cfg.data_root, weights=cfg.weights,
                        tasks_dirs=cfg.tasks_dirs, image_cache=cfg.image_cache, model_args=dict(cfg.model_args))
    data = prepared_loader(run_cfg, task, card)
    check_run_inputs(card, cfg.weights, task=task, loader=data, data_root=cfg.data_root)
    model = build_model(card, cfg.weights, device)
    ctx = AdaptContext(task=task, model=model, seed=0, data_root=cfg.data_root, _loader=data,
                       embedding_cache=EmbeddingCache() if cfg.embedding_cache else None,
                       batch_size=inference_batch_size(device))
    frames = []
    for split in splits:
        samples = ctx.split(split)
        arrays = ctx.encode(split)
        cols: dict[str, Any] = {"sample_id": samples.sample_ids.astype(str), "split": split,
                                "label": samples.labels.astype(np.int64)}
        for a, groups in samples.attributes.items():
            cols[f"attr_{a}"] = pd.array(groups, dtype="string")
        cols["image_embedding"] = list(arrays["embedding"].astype(np.float32))
        if card.probe_feature != "embedding":
            cols["image_feature"] = list(arrays["feature"].astype(np.float32))
        frames.append(pd.DataFrame(cols))
    frame = pd.concat(frames, ignore_index=True)
    text, text_note = _text_embeddings(model, task)
    base_card = get_model_card(card.name)
    meta = {
        "model": {"name": card.name, "card_sha256": card.sha256, "weights": model.weights_info,
                  **({"args": dict(cfg.model_args)} if cfg.model_args else {}),
                  **({"architecture": card.architecture, "preprocessing": dict(card.preprocessing.__dict__)}
                     if not base_card.architecture else {})},
        "task": {"name": task.name, "card_sha256": task.sha256, "classes": list(task.classes),
                 "splits": list(splits)},
        "image_embedding": "the model's own image-features output, before any normalisation",
        "similarity": _similarity_rule(model),
        "text_embeddings": text,
        "text_embeddings_note": text_note,
        "embedding_cache": ctx.embedding_report(),
        "provenance": provenance(device=str(device), started_at=started, duration_s=time.time() - t0),
    }
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           METADATA_KEY: json.dumps(meta, default=str).encode()})
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda p: pq.write_table(table, p))
    return meta
