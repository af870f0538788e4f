"""Where a command may write: the one rule every writing command (``joint score``, ``merge``,
``filter``, ``report``, ``convert``, ``python -m train export``) checks before it writes.

1. An output is never one of the command's inputs, never inside one (a Parquet folder, a model
   folder being read), and never holds one (a folder to be replaced that contains an input) - not
   even with ``--overwrite``: the command would destroy what it is reading.
2. An existing file is replaced only with ``--overwrite`` (or its command's own way of continuing
   its own work, such as ``joint score --resume``).

The functions return the reason a path may not be written, or None; each command raises it as
its own error type, with the flag that would allow it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterable, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]


def _real(path: PathLike) -> Path:
    return Path(os.path.realpath(os.fspath(path)))


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)   # also hard links and other names of one file
    except OSError:
        return False


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def parent_problem(path: PathLike) -> Optional[str]:
    """Why no file can be made at ``path`` because of the folders above it (one is a file)."""
    for parent in Path(os.fspath(path)).parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                return f"{os.fspath(parent)} is a file, not a folder"
            break
    return None


def is_file(path: PathLike) -> bool:
    """``Path(path).is_file()``, False for a name no file can have (too long: ENAMETOOLONG, a
    NUL byte), which ``is_file`` raises for: ids in score files are anyone's text."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


def special_kind(path: PathLike) -> Optional[str]:
    """``"FIFO"``, ``"socket"``, ``"device"`` for such a file at ``path`` (links followed), else None."""
    try:
        mode = os.stat(os.fspath(path)).st_mode
    except OSError:
        return None
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return None


def input_conflict(out: PathLike, inputs: Iterable[Optional[PathLike]], what: str = "--out") -> Optional[str]:
    """Why ``out`` may not be written because of ``inputs`` (the files and folders the command
    reads), else None. Symlinks and hard links are seen through."""
    o = _real(out)
    for inp in inputs:
        if inp is None or os.fspath(inp) in ("", "-"):
            continue
        i = _real(inp)
        if _within(o, i) or _same(o, i):
            where = "is" if o == i or _same(o, i) else "lies inside"
            return (f"{what} {os.fspath(out)}: {where} {os.fspath(inp)}, which this command reads; "
                    "it is never written over (choose another path)")
        if _within(i, o) and o.is_dir():
            return (f"{what} {os.fspath(out)}: holds {os.fspath(inp)}, which this command reads; "
                    "it is never replaced (choose another path)")
    return None


def existing_output(out: PathLike, overwrite: bool, what: str = "--out",
                    how: str = "pass --overwrite to replace it") -> Optional[str]:
    """Why ``out`` may not be written because something is there already, else None: an existing
    file needs ``overwrite``; a folder where a file is wanted, a FIFO, socket or device, or a path
    under a file cannot be written at all. ``what`` names the argument in the message."""
    name = f"{what} {os.fspath(out)}" if what else os.fspath(out)
    p = Path(os.fspath(out))
    problem = parent_problem(p)
    if problem:
        return f"{name}: {problem}"
    if p.is_dir():
        return f"{name}: is a folder"
    kind = special_kind(p)
    if kind:
        return f"{name}: is a {kind}, not a file joint can write"
    if (p.exists() or p.is_symlink()) and not overwrite:
        return f"{name}: already exists; {how}"
    return None


def publish(tmp: PathLike, final: PathLike, overwrite: bool) -> None:
    """Move a finished temporary file to ``final`` in one step. Without ``overwrite`` it never
    replaces a file that appeared there since the checks (``FileExistsError``): the file is
    linked into place, which fails if the name is taken, then the temporary name is removed."""
    if overwrite:
        os.replace(tmp, final)
        return
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise
    except OSError:   # a file system without hard links: the check just before is the best there is
        if os.path.lexists(final):
            raise FileExistsError(17, "File exists", os.fspath(final)) from None
        os.replace(tmp, final)
        return
    os.unlink(tmp)
