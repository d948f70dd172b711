"""The in-place QuickGELU gives open_clip's numbers bit for bit, with and without gradients."""

from __future__ import annotations

import copy

import torch

from fairbench.models.base import get_model_card
from fairbench.models.fast_ops import InplaceQuickGELU, use_inplace_quick_gelu
from fairbench.models.openclip import create_architecture


def test_inplace_quick_gelu_is_bitwise_open_clips() -> None:
    from open_clip.transformer import QuickGELU

    x = torch.randn(4, 7, 256) * 3
    with torch.no_grad():
        assert torch.equal(InplaceQuickGELU()(x), QuickGELU()(x))
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    InplaceQuickGELU()(a).sum().backward()
    QuickGELU()(b).sum().backward()
    assert torch.equal(a.grad, b.grad)


def test_swapped_model_encodes_identically_and_keeps_its_state_dict() -> None:
    from open_clip.transformer import QuickGELU

    torch.manual_seed(0)
    stock = create_architecture(get_model_card("tiny_openai_clip")).eval()
    fast = copy.deepcopy(stock)
    n = use_inplace_quick_gelu(fast)
    assert n > 0 and not any(isinstance(m, QuickGELU) for m in fast.modules())
    assert list(fast.state_dict()) == list(stock.state_dict())
    pixels = torch.randn(3, 3, 32, 32)
    tokens = torch.randint(0, 49408, (2, 77))
    with torch.inference_mode():
        assert torch.equal(fast.encode_image(pixels), stock.encode_image(pixels))
        assert torch.equal(fast.encode_text(tokens), stock.encode_text(tokens))
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        assert torch.equal(fast.encode_image(pixels), stock.encode_image(pixels))


def test_models_built_by_fairbench_use_it() -> None:
    from fairbench.models.build import build_model

    model = build_model(get_model_card("tiny_openai_clip"), "random", torch.device("cpu"))
    assert any(isinstance(m, InplaceQuickGELU) for m in model.module.modules())
