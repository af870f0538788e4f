"""The lock that keeps two runs from writing one score file: an exclusive ``flock`` held for the
life of a run, dropped by the kernel when the process dies, closed in forked children."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock
    fcntl = None

from ..errors import OutputError
from .formats import out_format
from .records import file_error

_HELD_LOCKS: set = set()   # descriptors of the locks this process holds


def _close_locks_in_child() -> None:
    """A forked child (a DataLoader decoding worker) must not keep the parent's lock: a flock
    belongs to the open file, which the child shares, so a worker that outlives a killed parent
    by a few seconds would block the resume. The parent's own descriptor still holds it."""
    for fd in list(_HELD_LOCKS):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD_LOCKS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_locks_in_child)


class Lock:
    """An exclusive ``flock`` on the score file's lock file for the life of a run, so that a
    second ``joint score`` on the same ``--out`` (a resume started while the first run still
    goes) is refused instead of doubling rows. The kernel drops it when the process dies, even
    by SIGKILL, so a lock never outlives its run; forked children close their copy at once
    (:func:`_close_locks_in_child`). No-op where ``fcntl`` is missing (Windows)."""

    def __init__(self, path: str):
        self.fd: Optional[int] = None
        if fcntl is None:  # pragma: no cover - not POSIX
            return
        lock = lock_path(path)
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise file_error(path, e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise OutputError(f"{path}: another joint process is writing it right now (its lock is {lock}); "
                              "wait for it, or stop it first") from None
        self.fd = fd
        _HELD_LOCKS.add(fd)

    def release(self) -> None:
        if self.fd is not None:
            _HELD_LOCKS.discard(self.fd)
            os.close(self.fd)
            self.fd = None


def lock_path(path: str) -> Path:
    """A hidden file next to the score file (inside a Parquet folder); it stays, empty, after the
    run: removing a lock file while others may open it would let two runs hold "the" lock."""
    p = Path(path)
    if out_format(path) == ".parquet":
        return p / "_joint.lock"
    return p.with_name(f".{p.name}.lock")
