"""What identifies a model's weights, tokenizer and config in metrics.json (and so in config_sha256, the
embedding-cache key and the stale-cell check)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

from fairbench.models.base import get_model_card
from fairbench.models.build import build_model

CPU = torch.device("cpu")


def _reorder_safetensors_header(src: Path, dest: Path) -> None:
    """The same tensors with the header's entries in reverse order (safetensors writes its header from a hash
    map, so two processes saving identical tensors can write different bytes)."""
    raw = src.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    reordered = json.dumps(dict(reversed(list(header.items())))).encode()
    reordered += b" " * (-len(reordered) % 8)
    dest.write_bytes(struct.pack("<Q", len(reordered)) + reordered + raw[8 + n:])


def test_weights_sha256_hashes_tensors_not_file_bytes(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    card = get_model_card("tinyclip")
    src = build_model(card, "random", CPU)
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file({k: v.contiguous() for k, v in src.module.state_dict().items()}, str(a),
              metadata={"card": "tinyclip", "task": "synth_cxr"})
    _reorder_safetensors_header(a, b)
    assert a.read_bytes() != b.read_bytes()
    info_a = build_model(card, str(a), CPU).weights_info
    info_b = build_model(card, str(b), CPU).weights_info
    assert info_a["sha256"] == info_b["sha256"]
    # and it still tells other weights apart
    state = {k: v.clone().contiguous() for k, v in src.module.state_dict().items()}
    state["logit_scale"] += 1
    c = tmp_path / "c.safetensors"
    save_file(state, str(c))
    assert build_model(card, str(c), CPU).weights_info["sha256"] != info_a["sha256"]
