"""Safe loading of checkpoints that carry more than tensors (PyTorch-Lightning ``.ckpt`` files).

A Lightning checkpoint pickles its hyper-parameters (GLoRIA: an OmegaConf ``DictConfig``) and callback
states next to the ``state_dict``; ``torch.load(weights_only=True)`` refuses such files, and unpickling them
blindly would run whatever code the file names. :func:`load_checkpoint` uses an allow-list unpickler instead
(the "restricting globals" recipe of Python's ``pickle`` documentation) inside ``torch.load``'s own file
handling:

- tensors, storages and the other globals ``torch.load(weights_only=True)`` allows resolve as there;
- plain containers and scalars (``dict``, ``list``, ``int``, ``collections.defaultdict``...) are themselves;
- classes from OmegaConf, PyTorch-Lightning, ``argparse``, ``pathlib``, ``typing`` and numpy scalars become
  inert stand-ins (:class:`Inert`) that record the state the file gives them and run no code of the class;
- any other global refuses the file with an error that names it.

:func:`to_plain` turns recorded OmegaConf containers into plain dicts and lists (best effort; used to record
the checkpoint's configuration, never to execute it).
"""

from __future__ import annotations

import pickle
import types
from pathlib import Path
from typing import Any

from fairbench.errors import WeightsError

__all__ = ["STUB_PREFIXES", "Inert", "load_checkpoint", "to_plain"]

#: module prefixes whose classes load as inert stand-ins
STUB_PREFIXES = ("omegaconf.", "pytorch_lightning.", "lightning.", "lightning_fabric.", "argparse.", "pathlib.",
                 "typing.", "numpy.", "_codecs.")
_BUILTINS = {"dict": dict, "list": list, "tuple": tuple, "set": set, "frozenset": frozenset, "int": int,
             "float": float, "str": str, "bool": bool, "bytes": bytes, "bytearray": bytearray,
             "complex": complex, "slice": slice, "object": object, "NoneType": type(None)}


class Inert(dict):
    """Stands in for a class named in a checkpoint: keeps the constructor arguments and the pickled state,
    supports the item/append protocol a pickle may use, and runs nothing."""

    _fb_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Inert:
        obj = dict.__new__(cls)
        obj.__dict__["_fb_args"] = args
        obj.__dict__["_fb_state"] = None
        obj.__dict__["_fb_items"] = []
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_fb_state"] = state

    def append(self, item: Any) -> None:
        self.__dict__["_fb_items"].append(item)

    def extend(self, items: Any) -> None:
        self.__dict__["_fb_items"].extend(items)

    def __repr__(self) -> str:
        return f"<inert {self._fb_name}>"


_STUBS: dict[str, type] = {}


def _stub(full_name: str) -> type:
    if full_name not in _STUBS:
        _STUBS[full_name] = type(full_name.rsplit(".", 1)[-1], (Inert,), {"_fb_name": full_name})
    return _STUBS[full_name]


def _torch_allowed() -> dict[str, Any]:
    from torch import _weights_only_unpickler as wou

    return dict(wou._get_allowed_globals())


class _RestrictedUnpickler(pickle.Unpickler):
    allowed: dict[str, Any] = {}

    def find_class(self, module: str, name: str) -> Any:
        import _compat_pickle

        if (module, name) in _compat_pickle.NAME_MAPPING:  # Python 2 names in protocol-2 pickles
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        full = f"{module}.{name}"
        if full in self.allowed:
            return self.allowed[full]
        if module == "builtins" and name in _BUILTINS:
            return _BUILTINS[name]
        if full in ("collections.defaultdict", "collections.OrderedDict"):
            import collections

            return getattr(collections, name)
        if full.startswith(STUB_PREFIXES):
            return _stub(full)
        raise pickle.UnpicklingError(f"global '{full}' is not on fairbench's allow-list")


def _pickle_module() -> types.ModuleType:
    mod = types.ModuleType("fairbench_restricted_pickle")
    unpickler = type("Unpickler", (_RestrictedUnpickler,), {"allowed": _torch_allowed()})
    mod.Unpickler = unpickler  # type: ignore[attr-defined]
    mod.load = lambda f, **kw: unpickler(f, **kw).load()  # type: ignore[attr-defined]
    mod.__name__ = "pickle"  # torch.load checks pickle_module.__name__ for its error messages only
    return mod


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A ``torch.save`` file (e.g. a Lightning ``.ckpt``) through the allow-list unpickler."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_pickle_module())
    except pickle.UnpicklingError as exc:
        raise WeightsError(f"{path}: refused to load: {exc} (fairbench never unpickles arbitrary objects; "
                           f"re-save the checkpoint's state_dict with torch.save to load it)") from None
    except Exception as exc:  # noqa: BLE001 - a corrupt or foreign file
        raise WeightsError(f"{path}: cannot be read as a PyTorch checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: expected a checkpoint dict, got {type(obj).__name__}")
    return obj


def to_plain(obj: Any, _depth: int = 0) -> Any:
    """Recorded OmegaConf containers/nodes (and Lightning's AttributeDict) as plain Python values."""
    if _depth > 50:
        return None
    if isinstance(obj, Inert):
        state = obj._fb_state
        if isinstance(state, dict) and "_content" in state:
            return to_plain(state["_content"], _depth + 1)
        if isinstance(state, dict) and "_val" in state:
            return to_plain(state["_val"], _depth + 1)
        if len(obj):
            return {str(k): to_plain(v, _depth + 1) for k, v in obj.items()}
        return obj._fb_name
    if isinstance(obj, dict):
        return {str(k): to_plain(v, _depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v, _depth + 1) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return repr(obj)
