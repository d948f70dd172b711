"""BLIP-2 image-text retrieval (ITC) via transformers ``Blip2ForImageTextRetrieval``.

The weights are a Hugging Face model directory (``Salesforce/blip2-itm-vit-g``: ``config.json``,
``model.safetensors`` or its sharded index, tokenizer files), read from a local directory or the local Hugging
Face cache with ``from_pretrained(path, local_files_only=True)``; loading fails unless there are zero missing
and zero unexpected keys. Tiny builds take their ``Blip2Config`` from the card (``architecture.config``).

- Image: EVA ViT-g -> 32 learned queries through the Q-Former (cross-attention to the image) ->
  ``vision_projection``: one 256-d vector per query. ``embedding`` is the flattened ``[32 * 256]`` vectors
  (unnormalised); ``feature`` (linear probe) is the vision tower's ``[CLS]`` output (``image_embeds[:, 0]``,
  as FairMedFM's BLIP-2 baseline uses; BLIP-2 has no linear-probe code of its own).
- Text: the Q-Former text path on the tokenizer's ids (``[CLS]`` ... ``[SEP]``, no image tokens prepended,
  so ``image_token_index`` plays no part) -> ``text_projection`` of the ``[CLS]`` output.
- Similarity (``use_image_text_matching_head=False``): max over the 32 queries of the cosine between each
  normalised query vector and the normalised text vector. The model has no temperature; logits are that
  cosine times ``options.logit_scale`` (default 1: the raw ITC score, which makes softmax probabilities
  nearly uniform: calibration metrics reflect this choice, AUCs do not).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fairbench.errors import CardError, WeightsError
from fairbench.models.base import ModelCard, VLModel
from fairbench.models.family import Family
from fairbench.models.inputs import INSTEAD, ModelInputs, locate_aux, resolve_inputs, weights_dir_holds
from fairbench.models.weights import WeightsSource, files_info

__all__ = ["FAMILY", "BLIP2Model", "blip2_inputs", "blip2_weight_files", "build_blip2"]


class BLIP2Model(VLModel):
    def __init__(self, card: ModelCard, model: nn.Module, tokenizer: Any, device: torch.device,
                 weights_info: dict[str, Any]) -> None:
        self.card = card
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device
        self.weights_info = weights_info
        self.context_length = int(card.architecture.get("context_length", 35))
        self.scale = float(card.options.get("logit_scale", 1.0))
        cfg = model.config
        self.num_query = int(cfg.num_query_tokens)
        self.dim = int(cfg.image_text_hidden_size)
        if card.probe_feature not in ("vision_cls", "embedding"):
            raise CardError(f"{card.path}: field 'probe_feature' must be vision_cls or embedding for BLIP-2")

    @property
    def module(self) -> nn.Module:
        return self.model

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.context_length,
                             return_tensors="pt")
        return {"input_ids": enc["input_ids"].to(self.device), "attention_mask": enc["attention_mask"].to(self.device)}

    def image_outputs(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        m = self.model
        image_embeds = m.vision_model(pixel_values=pixels.to(self.device), return_dict=True).last_hidden_state
        mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        queries = m.query_tokens.expand(image_embeds.shape[0], -1, -1)
        q = m.qformer(query_embeds=queries, encoder_hidden_states=image_embeds, encoder_attention_mask=mask,
                      return_dict=True).last_hidden_state
        emb = m.vision_projection(q.to(m.vision_projection.weight.dtype))
        flat = emb.reshape(emb.shape[0], -1)
        feature = image_embeds[:, 0, :] if self.card.probe_feature == "vision_cls" else flat
        return {"embedding": flat, "feature": feature}

    def encode_text(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        m = self.model
        embeds = m.embeddings(input_ids=tokens["input_ids"])
        out = m.qformer(query_embeds=embeds, query_length=0, attention_mask=tokens["attention_mask"],
                        return_dict=True).last_hidden_state
        return m.text_projection(out[:, 0, :].to(m.text_projection.weight.dtype))

    def logit_scale(self) -> torch.Tensor:
        return torch.tensor(self.scale, device=self.device)

    def similarity(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        img = F.normalize(image_emb.reshape(image_emb.shape[0], self.num_query, self.dim), dim=-1)
        txt = F.normalize(text_emb, dim=-1)
        return self.logit_scale() * torch.matmul(img, txt.T).max(dim=1).values


def blip2_weight_files(directory: Path) -> list[Path]:
    """The safetensors/bin files of a Hugging Face model directory (shards from the index, if sharded)."""
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        p = directory / index
        if p.is_file():
            shards = sorted(set(json.loads(p.read_text())["weight_map"].values()))
            return [directory / s for s in shards]
    for single in ("model.safetensors", "pytorch_model.bin"):
        if (directory / single).is_file():
            return [directory / single]
    return []


def _config_from_card(card: ModelCard) -> Any:
    from transformers import Blip2Config

    cfg = card.architecture.get("config")
    if not isinstance(cfg, dict):
        raise CardError(f"{card.path}: field 'architecture.config' must be a Blip2Config mapping (or 'weights' to "
                        f"read config.json from the weights directory)")
    return Blip2Config(**cfg)


def build_blip2(card: ModelCard, source: WeightsSource, device: torch.device) -> BLIP2Model:
    if source.scheme not in ("random", "file", "local-dir", "hf-hub"):
        raise WeightsError(f"model '{card.name}': weights source '{source.describe()}' is not supported by BLIP-2")
    inputs = resolve_inputs(card, source)
    directory = inputs.weights
    if directory is not None and directory.is_file():
        raise WeightsError(f"model '{card.name}': BLIP-2 weights are a Hugging Face model directory "
                           f"(config.json + model.safetensors), got the file {directory}; pass "
                           f"--weights local-dir:{directory.parent}")
    inputs.raise_if_missing()  # weights, config and tokenizer, every missing file at once
    from transformers import AutoTokenizer, Blip2Config, Blip2ForImageTextRetrieval  # heavy: after locating

    if source.scheme == "random":
        if card.architecture.get("config") == "weights":
            assert inputs.config is not None
            config = Blip2Config.from_pretrained(str(inputs.config.parent), local_files_only=True)
        else:
            config = _config_from_card(card)
        model = Blip2ForImageTextRetrieval(config)
        info: dict[str, Any] = {"source": "random", "sha256": "random"}
    else:
        assert directory is not None
        try:
            model, loading = Blip2ForImageTextRetrieval.from_pretrained(
                str(directory), local_files_only=True, output_loading_info=True, dtype=torch.float32)
        except (OSError, ValueError) as exc:
            raise WeightsError(f"model '{card.name}': {directory} is not a loadable BLIP-2 directory "
                               f"({type(exc).__name__}: {exc})") from None
        bad = {k: list(loading.get(k) or []) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
        if any(bad.values()):
            raise WeightsError(f"{directory}: checkpoint does not match Blip2ForImageTextRetrieval: "
                               + "; ".join(f"{len(v)} {k.replace('_', ' ')} (e.g. {v[:3]})"
                                           for k, v in bad.items() if v))
        model = model.float()
        info = files_info(source.describe() if source.scheme != "file" else str(directory),
                          blip2_weight_files(directory), model)
    tokenizer = AutoTokenizer.from_pretrained(str(inputs.tokenizer), local_files_only=True)
    return BLIP2Model(card, model.float(), tokenizer, device, {**info, **inputs.info()})


def blip2_inputs(inputs: ModelInputs) -> None:
    """BLIP-2's ``config.json`` (the weights directory's; with ``--weights random`` and ``architecture.config:
    weights`` the card's tokenizer or weights source's) and its Hugging Face tokenizer (``tiny``: the test
    vocabulary; else the weights directory's, else the card's ``weights.tokenizer`` or weights source)."""
    from fairbench.models.tiny import tiny_vocab_dir

    card, source, wdir = inputs.card, inputs.source, inputs.weights_dir
    aux = card.tokenizer_source or card.weights_source
    if source.scheme == "random" and card.architecture.get("config") == "weights":
        found = locate_aux(inputs, aux, ("config.json",), "config", instead=INSTEAD)
        inputs.config = found / "config.json" if found is not None and found.is_dir() else found
    elif wdir is not None:
        inputs.config = wdir / "config.json"
    if card.tokenizer_source == "tiny":
        inputs.tokenizer, inputs.tokenizer_source = tiny_vocab_dir(), "tiny"
    elif weights_dir_holds(wdir, ("tokenizer_config.json",)):
        inputs.tokenizer, inputs.tokenizer_source = wdir, source.describe()
    else:
        tok_files = ("tokenizer_config.json", "tokenizer.json|vocab.txt", "special_tokens_map.json")
        inputs.tokenizer = locate_aux(inputs, aux, tok_files, "tokenizer", instead=INSTEAD)
        inputs.tokenizer_source = aux


FAMILY = Family(build=build_blip2, default_files=("config.json", "model.safetensors|model.safetensors.index.json"),
                inputs=blip2_inputs)
