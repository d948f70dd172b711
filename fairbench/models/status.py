"""Whether a model card's weights are present on this machine (for `fairbench ls models`)."""

from __future__ import annotations

from pathlib import Path

from fairbench.models.base import ModelCard
from fairbench.models.weights import parse_weights

__all__ = ["weights_status"]


def weights_status(card: ModelCard) -> str:
    source = parse_weights(card.weights_source)
    if source.scheme == "pretrain":
        from fairbench.models.tinyclip import pretrain_cache_path

        try:
            return "cached" if pretrain_cache_path(card, source.value).exists() else "built on first use"
        except Exception:  # noqa: BLE001 - listing must not fail on one card
            return "built on first use"
    if source.scheme == "random":
        return "random init"
    if source.scheme in ("file", "local-dir"):
        return "found" if Path(source.value).expanduser().exists() else f"missing ({source.value})"
    return f"{source.scheme}: {source.value}"
