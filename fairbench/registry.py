"""One small generic registry for models, adapters, datasets, tasks and metrics.

``Registry[T]`` maps names to objects. Entries are added with a decorator or, to avoid importing heavy
modules early, lazily as ``"module:attr"`` strings that are imported on first use. Each name has exactly one
source of truth: registering a name twice is an error, and an unknown name is answered with close matches
and the full list of what exists.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar, overload

from fairbench.errors import UnknownNameError

__all__ = ["DuplicateNameError", "Registry", "did_you_mean"]


def did_you_mean(name: str, known: list[str]) -> str:
    """" Did you mean 'a', 'b'?" for the known names close to ``name`` (difflib, cutoff 0.5); "" if none."""
    close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""

T = TypeVar("T")


class DuplicateNameError(ValueError):
    """A name was registered twice in one registry (a programming error, not a user error)."""


class _Lazy:
    __slots__ = ("target",)

    def __init__(self, target: str | Callable[[], object]) -> None:
        if not callable(target) and (not isinstance(target, str) or ":" not in target):
            raise ValueError(f"lazy registry target must look like 'module:attr', got {target!r}")
        self.target = target

    def load(self) -> object:
        if callable(self.target):
            return self.target()
        module_name, attr = self.target.split(":", 1)
        obj: object = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj


class Registry(Generic[T]):
    """A named collection of ``T``.

    >>> r = Registry[int]("number")
    >>> @r.register("one")
    ... def _one(): return 1
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T | _Lazy] = {}

    # -- registration -------------------------------------------------------------------------
    @overload
    def register(self, name: str) -> Callable[[T], T]: ...
    @overload
    def register(self, name: str, obj: T) -> T: ...

    def register(self, name: str, obj: T | None = None):  # type: ignore[no-untyped-def]
        """Register ``obj`` under ``name``; without ``obj`` it returns a decorator."""

        def _add(o: T) -> T:
            self._check_new(name)
            self._entries[name] = o
            return o

        if obj is None:
            return _add
        return _add(obj)

    def register_lazy(self, name: str, target: str | Callable[[], T]) -> None:
        """Register ``"module:attr"`` (imported) or a zero-argument factory (called) the first time ``name``
        is looked up. A failing load leaves the entry lazy, so the error repeats rather than vanishing."""
        self._check_new(name)
        self._entries[name] = _Lazy(target)

    def _check_new(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} names must be non-empty strings, got {name!r}")
        if name in self._entries:
            raise DuplicateNameError(f"{self.kind} {name!r} is already registered")

    def unregister(self, name: str) -> None:
        """Remove ``name`` (used by tests and by reloading user task folders)."""
        self._entries.pop(name, None)

    # -- lookup -------------------------------------------------------------------------------
    def get(self, name: str) -> T:
        try:
            entry = self._entries[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None
        if isinstance(entry, _Lazy):
            entry = entry.load()  # type: ignore[assignment]
            self._entries[name] = entry
        return entry  # type: ignore[return-value]

    def unknown_message(self, name: str) -> str:
        known = sorted(self._entries)
        hint = did_you_mean(name, known)
        listing = ", ".join(known) if known else "(none registered)"
        return f"unknown {self.kind} {name!r}.{hint} Known {self.kind}s: {listing}"

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} entries)"
