"""GLoRIA (Huang et al., ICCV 2021), re-implemented from marshuang80/gloria (``gloria/models/*.py``,
``gloria/gloria.py``, ``gloria/loss/gloria_loss.py``).

``pip install gloria`` is an unrelated package; this module builds GLoRIA's module tree from configs so that
the official Lightning checkpoint ``chexpert_resnet50.ckpt`` loads with its own key names (``gloria.`` prefix
removed, as upstream's ``load_gloria`` does):

- ``img_encoder.model.*``: torchvision ResNet-50 with ``fc`` = identity; inputs are upsampled to 299 x 299
  (bilinear, ``align_corners=True``) inside the encoder. Local features: ``layer3`` (1024 x 19 x 19) ->
  ``img_encoder.local_embedder`` (1x1 conv to 768, no bias); global: ``layer4`` -> average pool -> 2048 ->
  ``img_encoder.global_embedder`` (Linear 2048 -> 768).
- ``text_encoder.model.*``: Bio_ClinicalBERT (``BertModel`` with pooler). The last 4 hidden layers; word pieces
  merged into words by summing (``[CLS]`` and ``[SEP]`` are words; the sequence is zero-padded to
  ``word_num`` = 97 word positions); word embeddings = sum over the 4 layers; the sentence embedding = mean over
  all 97 word positions (padding included), summed over the 4 layers. No text projection: the joint space is
  768-d. Text is cleaned as ``process_text`` does (sentence split, ``\\w+`` tokens, lower case, sentences of
  one token dropped) and tokenised to ``max_length=97`` with padding.

Similarity (``get_similarities(..., "both")``): global = cosine(image global, sentence); local = each word
attends over the 19 x 19 regions (``attention_fn`` with temp1 4), cosine(word, attended context), then
``log(max_words exp(5 * cos))``; the two averaged. Upstream slices the words ``1 : cap_len + 1`` where
``cap_len`` counts the CHARACTERS of the prompt (``len([w for w in txt if not w.startswith("[")])`` on a
string): so zero-padding positions enter the max (cos = 0), which floors the local score at 0. fairbench does
the same by default (``options.local_word_count: characters``, clamped to the 96 positions after ``[CLS]``,
where upstream would fail), or counts words plus ``[SEP]`` as GLoRIA's training loss does (``words``).

Zero-shot (``zero_shot_classification``): per class the MAX over its prompts of the combined similarity, then
each class column is z-scored across the images scored together (``utils.normalize``: mean and population std
over axis 0; skipped for a single image). fairbench z-scores over all images of the evaluated split, so a
score depends on which other images are in that split (documented in docs/models.md).

Probe feature (``load_img_classification_model``): the 2048-d global feature before ``global_embedder``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fairbench.errors import CardError, WeightsError
from fairbench.models.base import ModelCard, VLModel
from fairbench.models.family import Family
from fairbench.models.inputs import resolve_inputs, vocab_tokenizer_inputs
from fairbench.models.towers import bert_hidden_states, bert_model, bert_tokenizer, resnet, resnet_channels
from fairbench.models.weights import WeightsSource, files_info
from fairbench.models.zeroshot import ZeroShotHead, family_prompts, reduce_prompts, resolve_rule

__all__ = ["FAMILY", "GLoRIAModel", "GLoRIAModule", "attention_fn", "build_gloria", "clean_text", "convert_gloria_state_dict"]


class GLoRIAImageEncoder(nn.Module):
    def __init__(self, arch: dict[str, Any]) -> None:
        super().__init__()
        self.model = resnet(arch.get("resnet"))
        self.model.fc = nn.Identity()
        interm, feat = resnet_channels(arch.get("resnet"))
        dim = int(arch.get("embedding_dim", 768))
        self.global_embedder = nn.Linear(feat, dim)
        self.local_embedder = nn.Conv2d(interm, dim, kernel_size=1, stride=1, padding=0, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(output_size=(1, 1))
        self.upsample = int(arch.get("upsample", 299))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(global feature [n, 2048], local feature [n, 1024, 19, 19]) as ``resnet_forward``."""
        x = F.interpolate(x, size=(self.upsample, self.upsample), mode="bilinear", align_corners=True)
        m = self.model
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        x = m.layer3(m.layer2(m.layer1(x)))
        local = x
        x = self.pool(m.layer4(x))
        return x.view(x.size(0), -1), local


class GLoRIATextEncoder(nn.Module):
    def __init__(self, arch: dict[str, Any]) -> None:
        super().__init__()
        self.model = bert_model(arch.get("text", {}), pooler=True)
        self.last_n_layers = int(arch.get("last_n_layers", 4))
        if self.last_n_layers < 2:
            raise CardError("architecture.last_n_layers must be at least 2 (GLoRIA's released configuration is 4)")


class GLoRIAModule(nn.Module):
    def __init__(self, arch: dict[str, Any]) -> None:
        super().__init__()
        self.text_encoder = GLoRIATextEncoder(arch)
        self.img_encoder = GLoRIAImageEncoder(arch)
        if int(arch.get("embedding_dim", 768)) != self.text_encoder.model.config.hidden_size:
            raise CardError("architecture.embedding_dim must equal the BERT hidden size (GLoRIA has no text "
                            "projection)")


def clean_text(text: str) -> str:
    """GLoRIA's ``process_text`` cleaning of one report/prompt."""
    text = text.replace("\n", " ")
    captions = re.split(r"[0-9]+\.", text)
    captions = [sent for point in captions for sent in point.split(".")]
    sents = []
    for cap in captions:
        cap = cap.replace("\ufffd\ufffd", " ")
        tokens = re.findall(r"\w+", cap.lower())
        if len(tokens) <= 1:
            continue
        kept = [t.encode("ascii", "ignore").decode("ascii") for t in tokens]
        sents.append(" ".join(t for t in kept if t))
    return " ".join(sents)


def cosine_similarity(x1: torch.Tensor, x2: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    w12 = torch.sum(x1 * x2, dim)
    w1 = torch.norm(x1, 2, dim)
    w2 = torch.norm(x2, 2, dim)
    return (w12 / (w1 * w2).clamp(min=eps)).squeeze()


def attention_fn(query: torch.Tensor, context: torch.Tensor, temp1: float) -> tuple[torch.Tensor, torch.Tensor]:
    """GLoRIA's word-region attention: query [b, d, q], context [b, d, h, w] -> ([b, d, q], [b, q, h, w])."""
    batch_size, query_len = query.size(0), query.size(2)
    ih, iw = context.size(2), context.size(3)
    source_len = ih * iw
    context = context.reshape(batch_size, -1, source_len)
    context_t = torch.transpose(context, 1, 2).contiguous()
    attn = torch.bmm(context_t, query).view(batch_size * source_len, query_len)
    attn = torch.softmax(attn, dim=-1).view(batch_size, source_len, query_len)
    attn = torch.transpose(attn, 1, 2).contiguous().view(batch_size * query_len, source_len)
    attn = torch.softmax(attn * temp1, dim=-1).view(batch_size, query_len, source_len)
    weighted = torch.bmm(context, torch.transpose(attn, 1, 2).contiguous())
    return weighted, attn.view(batch_size, -1, ih, iw)


def convert_gloria_state_dict(state: dict[str, torch.Tensor], target_keys: set[str]) -> dict[str, torch.Tensor]:
    """Lightning keys (``gloria.`` prefix) -> module keys; the BERT ``position_ids`` buffer of older
    transformers is dropped."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("gloria.")
        if key == "text_encoder.model.embeddings.position_ids" and key not in target_keys:
            continue
        out[key] = value
    return out


class GLoRIAModel(VLModel):
    default_ensemble = "max_logit"

    def __init__(self, card: ModelCard, module: GLoRIAModule, tokenizer: Any, device: torch.device,
                 weights_info: dict[str, Any]) -> None:
        self.card = card
        self.net = module.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device
        self.weights_info = weights_info
        arch = card.architecture
        self.word_num = int(arch.get("word_num", 97))
        self.temp1 = float(arch.get("temp1", 4.0))
        self.temp2 = float(arch.get("temp2", 5.0))
        self.word_count = str(card.options.get("local_word_count", "characters"))
        if self.word_count not in ("characters", "words"):
            raise CardError(f"{card.path}: field 'options.local_word_count' must be characters or words")
        self.zscore = bool(card.options.get("zscore", True))
        self.id_to_token = {v: k for k, v in tokenizer.get_vocab().items()}
        if card.probe_feature not in ("pre_projection", "embedding"):
            raise CardError(f"{card.path}: field 'probe_feature' must be pre_projection or embedding for GLoRIA")

    @property
    def module(self) -> nn.Module:
        return self.net

    # -- text ------------------------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> dict[str, Any]:
        cleaned = [clean_text(t) for t in texts]
        enc = self.tokenizer(cleaned, return_tensors="pt", truncation=True, padding="max_length",
                             max_length=self.word_num)
        out: dict[str, Any] = {k: v.to(self.device) for k, v in enc.items()}
        out["texts"] = list(texts)
        return out

    def _aggregate(self, embeddings: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, list[list[str]]]:
        """Word pieces -> words by summing (``BertEncoder.aggregate_tokens``): [b, l, t, d] -> [b, l, t, d]."""
        _batch, layers, num_words, dim = embeddings.shape
        embeddings = embeddings.permute(0, 2, 1, 3)
        agg_batch, sentences = [], []
        for embs, caption in zip(embeddings, ids):
            agg, bank, words, word_bank = [], [], [], []
            for word_emb, word_id in zip(embs, caption):
                word = self.id_to_token[int(word_id)]
                if word == "[SEP]":
                    agg.append(torch.stack(bank).sum(axis=0))
                    words.append("".join(word_bank))
                    agg.append(word_emb)
                    words.append(word)
                    break
                if not word.startswith("##"):
                    if not word_bank:
                        bank.append(word_emb)
                        word_bank.append(word)
                    else:
                        agg.append(torch.stack(bank).sum(axis=0))
                        words.append("".join(word_bank))
                        bank, word_bank = [word_emb], [word]
                else:
                    bank.append(word_emb)
                    word_bank.append(word[2:])
            stacked = torch.stack(agg)
            pad = num_words - len(stacked)
            agg_batch.append(torch.cat([stacked, torch.zeros(pad, layers, dim, device=stacked.device)]))
            sentences.append(words + ["[PAD]"] * pad)
        return torch.stack(agg_batch).permute(0, 2, 1, 3), sentences

    def text_outputs(self, tokens: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, list[list[str]]]:
        """(word embeddings [b, d, word_num], sentence embeddings [b, d], words) as ``BertEncoder.forward``."""
        hs = bert_hidden_states(self.net.text_encoder.model, tokens)
        n = self.net.text_encoder.last_n_layers
        embeddings = torch.stack(hs[-n:]).permute(1, 0, 2, 3)
        embeddings, sents = self._aggregate(embeddings, tokens["input_ids"])
        sent_embeddings = embeddings.mean(axis=2)
        word_embeddings = embeddings.sum(axis=1)
        sent_embeddings = sent_embeddings.sum(axis=1)
        return word_embeddings.permute(0, 2, 1), sent_embeddings, sents

    def encode_text(self, tokens: dict[str, Any]) -> torch.Tensor:
        return self.text_outputs(tokens)[1]

    def cap_lens(self, tokens: dict[str, Any], sents: list[list[str]]) -> list[int]:
        limit = self.word_num - 1
        if self.word_count == "characters":  # upstream process_text: counts characters of the raw string
            lens = [len([w for w in txt if not w.startswith("[")]) for txt in tokens["texts"]]
        else:  # words + [SEP], as GLoRIA's training loss counts them
            lens = [len([w for w in s if not w.startswith("[")]) + 1 for s in sents]
        return [max(1, min(n, limit)) for n in lens]

    # -- image -----------------------------------------------------------------------------------
    def image_outputs(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        enc = self.net.img_encoder
        global_ft, local_ft = enc(pixels.to(self.device))
        emb_g, emb_l = enc.global_embedder(global_ft), enc.local_embedder(local_ft)
        return {"embedding": emb_g, "feature": global_ft if self.card.probe_feature == "pre_projection" else emb_g,
                "local": emb_l}

    # -- similarity ------------------------------------------------------------------------------
    def logit_scale(self) -> torch.Tensor:
        return torch.tensor(1.0, device=self.device)  # global similarity is a plain cosine

    def local_similarities(self, img_emb_l: torch.Tensor, word_emb: torch.Tensor,
                           cap_lens: list[int]) -> torch.Tensor:
        """``get_local_similarities``: [n_img, n_txt]."""
        batch_size = img_emb_l.shape[0]
        sims = []
        for i in range(len(word_emb)):
            words_num = cap_lens[i]
            word = word_emb[i, :, 1:words_num + 1].unsqueeze(0).contiguous().repeat(batch_size, 1, 1)
            context, _ = attention_fn(word, img_emb_l, self.temp1)
            word = word.transpose(1, 2).contiguous().view(batch_size * words_num, -1)
            context = context.transpose(1, 2).contiguous().view(batch_size * words_num, -1)
            row = cosine_similarity(word, context).view(batch_size, words_num)
            row = row.mul(self.temp2).exp()
            row = torch.log(torch.max(row, dim=1, keepdim=True).values)
            sims.append(row)
        return torch.cat(sims, 1)

    def full_similarity(self, image_out: dict[str, torch.Tensor], text: tuple[torch.Tensor, torch.Tensor, list[int]]
                        ) -> torch.Tensor:
        """(local + global) / 2, [n_img, n_txt] (``get_similarities(..., "both")``)."""
        word_emb, sent_emb, cap_lens = text
        global_sim = self.similarity(image_out["embedding"].to(self.device), sent_emb)
        local_sim = self.local_similarities(image_out["local"].to(self.device), word_emb, cap_lens)
        return (local_sim + global_sim) / 2

    @torch.no_grad()
    def zeroshot_head(self, task: Any, ensemble: str = "family") -> ZeroShotHead:
        rule = resolve_rule(self, ensemble)
        if rule in ("mean_embedding", "name_sum"):
            raise CardError(f"model '{self.card.name}': GLoRIA's similarity has a local (word-region) part, so "
                            f"prompts cannot be averaged into one embedding (ensemble {rule}); use max_logit "
                            f"(GLoRIA's rule), mean_logit or family")
        prompts, record = family_prompts(self, task)
        texts = []
        for p in prompts:
            tokens = self.tokenize(p)
            word_emb, sent_emb, sents = self.text_outputs(tokens)
            texts.append((word_emb, sent_emb, self.cap_lens(tokens, sents)))
        reduce = reduce_prompts(rule)

        def score(out: dict[str, torch.Tensor]) -> torch.Tensor:
            return torch.stack([reduce(self.full_similarity(out, t)) for t in texts], dim=1)

        def finalize(logits: torch.Tensor) -> torch.Tensor:
            if not self.zscore or logits.shape[0] <= 1:
                return logits
            std = logits.std(dim=0, unbiased=False)
            return (logits - logits.mean(dim=0)) / torch.where(std > 0, std, torch.ones_like(std))

        record = {**record, "rule": rule, "similarity": "(local + global) / 2",
                  "zscore_over": "images of the split" if self.zscore else None,
                  "local_word_count": self.word_count}
        return ZeroShotHead(classes=tuple(task.classes), prompts=prompts, rule=rule, score=score,
                            needs=("embedding", "local"), finalize=finalize, batch_size=32, record=record)


_CHECKED_HPARAMS = {("model", "text", "last_n_layers"): "last_n_layers",
                    ("data", "text", "word_num"): "word_num",
                    ("model", "text", "embedding_dim"): "embedding_dim"}


def _checkpoint_config(card: ModelCard, hparams: Any) -> dict[str, Any]:
    """What the checkpoint's own hyper-parameters say, checked against the card where it matters."""
    from fairbench.models.checkpoints import to_plain

    plain = to_plain(hparams) if hparams is not None else None
    if not isinstance(plain, dict):
        return {}
    out: dict[str, Any] = {}
    for path in [("model", "vision", "model_name"), ("model", "text", "bert_type"),
                 ("model", "text", "aggregate_method"), ("model", "text", "agg_tokens"),
                 ("data", "image", "imsize"), *_CHECKED_HPARAMS]:
        node: Any = plain
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            out[".".join(path)] = node
    for path, arch_key in _CHECKED_HPARAMS.items():
        ours = card.architecture.get(arch_key, {"last_n_layers": 4, "word_num": 97, "embedding_dim": 768}[arch_key])
        theirs = out.get(".".join(path))
        if theirs is not None and int(theirs) != int(ours):
            raise WeightsError(f"model '{card.name}': the checkpoint was trained with {'.'.join(path)}={theirs}, "
                               f"the card ({card.path}) says architecture.{arch_key}={ours}")
    if out.get("model.text.aggregate_method", "sum") != "sum":
        raise WeightsError(f"model '{card.name}': the checkpoint aggregates BERT layers by "
                           f"{out['model.text.aggregate_method']!r}; fairbench implements GLoRIA's 'sum'")
    return out


def build_gloria(card: ModelCard, source: WeightsSource, device: torch.device) -> GLoRIAModel:
    if source.scheme not in ("random", "file", "local-dir", "hf-hub"):
        raise WeightsError(f"model '{card.name}': weights source '{source.describe()}' is not supported by GLoRIA "
                           f"(use the .ckpt file, local-dir:, hf-hub: or random)")
    inputs = resolve_inputs(card, source)
    inputs.raise_if_missing()  # weights and tokenizer, every missing file at once
    tokenizer = bert_tokenizer(inputs.tokenizer)
    if source.scheme == "random":
        module = GLoRIAModule(card.architecture)
        info: dict[str, Any] = {"source": "random", "sha256": "random"}
    else:
        location = inputs.weights
        path: Path = location
        if location.is_dir():
            path = location / (card.weights_files or ("chexpert_resnet50.ckpt",))[0].split("|")[0]
        from fairbench.models.checkpoints import load_checkpoint
        from fairbench.models.openclip import load_strict

        ckpt = load_checkpoint(path)
        state = ckpt.get("state_dict")
        if not isinstance(state, dict):
            raise WeightsError(f"{path}: not a Lightning checkpoint (no 'state_dict'); expected GLoRIA's "
                               f"chexpert_resnet50.ckpt")
        config = _checkpoint_config(card, ckpt.get("hyper_parameters"))
        module = GLoRIAModule(card.architecture)
        load_strict(module, convert_gloria_state_dict(state, set(module.state_dict())), where=str(path), card=card)
        info = files_info(source.describe() if source.scheme != "file" else str(path), [path], module)
        if config:
            info["checkpoint_config"] = config
    return GLoRIAModel(card, module, tokenizer, device, {**info, **inputs.info()})


#: the official checkpoint file; the tokenizer is a BERT vocab.txt (in the weights directory or the card's
#: ``weights.tokenizer``)
FAMILY = Family(build=build_gloria, default_files=("chexpert_resnet50.ckpt",), inputs=vocab_tokenizer_inputs,
                architecture=lambda card: GLoRIAModule(card.architecture), layout="gloria")
