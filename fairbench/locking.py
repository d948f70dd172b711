"""The per-cell lock: one writer per result cell at a time.

``fairbench run`` and every sweep worker hold ``<cell>/.lock`` while they compute a cell. The lock is an
exclusive ``flock`` on that file (released by the kernel when its holder dies, so a killed run leaves no stale
lock); the file holds the holder's pid and host for the message a second writer gets. Where ``fcntl`` is
missing (Windows) the file is created with ``O_EXCL`` and a lock whose pid is no longer running is stale.

Taking the lock creates the cell folder; releasing it removes the lock file and, when the cell is still empty
(the run failed before writing anything), the folders the lock created: a failed run leaves no empty cell.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from fairbench.errors import ResultsError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK", "CellBusyError", "cell_lock"]

LOCK = ".lock"


class CellBusyError(ResultsError):
    """Another process holds the cell's lock."""


#: cells this process holds, with how many ``with`` blocks hold each (a sweep worker locks the cell, then the
#: pipeline it runs locks it again)
_HELD: dict[str, int] = {}


@contextlib.contextmanager
def cell_lock(cell: Path) -> Iterator[Path]:
    """Hold ``cell``'s lock (creating the folder) for the ``with`` block; :class:`CellBusyError` at once when
    another process holds it. Reentrant within a process."""
    cell = Path(cell)
    key = os.path.abspath(cell)
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield cell / LOCK
        finally:
            _HELD[key] -= 1
        return
    created: list[Path] = []
    fd = -1
    try:
        for _ in range(20):  # a concurrent release may remove a folder we just found: try again
            try:
                created += _make_dirs(cell)
                fd = _acquire(cell / LOCK)
                break
            except FileNotFoundError:
                continue
        else:
            raise ResultsError(f"{cell}: the folder keeps disappearing while it is locked")
    except OSError as exc:
        _remove_empty(created)
        raise ResultsError(f"output directory {cell} is not writable: {exc.strerror or exc}") from None
    except BaseException:
        _remove_empty(created)
        raise
    _HELD[key] = 1
    try:
        yield cell / LOCK
    finally:
        del _HELD[key]
        with contextlib.suppress(OSError):
            (cell / LOCK).unlink()  # before unlocking: whoever locks next finds a fresh file
        os.close(fd)
        _remove_empty([cell, *created])


def _make_dirs(cell: Path) -> list[Path]:
    """Create ``cell`` and its missing parents; the folders created, outermost first."""
    missing = []
    p = cell
    while not p.exists():
        missing.append(p)
        p = p.parent
    made = []
    for d in reversed(missing):
        try:
            d.mkdir()
            made.append(d)
        except FileExistsError:
            if not d.is_dir():
                raise
    return made


def _acquire(path: Path) -> int:
    holder = f"{os.getpid()} {socket.gethostname()}\n".encode()
    if fcntl is None:  # pragma: no cover - Windows
        return _acquire_exclusive(path, holder)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise CellBusyError(_busy(path)) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:  # not a file its last holder unlinked after we opened it
            os.ftruncate(fd, 0)
            os.write(fd, holder)
            return fd
        os.close(fd)


def _acquire_exclusive(path: Path, holder: bytes) -> int:  # pragma: no cover - Windows
    for _ in range(3):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            pid = _holder(path)[0]
            if pid is not None and not _alive(pid):
                path.unlink(missing_ok=True)  # stale: its holder is gone
                continue
            raise CellBusyError(_busy(path)) from None
        os.write(fd, holder)
        return fd
    raise CellBusyError(_busy(path))


def _holder(path: Path) -> tuple[int | None, str]:
    try:
        parts = path.read_text(encoding="utf-8").split()
        return int(parts[0]), parts[1] if len(parts) > 1 else ""
    except (OSError, ValueError, IndexError):
        return None, ""


def _alive(pid: int) -> bool:  # pragma: no cover - Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _busy(path: Path) -> str:
    pid, host = _holder(path)
    who = f"process {pid}" + (f" on {host}" if host and host != socket.gethostname() else "") if pid else \
        "another process"
    return (f"cell {path.parent} is being computed by {who} (it holds {path.name}); wait for it to finish, "
            f"or write to another --out")


def _remove_empty(folders: list[Path]) -> None:
    """Remove each folder (innermost first) while it is empty."""
    for d in sorted(set(folders), key=lambda p: len(p.parts), reverse=True):
        try:
            d.rmdir()
        except OSError:
            break  # not empty (or gone): neither are its parents to remove
