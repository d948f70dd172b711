"""Peak memory of one cell, recorded in metrics.json under ``provenance.resources``.

- ``peak_rss_mb``: the process's peak resident set (MiB, 2**20 bytes). On Linux the kernel's high-water mark is
  reset when the cell starts (``/proc/self/clear_refs``, value 5) and read from ``VmHWM`` when it ends, so the
  figure is the cell's own even when one process runs several cells (a sweep worker); it still includes what
  the process held when the cell started (imported modules, a loaded dataset). ``rss_scope`` says which:
  ``cell`` (reset worked) or ``process`` (``ru_maxrss`` since the process started, where the reset is
  unavailable).
- ``peak_cuda_mb`` / ``peak_cuda_reserved_mb``: on CUDA, ``torch.cuda.max_memory_allocated`` and
  ``max_memory_reserved`` since the cell started (``reset_peak_memory_stats``).

Like ``duration_s``, these figures vary from run to run; nothing that compares cells reads them (the stale-cell
check, ``fairbench check`` and the reproducibility tests read ``metrics`` and the configuration).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
import resource
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where it is used: the synthetic loader calls release_freed_memory
    import torch

__all__ = ["PeakMemory", "peak_rss_mb", "release_freed_memory"]

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_MIB = 2**20


def _vm_hwm_kib() -> int | None:
    try:
        match = re.search(r"^VmHWM:\s+(\d+)\s+kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux >= 4.0); False where it cannot be."""
    if _vm_hwm_kib() is None:
        return False
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


_LIBC: Any = None


def release_freed_memory() -> bool:
    """Hand the C heap's free pages back to the system (glibc ``malloc_trim(0)``); False where there is no glibc.

    Torch's CPU tensors come from malloc. Tensors under glibc's dynamic mmap threshold (up to 32 MiB) live in
    the heap, and a training step frees gigabytes of them (the batch's activations) in an order that leaves the
    heap fragmented: without a trim the resident set after a step keeps the step's peak, grows over the next
    steps, and a later allocation too large for the heap's holes (the evaluation batch's tensors) comes on top
    of it. Called after every optimizer step on CPU, and before evaluating; it takes milliseconds."""
    global _LIBC
    if _LIBC is None:
        name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
        try:
            _LIBC = ctypes.CDLL(name) if name else False
        except OSError:
            _LIBC = False
        if _LIBC and not hasattr(_LIBC, "malloc_trim"):
            _LIBC = False
    if not _LIBC:
        return False
    _LIBC.malloc_trim(0)
    return True


def peak_rss_mb() -> float:
    """The process's peak resident set so far (since the last reset), MiB."""
    kib = _vm_hwm_kib()
    if kib is None:  # not Linux: ru_maxrss is KiB on Linux, bytes on macOS
        raw = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return raw / _MIB if sys.platform == "darwin" else raw / 1024
    return kib / 1024


class PeakMemory:
    """Started at the beginning of a cell; :meth:`report` is its ``provenance.resources``."""

    def __init__(self, device: torch.device | str) -> None:
        import torch

        self.device = torch.device(device)
        self.scope = "cell" if _reset_hwm() else "process"
        self.cuda = self.device.type == "cuda" and torch.cuda.is_available()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {"peak_rss_mb": round(peak_rss_mb(), 1), "rss_scope": self.scope}
        if self.cuda:
            import torch

            out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(self.device) / _MIB, 1)
            out["peak_cuda_reserved_mb"] = round(torch.cuda.max_memory_reserved(self.device) / _MIB, 1)
        return out
