"""Where images come from: files, folders and globs, lists of paths, WebDataset tar shards and
Parquet/CSV tables - each a re-iterable stream of :class:`~joint_core.stream.loader.Sample` s,
read lazily, so a source of a billion images costs no more memory than one of ten.

Every source is a plain reader of local files with no coordinator: the same code feeds the
single-process loader, the shards of a split job (:func:`shard`) and the Ray engine's actors.

Ids (the ``source`` column of score files):

- files: the path as given (folders expand to their images, sorted);
- ``--files-from`` lists: each line, as written (relative paths are taken from the current
  folder); bytes that are not UTF-8 are kept as they are (``os.fsdecode``);
- WebDataset tars: the sample key (the member name up to the first dot of its base name), with
  the first member whose extension is an image extension as the image; samples without an image
  are skipped and counted;
- tables: the path in ``column``, or for image bytes (a binary column, or a Hugging Face
  ``{bytes, path}`` image struct) the ``id_column``, else the struct's path, else ``FILE#ROW``.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import sys
import tarfile
import tempfile
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

from ..preprocess.images import IMAGE_EXTENSIONS, ImageInputError, UnreadablePath, expand_paths, open_regular
from ..preprocess.loader import Sample
from ..errors import InputError
from ..extras import require

TAR_SUFFIXES = (".tar",)
COMPRESSED_TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
TABLE_SUFFIXES = (".parquet", ".csv", ".tsv")
_IMAGE_EXTS = tuple(e.lstrip(".") for e in IMAGE_EXTENSIONS)
MAX_LIST_LINE = 1 << 16   # a --files-from line longer than this is no path (PATH_MAX is 4096 on Linux)


class Source:
    """A re-iterable stream of samples. ``skipped`` counts what a pass left out, with reasons."""

    def samples(self) -> Iterator[Sample]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Sample]:
        return self.samples()

    @property
    def skipped(self) -> dict:
        return {}


class Paths(Source):
    """Image files (already expanded)."""

    def __init__(self, paths: Sequence[str]):
        self.paths = list(paths)

    def samples(self) -> Iterator[Sample]:
        for p in self.paths:
            yield Sample(p, path=p)

    def __len__(self) -> int:
        return len(self.paths)


class FileList(Source):
    """A text file with one image path a line (or NUL-separated with ``null``); ``"-"`` reads
    standard input, spooled to a temporary file first so it can be read twice (count, score)."""

    def __init__(self, path: str, null: bool = False):
        self.null = null
        self.name = "standard input" if path == "-" else path
        self._spool = None
        if path == "-":
            self._spool = tempfile.TemporaryFile(prefix="joint-files-from-")
            src = sys.stdin.buffer
            while True:
                chunk = src.read(1 << 20)
                if not chunk:
                    break
                self._spool.write(chunk)
            self._spool.flush()
        else:
            self.path = path
            self._open().close()   # fails now, by name, for a missing file, a folder, a FIFO ...
        if not null:
            with self._open() as f:
                head = f.read(1 << 16)
            if b"\0" in head:
                raise InputError(f"--files-from {self.name}: holds NUL bytes (a list written by `find -print0` "
                                 "or `joint filter --null`?); pass --null to read it")

    def _open(self):
        if self._spool is not None:
            self._spool.seek(0)
            return os.fdopen(os.dup(self._spool.fileno()), "rb")
        try:
            return open_regular(self.path, what="a list of paths")
        except ImageInputError as e:
            raise InputError(f"--files-from {e}") from None

    def samples(self) -> Iterator[Sample]:
        """One sample a line. Reading is linear in the file's size whatever its lines: runs of
        empty lines are skipped in C (``re``), and a line longer than :data:`MAX_LIST_LINE` bytes
        (no path is) is one named error, skipped without being held in memory."""
        sep = b"\0" if self.null else b"\n"
        token = re.compile(b"[^\\x00]+" if self.null else b"[^\\n]+")
        rest: List[bytes] = []   # the current line's pieces, when it started in an earlier chunk
        size = 0                 # their length
        long_head: Optional[bytes] = None   # the start of a line being skipped as too long
        line_no = 1              # the number of the line at the reading position
        first = 1                # the number of the current line

        def finish() -> Iterator[Sample]:
            nonlocal rest, size, long_head
            if long_head is not None:
                yield self._too_long(first, long_head)
            elif rest:
                yield from self._sample(b"".join(rest))
            rest, size, long_head = [], 0, None

        with self._open() as f:
            if self._spool is not None:
                f.seek(0)
            while True:
                chunk = f.read(1 << 20)
                if not chunk:
                    break
                if chunk[:1] == sep:   # the line carried over from the last chunk ended with it
                    yield from finish()
                if not chunk.strip(sep):   # only separators (a sparse file read with --null): fast
                    line_no += len(chunk)
                    continue
                pos = 0
                for m in token.finditer(chunk):
                    a, b = m.span()
                    if a > pos or (a == 0 and not rest and long_head is None):
                        line_no += chunk.count(sep, pos, a)
                        first = line_no
                    piece = chunk[a:b]
                    if long_head is None and size + len(piece) > MAX_LIST_LINE:
                        long_head, rest, size = (b"".join(rest) + piece)[:80], [], 0
                    elif long_head is None:
                        rest.append(piece)
                        size += len(piece)
                    pos = b
                    if b < len(chunk):   # the line ends in this chunk
                        yield from finish()
                line_no += chunk.count(sep, pos)
            yield from finish()

    def _too_long(self, line_no: int, head: bytes) -> Sample:
        key = f"{self.name}:{line_no}"
        hint = "" if self.null else " (a list without newlines? --null reads NUL-separated lists)"
        return Sample(key, error=f"{key}: a line longer than {MAX_LIST_LINE:,} bytes is no file name (it begins "
                                 f"{head[:40]!r}...); skipped{hint}")

    def _sample(self, line: bytes) -> Iterator[Sample]:
        if not self.null:
            line = line.rstrip(b"\r")
            if b"\0" in line:   # no file name holds one
                shown = os.fsdecode(line[:60].replace(b"\0", b"?"))
                key = f"{self.name}: {shown}"
                yield Sample(key, error=f"{key}...: a line with a NUL byte is no file name; skipped (pass "
                                        "--null for a NUL-separated list)")
                return
        if line.strip():
            p = os.fsdecode(line)
            yield Sample(p, path=p)


class TarShard(Source):
    """A WebDataset tar shard. Uncompressed tars are indexed (headers only) and members are read
    by offset in the workers; compressed ones are streamed and their image bytes passed on."""

    def __init__(self, path: str):
        self.path = path
        self._skipped = 0
        self._odd: dict = {}

    @property
    def skipped(self) -> dict:
        out = {f"{self.path}: samples without an image member": self._skipped} if self._skipped else {}
        for kind, n in sorted(self._odd.items()):
            out[f"{self.path}: members that are {kind}, not files (never read)"] = n
        return out

    def samples(self) -> Iterator[Sample]:
        self._skipped = 0
        self._odd: dict = {}   # members that are not regular files, by kind
        compressed = self.path.lower().endswith(COMPRESSED_TAR_SUFFIXES)
        try:
            raw = open_regular(self.path, what="a tar file")   # never blocks on a FIFO
        except ImageInputError as e:
            yield Sample(self.path, error=str(e))
            return
        try:
            tf = tarfile.open(fileobj=raw, mode="r|*" if compressed else "r:")
        except (OSError, tarfile.TarError) as e:
            raw.close()
            yield Sample(self.path, error=f"{self.path}: not a readable tar file ({e})")
            return
        current: Optional[str] = None
        found = False
        try:
            with raw, tf:
                while True:
                    try:
                        m = tf.next()
                    except (OSError, tarfile.TarError, EOFError) as e:
                        yield Sample(f"{self.path}@{tf.offset}", error=f"{self.path}: tar is damaged after "
                                     f"byte {tf.offset} ({e}); the samples after it are lost")
                        break
                    if m is None:
                        break
                    if not compressed:
                        tf.members.clear()  # headers only: keep memory flat over long tars
                    kind = None if m.isfile() else _member_kind(m)
                    key, ext = _split_key(m.name.rstrip("/"))
                    if kind == "folders" and ext not in _IMAGE_EXTS:
                        self._odd[kind] = self._odd.get(kind, 0) + 1
                        continue   # the tar's structure
                    if key != current:
                        if current is not None and not found:
                            self._skipped += 1
                        current, found = key, False
                    if found or ext not in _IMAGE_EXTS:
                        if kind is not None:
                            self._odd[kind] = self._odd.get(kind, 0) + 1
                        continue
                    found = True
                    if kind is not None:   # an image by its name: a row that says why it was not read
                        target = f" (to {m.linkname!r})" if m.issym() or m.islnk() else ""
                        yield Sample(key, error=f"{self.path}: member {m.name!r} is a {kind[:-1]}{target}, not a "
                                                "file; only regular members are read")
                    elif compressed:
                        f = tf.extractfile(m)
                        yield Sample(key, data=f.read() if f is not None else b"")
                    else:
                        yield Sample(key, member=(self.path, m.offset_data, m.size))
        except (OSError, tarfile.TarError) as e:  # the stream itself broke
            yield Sample(self.path, error=f"{self.path}: cannot read ({e})")
            return
        if current is not None and not found:
            self._skipped += 1


def _member_kind(m: "tarfile.TarInfo") -> str:
    """What a tar member that is not a regular file is, as a plural noun."""
    if m.isdir():
        return "folders"
    if m.issym():
        return "symbolic links"
    if m.islnk():
        return "hard links"
    if m.ischr() or m.isblk():
        return "devices"
    if m.isfifo():
        return "FIFOs"
    return "other special members"


def _split_key(name: str) -> Tuple[str, str]:
    """WebDataset convention: ``dir/key.ext.ext2`` -> (``dir/key``, ``ext.ext2``), lower-cased ext."""
    d, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{d}/{stem}" if d else stem), ext.lower()


class Table(Source):
    """A Parquet or CSV table whose ``column`` holds image paths (Parquet also: image bytes, or
    Hugging Face ``{bytes, path}`` image structs)."""

    def __init__(self, path: str, column: str, id_column: Optional[str] = None):
        self.path, self.column, self.id_column = path, column, id_column
        self.kind = "csv" if path.lower().endswith((".csv", ".tsv")) else "parquet"
        self._check()

    def _check(self) -> None:
        try:
            open_regular(self.path, what="a table").close()
        except ImageInputError as e:
            raise InputError(str(e)) from None
        names = self._columns()
        for arg, col in (("--column", self.column), ("--id-column", self.id_column)):
            if col is not None and col not in names:
                raise InputError(f"{arg} {col!r}: {self.path} has no such column (it has {', '.join(names)})")

    def _columns(self) -> List[str]:
        if self.kind == "csv":
            try:
                with open(self.path, newline="", encoding="utf-8", errors="surrogateescape") as f:
                    return next(csv.reader(f, dialect=self._dialect()), [])
            except csv.Error as e:
                raise InputError(f"{self.path}: its first row is not a CSV header ({e})") from None
        pq = _pyarrow_parquet()
        try:
            return list(pq.ParquetFile(self.path).schema_arrow.names)
        except Exception as e:  # noqa: BLE001 - pyarrow raises many types for a bad file
            raise InputError(f"{self.path}: not a readable Parquet file ({e})") from None

    def _dialect(self):
        return "excel-tab" if self.path.lower().endswith(".tsv") else "excel"

    def samples(self) -> Iterator[Sample]:
        if self.kind == "csv":
            yield from self._csv_samples()
        else:
            yield from self._parquet_samples()

    def _csv_samples(self) -> Iterator[Sample]:
        with open(self.path, newline="", encoding="utf-8", errors="surrogateescape") as f:
            reader = csv.DictReader(f, dialect=self._dialect())
            row_no = 0
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as e:   # a cell beyond the csv module's limit: that row only
                    yield Sample(f"{self.path}#{row_no}", error=f"{self.path}#{row_no} (line {reader.line_num}): "
                                                                f"not a CSV row ({e})")
                else:
                    yield self._sample(row.get(self.column), row.get(self.id_column) if self.id_column else None,
                                       row_no)
                row_no += 1

    def _parquet_samples(self) -> Iterator[Sample]:
        pq = _pyarrow_parquet()
        cols = [self.column] + ([self.id_column] if self.id_column else [])
        row_no = 0
        try:
            for batch in pq.ParquetFile(self.path).iter_batches(batch_size=256, columns=cols):
                values = batch.column(0).to_pylist()
                ids = batch.column(1).to_pylist() if self.id_column else [None] * len(values)
                for v, key in zip(values, ids):
                    yield self._sample(v, key, row_no)
                    row_no += 1
        except Exception as e:  # noqa: BLE001 - pyarrow raises many types for a damaged file
            yield Sample(f"{self.path}#{row_no}", error=f"{self.path}: damaged after row {row_no} ({e}); "
                                                        "the rows after it are lost")

    def _sample(self, value, key, row_no: int) -> Sample:
        where = f"{self.path}#{row_no}"
        if isinstance(value, dict):  # Hugging Face image struct {bytes, path}
            data, path = value.get("bytes"), value.get("path")
            if data:
                return Sample(str(key) if key is not None else (path or where), data=data)
            value = path
        if isinstance(value, (bytes, bytearray)):
            return Sample(str(key) if key is not None else where, data=bytes(value))
        if isinstance(value, str) and value:
            return Sample(str(key) if key is not None else value, path=value)
        return Sample(str(key) if key is not None else where,
                      error=f"{where}: column {self.column!r} holds no image path or bytes ({value!r})")


class Chain(Source):
    def __init__(self, sources: Sequence[Source]):
        self.sources = list(sources)

    def samples(self) -> Iterator[Sample]:
        for s in self.sources:
            yield from s.samples()

    @property
    def skipped(self) -> dict:
        out: dict = {}
        for s in self.sources:
            out.update(s.skipped)
        return out


def _pyarrow_parquet():
    """``pyarrow.parquet`` for reading Parquet tables of inputs (an :class:`InputError` naming the extra)."""
    return require("pyarrow.parquet", "reading Parquet", InputError)


def is_tar(path: str) -> bool:
    return path.lower().endswith(TAR_SUFFIXES + COMPRESSED_TAR_SUFFIXES)


def is_table(path: str) -> bool:
    return path.lower().endswith(TABLE_SUFFIXES)


def open_inputs(paths: Iterable[str] = (), recursive: bool = False, files_from: Optional[str] = None,
                column: Optional[str] = None, id_column: Optional[str] = None, null: bool = False) -> Source:
    """Positional inputs of ``joint score`` -> one source: image files, folders (their images,
    sorted; sub-folders with ``recursive``) and globs; ``*.tar`` (and ``.tar.gz``) WebDataset
    shards; ``*.parquet`` / ``*.csv`` tables (``column`` names the image column); plus the paths
    listed in ``files_from`` (``"-"``: standard input). Raises :class:`InputError` for what
    cannot be read at all."""
    parts: List[Source] = []
    images: List[str] = []
    tables = 0

    def flush():
        if images:
            parts.append(Paths(list(images)))
            images.clear()

    for p in expand_paths([os.fspath(x) for x in paths], recursive=recursive):
        if isinstance(p, UnreadablePath):  # an empty folder, a pattern matching nothing: its error
            images.append(p)
        elif is_tar(p):
            flush()
            parts.append(TarShard(p))
        elif is_table(p):
            flush()
            if column is None:
                raise InputError(f"{p} is a table: name its image column with --column")
            parts.append(Table(p, column, id_column))
            tables += 1
        else:
            images.append(p)
    flush()
    if files_from is not None:
        parts.append(FileList(files_from, null=null))
    if column is not None and not tables:
        raise InputError("--column applies to Parquet/CSV inputs, and none was given")
    if id_column is not None and not tables:
        raise InputError("--id-column applies to Parquet/CSV inputs, and none was given")
    return parts[0] if len(parts) == 1 else Chain(parts)


# --------------------------------------------------------------------------------------------
# shards and fingerprints
# --------------------------------------------------------------------------------------------


def parse_shard(text: str) -> Tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``."""
    try:
        i_s, n_s = text.split("/")
        i, n = int(i_s), int(n_s)
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected I/N, e.g. 0/8 (shards are numbered from 0)") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard {text!r}: need 0 <= I < N, e.g. 0/{max(n, 2)} ... {max(n, 2) - 1}/{max(n, 2)}")
    return i, n


def shard(samples: Iterable[Sample], index: int, count: int) -> Iterator[Sample]:
    """The ``index``-th of ``count`` parts: the inputs at positions ``index, index + count, ...``.
    Deterministic and balanced (sizes differ by at most one), and the parts partition the inputs
    exactly, provided every process lists the same inputs in the same order (folders are sorted)."""
    for k, s in enumerate(samples):
        if k % count == index:
            yield s


class KeySetHash:
    """An order-independent fingerprint of a multiset of ids (sum of 128-bit hashes): two score
    files hold the same ids, each once, exactly when count and fingerprint agree (up to a 2^-128
    chance). It lets ``joint merge`` check a shard without holding its ids in memory."""

    MOD = 1 << 128

    def __init__(self):
        self.count, self.value = 0, 0

    def add(self, key: str) -> None:
        h = hashlib.blake2b(_encode_key(key), digest_size=16).digest()
        self.value = (self.value + int.from_bytes(h, "big")) % self.MOD
        self.count += 1

    def hexdigest(self) -> str:
        return f"{self.value:032x}"


def _encode_key(key: str) -> bytes:
    return key.encode("utf-8", "surrogatepass")  # any str, also names that are not UTF-8
