"""Paths, checked before anything is opened: :func:`open_regular` (only regular files, never
blocking on a FIFO), one-line messages for OS errors, and :func:`expand_paths` (files, folders
and globs -> a list of paths in which nothing is dropped silently)."""

from __future__ import annotations

import errno
import glob
import os
import stat
from typing import Iterable, List, Union

from ..errors import ImageInputError
from .items import IMAGE_EXTENSIONS, OTHER_IMAGE_EXTENSIONS, UnreadablePath

_FILE_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


def _file_kind(mode: int) -> str:
    for test, name in _FILE_KINDS:
        if test(mode):
            return name
    return "not a regular file"


def os_error_message(path: str, e: OSError) -> str:
    """One line for an OS error on ``path`` (a missing file, a symlink loop, a name too long ...)."""
    code = e.errno
    if code == errno.ENOENT:
        if os.path.islink(path):
            return f"{path}: broken symbolic link (points to {os.readlink(path)!r}, which does not exist)"
        return f"{path}: no such file"
    if code == errno.ELOOP:
        return f"{path}: symbolic link loop (the links lead back to themselves)"
    if code == errno.ENAMETOOLONG:
        return f"{path}: file name too long for the file system"
    if code in (errno.EACCES, errno.EPERM):
        return f"{path}: is a folder, not an image" if os.path.isdir(path) else f"{path}: permission denied"
    if code == errno.ENOTDIR:
        return f"{path}: a part of the path is a file, not a folder"
    if code == errno.EISDIR:
        return f"{path}: is a folder, not an image"
    return f"{path}: cannot open ({e.strerror or type(e).__name__})"


def open_regular(path: str, what: str = "an image file", error: type = ImageInputError):
    """Open ``path`` for binary reading without ever blocking on it, or raise ``error`` with one
    line naming it. The open is non-blocking (a FIFO with no writer would block a plain open
    forever) and the file type is checked on the open descriptor (no race with a swap after a
    separate stat): only regular files are opened. ``what`` names the expected file in messages."""
    if path == "":
        raise error("'': empty path (name a file or folder; '.' is the current folder)")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise error(os_error_message(path, e)) from None
    except (ValueError, TypeError) as e:  # embedded NUL bytes and the like
        raise error(f"{path!r}: not a usable path ({e})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = _file_kind(st.st_mode)
            hint = "" if kind == "a folder" else "; only regular files are read"
            raise error(f"{path}: is {kind}, not {what}{hint}"
                        if kind != "not a regular file" else f"{path}: not a regular file{hint}")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def expand_paths(patterns: Iterable[Union[str, os.PathLike]], recursive: bool = False) -> List[str]:
    """Files, folders (their images, sorted) and glob patterns -> a list of paths.

    Nothing is dropped silently. A file named explicitly is kept whatever it is (loading it says
    what is wrong: missing, a FIFO, a symlink loop, a name too long ...). In folders, files with an
    image extension (:data:`IMAGE_EXTENSIONS`) are kept, including broken links and non-regular
    files of that name, which then fail by name; other image formats (:data:`OTHER_IMAGE_EXTENSIONS`,
    e.g. ``.svg``, ``.ico``) come back as :class:`UnreadablePath` saying they are not read; other
    files are ignored. A folder that yields nothing, a pattern that matches nothing, an empty
    path and a folder that cannot be listed also come back as :class:`UnreadablePath`, so that
    scoring reports them like any unreadable file.
    """
    out: List[str] = []
    for pat in patterns:
        s = os.fspath(pat)
        s = s if isinstance(s, str) else os.fsdecode(s)
        if s == "":
            out.append(UnreadablePath("", "'': empty path (name a file or folder; '.' is the current folder)"))
            continue
        try:
            is_dir = stat.S_ISDIR(os.stat(s).st_mode)
            exists = True
        except (OSError, ValueError):
            is_dir, exists = False, os.path.lexists(s) if "\0" not in s else False
        if is_dir:
            out.extend(_scan_folder(s, recursive))
        elif exists or not glob.has_magic(s):
            out.append(s)
        else:
            try:
                matches = sorted(m for m in glob.glob(s, recursive=True) if not os.path.isdir(m))
            except OSError as e:
                matches = []
                out.append(UnreadablePath(s, os_error_message(s, e)))
                continue
            out.extend(matches if matches else [UnreadablePath(s, f"{s}: no file matches this pattern")])
    return out


def _scan_folder(root: str, recursive: bool) -> List[str]:
    """The images of a folder (sorted), problems included as described in :func:`expand_paths`."""
    found: List[str] = []
    ignored = 0
    todo = [root]
    while todo:
        folder = todo.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as e:
            found.append(UnreadablePath(folder, os_error_message(folder, e).replace(
                ": permission denied", ": cannot list this folder (permission denied)")))
            continue
        for entry in entries:
            suffix = os.path.splitext(entry.name)[1].lower()
            try:
                real_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                real_dir = False
            if real_dir:
                if recursive:
                    todo.append(entry.path)
                continue
            if suffix in IMAGE_EXTENSIONS:
                try:
                    if entry.is_dir():   # a link to a folder, named like an image: not an image
                        ignored += 1
                        continue
                except OSError:
                    pass                 # a broken link or a loop: kept, loading names the problem
                found.append(entry.path)
            elif suffix in OTHER_IMAGE_EXTENSIONS:
                found.append(UnreadablePath(entry.path, (
                    f"{entry.path}: {suffix} files are not read from folders (joint reads "
                    f"{' '.join(IMAGE_EXTENSIONS)})")))
            else:
                ignored += 1
    if not found:
        what = f"; {ignored} other file(s) ignored" if ignored else ""
        return [UnreadablePath(root, f"{root}: folder holds no images (looked for "
                                     f"{' '.join(IMAGE_EXTENSIONS)}{', recursively' if recursive else ''}{what})")]
    return sorted(found)
