"""Each family's LoRA targets adapt its vision tower (and only it): count peft-adapted modules per tower."""

from __future__ import annotations

import re
import types

import pytest
import torch

from fairbench.models.base import VLModel, get_model_card
from fairbench.models.build import build_model

#: card -> (vision tower prefix, text tower prefixes, expected number of adapted vision modules)
TINY = {
    "tiny_openai_clip": ("visual.", ("transformer.", "token_embedding", "ln_final"), 2),
    "tiny_biomedclip": ("visual.", ("text.",), 2),
    "tiny_medclip_vit": ("vision_model.", ("text_model.",), 4),
    "tiny_medclip_resnet": ("vision_model.", ("text_model.",), 6),
    "tiny_gloria": ("img_encoder.", ("text_encoder.",), 6),
    "tiny_blip2": ("vision_model.", ("qformer.", "embeddings."), 2),
}


def _count(module: torch.nn.Module, prefix: str | tuple[str, ...]) -> int:
    from peft.tuners.lora import LoraLayer

    # peft's MultiheadAttention LoRA also adapts the wrapped out_proj ("...attn.base_layer.out_proj"): count the
    # targets themselves
    return sum(1 for name, m in module.named_modules()
               if isinstance(m, LoraLayer) and name.startswith(prefix) and ".base_layer." not in name)


@pytest.mark.parametrize("name", list(TINY))
def test_lora_targets_hit_the_vision_tower_only(name: str) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    vision, text, expected = TINY[name]
    model = build_model(get_model_card(name), "random", torch.device("cpu"))
    module = inject_adapter_in_model(LoraConfig(r=2, lora_alpha=4, target_modules=model.lora_target_modules()),
                                     model.module)
    assert _count(module, vision) == expected
    assert _count(module, text) == 0
    # the adapted model still runs, and only LoRA weights are trainable after peft marks them
    with torch.no_grad():
        out = model.image_outputs(torch.zeros(1, 3, model.card.preprocessing.image_size,
                                              model.card.preprocessing.image_size))
    assert torch.isfinite(out["embedding"]).all()


def _names(card_name: str) -> list[str]:
    """Module names of a real card's architecture, built on the meta device (no memory, no weights)."""
    card = get_model_card(card_name)
    with torch.device("meta"):
        if card.family == "open_clip" and "model_name" in card.architecture:
            import open_clip

            arch = dict(card.architecture)
            module = open_clip.create_model(arch.pop("model_name"), pretrained=None, device="meta", **arch)
        elif card.family == "open_clip":
            from fairbench.models.openclip import create_architecture

            module = create_architecture(card)
        elif card.family == "medclip":
            from fairbench.models.medclip import MedCLIPModule

            module = MedCLIPModule(card.architecture)
        elif card.family == "gloria":
            from fairbench.models.gloria import GLoRIAModule

            module = GLoRIAModule(card.architecture)
        else:
            from transformers import Blip2Config, Blip2ForImageTextRetrieval

            module = Blip2ForImageTextRetrieval(Blip2Config(qformer_config={"use_qformer_text_input": True}))
    return [n for n, _ in module.named_modules()]


@pytest.mark.parametrize("card_name,vision,count", [
    ("clip_vit_b16", "visual.", 12), ("clip_vit_b32", "visual.", 12), ("biomedclip", "visual.", 12),
    ("medclip_vit", "vision_model.", 24), ("medclip_resnet", "vision_model.", 27), ("gloria", "img_encoder.", 27),
    ("blip2", "vision_model.", 39),
])
def test_real_cards_lora_targets_match_only_vision_modules(card_name: str, vision: str, count: int) -> None:
    card = get_model_card(card_name)
    pattern = re.compile(VLModel.lora_target_modules(types.SimpleNamespace(card=card)))  # type: ignore[arg-type]
    hits = [n for n in _names(card_name) if pattern.fullmatch(n)]
    assert len(hits) == count
    assert all(h.startswith(vision) for h in hits)


def test_plain_entries_use_peft_suffix_semantics() -> None:
    card = types.SimpleNamespace(card=types.SimpleNamespace(lora_targets=("attn", "re:a\\.b"), path="x"))
    pattern = re.compile(VLModel.lora_target_modules(card))  # type: ignore[arg-type]
    assert pattern.fullmatch("visual.transformer.resblocks.0.attn")
    assert pattern.fullmatch("attn") and pattern.fullmatch("a.b")
    assert not pattern.fullmatch("visual.attn.out_proj") and not pattern.fullmatch("xattn")
