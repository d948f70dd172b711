"""The one ``KEY=VALUE`` parser: ``--adapt-arg``, ``--model-arg``, ``--executor-arg``, sweep ``--adapt-arg
ADAPTER.KEY=VALUE``, ``check --tolerance METRIC=NUMBER`` and fair_threshold's ``base_params`` all split here, so
every one of them says the same thing about a malformed item."""

from __future__ import annotations

from collections.abc import Iterable

from fairbench.errors import FairbenchError

__all__ = ["parse_kv", "split_kv"]


def split_kv(item: str, what: str, *, expected: str = "KEY=VALUE", bare_key: str | None = None) -> tuple[str, str]:
    """``(key, value)`` of one ``KEY=VALUE`` item, both stripped. An item without ``=`` is an error naming ``what``
    (the flag or field) and ``expected``, unless ``bare_key`` is given: then it is ``(bare_key, item)``."""
    key, sep, value = str(item).partition("=")
    if not sep:
        if bare_key is not None:
            return bare_key, key.strip()
        raise FairbenchError(f"{what} {item!r}: expected {expected}")
    if not key.strip():
        raise FairbenchError(f"{what} {item!r}: expected {expected} (the key is empty)")
    return key.strip(), value.strip()


def parse_kv(items: Iterable[str] | None, what: str, *, expected: str = "KEY=VALUE") -> dict[str, str]:
    """``{key: value}`` of repeated ``KEY=VALUE`` items (a later key replaces an earlier one)."""
    return dict(split_kv(item, what, expected=expected) for item in items or [])
