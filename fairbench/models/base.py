"""The one model interface every family implements, and model cards.

A model card (``fairbench/models/cards/<name>.yaml``, the stem is the name) holds the family, the
architecture config, the weights source, preprocessing, prompt style, probe feature and LoRA targets. A
family (registered in :data:`FAMILIES`) turns a card plus resolved weights into a :class:`VLModel`.
"""

from __future__ import annotations

import abc
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fairbench.cards import card_sha256, open_card
from fairbench.models.preprocess import OPENAI_MEAN, OPENAI_STD, PIL_PIPELINES, Preprocessing
from fairbench.models.zeroshot import build_head
from fairbench.registry import Registry

__all__ = [
    "FAMILIES",
    "MODELS",
    "ModelCard",
    "Preprocessing",
    "VLModel",
    "cards_dir",
    "get_model_card",
    "load_model_card",
]

@dataclass(frozen=True)
class ModelCard:
    name: str
    family: str
    description: str
    path: Path
    architecture: dict[str, Any]
    weights_source: str
    weights_obtain: str
    preprocessing: Preprocessing
    prompt_style: str = "templates"
    probe_feature: str = "embedding"
    lora_targets: tuple[str, ...] = ()
    tiny: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    #: files expected when the weights source is a directory (``local-dir:``/``hf-hub:``); each entry is one
    #: file name or alternatives separated by ``|`` (the first present is used)
    weights_files: tuple[str, ...] = ()
    #: where the tokenizer comes from when it is not inside the weights directory (a weights source, or
    #: ``tiny`` for the tiny vocabulary written by :mod:`fairbench.models.tiny`)
    tokenizer_source: str = ""

    @property
    def sha256(self) -> str:
        return card_sha256(self.raw)


def cards_dir() -> Path:
    return Path(__file__).resolve().parent / "cards"


def load_model_card(path: Path) -> ModelCard:
    path = Path(path)
    data, f, name = open_card(path)
    family = f.get("family", str)
    if family not in FAMILIES:
        f.fail("family", f"names an unknown family: {FAMILIES.unknown_message(family)}")
    w = f.sub("weights")
    source = w.get("source", str)
    obtain = w.get("obtain", str, "")
    files = tuple(w.str_list("files", []))
    tokenizer = w.get("tokenizer", str, "")
    w.no_unknown()
    p = f.sub("preprocessing")
    pre = Preprocessing(
        image_size=p.get("image_size", int),
        mean=tuple(p.get("mean", list, list(OPENAI_MEAN))),
        std=tuple(p.get("std", list, list(OPENAI_STD))),
        resize=p.get("resize", str, "shortest", choices=("shortest", "square", "center_pad_square", "canvas", "fov_canvas",
                                                                 *PIL_PIPELINES)),
        interpolation=p.get("interpolation", str, "bicubic", choices=("bicubic", "bilinear", "nearest", "area")),
        channels=p.get("channels", int, 3, choices=(1, 3)),
        load_size=p.get("load_size", int, None),
    )
    if pre.resize == "longest_pad" and pre.load_size is None:
        p.fail("load_size", "is required with resize: longest_pad (the longest side before the center crop)")
    if pre.interpolation == "area" and pre.resize != "longest_pad":
        p.fail("interpolation", "area (OpenCV INTER_AREA) is only available with resize: longest_pad")
    p.no_unknown()
    card = ModelCard(
        name=name, family=family, description=f.get("description", str, ""), path=path.resolve(),
        architecture=f.get("architecture", dict, {}), weights_source=source, weights_obtain=obtain,
        preprocessing=pre, prompt_style=f.get("prompt_style", str, "templates"),
        probe_feature=f.get("probe_feature", str, "embedding"),
        lora_targets=tuple(f.str_list("lora_targets", [])), tiny=f.get("tiny", bool, False),
        options=f.get("options", dict, {}), raw=data, weights_files=files, tokenizer_source=tokenizer)
    f.no_unknown()
    return card


class VLModel(abc.ABC):
    """A CLIP-like model behind one interface.

    ``image_outputs`` returns, in one forward pass, the joint-space ``embedding`` (used for zero-shot) and the
    probe ``feature`` (the layer the family's official linear-probe code uses), so frozen-encoder adapters
    encode each image once.
    """

    card: ModelCard
    device: torch.device
    weights_info: dict[str, Any]

    @property
    @abc.abstractmethod
    def module(self) -> torch.nn.Module:
        """The underlying torch module (for training, LoRA, state dicts)."""

    def preprocess(self, images: list[np.ndarray]) -> torch.Tensor:
        return self.card.preprocessing(images)

    @abc.abstractmethod
    def tokenize(self, texts: list[str]) -> Any: ...

    @abc.abstractmethod
    def image_outputs(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"embedding": [n, d] joint space, unnormalised, "feature": [n, f] probe feature}``."""

    @abc.abstractmethod
    def encode_text(self, tokens: Any) -> torch.Tensor: ...

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.image_outputs(pixels)["embedding"]

    def logit_scale(self) -> torch.Tensor:
        return torch.tensor(100.0, device=self.device)

    def similarity(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """Image-text logits [n_img, n_txt]: scaled cosine similarity unless the family says otherwise."""
        return self.logit_scale() * F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T

    def class_embeddings(self, prompts: list[list[str]]) -> torch.Tensor:
        """One embedding per class from its prompts: the mean of normalised prompt embeddings (CLIP-style
        prompt ensembling), re-normalised."""
        out = []
        for texts in prompts:
            emb = F.normalize(self.encode_text(self.tokenize(texts)), dim=-1)
            out.append(F.normalize(emb.mean(dim=0), dim=-1))
        return torch.stack(out)

    def zeroshot_logits(self, image_emb: torch.Tensor, class_emb: torch.Tensor) -> torch.Tensor:
        return self.similarity(image_emb, class_emb)

    # -- zero-shot rules and LoRA targets ----------------------------------------------------------
    #: how the prompts of one class are combined under the family's own rule (``ensemble: family``):
    #: ``mean_embedding`` (CLIP prompt ensembling), ``mean_logit`` (MedCLIP) or ``max_logit`` (GLoRIA)
    default_ensemble: str = "mean_embedding"

    def zeroshot_head(self, task: Any, ensemble: str = "family") -> Any:
        """The family's zero-shot classifier for ``task``: prompts per class (the card's ``prompt_style``),
        the ensembling rule and any split-level normalisation (see :mod:`fairbench.models.zeroshot`)."""
        return build_head(self, task, ensemble)

    def lora_target_modules(self) -> str:
        """The card's ``lora_targets`` as one regular expression for peft's ``target_modules`` (peft fully
        matches a string against each module name). A plain entry ``name`` matches a module called ``name`` or
        ending in ``.name`` (peft's list semantics); ``re:<pattern>`` is matched against the whole name."""
        import re

        parts = []
        for t in self.card.lora_targets:
            parts.append(t[3:] if t.startswith("re:") else rf"(?:.*\.)?{re.escape(t)}")
        if not parts:
            from fairbench.errors import CardError

            raise CardError(f"{self.card.path}: field 'lora_targets' is empty; LoRA needs target modules")
        return "|".join(f"(?:{p})" for p in parts)


#: one line per family: its module's ``FAMILY`` (:class:`fairbench.models.family.Family`: build, inputs,
#: default files and, for generic families, how a card is completed from the checkpoint)
FAMILIES: Registry[Any] = Registry("model family")
FAMILIES.register_lazy("open_clip", "fairbench.models.openclip:FAMILY")
FAMILIES.register_lazy("tinyclip", "fairbench.models.tinyclip:FAMILY")
FAMILIES.register_lazy("medclip", "fairbench.models.medclip:FAMILY")
FAMILIES.register_lazy("gloria", "fairbench.models.gloria:FAMILY")
FAMILIES.register_lazy("blip2", "fairbench.models.blip2:FAMILY")
FAMILIES.register_lazy("hf_clip", "fairbench.models.hf:HF_CLIP")
FAMILIES.register_lazy("hf_vision", "fairbench.models.hf:HF_VISION")
FAMILIES.register_lazy("chexzero", "fairbench.models.chexzero:FAMILY")
FAMILIES.register_lazy("flair", "fairbench.models.flair:FAMILY")

MODELS: Registry[ModelCard] = Registry("model")


@functools.cache
def _discover_model_cards() -> None:
    for card in sorted(cards_dir().glob("*.yaml")):
        if not card.name.startswith("_"):
            MODELS.register_lazy(card.stem, functools.partial(load_model_card, card))


def get_model_card(name: str) -> ModelCard:
    _discover_model_cards()
    return MODELS.get(name)


def model_names() -> list[str]:
    _discover_model_cards()
    return MODELS.names()
