"""Whether a model card's weights are present on this machine (for `fairbench ls models`).

Looks only: a file or directory on disk, or the local Hugging Face cache (never the network). A directory
counts as found when it holds every file the card's ``weights.files`` lists.
"""

from __future__ import annotations

from pathlib import Path

from fairbench.models.base import ModelCard
from fairbench.models.weights import find_in_dir, hf_cached_snapshot, parse_weights

__all__ = ["weights_status"]


def _missing_in(directory: Path, card: ModelCard) -> list[str]:
    return [e.split("|")[0] for e in card.weights_files if find_in_dir(directory, e) is None]


def weights_status(card: ModelCard) -> str:
    if not card.weights_source:
        return "generic: pass --weights (a checkpoint of your own)"
    try:
        source = parse_weights(card.weights_source)
    except Exception:  # noqa: BLE001 - listing must not fail on one card
        return f"invalid source ({card.weights_source})"
    if source.scheme == "pretrain":
        from fairbench.models.tinyclip import pretrain_cache_path

        try:
            return "cached" if pretrain_cache_path(card, source.value).exists() else "built on first use"
        except Exception:  # noqa: BLE001 - listing must not fail on one card
            return "built on first use"
    if source.scheme == "random":
        return "random init"
    if source.scheme == "file":
        path = Path(source.value)
        if path.is_file():
            return "found"
        if path.is_dir():
            missing = _missing_in(path, card)
            return "found" if not missing else f"missing {', '.join(missing)} in {path}"
        return f"missing ({path})"
    if source.scheme == "local-dir":
        path = Path(source.value)
        if not path.is_dir():
            return f"missing ({path})"
        missing = _missing_in(path, card)
        return "found" if not missing else f"missing {', '.join(missing)} in {path}"
    if source.scheme == "hf-hub":
        try:
            snap = hf_cached_snapshot(source.value)
        except Exception:  # noqa: BLE001
            snap = None
        if snap is None:
            return f"not in HF cache (hf-hub:{source.value})"
        missing = _missing_in(snap, card)
        return "found (HF cache)" if not missing else f"HF cache lacks {', '.join(missing)}"
    return f"{source.scheme}: {source.value}"
