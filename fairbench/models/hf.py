"""Generic Hugging Face families: any transformers checkpoint directory, no card and no code.

- ``hf_clip``: a ``CLIPModel`` or ``SiglipModel`` directory (``config.json``, weights, tokenizer files,
  ``preprocessor_config.json``), as ``save_pretrained`` writes it or as a hub repository holds it.
- ``hf_vision``: an image-only encoder loaded with ``AutoModel`` (DINOv2, RAD-DINO, ViT); no text tower, so no
  zero-shot.

Everything comes from the directory itself: the architecture from ``config.json`` (``AutoModel``), the tokenizer
with ``AutoTokenizer`` and the pixels with ``AutoImageProcessor``, as transformers' own ``AutoProcessor`` would
do them (images are converted to RGB PIL images first). The card (``hf_clip.yaml``, ``hf_vision.yaml``) is
completed at run time (:func:`resolve_hf_card`): its architecture becomes the model type and the sha256 of
``config.json``, its preprocessing the image processor's size, crop, resampling, mean and std (used for the
image cache's geometry and recorded), its weights source the directory; so the card's sha256, the embedding
cache key and the stale-cell check all change when any of them does.

Embeddings are what the model's own calls return: ``get_image_features(pixel_values).pooler_output`` (the
projected image embedding) and ``get_text_features(...).pooler_output``; hf_vision's embedding is the final
(layer-normed) hidden state of the CLS token. Zero-shot follows the model's own head:

- CLIP: ``logit_scale.exp() * cos(image, text)``, softmax over classes;
- SigLIP: ``logit_scale.exp() * cos + logit_bias``, a sigmoid per class (SigLIP's logits are independent
  per-class binary decisions, not a distribution). The probabilities the metrics see are the per-class
  sigmoids normalised to sum 1 (the head returns ``log sigmoid(logit)``; the adapter's softmax of it is
  ``sigmoid_k / sum_j sigmoid_j``); metrics.json says so under ``adapt.fitted.zeroshot.probabilities``.

Loading is strict: zero missing, unexpected or mismatched keys (hf_vision: the unused ``pooler.*`` of
``ViTModel`` may be missing).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fairbench.errors import CardError, WeightsError
from fairbench.models.base import ModelCard, VLModel
from fairbench.models.family import Family
from fairbench.models.inputs import ModelInputs, resolve_inputs, weights_dir_holds
from fairbench.models.preprocess import Preprocessing, center_pad_square
from fairbench.models.weights import WeightsSource, files_info, locate, sha256_file

__all__ = [
    "HF_CLIP",
    "HF_VISION",
    "HFCLIPModel",
    "HFVisionModel",
    "hf_preprocessing",
    "hf_weight_files",
    "resolve_hf_card",
]

#: model types hf_clip runs (``config.json`` ``model_type``) and their zero-shot head
CLIP_TYPES = {"clip": "softmax", "siglip": "sigmoid"}
WEIGHT_FILES = "model.safetensors|model.safetensors.index.json|pytorch_model.bin|pytorch_model.bin.index.json"
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}


def _need_directory(card: ModelCard, source: WeightsSource) -> None:
    if source.scheme not in ("local-dir", "hf-hub"):
        what = "--weights" if source.value or source.scheme == "random" else "no --weights"
        raise WeightsError(f"model '{card.name}' runs a transformers model directory: pass --weights "
                           f"local-dir:DIR or hf-hub:ORG/REPO (config.json, weights, preprocessor_config.json"
                           f"{', tokenizer files' if card.family == 'hf_clip' else ''}); got {what} "
                           f"{source.describe() if source.value or source.scheme == 'random' else ''}".rstrip())


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{path}: not a readable JSON file ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise WeightsError(f"{path}: expected a JSON object")
    return data


def hf_preprocessing(path: Path) -> Preprocessing:
    """fairbench's description of a ``preprocessor_config.json`` (size, crop, resampling, mean, std): what the
    image cache and the cache key use; the pixels themselves come from ``AutoImageProcessor``."""
    cfg = _read_json(path)
    size = cfg.get("size")
    crop = cfg.get("crop_size") if cfg.get("do_center_crop", False) else None
    if isinstance(size, int):
        size = {"shortest_edge": size}
    if not isinstance(size, dict):
        raise WeightsError(f"{path}: field 'size' must be a mapping (shortest_edge, or height and width)")
    if isinstance(crop, int):
        crop = {"height": crop, "width": crop}
    load_size = None
    if "shortest_edge" in size:
        resize = "shortest"
        side = crop["height"] if isinstance(crop, dict) else size["shortest_edge"]
        load_size = int(size["shortest_edge"])  # the resize before the crop (DINOv2: 256 -> 224)
    elif "height" in size and "width" in size:
        if size["height"] != size["width"]:
            raise WeightsError(f"{path}: field 'size' {size} is not square; fairbench models take square inputs")
        resize, side = "square", crop["height"] if isinstance(crop, dict) else size["height"]
    else:
        raise WeightsError(f"{path}: field 'size' must hold shortest_edge, or height and width; got {size}")
    mean = cfg.get("image_mean", [0.5, 0.5, 0.5]) if cfg.get("do_normalize", True) else [0.0, 0.0, 0.0]
    std = cfg.get("image_std", [0.5, 0.5, 0.5]) if cfg.get("do_normalize", True) else [1.0, 1.0, 1.0]
    interp = _RESAMPLE.get(int(cfg.get("resample", 3)), "bicubic")
    return Preprocessing(image_size=int(side), mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std),
                         resize=resize, interpolation=interp, load_size=load_size)


def _locate_dir(card: ModelCard, source: WeightsSource) -> Path:
    _need_directory(card, source)
    return locate(source, card=card, files=("config.json", "preprocessor_config.json"))


def _check_declared(card: ModelCard, pre: Preprocessing, path: Path) -> None:
    """A named card (one that declares its release's mean and std) refuses a directory whose image processor
    differs from what the card says the release does."""
    declared = card.raw.get("preprocessing") or {}
    if "mean" not in declared:
        return  # the generic cards take whatever the directory says
    for name in ("image_size", "load_size", "mean", "std", "resize", "interpolation"):
        if name not in declared:
            continue  # what the card does not state, the directory decides
        want, got = getattr(card.preprocessing, name), getattr(pre, name)
        if name == "resize" and (want, got) == ("center_pad_square", "square"):
            continue  # the release pads to a square before its processor's square resize (medsiglip)
        same = np.allclose(want, got, rtol=0, atol=1e-7) if isinstance(want, tuple) else want == got
        if same:
            continue
        raise WeightsError(f"{path}: {name} {list(got) if isinstance(got, tuple) else got!r}, but model "
                           f"'{card.name}' is the release with {name} ({list(want) if isinstance(want, tuple) else want!r}, "
                           f"{card.path.name}); use --model {card.family} for another checkpoint")


def resolve_hf_card(card: ModelCard, source: WeightsSource, args: dict[str, Any]) -> ModelCard:
    """The card completed from the directory: model type, ``config.json`` sha256, preprocessing, the source."""
    if args:
        raise CardError(f"--model-arg {next(iter(args))}: model '{card.name}' takes no model arguments (the "
                        f"directory's config.json decides the architecture)")
    directory = _locate_dir(card, source)
    config = _read_json(directory / "config.json")
    model_type = str(config.get("model_type", ""))
    if card.family == "hf_clip" and model_type not in CLIP_TYPES:
        raise WeightsError(f"{directory / 'config.json'}: model_type {model_type!r}; model '{card.name}' runs "
                           f"CLIPModel (clip) or SiglipModel (siglip) directories"
                           f"{' (image-only encoders: --model hf_vision)' if model_type else ''}")
    if card.family == "hf_vision" and model_type in CLIP_TYPES:
        raise WeightsError(f"{directory / 'config.json'}: model_type {model_type!r} is an image-text model: use "
                           f"--model hf_clip")
    pre = hf_preprocessing(directory / "preprocessor_config.json")
    _check_declared(card, pre, directory / "preprocessor_config.json")
    if card.preprocessing.resize == "center_pad_square" and "resize" in (card.raw.get("preprocessing") or {}):
        pre = dataclasses.replace(pre, resize="center_pad_square")  # padded before the processor (_HFBase)
    arch = {"model_type": model_type, "config_sha256": sha256_file(directory / "config.json"),
            "preprocessor_sha256": sha256_file(directory / "preprocessor_config.json")}
    raw = {**card.raw, "architecture": arch, "preprocessing": dict(pre.__dict__),
           "weights": {**card.raw.get("weights", {}), "source": source.describe()}}
    return dataclasses.replace(card, architecture=arch, preprocessing=pre, weights_source=source.describe(), raw=raw)


def hf_inputs(inputs: ModelInputs) -> None:
    """config.json, preprocessor_config.json and (hf_clip) the tokenizer files, all in the weights directory."""
    wdir = inputs.weights_dir
    if inputs.source.scheme not in ("local-dir", "hf-hub"):
        try:
            _need_directory(inputs.card, inputs.source)
        except WeightsError as exc:
            inputs.problems.append(str(exc))
        return
    if wdir is None:
        return  # the weights' own problem is recorded already
    inputs.config = wdir / "config.json"
    inputs.preprocessor = wdir / "preprocessor_config.json"
    if inputs.card.family == "hf_clip":
        if weights_dir_holds(wdir, ("tokenizer_config.json", "tokenizer.json|vocab.json|spiece.model")):
            inputs.tokenizer, inputs.tokenizer_source = wdir, inputs.source.describe()
        else:
            inputs.problems.append(f"model '{inputs.card.name}': {wdir} holds no tokenizer (expected "
                                   f"tokenizer_config.json and tokenizer.json, vocab.json or spiece.model, as "
                                   f"save_pretrained of the tokenizer writes them)")


def hf_weight_files(directory: Path) -> list[Path]:
    for single in WEIGHT_FILES.split("|"):
        path = directory / single
        if path.is_file() and single.endswith(".index.json"):
            shards = sorted(set(_read_json(path).get("weight_map", {}).values()))
            return [path, *(directory / s for s in shards)]
        if path.is_file():
            return [path]
    return []


def _load(card: ModelCard, directory: Path, *, allow_missing: tuple[str, ...] = ()) -> Any:
    from transformers import AutoModel

    try:
        model, loading = AutoModel.from_pretrained(str(directory), local_files_only=True, output_loading_info=True,
                                                   dtype=torch.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise WeightsError(f"model '{card.name}': {directory} is not a loadable transformers model directory "
                           f"({type(exc).__name__}: {exc})") from None
    bad = {k: [n for n in (loading.get(k) or []) if not (k == "missing_keys" and n.startswith(allow_missing))]
           for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if any(bad.values()):
        raise WeightsError(f"{directory}: checkpoint does not match {type(model).__name__}: "
                           + "; ".join(f"{len(v)} {k.replace('_', ' ')} (e.g. {v[:3]})" for k, v in bad.items() if v))
    return model.float().eval()


class _HFBase(VLModel):
    def __init__(self, card: ModelCard, model: Any, processor: Any, device: torch.device,
                 weights_info: dict[str, Any]) -> None:
        self.card = card
        self.model = model.to(device)
        self.processor = processor
        self.device = device
        self.weights_info = weights_info

    @property
    def module(self) -> torch.nn.Module:
        return self.model

    def preprocess(self, images: list[np.ndarray]) -> torch.Tensor:
        """The directory's own image processor on RGB PIL images (as ``AutoProcessor(images=...)``); a card with
        ``preprocessing.resize: center_pad_square`` (MedSigLIP) zero-pads each image to a centred square first,
        as the release's serving code does before its ``SiglipImageProcessor``."""
        from PIL import Image

        if self.card.preprocessing.resize == "center_pad_square":
            images = [center_pad_square(a) for a in images]
        pil = [Image.fromarray(a[..., 0] if a.ndim == 3 and a.shape[-1] == 1 else a).convert("RGB") for a in images]
        return self.processor(images=pil, return_tensors="pt")["pixel_values"].float()


class HFCLIPModel(_HFBase):
    """A transformers CLIPModel or SiglipModel."""

    def __init__(self, card: ModelCard, model: Any, processor: Any, tokenizer: Any, device: torch.device,
                 weights_info: dict[str, Any]) -> None:
        super().__init__(card, model, processor, device, weights_info)
        self.tokenizer = tokenizer
        self.head = CLIP_TYPES[card.architecture["model_type"]]

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Truncated to the text tower's max_position_embeddings; SigLIP padded to it (``padding="max_length"``,
        how SigLIP was trained and how its processor is documented to be used), CLIP to the longest prompt."""
        length = int(self.model.config.text_config.max_position_embeddings)
        padding = "max_length" if self.head == "sigmoid" else True
        tok = self.tokenizer(list(texts), padding=padding, max_length=length, truncation=True, return_tensors="pt")
        return {k: v.to(self.device) for k, v in tok.items() if k in ("input_ids", "attention_mask")}

    def image_outputs(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        emb = _pooled(self.model.get_image_features(pixel_values=pixels.to(self.device)))
        return {"embedding": emb, "feature": emb}

    def encode_text(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.head == "sigmoid":  # SiglipModel's text tower takes no attention mask in its own forward
            tokens = {"input_ids": tokens["input_ids"]}
        return _pooled(self.model.get_text_features(**tokens))

    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale.exp()

    def similarity(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        logits = super().similarity(image_emb, text_emb)
        return logits + self.model.logit_bias if self.head == "sigmoid" else logits

    def zeroshot_head(self, task: Any, ensemble: str = "family") -> Any:
        rule = self.card.options.get("zero_shot")
        if rule == "monet_concept" and self.head == "softmax":
            from fairbench.models.monet import monet_concept_head

            return monet_concept_head(self, task, ensemble)
        if rule is not None:
            raise CardError(f"{self.card.path}: options.zero_shot must be monet_concept (on a CLIP model), got "
                            f"{rule!r}")
        head = super().zeroshot_head(task, ensemble)
        if self.head == "softmax":
            head.record["probabilities"] = "softmax over classes of logit_scale * cosine (CLIPModel's logits)"
            return head
        score = head.score
        head.score = lambda out: F.logsigmoid(score(out).float())
        head.record["probabilities"] = ("SigLIP: per-class sigmoid(logit_scale * cosine + logit_bias), normalised "
                                        "to sum 1 over the task's classes (the raw sigmoids are independent "
                                        "per-class decisions)")
        return head


def _pooled(out: Any) -> torch.Tensor:
    """transformers 5 returns an output object whose ``pooler_output`` is the (projected) embedding; 4.x a tensor."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class HFVisionModel(_HFBase):
    """An image-only transformers encoder; the embedding is the last hidden state's CLS token."""

    def _no_text(self) -> CardError:
        return CardError(f"model '{self.card.name}' ({self.card.architecture.get('model_type')}) is an image-only "
                         f"encoder with no text tower: zero-shot needs one; use --adapt linear_probe, mlp, lora or "
                         f"full_ft")

    def tokenize(self, texts: list[str]) -> Any:
        raise self._no_text()

    def encode_text(self, tokens: Any) -> torch.Tensor:
        raise self._no_text()

    def zeroshot_head(self, task: Any, ensemble: str = "family") -> Any:
        raise self._no_text()

    def image_outputs(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        cls = self.model(pixel_values=pixels.to(self.device)).last_hidden_state[:, 0]
        return {"embedding": cls, "feature": cls}


def _backend(card: ModelCard) -> dict[str, str]:
    """``options.image_processor_backend`` (pil | torchvision): the image processor the release's own code used;
    transformers 5 picks torchvision when it is installed, and the two differ by up to ~0.02 normalised units."""
    backend = card.options.get("image_processor_backend")
    if backend is None:
        return {}
    if backend not in ("pil", "torchvision"):
        raise CardError(f"{card.path}: options.image_processor_backend must be pil or torchvision, got {backend!r}")
    return {"backend": backend}


def _build(card: ModelCard, source: WeightsSource, device: torch.device) -> VLModel:
    _need_directory(card, source)
    if "model_type" not in card.architecture:
        from fairbench.models.build import resolve_model_card

        card = resolve_model_card(card, source.describe())
    inputs = resolve_inputs(card, source)
    inputs.raise_if_missing()
    directory = inputs.weights_dir
    assert directory is not None
    from transformers import AutoImageProcessor, AutoTokenizer

    processor = AutoImageProcessor.from_pretrained(str(directory), local_files_only=True,
                                                   **_backend(card))
    if card.family == "hf_clip":
        model = _load(card, directory)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        except ImportError as exc:  # SiglipTokenizer (spiece.model) needs sentencepiece and protobuf
            first = str(exc).strip().splitlines()[0]
            raise WeightsError(f"model '{card.name}': the tokenizer in {directory} needs a package that is not "
                               f"installed ({first}); SigLIP's spiece.model needs `pip install sentencepiece "
                               f"protobuf` (or `pip install fairbench[siglip]`)") from None
    else:
        model = _load(card, directory, allow_missing=("pooler.",))
    info = {**files_info(source.describe(), hf_weight_files(directory), model), **inputs.info(),
            "model_class": type(model).__name__, "image_processor": type(processor).__name__}
    if card.family == "hf_clip":
        return HFCLIPModel(card, model, processor, tokenizer, device, info)
    return HFVisionModel(card, model, processor, device, info)


HF_CLIP = Family(build=_build, default_files=("config.json", "preprocessor_config.json", WEIGHT_FILES),
                 inputs=hf_inputs, resolve_card=resolve_hf_card)
HF_VISION = Family(build=_build, default_files=("config.json", "preprocessor_config.json", WEIGHT_FILES),
                   inputs=hf_inputs, resolve_card=resolve_hf_card)
