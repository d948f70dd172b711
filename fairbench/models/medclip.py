"""MedCLIP (Wang et al., 2022), re-implemented from RyanWangZf/MedCLIP ``medclip/modeling_medclip.py``.

The ``medclip`` package cannot be used (it fails to import with transformers 5, hard-codes ``.cuda()`` and
builds its towers with ``from_pretrained``). This module builds the same module tree from configs, so the
official ``pytorch_model.bin`` (from ``medclip-vit-pretrained.zip`` / ``medclip-pretrained.zip``) loads
with its own key names:

- ``vision_model.model.*``: a transformers ``SwinModel`` (``microsoft/swin-tiny-patch4-window7-224`` config;
  ``architecture.vision: swin``) with ``vision_model.projection_head`` = ``Linear(768, 512, bias=False)``;
  or torchvision's ResNet-50 whose ``fc`` is the projection ``Linear(2048, 512, bias=False)``
  (``vision: resnet50``).
- ``text_model.model.*``: Bio_ClinicalBERT (``BertModel`` with pooler) and ``text_model.projection_head`` =
  ``Linear(768, 512, bias=False)``. The text embedding is the mean over ALL token positions (padding
  included: upstream passes no mask to the pooling) of hidden_states[1], [2] and [-1], averaged over the three
  layers. A class embedding therefore depends on what its prompts are padded with (each class's prompts are
  tokenised together, ``padding=True``, ``max_length=77``), exactly as upstream.
- ``logit_scale``: ``log(1/0.07)`` at init, clamped to [0, 4.6052] before ``exp`` (at most x100).

Checkpoint renames (transformers 5): ``text_model.model.embeddings.position_ids`` is dropped (now a
non-persistent buffer), and a transformers-4 Swin is renamed as transformers' ``conversion_mapping.py`` does
for ``swin`` (``attention.output.dense`` -> ``attention.o_proj`` first, ``attention.self.{query,key,value}``
-> ``attention.{q,k,v}_proj``, ``intermediate.dense`` -> ``mlp.fc1``, ``output.dense`` -> ``mlp.fc2``,
``attention.self.relative_position_bias_table`` -> ``attention.relative_position_bias.relative_position_bias_table``),
with ``relative_position_index`` dropped (recomputed). The renames touch ``vision_model.model.*`` only (BERT
keeps its names).

Probe feature (``SuperviseClassifier`` calls the vision model with ``project=False``): the 768-d Swin pooled
output for MedCLIP-ViT; MedCLIP-ResNet's vision model ignores ``project`` and returns its ``fc`` output, so
its probe feature is the 512-d embedding.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fairbench.errors import CardError, WeightsError
from fairbench.models.base import ModelCard, VLModel
from fairbench.models.family import Family
from fairbench.models.inputs import resolve_inputs, vocab_tokenizer_inputs
from fairbench.models.towers import bert_hidden_states, bert_model, bert_tokenizer, first_second_last_mean, resnet
from fairbench.models.weights import WeightsSource, files_info

__all__ = [
    "FAMILY",
    "LOGIT_SCALE_MAX",
    "SWIN_TINY",
    "MedCLIPModel",
    "MedCLIPModule",
    "build_medclip",
    "convert_medclip_state_dict",
]

#: ``microsoft/swin-tiny-patch4-window7-224`` (the values that differ from nothing: all of them, for the record)
SWIN_TINY: dict[str, Any] = {
    "image_size": 224, "patch_size": 4, "num_channels": 3, "embed_dim": 96, "depths": [2, 2, 6, 2],
    "num_heads": [3, 6, 12, 24], "window_size": 7, "mlp_ratio": 4.0, "qkv_bias": True, "hidden_act": "gelu",
    "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "drop_path_rate": 0.1,
    "use_absolute_embeddings": False, "layer_norm_eps": 1e-5, "initializer_range": 0.02,
}
LOGIT_SCALE_MAX = 4.6052

#: transformers-4 Swin names -> transformers-5 names (order matters: attention.output.dense first)
_SWIN_RENAMES = [
    (r"attention\.output\.dense\.", "attention.o_proj."),
    (r"attention\.self\.query\.", "attention.q_proj."),
    (r"attention\.self\.key\.", "attention.k_proj."),
    (r"attention\.self\.value\.", "attention.v_proj."),
    (r"attention\.self\.relative_position_bias_table",
     "attention.relative_position_bias.relative_position_bias_table"),
    (r"intermediate\.dense\.", "mlp.fc1."),
    (r"\.output\.dense\.", ".mlp.fc2."),
]


class MedCLIPVision(nn.Module):
    def __init__(self, arch: dict[str, Any]) -> None:
        super().__init__()
        kind = arch.get("vision", "swin")
        proj = int(arch.get("proj_dim", 512))
        self.kind = kind
        if kind == "swin":
            from transformers import SwinConfig, SwinModel

            cfg = SwinConfig(**{**SWIN_TINY, **arch.get("swin", {})})
            self.model = SwinModel(cfg)  # add_pooling_layer=True as AutoModel.from_pretrained
            self.projection_head = nn.Linear(self.model.num_features, proj, bias=False)
            self.feature_dim = int(self.model.num_features)
        elif kind == "resnet50":
            self.model = resnet(arch.get("resnet"))
            self.model.fc = nn.Linear(self.model.fc.in_features, proj, bias=False)
            self.feature_dim = proj  # upstream returns the fc output even with project=False
        else:
            raise CardError(f"architecture.vision must be swin or resnet50, got {kind!r}")

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(probe feature, projected embedding), one forward pass."""
        if pixel_values.shape[1] == 1:
            pixel_values = pixel_values.repeat((1, 3, 1, 1))
        if self.kind == "swin":
            pooled = self.model(pixel_values)["pooler_output"]
            return pooled, self.projection_head(pooled)
        emb = self.model(pixel_values)
        return emb, emb


class MedCLIPText(nn.Module):
    def __init__(self, arch: dict[str, Any]) -> None:
        super().__init__()
        self.model = bert_model(arch.get("text", {}), pooler=True)
        self.projection_head = nn.Linear(self.model.config.hidden_size, int(arch.get("proj_dim", 512)), bias=False)

    def forward(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        hs = bert_hidden_states(self.model, {"input_ids": tokens["input_ids"],
                                             "attention_mask": tokens["attention_mask"]})
        return self.projection_head(first_second_last_mean(hs))


class MedCLIPModule(nn.Module):
    def __init__(self, arch: dict[str, Any]) -> None:
        super().__init__()
        self.vision_model = MedCLIPVision(arch)
        self.text_model = MedCLIPText(arch)
        self.logit_scale = nn.Parameter(torch.log(torch.tensor(1 / float(arch.get("logit_scale_init", 0.07)))))


def convert_medclip_state_dict(state: dict[str, torch.Tensor], target_keys: set[str]) -> dict[str, torch.Tensor]:
    """Official MedCLIP keys -> this module's keys (see the module docstring). Idempotent."""
    out = {}
    for key, value in state.items():
        if key == "text_model.model.embeddings.position_ids" and key not in target_keys:
            continue
        if key.startswith("vision_model.model."):
            if key.endswith("relative_position_index"):
                continue
            if key not in target_keys:
                for pattern, repl in _SWIN_RENAMES:
                    new = re.sub(pattern, repl, key)
                    if new != key:
                        key = new
                        break
        out[key] = value
    return out


class MedCLIPModel(VLModel):
    default_ensemble = "mean_logit"  # README: PromptClassifier(model, ensemble=True) = mean over prompts

    def __init__(self, card: ModelCard, module: MedCLIPModule, tokenizer: Any, device: torch.device,
                 weights_info: dict[str, Any]) -> None:
        self.card = card
        self.net = module.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device
        self.weights_info = weights_info
        self.context_length = int(card.architecture.get("context_length", 77))
        if card.probe_feature not in ("pre_projection", "embedding"):
            raise CardError(f"{card.path}: field 'probe_feature' must be pre_projection or embedding for MedCLIP")

    @property
    def module(self) -> nn.Module:
        return self.net

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(list(texts), truncation=True, padding=True, max_length=self.context_length,
                             return_tensors="pt")
        return {k: v.to(self.device) for k, v in enc.items()}

    def image_outputs(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        feature, emb = self.net.vision_model(pixels.to(self.device))
        return {"embedding": emb, "feature": feature if self.card.probe_feature == "pre_projection" else emb}

    def encode_text(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net.text_model(tokens)

    def logit_scale(self) -> torch.Tensor:
        return self.net.logit_scale.detach().clamp(0, LOGIT_SCALE_MAX).exp()


def build_medclip(card: ModelCard, source: WeightsSource, device: torch.device) -> MedCLIPModel:
    if source.scheme not in ("random", "file", "local-dir", "hf-hub"):
        raise WeightsError(f"model '{card.name}': weights source '{source.describe()}' is not supported by MedCLIP "
                           f"(use pytorch_model.bin, local-dir:, hf-hub: or random)")
    inputs = resolve_inputs(card, source)
    inputs.raise_if_missing()  # every missing file at once, before the heavy load
    tokenizer = bert_tokenizer(inputs.tokenizer)
    if source.scheme == "random":
        module = MedCLIPModule(card.architecture)
        info: dict[str, Any] = {"source": "random", "sha256": "random"}
    else:
        location = inputs.weights
        path = location / "pytorch_model.bin" if location.is_dir() else location
        state = _read_state(path)
        module = MedCLIPModule(card.architecture)
        target = set(module.state_dict())
        state = convert_medclip_state_dict(state, target)
        from fairbench.models.openclip import load_strict

        load_strict(module, state, where=str(path), card=card)
        info = files_info(source.describe() if source.scheme != "file" else str(path), [path], module)
    return MedCLIPModel(card, module, tokenizer, device, {**info, **inputs.info()})


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    from fairbench.models.openclip import load_state_file

    return load_state_file(path)


#: the official checkpoint file; the tokenizer is a BERT vocab.txt (in the weights directory or the card's
#: ``weights.tokenizer``)
FAMILY = Family(build=build_medclip, default_files=("pytorch_model.bin",), inputs=vocab_tokenizer_inputs,
                architecture=lambda card: MedCLIPModule(card.architecture), layout="medclip")
