"""Embedding cache: frozen-encoder image outputs written once, reused by every frozen-encoder adapter.

Zero-shot, linear probe and MLP head read the same image outputs of a frozen model
(:meth:`VLModel.image_outputs`: the joint-space ``embedding`` and the probe ``feature``). The cache stores
them per split on disk, so a grid that runs the three adapters on one model encodes each image once, and a
rerun encodes nothing.

One entry per key; the key is the sha256 of

- the model card name and the card's sha256 (architecture, preprocessing, probe feature, ...),
- the weights sha256 (``weights_info["sha256"]``: a hash of the loaded tensors, never of file bytes; for
  ``random`` weights a hash of the module's state dict, so two random initialisations never share an entry),
- the preprocessing key (:meth:`Preprocessing.key`),
- the task name and version,
- the split, the hash of its sample ids (in order) and the image source key (dataset options, image cache
  size: whatever changes the pixels),
- :data:`CACHE_FORMAT`,
- the inference precision when it is not fp32 (``--precision``: bf16/fp16 embeddings are entries of their own).

Changing any of these misses the cache. The device is not in the key: embeddings computed on a GPU are
reused on a CPU and vice versa (they differ by floating-point rounding only).

Entries live in ``<cache root>/embeddings/<key[:2]>/<key>.safetensors`` (``$FAIRBENCH_CACHE``; see
:func:`fairbench.paths.cache_root`): the float32 arrays in the safetensors layout (an 8-byte header length, a
JSON header, then each array's bytes, row-major), with a JSON manifest (the key's parts, the shapes and a
CRC-32 per array) under the header's ``__metadata__``. A read checks the manifest, then streams the file
through the checksums in 4 MiB blocks and hands back the arrays memory-mapped (copy-on-write: writable,
never written back), so no reader holds a private copy of an entry, and the worker that encoded an entry
drops its own copy for the mapped one once the entry is stored. An entry is written to a temporary file and
renamed into place (atomic: a reader sees the whole entry or none). Entries of the earlier ``.npz`` layout
(same key) are read once, checked, rewritten in the new layout and removed (event ``hit`` with
``migrated: npz``). Concurrent workers share entries safely (:meth:`EmbeddingCache.get_or_compute`):
one writer per entry, under an exclusive ``flock`` on ``<key>.npz.lock`` beside it; a worker that misses
takes the lock, and a second worker missing the same entry waits on it and then reads what the first one
stored (event ``hit`` with ``waited_s``) instead of encoding the images again. The kernel releases the lock of
a killed writer; where ``fcntl`` is missing (Windows) there is no lock and two workers may both encode (each
still renames a complete entry into place). An entry that cannot be read, whose manifest does
not match its key, or whose arrays fail their checksum is rebuilt, with a message. Nothing is unpickled
(``allow_pickle=False``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["CACHE_FORMAT", "EmbeddingCache", "embedding_key_parts", "module_state_sha256"]

#: bump when the stored arrays would change for the same key (what image_outputs returns, dtype, layout)
CACHE_FORMAT = "1"
ARRAYS = ("embedding", "feature")


def module_state_sha256(module: Any) -> str:
    """sha256 over a torch module's state dict (names, dtypes, shapes, bytes; see
    :func:`fairbench.models.weights.tensors_sha256`)."""
    from fairbench.models.weights import tensors_sha256

    return tensors_sha256(module.state_dict())


def embedding_key_parts(model: Any, task: Any, samples: Any, *, weights_sha256: str,
                        precision: str = "fp32") -> dict[str, str]:
    """What an entry depends on (see the module docstring)."""
    parts = {
        "format": CACHE_FORMAT,
        "model": model.card.name,
        "model_card_sha256": model.card.sha256,
        "weights_sha256": weights_sha256,
        "preprocessing": model.card.preprocessing.key(),
        "task": task.name,
        "task_version": str(task.version),
        "split": samples.split,
        "sample_ids_sha256": samples.ids_sha256,
        "image_source": str(getattr(samples.images, "key", "")),
    }
    if precision != "fp32":  # float32 entries keep the key they always had
        parts["precision"] = precision
    return parts


@dataclass
class EmbeddingCache:
    """Entries under ``root`` (default ``<cache root>/embeddings``). ``events`` lists what each lookup did
    (``hit``, ``miss``, ``rebuilt``), for metrics.json and tests."""

    root: Path | None = None
    events: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.root is None:
            from fairbench.paths import cache_root

            self.root = cache_root() / "embeddings"
        self.root = Path(self.root)

    @staticmethod
    def key(parts: dict[str, str]) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.safetensors"

    def legacy_path(self, key: str) -> Path:
        """Where the ``.npz`` layout (fairbench before the memory-mapped entries) kept the same key."""
        return self.path(key).with_suffix(".npz")

    def load(self, parts: dict[str, str], n: int) -> dict[str, np.ndarray] | None:
        """The stored arrays for ``parts`` (``n`` rows each), or None when absent; a damaged entry is
        reported, deleted and treated as absent."""
        key = self.key(parts)
        arrays, event = self._read(parts, n)
        self.events.append({"split": parts["split"], **event, "key": key})
        return arrays

    def get_or_compute(self, parts: dict[str, str], n: int,
                       compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """The entry for ``parts``, computed by ``compute()`` and stored when absent, with one writer per entry
        across processes: a miss takes the entry's lock, reads again (another worker may have stored it while
        this one waited: a ``hit`` with ``waited_s``), and only then computes. A cache that cannot be written
        (read-only folder) is warned about and the arrays are returned all the same."""
        from fairbench.progress import warn

        key = self.key(parts)
        arrays, event = self._read(parts, n)
        if arrays is not None:
            self.events.append({"split": parts["split"], **event, "key": key})
            return arrays
        t0 = time.monotonic()
        with self._entry_lock(self.path(key)) as locked:
            waited = time.monotonic() - t0
            if locked:
                again, _ = self._read(parts, n)
                if again is not None:  # stored by the worker that held the lock
                    self.events.append({"split": parts["split"], "event": "hit", "key": key,
                                        "waited_s": f"{waited:.2f}"})
                    return again
            # as stored (float32), so the worker that computed and the ones that reuse hold identical arrays
            computed = compute()
            arrays = {**computed, **{k: np.ascontiguousarray(computed[k], dtype=np.float32) for k in ARRAYS}}
            del computed
            try:
                stored = self.store(parts, arrays)
            except OSError as exc:
                warn(f"could not write the embedding cache under {self.root} ({exc}); continuing without")
            else:  # the entry as every later reader maps it, instead of this worker's private copy
                with contextlib.suppress(_Corrupt, OSError):
                    arrays = {**arrays, **_map_entry(stored, parts, n, verify=False)}
        self.events.append({"split": parts["split"], **event, "key": key})
        return arrays

    def _read(self, parts: dict[str, str], n: int) -> tuple[dict[str, np.ndarray] | None, dict[str, str]]:
        """(arrays, {"event": "hit"}), or (None, {"event": "miss"/"rebuilt"}); a damaged entry is reported and
        deleted; an entry of the ``.npz`` layout is migrated (``"migrated": "npz"``)."""
        from fairbench.progress import warn

        key = self.key(parts)
        path, legacy = self.path(key), self.legacy_path(key)
        migrated = False
        try:
            if not path.is_file() and legacy.is_file():
                try:
                    arrays = _read_npz_entry(legacy, parts, n)
                except _Corrupt as exc:
                    warn(f"embedding cache entry {legacy} is unusable ({exc}); rebuilding it")
                    legacy.unlink(missing_ok=True)
                    return None, {"event": "rebuilt"}
                try:
                    self.store(parts, arrays)
                except OSError:  # a read-only cache: use the old entry as it is
                    return arrays, {"event": "hit"}
                legacy.unlink(missing_ok=True)
                migrated = True
            if not path.is_file():
                return None, {"event": "miss"}
            arrays = _map_entry(path, parts, n)
        except _Corrupt as exc:
            warn(f"embedding cache entry {path} is unusable ({exc}); rebuilding it")
            path.unlink(missing_ok=True)
            return None, {"event": "rebuilt"}
        return arrays, {"event": "hit", **({"migrated": "npz"} if migrated else {})}

    @contextlib.contextmanager
    def _entry_lock(self, entry: Path) -> Iterator[bool]:
        """Hold the exclusive lock of ``entry`` (waiting for another holder); yields False, holding nothing,
        where locks are unavailable (no fcntl, a folder that cannot be written)."""
        lock = entry.with_name(entry.name + ".lock")
        fd = -1
        if fcntl is not None:
            try:
                lock.parent.mkdir(parents=True, exist_ok=True)
                while True:
                    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
                    fcntl.flock(fd, fcntl.LOCK_EX)  # blocks while another worker writes this entry
                    try:
                        same = os.path.samestat(os.fstat(fd), os.stat(lock))
                    except FileNotFoundError:
                        same = False
                    if same:  # not a file its last holder unlinked after we opened it
                        break
                    os.close(fd)
                    fd = -1
            except OSError:
                if fd >= 0:
                    os.close(fd)
                fd = -1
        try:
            yield fd >= 0
        finally:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    lock.unlink()  # before unlocking: whoever locks next finds a fresh file
                os.close(fd)

    def store(self, parts: dict[str, str], arrays: dict[str, np.ndarray]) -> Path:
        key = self.key(parts)
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {k: np.ascontiguousarray(arrays[k], dtype=np.float32) for k in ARRAYS}
        manifest = {"key": key, "parts": parts,
                    "arrays": {k: {"shape": list(v.shape), "crc32": zlib.crc32(memoryview(v).cast("B"))}
                               for k, v in data.items()}}
        header: dict[str, Any] = {"__metadata__": {"fairbench": json.dumps(manifest)}}
        offset = 0
        for k, v in data.items():
            header[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [offset, offset + v.nbytes]}
            offset += v.nbytes
        blob = json.dumps(header).encode()
        blob += b" " * (-(8 + len(blob)) % _ALIGN)  # arrays start aligned (the safetensors convention)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "wb") as fh:
                fh.write(len(blob).to_bytes(8, "little"))
                fh.write(blob)
                _write_arrays(fh, list(data.values()))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    def report(self) -> dict[str, Any]:
        return {"root": str(self.root), "events": [dict(e) for e in self.events]}


class _Corrupt(Exception):
    pass


_ALIGN = 64   # bytes: where each entry's array data starts
_BLOCK = 4 << 20  # bytes read at a time to check an entry's checksums
_MAX_HEADER = 1 << 24


def _write_arrays(fh: Any, arrays: list[np.ndarray]) -> None:
    for v in arrays:
        fh.write(memoryview(v).cast("B"))


def _map_entry(path: Path, parts: dict[str, str], n: int, *, verify: bool = True) -> dict[str, np.ndarray]:
    """The arrays of the entry at ``path``, memory-mapped (copy-on-write); ``verify``: check each array's CRC-32
    first, streaming the file in :data:`_BLOCK` blocks."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            hlen = int.from_bytes(fh.read(8), "little")
            if not 0 < hlen <= min(_MAX_HEADER, size - 8):
                raise _Corrupt(f"header length {hlen} does not fit a file of {size} bytes")
            header = json.loads(fh.read(hlen).decode())
            manifest = json.loads(header["__metadata__"]["fairbench"])
            start = 8 + hlen
            layout = {}
            for k in ARRAYS:
                meta, info = manifest["arrays"][k], header[k]
                shape, (lo, hi) = [int(x) for x in info["shape"]], [int(x) for x in info["data_offsets"]]
                if info["dtype"] != "F32" or len(shape) != 2 or hi - lo != 4 * shape[0] * shape[1] or \
                        start + hi > size or lo < 0:
                    raise _Corrupt(f"array '{k}' is not a float32 matrix inside the file")
                layout[k] = (shape, start + lo, hi - lo, meta)
            if manifest.get("parts") != parts:
                raise _Corrupt("its manifest describes another key")
            buf = bytearray(_BLOCK if verify else 0)
            for k, (shape, at, nbytes, meta) in layout.items():
                if shape != meta.get("shape") or shape[0] != n:
                    raise _Corrupt(f"array '{k}' has shape {shape}, expected {n} rows as recorded")
                if verify:
                    fh.seek(at)
                    crc, left = 0, nbytes
                    while left:
                        got = fh.readinto(memoryview(buf)[:min(left, len(buf))])
                        if not got:
                            raise _Corrupt(f"array '{k}' is cut short")
                        crc, left = zlib.crc32(memoryview(buf)[:got], crc), left - got
                    if crc != meta.get("crc32"):
                        raise _Corrupt(f"array '{k}' fails its checksum")
    except _Corrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to read means the entry is damaged
        raise _Corrupt(f"{type(exc).__name__}: {exc}") from None
    out = {}
    for k, (shape, at, nbytes, _) in layout.items():
        if nbytes == 0:  # mmap cannot map nothing
            out[k] = np.zeros(shape, dtype=np.float32)
        else:
            # a plain ndarray over the mapping (the memmap stays alive as its base)
            out[k] = np.memmap(path, dtype=np.float32, mode="c", offset=at, shape=tuple(shape)).view(np.ndarray)
    return out


def _read_npz_entry(path: Path, parts: dict[str, str], n: int) -> dict[str, np.ndarray]:
    """An entry of the earlier ``.npz`` layout (read whole; only to migrate it)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            manifest = json.loads(bytes(z["manifest"]).decode())
            arrays = {k: np.array(z[k]) for k in ARRAYS}
    except Exception as exc:  # noqa: BLE001 - any failure to read means the entry is damaged
        raise _Corrupt(f"{type(exc).__name__}: {exc}") from None
    if manifest.get("parts") != parts:
        raise _Corrupt("its manifest describes another key")
    for k, arr in arrays.items():
        meta = manifest.get("arrays", {}).get(k, {})
        if list(arr.shape) != meta.get("shape") or arr.shape[0] != n:
            raise _Corrupt(f"array '{k}' has shape {list(arr.shape)}, expected {n} rows as recorded")
        if zlib.crc32(np.ascontiguousarray(arr).tobytes()) != meta.get("crc32"):
            raise _Corrupt(f"array '{k}' fails its checksum")
    return arrays
