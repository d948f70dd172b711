"""The adapter contract and the context adapters work in.

An adapter turns a model and a task into class probabilities for the evaluated splits. Frozen-encoder
adapters read image embeddings and probe features through :meth:`AdaptContext.encode`, which encodes each
split once per run and shares the result between adapters; with the on-disk embedding cache
(:mod:`fairbench.cache`, on by default) each image is encoded once across runs too. Trainable adapters
checkpoint into :attr:`AdaptContext.checkpoint_dir` and resume from it when :attr:`AdaptContext.resume`.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from fairbench.cache import EmbeddingCache, embedding_key_parts, module_state_sha256
from fairbench.data.base import SampleSet
from fairbench.data.files import subset_images
from fairbench.data.task import TaskCard
from fairbench.errors import FairbenchError
from fairbench.models.base import VLModel
from fairbench.precision import DTYPES, autocast
from fairbench.progress import bar
from fairbench.registry import Registry

__all__ = ["ADAPTERS", "PARAM_RANGES", "PRECISION_CHECK_N", "AdaptContext", "Adapter", "check_number", "parse_params"]

#: images of a split encoded again in float32 to measure the effect of ``--precision`` (metrics.json)
PRECISION_CHECK_N = 64


@dataclass
class AdaptContext:
    task: TaskCard
    model: VLModel
    seed: int
    data_root: Path | None = None
    batch_size: int = 256
    #: on-disk cache of frozen image outputs (None: off)
    embedding_cache: EmbeddingCache | None = field(default_factory=EmbeddingCache)
    #: where trainable adapters keep per-epoch checkpoints (None: no checkpoints)
    checkpoint_dir: Path | None = None
    #: resume training from ``checkpoint_dir`` (False after --overwrite: start afresh)
    resume: bool = True
    #: frozen-encoder inference precision (fairbench.precision): fp32, bf16 or fp16 autocast
    precision: str = "fp32"
    _splits: dict[str, SampleSet] = field(default_factory=dict)
    _encoded: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    _loader: Any = None
    _weights_sha256: str | None = None
    _reference: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = field(default_factory=dict)
    #: the measured effect of ``precision`` (adapters add to it; :meth:`precision_report`)
    precision_measured: dict[str, Any] = field(default_factory=dict)
    #: cross-dataset evaluation (``--eval-task``): the task whose evaluated split (its card's
    #: ``evaluation.split``) replaces ``task``'s; every other split is ``task``'s. None: in-distribution.
    eval_task: TaskCard | None = None
    #: where ``eval_task``'s data lives (``--eval-data-root``)
    eval_data_root: Path | None = None
    _eval_loader: Any = None

    def task_of(self, split: str) -> TaskCard:
        """The task a split comes from: ``eval_task`` for its evaluated split, else ``task``."""
        if self.eval_task is not None and split == self.eval_task.evaluation.split:
            return self.eval_task
        return self.task

    def split(self, name: str) -> SampleSet:
        if name not in self._splits:
            if self.task_of(name) is not self.task:
                if self._eval_loader is None:
                    self._eval_loader = self.eval_task.loader()  # type: ignore[union-attr]
                self._splits[name] = self.eval_task.load_split(  # type: ignore[union-attr]
                    name, self.eval_data_root, loader=self._eval_loader)
                return self._splits[name]
            if self._loader is None:
                self._loader = self.task.loader()
            self._splits[name] = self.task.load_split(name, self.data_root, loader=self._loader)
        return self._splits[name]

    def encode(self, split: str) -> dict[str, np.ndarray]:
        """``{"embedding": [n, d], "feature": [n, f]}`` for every image of ``split`` (float32), from the
        embedding cache when it holds them (the model as built: never call this after changing its weights)."""
        if split not in self._encoded:
            self._encoded[split] = self._encode_cached(split, self.split(split))
        return self._encoded[split]

    def encode_rows(self, split: str, rows: np.ndarray, *, tag: str) -> dict[str, np.ndarray]:
        """Image outputs of rows ``rows`` of ``split`` only, through the embedding cache as an entry of their own
        (its split recorded as ``<split>:<tag>``), so that the rows are encoded in the same batches whether or not
        the whole split is; not kept on the context."""
        samples = self.split(split)
        rows = np.asarray(rows, dtype=np.int64)
        sub = dataclasses.replace(
            samples, split=f"{split}:{tag}", sample_ids=samples.sample_ids[rows], labels=samples.labels[rows],
            attributes={k: np.asarray(v)[rows] for k, v in samples.attributes.items()},
            images=subset_images(samples.images, rows), texts=None, extra={})
        return self._encode_cached(split, sub)

    def _encode_cached(self, split: str, samples: SampleSet) -> dict[str, np.ndarray]:
        cache = self.embedding_cache
        parts = embedding_key_parts(self.model, self.task_of(split), samples, weights_sha256=self.weights_sha256(),
                                    precision=self.precision) if cache is not None else None
        if cache is not None and parts is not None:  # one writer per entry across workers (fairbench.cache)
            return cache.get_or_compute(parts, len(samples), lambda: self._encode_images(samples.split, samples))
        return self._encode_images(samples.split, samples)

    def weights_sha256(self) -> str:
        """The weights file hash, or a hash of the module's state dict when there is none (random weights)."""
        if self._weights_sha256 is None:
            sha = str(self.model.weights_info.get("sha256") or "")
            self._weights_sha256 = sha if sha and sha != "random" else \
                "state:" + module_state_sha256(self.model.module)
        return self._weights_sha256

    def embedding_report(self) -> dict[str, Any]:
        """For metrics.json: whether each split's image outputs came from the embedding cache."""
        if self.embedding_cache is None:
            return {"enabled": False}
        return {"enabled": True, **self.embedding_cache.report()}

    @torch.no_grad()  # not inference_mode: bf16 autocast on CPU ran 2.3x slower under it (docs/models.md)
    def _encode_images(self, split: str, samples: SampleSet) -> dict[str, np.ndarray]:
        model = self.model
        model.module.eval()
        n = len(samples)
        # one batch of images and pixels at a time; the outputs fill arrays allocated once (no second copy)
        arrays: dict[str, np.ndarray] = {}
        with bar(f"encoding {split} images", n) as b:
            for start in range(0, n, self.batch_size):
                idx = np.arange(start, min(n, start + self.batch_size))
                out = self.image_outputs(model.preprocess(samples.images.load(idx)))
                for key in ("embedding", "feature"):
                    rows = out[key].cpu().numpy()
                    if key not in arrays:
                        arrays[key] = np.empty((n, *rows.shape[1:]), dtype=rows.dtype)
                    arrays[key][start:start + len(idx)] = rows
                b.advance(len(idx))
        if not arrays:  # an empty split: the widths of one image's outputs
            return {k: np.zeros((0, 0), dtype=np.float32) for k in ("embedding", "feature")}
        return arrays

    def image_outputs(self, pixels: torch.Tensor, precision: str | None = None) -> dict[str, torch.Tensor]:
        """The model's image outputs at ``precision`` (default: the run's), as float32 tensors."""
        with autocast(precision or self.precision, self.model.device):
            out = self.model.image_outputs(pixels)
        return {k: v.float() for k, v in out.items()}

    @torch.no_grad()  # not inference_mode: bf16 autocast on CPU ran 2.3x slower under it (docs/models.md)
    def precision_reference(self, split: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The first :data:`PRECISION_CHECK_N` images of ``split`` encoded in float32: their indices and image
        outputs, to measure what ``precision`` changes (:meth:`precision_effect`)."""
        if split not in self._reference:
            samples = self.split(split)
            idx = np.arange(min(len(samples), PRECISION_CHECK_N))
            out = self.image_outputs(self.model.preprocess(samples.images.load(idx)), precision="fp32")
            self._reference[split] = (idx, {k: v.cpu().numpy() for k, v in out.items()})
        return self._reference[split]

    def precision_report(self) -> dict[str, Any]:
        """For metrics.json: the inference precision, the splits whose images were encoded under it, and (for a
        precision other than fp32) its measured effect against float32 on the first :data:`PRECISION_CHECK_N`
        images of the evaluated split: the embeddings' relative error, and what adapters add (zero-shot: the
        probabilities' largest absolute change and the agreement of predicted classes)."""
        report: dict[str, Any] = {"inference": self.precision, "encoded_splits": sorted(self._encoded)}
        if self.precision != "fp32":
            report["autocast_dtype"] = str(DTYPES[self.precision]).replace("torch.", "")
            split = (self.eval_task or self.task).evaluation.split
            if split in self._encoded:
                self.precision_measured.setdefault("split", split)
                self.precision_measured.update(self.precision_effect(split))
            report["effect"] = dict(self.precision_measured)
        return report

    def precision_effect(self, split: str) -> dict[str, Any]:
        """For metrics.json: the largest relative error of the split's embeddings at the run's precision
        against float32, on the first :data:`PRECISION_CHECK_N` images."""
        idx, ref = self.precision_reference(split)
        enc = self.encode(split)
        err = {k: float(np.max(np.linalg.norm(enc[k][idx] - ref[k], axis=1) /
                               np.maximum(np.linalg.norm(ref[k], axis=1), 1e-12))) for k in ref}
        return {"n_images": int(len(idx)), "max_rel_error_embedding": err["embedding"],
                "max_rel_error_feature": err["feature"]}


class Adapter(abc.ABC):
    """Subclasses declare ``defaults`` (every parameter with its default); unknown parameters are errors."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    #: splits the adapter returns probabilities for
    predict_splits: ClassVar[tuple[str, ...]] = ("val", "test")

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        self.params = parse_params(self.name, self.defaults, params or {})
        #: facts learned while fitting (chosen hyperparameters, selection scores), recorded in metrics.json
        self.fitted: dict[str, Any] = {}
        #: a randomised decision rule (binary tasks), set by :meth:`run`: per split, each sample's probability of
        #: a positive decision. Written as the predictions' ``p_decide_positive`` column; the metrics then
        #: report the rule's expected rates instead of thresholding the probabilities. Empty: thresholded.
        self.decisions: dict[str, np.ndarray] = {}

    @abc.abstractmethod
    def run(self, ctx: AdaptContext) -> dict[str, np.ndarray]:
        """Probabilities ``[n, n_classes]`` per split in :attr:`predict_splits`."""

    def finish(self, ctx: AdaptContext) -> None:
        """Called once the cell's metrics.json is written (trainable adapters drop their checkpoints)."""


def parse_params(adapter: str, defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    out = dict(defaults)
    for key, value in given.items():
        if key not in defaults:
            known = ", ".join(sorted(defaults)) or "none"
            raise FairbenchError(f"adapter '{adapter}' has no parameter '{key}' (its parameters: {known})")
        default = defaults[key]
        out[key] = _coerce(adapter, key, value, default)
    for key, value in out.items():
        check_number(adapter, key, value, defaults[key])
    return out


#: the admissible range of every numeric parameter, by name, whatever the adapter: (low, low included, high,
#: high included); lists (betas, c_grid, hidden) are checked element by element. Every number must be finite.
PARAM_RANGES: dict[str, tuple[float, bool, float, bool]] = {
    **{k: (1, True, math.inf, False) for k in ("epochs", "batch_size", "eval_batch_size", "grad_accum", "r",
                                                "fair_batch_size", "max_iter", "hidden", "warm_epochs")},
    **{k: (0, True, math.inf, False) for k in ("warmup_steps", "patience", "weight_decay", "max_grad_norm",
                                                "adjustment", "lambda_fair", "beta_np", "beta_fp")},
    **{k: (0, False, math.inf, False) for k in ("lr", "head_lr", "eps", "alpha", "eta", "blur", "c_grid", "tol")},
    **{k: (0, True, 1, False) for k in ("dropout", "lora_dropout", "betas")},
    "sinkhorn_scaling": (0, False, 1, False),
    "grid_size": (2, True, math.inf, False),
}


def check_number(adapter: str, key: str, value: Any, default: Any) -> None:
    """Raise a one-line error unless every number in ``value`` is finite, in :data:`PARAM_RANGES` for ``key``
    and whole where the default is an integer. Strings are left to the adapter (``auto`` and the like), except
    numeric strings of a parameter with a range (``lambda_fair=nan`` must not reach training)."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    whole = isinstance(default, int) and not isinstance(default, bool) or (
        isinstance(default, (list, tuple)) and bool(default) and isinstance(default[0], int))
    bounds = PARAM_RANGES.get(key)
    for v in values:
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, str):
            if bounds is None or v.strip().lower() == "auto":
                continue
            try:
                v = float(v)
            except ValueError:
                continue  # not a number: the adapter's own check names what it wants
        if not isinstance(v, (int, float, np.integer, np.floating)):
            continue
        problem = None
        if not math.isfinite(v):
            problem = _describe(bounds, whole) if bounds else "a finite number"
        elif whole and v != int(v):
            problem = "a whole number"
        elif bounds is not None:
            low, low_in, high, high_in = bounds
            if v < low or (v == low and not low_in) or v > high or (v == high and not high_in):
                problem = _describe(bounds, whole)
        if problem:
            given = value if not isinstance(value, (list, tuple)) else list(value)
            raise FairbenchError(f"adapter '{adapter}': parameter '{key}' must be {problem}"
                                 f"{' (every element)' if isinstance(value, (list, tuple)) else ''}, got {given!r}")


def _describe(bounds: tuple[float, bool, float, bool], whole: bool) -> str:
    low, low_in, high, high_in = bounds
    kind = "a finite whole number" if whole else "a finite number"
    if math.isinf(high):
        return f"{kind} {'>=' if low_in else '>'} {low:g}"
    return f"{kind} in {'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"


def _coerce(adapter: str, key: str, value: Any, default: Any) -> Any:
    if not isinstance(value, str) or isinstance(default, str) or default is None:
        return value
    try:
        if isinstance(default, bool):
            low = value.strip().lower()
            if low in ("true", "1", "yes"):
                return True
            if low in ("false", "0", "no"):
                return False
            raise ValueError
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, (list, tuple)):
            return [type(default[0])(v) if default else v for v in value.split(",")]
    except ValueError:
        raise FairbenchError(f"adapter '{adapter}': parameter '{key}' wants a {type(default).__name__} "
                             f"like {default!r}, got {value!r}") from None
    return value


ADAPTERS: Registry[type[Adapter]] = Registry("adapter")
ADAPTERS.register_lazy("zeroshot", "fairbench.adapters.zeroshot:ZeroShot")
ADAPTERS.register_lazy("linear_probe", "fairbench.adapters.linear_probe:LinearProbe")
ADAPTERS.register_lazy("mlp", "fairbench.adapters.mlp:MLPHead")
ADAPTERS.register_lazy("lora", "fairbench.adapters.lora:LoRA")
ADAPTERS.register_lazy("full_ft", "fairbench.adapters.full_ft:FullFineTune")
ADAPTERS.register_lazy("fairclip", "fairbench.adapters.fairclip:FairCLIP")
ADAPTERS.register_lazy("robust_fair", "fairbench.adapters.robust_fair:RobustFair")
ADAPTERS.register_lazy("resample", "fairbench.adapters.resample:ResampleAdapter")
ADAPTERS.register_lazy("reweight", "fairbench.adapters.reweight:ReweightAdapter")
ADAPTERS.register_lazy("groupdro", "fairbench.adapters.groupdro:GroupDROAdapter")
ADAPTERS.register_lazy("fair_threshold", "fairbench.adapters.fair_threshold:FairThreshold")
ADAPTERS.register_lazy("group_calibrate", "fairbench.adapters.group_calibrate:GroupCalibrate")
