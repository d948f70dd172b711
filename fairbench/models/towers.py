"""Towers shared by the re-implemented families, built from configs (never downloaded).

- :func:`bert_model`: a transformers ``BertModel`` (Bio_ClinicalBERT for MedCLIP and GLoRIA) from the card's
  config dict; ``add_pooling_layer`` as the upstream ``AutoModel.from_pretrained`` default (True).
- :func:`bert_tokenizer`: the word-piece tokenizer from a local directory (:mod:`fairbench.models.inputs`
  finds it): the weights directory when it holds ``vocab.txt``, else the card's ``weights.tokenizer`` source
  (``hf-hub:emilyalsentzer/Bio_ClinicalBERT`` from the local Hugging Face cache, a ``local-dir:``, or
  ``tiny``). Bio_ClinicalBERT ships no
  ``tokenizer_config.json``, so upstream's ``AutoTokenizer`` lower-cases (the BERT default); so does this.
- :func:`resnet`: torchvision's ResNet-50 (``weights=None``), or the same module tree with narrower channels
  and fewer blocks for tiny builds (identical parameter names).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["BIO_CLINICAL_BERT", "bert_hidden_states", "bert_model", "bert_tokenizer", "resnet", "resnet_channels"]

#: ``emilyalsentzer/Bio_ClinicalBERT``'s config.json (the text tower of MedCLIP and GLoRIA)
BIO_CLINICAL_BERT: dict[str, Any] = {
    "vocab_size": 28996, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "intermediate_size": 3072, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 512, "type_vocab_size": 2,
    "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0,
}


def bert_model(config: dict[str, Any], *, pooler: bool = True) -> nn.Module:
    from transformers import BertConfig, BertModel

    cfg = BertConfig(**{**BIO_CLINICAL_BERT, **config})
    return BertModel(cfg, add_pooling_layer=pooler)


def bert_tokenizer(directory: Path) -> Any:
    """A BERT tokenizer loaded from local files only, from the directory
    :func:`fairbench.models.inputs.resolve_inputs` found (see the module docstring)."""
    from transformers import BertTokenizer

    return BertTokenizer.from_pretrained(str(directory), local_files_only=True)


def _narrow_resnet(layers: list[int], width: int) -> nn.Module:
    """torchvision's ResNet (Bottleneck) module tree with base width ``width`` instead of 64 (tiny builds):
    the same parameter names, so the same checkpoint layout."""
    from torchvision.models.resnet import Bottleneck, ResNet

    class NarrowResNet(ResNet):
        def __init__(self) -> None:
            nn.Module.__init__(self)
            self._norm_layer = nn.BatchNorm2d
            self.inplanes, self.dilation, self.groups, self.base_width = width, 1, 1, 64
            self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            self.layer1 = self._make_layer(Bottleneck, width, layers[0])
            self.layer2 = self._make_layer(Bottleneck, width * 2, layers[1], stride=2)
            self.layer3 = self._make_layer(Bottleneck, width * 4, layers[2], stride=2)
            self.layer4 = self._make_layer(Bottleneck, width * 8, layers[3], stride=2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(width * 8 * Bottleneck.expansion, 1000)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    return NarrowResNet()


def resnet(config: dict[str, Any] | None = None) -> nn.Module:
    """``{layers: [3, 4, 6, 3], width: 64}`` (the default) is torchvision's resnet50(weights=None)."""
    from torchvision.models import resnet50

    cfg = {"layers": [3, 4, 6, 3], "width": 64, **(config or {})}
    if list(cfg["layers"]) == [3, 4, 6, 3] and int(cfg["width"]) == 64:
        return resnet50(weights=None)
    return _narrow_resnet(list(cfg["layers"]), int(cfg["width"]))


def resnet_channels(config: dict[str, Any] | None = None) -> tuple[int, int]:
    """(layer3 channels, layer4 channels): (1024, 2048) for ResNet-50."""
    width = int({"width": 64, **(config or {})}["width"])
    return width * 4 * 4, width * 8 * 4


def bert_hidden_states(model: nn.Module, tokens: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    out = model(input_ids=tokens["input_ids"], attention_mask=tokens.get("attention_mask"),
                token_type_ids=tokens.get("token_type_ids"), output_hidden_states=True)
    return tuple(out.hidden_states)


def first_second_last_mean(hidden_states: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The text pooling MedCLIP's and FLAIR's released code share: hidden states of layers 1, 2 and the last, each
    averaged over every token position (padding included, as upstream), then over the three layers: [b, dim]."""
    stacked = torch.stack([hidden_states[1], hidden_states[2], hidden_states[-1]])  # layer, batch, token, dim
    return stacked.permute(1, 0, 2, 3).mean(2).mean(1)
