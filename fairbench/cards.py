"""Shared helpers for YAML cards (task cards and model cards).

Cards are read with ``yaml.safe_load``. ``include:`` pulls in a parent card (path relative to the including
file); mappings are merged key by key, everything else in the child replaces the parent's value. Validation
helpers raise :class:`~fairbench.errors.CardError` naming the file and the dotted field path.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import yaml

from fairbench.errors import CardError

__all__ = ["Fields", "card_sha256", "open_card", "read_yaml_with_includes"]


def _deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml_with_includes(path: Path, _stack: tuple[Path, ...] = ()) -> dict:
    """Read a YAML mapping, resolving ``include:`` (a path or a list of paths, merged in order)."""
    path = Path(path).resolve()
    if path in _stack:
        chain = " -> ".join(str(p) for p in (*_stack, path))
        raise CardError(f"{path}: include cycle: {chain}")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        where = f" (included from {_stack[-1]})" if _stack else ""
        raise CardError(f"{path}: card file not found{where}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CardError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise CardError(f"{path}: a card must be a YAML mapping, got {type(data).__name__}")
    includes = data.pop("include", None)
    if includes is None:
        return data
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise CardError(f"{path}: field 'include' must be a path or a list of paths")
    merged: dict = {}
    for inc in includes:
        parent = read_yaml_with_includes(path.parent / inc, (*_stack, path))
        merged = _deep_merge(merged, parent)
    return _deep_merge(merged, data)


def card_sha256(data: Any) -> str:
    """A stable hash of a resolved card (or any JSON-able config)."""
    blob = json.dumps(data, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def open_card(path: Path) -> tuple[dict, Fields, str]:
    """Read a card (includes resolved) and check that its ``name`` is its file stem: ``(data, fields, name)``."""
    data = read_yaml_with_includes(path)
    f = Fields(data, source=str(path))
    name = f.get("name", str, path.stem)
    if name != path.stem:
        f.fail("name", f"must equal the file name stem {path.stem!r}, got {name!r}")
    return data, f, name


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true/false", list: "a list",
               dict: "a mapping"}


class Fields:
    """Typed access to one mapping of a card, with errors that name the file and dotted field path."""

    def __init__(self, data: Any, *, source: str, path: str = "") -> None:
        self.source = source
        self.path = path
        if not isinstance(data, dict):
            self.fail("", f"must be a mapping, got {_describe(data)}")
        self.data: dict = data
        self._seen: set[str] = set()

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path and key else (key or self.path or "<card>")

    def fail(self, key: str, problem: str) -> None:
        raise CardError(f"{self.source}: field '{self.where(key)}' {problem}")

    def get(self, key: str, typ: type | tuple[type, ...], default: Any = ..., *, choices: Any = None) -> Any:
        self._seen.add(key)
        if key not in self.data or self.data[key] is None:
            if default is ...:
                self.fail(key, "is required")
            return default
        value = self.data[key]
        types = typ if isinstance(typ, tuple) else (typ,)
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok and float in types and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            expected = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)
            self.fail(key, f"must be {expected}, got {_describe(value)}")
        if choices is not None and value not in choices:
            self.fail(key, f"must be one of {', '.join(map(str, choices))}; got {value!r}")
        return value

    def sub(self, key: str, default: Any = ...) -> Fields:
        value = self.get(key, dict, default)
        return Fields(value, source=self.source, path=self.where(key))

    def str_list(self, key: str, default: Any = ...) -> list[str]:
        value = self.get(key, list, default)
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.fail(f"{key}[{i}]", f"must be a string, got {_describe(item)}")
        return list(value)

    def no_unknown(self) -> None:
        unknown = sorted(set(self.data) - self._seen)
        if unknown:
            allowed = ", ".join(sorted(self._seen))
            self.fail(unknown[0], f"is not a known field here (known: {allowed})")


def _describe(value: Any) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return f"{type(value).__name__} {value!r}" if not isinstance(value, (dict, list)) else type(value).__name__
