"""Score files that are written as the work goes and survive any interruption.

Formats (by the suffix of ``--out``):

- ``.csv`` and ``.jsonl``: one row a line, appended and flushed per batch. A batch is one
  ``write``; if the process dies in the middle of one, the torn last row is cut off when the
  file is resumed, so the file always holds whole rows.
- ``.json``: a JSON array, which cannot be appended to, so rows go to ``OUT.partial`` (JSON
  lines) during the run and become ``OUT`` (written to a temporary file, then renamed) at the end.
- ``.parquet``: a folder of Parquet files (``part-00000.parquet``, ...), one row group each,
  as Ray and Spark write them; ``pandas.read_parquet`` and ``pyarrow`` read the folder as one
  table. Rows since the last part wait in ``_journal-NNNNN.jsonl`` in the folder and become the
  next part every :data:`ROWS_PER_PART` rows and at the end. Needs pyarrow (the ``parquet`` extra).

Every format has the columns ``source, technical, rationality, naturalness, error, warning``
(``warning``: why a score should not be trusted as is - a nearly uniform or black frame, noise, a
cropped panorama - such images rank last; Parquet also ``source_bytes``: the raw file name when it
is not valid UTF-8, else null). Files without a ``warning`` column (older ones) are read as having
no warnings.

File names that are not valid UTF-8 round-trip: CSV keeps their bytes as they are (read them
back with ``errors="surrogateescape"``), JSON escapes them (``\\udcff``, read back by any JSON
reader of Python), Parquet keeps the bytes in ``source_bytes``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple
from ..errors import OutputError

FIELDS = ("source", "technical", "rationality", "naturalness", "error", "warning")
REQUIRED = FIELDS[:5]     # what a score file must have to be read; ``warning`` came later
AXES = ("technical", "rationality", "naturalness")
FORMATS = (".csv", ".jsonl", ".json", ".parquet")
ROWS_PER_PART = 65536
PARTIAL_SUFFIX = ".partial"
META_SUFFIX = ".joint.json"
PARQUET_META = "_joint.json"


def out_format(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise OutputError(f"{path}: unknown format {suffix!r}; use {', '.join(FORMATS)}")
    return suffix


def meta_path(path: str) -> Path:
    """Where the job description of a score file lives (see :mod:`joint_core.stream.job`)."""
    if out_format(path) == ".parquet":
        return Path(path) / PARQUET_META
    return Path(path + META_SUFFIX)


def read_paths(path: str) -> List[str]:
    """Every file a reader of score file ``path`` may open: the file (or Parquet folder), its
    partial file and its job record - what a command that reads it must never write over."""
    return [path, path + PARTIAL_SUFFIX, str(meta_path(path))]


def existing_score_file(path: str, overwrite: bool) -> Optional[str]:
    """Why score file ``path`` cannot be created now (see :mod:`joint_core.outputs`): it exists
    (a Parquet folder: holds parts) and ``overwrite`` is off, or it cannot be a file/folder."""
    from ..outputs import existing_output

    if out_format(path) == ".parquet" and Path(path).is_dir():
        problem = existing_output(Path(path) / "part-00000.parquet", True)   # the folders above it
        if problem is None and has_rows(path) and not overwrite:
            problem = f"{path}: already exists; pass --overwrite to replace it"
        return problem
    return existing_output(path, overwrite, what="")


def _err(path: Any, e: BaseException, what: str = "cannot write") -> OutputError:
    reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    return OutputError(f"{path}: {what} ({reason})")


# --------------------------------------------------------------------------------------------
# one record <-> one line
# --------------------------------------------------------------------------------------------


def clean_record(rec: Dict[str, Any]) -> Dict[str, Any]:
    """Only the file's columns, NaN as None."""
    out = {}
    for k in FIELDS:
        v = rec.get(k)
        if k in AXES and v is not None:
            v = float(v)
            if math.isnan(v):
                v = None
        out[k] = v
    return out


TEXT_FIELDS = ("source", "error", "warning")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")


def csv_cell(text: str) -> str:
    """A text cell of a CSV score file. A spreadsheet runs a cell that begins with ``=``, ``+``,
    ``-`` or ``@`` (or a tab or carriage return before one) as a formula, and file names and tar
    keys can be anyone's choice, so such a cell is written with a leading ``'`` (which
    spreadsheets show as text) - and so is one that begins with ``'``, so that
    :func:`csv_uncell` gives every name back exactly."""
    return "'" + text if text.startswith(FORMULA_START) else text


def csv_uncell(text: str) -> str:
    """The text of a cell :func:`csv_cell` wrote."""
    return text[1:] if text.startswith("'") else text


def _csv_text(records: List[Dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for r in records:
        w.writerow(["" if r[k] is None else csv_cell(r[k]) if k in TEXT_FIELDS else r[k] for k in FIELDS])
    return buf.getvalue()


_JSONL_START = b'{"source": '   # how every line joint writes to a JSON-lines score file begins


def _csv_row(line: bytes, where: str) -> List[str]:
    """The cells of one CSV record (its bytes, newline included)."""
    try:
        return next(csv.reader(io.StringIO(line.decode("utf-8", "surrogateescape"), newline="")), [])
    except csv.Error as e:
        raise OutputError(f"{where}: not a CSV row ({e})") from None


def _csv_record(row: List[str], header: List[str], where: str, extra: Tuple[str, ...] = ()) -> Dict[str, Any]:
    if len(row) != len(header):
        raise OutputError(f"{where}: expected {len(header)} columns ({', '.join(header)}), got {len(row)}")
    cells = dict(zip(header, row))
    rec: Dict[str, Any] = {k: cells.get(k, "") for k in FIELDS}
    try:
        for k in AXES:
            rec[k] = float(rec[k]) if rec[k] != "" else None
    except ValueError as e:
        raise OutputError(f"{where}: not a score ({e})") from None
    rec["source"] = csv_uncell(rec["source"])
    rec["error"] = csv_uncell(rec["error"]) or None
    rec["warning"] = csv_uncell(rec["warning"]) or None
    for k in extra:
        rec[k] = cells[k]
    return rec


def _jsonl_text(records: List[Dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=True) + "\n" for r in records)


def _jsonl_record(line: bytes, where: str, extra: Tuple[str, ...] = ()) -> Dict[str, Any]:
    try:
        rec = json.loads(line)
    except ValueError as e:
        raise OutputError(f"{where}: not a JSON line ({e})") from None
    if not isinstance(rec, dict) or "source" not in rec:
        raise OutputError(f"{where}: not a score record (no 'source')")
    return _with_extra(_typed(rec, where), rec, extra, where)


def _typed(rec: Dict[str, Any], where: Any) -> Dict[str, Any]:
    """``clean_record`` of a record read from a file, whose types anyone may have edited: a
    text ``source``, numbers (or null) for the scores, text (or null) for ``error``/``warning``."""
    if not isinstance(rec.get("source"), str):
        raise OutputError(f"{where}: 'source' should be text, found {type(rec.get('source')).__name__}")
    for k in AXES:
        v = rec.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise OutputError(f"{where}: {k!r} should be a number or null, found {json.dumps(v, default=str)[:40]}")
    for k in ("error", "warning"):
        if rec.get(k) is not None and not isinstance(rec.get(k), str):
            raise OutputError(f"{where}: {k!r} should be text or null, found {type(rec.get(k)).__name__}")
    return clean_record(rec)


def _with_extra(clean: Dict[str, Any], rec: Dict[str, Any], extra: Tuple[str, ...], where: Any) -> Dict[str, Any]:
    for k in extra:
        if k not in rec:
            raise OutputError(f"{where}: no column {k!r}")
        clean[k] = rec[k]
    return clean


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------------------------
# reading what a file holds (whole records only)
# --------------------------------------------------------------------------------------------


# the states of a CSV field (Python's csv module, excel dialect, strict=False)
_START, _FIELD, _QUOTED, _QUOTE_IN_QUOTED = range(4)


def _csv_state(line: bytes, state: int) -> int:
    """The CSV parser's state after ``line`` (which ends with its newline, unless torn), from
    ``state``: a record ends at a newline outside a quoted field. As the csv module reads: a
    quote opens a quoted field only at the start of a field; elsewhere it is a plain character
    (``note: "checked`` is one whole field)."""
    if b'"' not in line and state in (_START, _FIELD):
        return _START if line.endswith(b"\n") else _FIELD
    for c in line:
        if state == _QUOTED:
            if c == 34:                      # "
                state = _QUOTE_IN_QUOTED
        elif c == 10:                        # \n outside quotes: the record ends
            state = _START
        elif state == _QUOTE_IN_QUOTED:
            state = _QUOTED if c == 34 else _START if c == 44 else _FIELD
        elif c == 44:                        # ,
            state = _START
        elif state == _START and c == 34:
            state = _QUOTED
        else:
            state = _FIELD
    return state


MAX_RECORD = 1 << 20   # no row of a score file comes near this: a longer "row" is an unclosed quote


def _complete_lines(path: Path, csv_mode: bool, tail: Optional[List[bytes]] = None
                    ) -> Iterator[Tuple[bytes, int]]:
    """Whole records of a line file and the byte offset after each. A CSV record may span lines
    (a quoted name with a newline): it is whole when its newline lies outside a quoted field. What
    follows the last whole record (no final newline, or an open quoted field) is not yielded; it
    goes to ``tail`` when a list is given. A record over :data:`MAX_RECORD` bytes is an
    :class:`OutputError` (a quote that never closes would otherwise swallow the whole file)."""
    with open(path, "rb") as f:
        pending: List[bytes] = []
        size = 0
        state = _START
        pos = 0
        for line in f:
            pos += len(line)
            pending.append(line)
            size += len(line)
            if size > MAX_RECORD:
                raise OutputError(f"{path}, byte {pos - size}: a row longer than {MAX_RECORD:,} bytes starts here "
                                  "(a quote that never closes?); not a joint score file as it stands")
            if not line.endswith(b"\n"):
                break  # torn: the process died in the middle of a write
            if csv_mode:
                state = _csv_state(line, state)
                if state == _QUOTED:
                    continue  # inside a quoted field that holds a newline
            yield b"".join(pending), pos
            pending, size = [], 0
        if tail is not None:
            tail.append(b"".join(pending))


def _line_records(path: Path, fmt: str, strict: bool = True, extra: Tuple[str, ...] = (),
                  tail: Optional[List[bytes]] = None) -> Iterator[Tuple[Dict[str, Any], int]]:
    """Records of a CSV / JSONL file with the byte offset after each (the CSV header gives
    ``{}``). ``strict``: the CSV header must be exactly the score columns (a file to append to);
    otherwise it must hold them, and the ``extra`` columns are read too. ``tail``: as for
    :func:`_complete_lines`."""
    header: Optional[List[str]] = None
    for line, end in _complete_lines(path, fmt == ".csv", tail):
        where = f"{path}, byte {end - len(line)}"
        if fmt == ".csv":
            row = _csv_row(line, where)
            if header is None:
                header = row
                wanted = REQUIRED + tuple(extra)
                if (tuple(row) != FIELDS) if strict else not set(wanted) <= set(row):
                    missing = [c for c in wanted if c not in row]
                    raise OutputError(f"{path}: not a joint score file (its header is {row[:8]}"
                                      + (f", it lacks {missing}" if missing else
                                         f", expected exactly {list(FIELDS)} to append to it") + ")")
                yield {}, end
                continue
            yield _csv_record(row, header, where, extra), end
        else:
            if line.strip():
                yield _jsonl_record(line, where, extra), end


def read_rows(path: str, extra: Tuple[str, ...] = ()) -> Iterator[Dict[str, Any]]:
    """The records of a score file of any format, streaming; a torn last row (an interrupted
    run) is left out. A ``.json`` whose run has not finished is read from ``OUT.partial``.
    ``extra``: more columns to read (a file someone added a column to)."""
    fmt = out_format(path)
    extra = tuple(extra)
    p = Path(path)
    if fmt == ".parquet":
        yield from _parquet_rows(p, extra)
        return
    if fmt == ".json":
        partial = Path(path + PARTIAL_SUFFIX)
        if partial.is_file():
            p, fmt = partial, ".jsonl"
        elif p.is_file():
            yield from _json_rows(p, extra)
            return
    if not p.is_file():
        raise OutputError(f"{path}: " + ("is a folder" if p.is_dir() else "no such file"))
    try:
        for rec, _ in _line_records(p, fmt, strict=False, extra=extra):
            if rec:
                yield rec
    except OSError as e:
        raise _err(path, e, "cannot read") from None


def _json_rows(p: Path, extra: Tuple[str, ...] = ()) -> Iterator[Dict[str, Any]]:
    try:
        data = json.loads(p.read_bytes())
    except (OSError, ValueError) as e:
        raise _err(p, e, "cannot read") from None
    if not isinstance(data, list):
        raise OutputError(f"{p}: not a joint score file (expected a JSON array of records)")
    for i, rec in enumerate(data):
        if not isinstance(rec, dict) or "source" not in rec:
            raise OutputError(f"{p}: not a joint score file (an entry has no 'source')")
        where = f"{p}, entry {i}"
        yield _with_extra(_typed(rec, where), rec, extra, where)


def _parquet_parts(d: Path) -> List[Path]:
    return sorted(d.glob("part-*.parquet"))


def _journals(d: Path) -> List[Path]:
    return sorted(d.glob("_journal-*.jsonl"))


def _parquet_rows(p: Path, extra: Tuple[str, ...] = ()) -> Iterator[Dict[str, Any]]:
    from .sources import _pyarrow_parquet

    pq = _pyarrow_parquet()
    if p.is_file():
        files, journals = [p], []
    elif p.is_dir():
        files = _parquet_parts(p) or sorted(f for f in p.glob("*.parquet"))
        done = {f.stem.split("-")[-1] for f in files}
        journals = [j for j in _journals(p) if j.stem.split("-")[-1] not in done]
    else:
        raise OutputError(f"{p}: no such file or folder")
    for f in files:
        try:
            pf = pq.ParquetFile(f)
            names = pf.schema_arrow.names
            missing = [c for c in REQUIRED + extra if c not in names]
            if missing:
                raise OutputError(f"{f}: not a joint score file (no column {missing[0]!r})")
            cols = [c for c in dict.fromkeys(FIELDS + extra) if c in names]
            cols += ["source_bytes"] if "source_bytes" in names else []
            for batch in pf.iter_batches(columns=cols, batch_size=8192):
                data = batch.to_pydict()
                raw = data.get("source_bytes") or [None] * batch.num_rows
                for i in range(batch.num_rows):
                    rec = {k: data[k][i] for k in cols if k != "source_bytes"}
                    if raw[i] is not None:
                        rec["source"] = raw[i].decode("utf-8", "surrogateescape")
                    yield _with_extra(_typed(rec, f"{f}, row {i}"), rec, extra, f)
        except OutputError:
            raise
        except Exception as e:  # noqa: BLE001 - pyarrow raises many types for a bad file
            raise OutputError(f"{f}: cannot read Parquet ({e})") from None
    for j in journals:
        for rec, _ in _line_records(j, ".jsonl", extra=extra):
            yield rec


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


class _LineFile:
    """An append-only line file: one ``write`` per batch, cut back to the last whole batch if a
    write fails (a full disk), torn tail cut on open."""

    def __init__(self, path: Path, fmt: str, resume: bool):
        self.path, self.fmt = path, fmt
        self.rows = 0
        self.notes: List[str] = []   # what opening changed in the file, for the user
        exists = path.exists()
        if exists and path.is_dir():
            raise OutputError(f"{path}: is a folder")
        if resume and exists:
            end = 0
            tail: List[bytes] = []
            try:
                for rec, pos in _line_records(path, fmt, tail=tail):
                    end = pos
                    if rec:
                        self.rows += 1
            except OSError as e:
                raise _err(path, e, "cannot read") from None
            torn = tail[0] if tail else b""
            whole = torn and self._whole_row(torn, end)   # a last row without its newline: kept
            self._open()
            if whole:
                self._write(b"\n")
                self.rows += 1
            elif torn:   # the torn last row of a killed run
                self._check_torn(torn, end)
                self._truncate(end)
                self.notes.append(f"removed the unfinished last row that an interrupted run left in {path} "
                                  f"({len(torn)} bytes at byte {end}: {torn[:60]!r}"
                                  + ("..." if len(torn) > 60 else "") + "); it is scored again")
            if end == 0 and not whole and fmt == ".csv":
                self._write(_encode(",".join(FIELDS) + "\n"))
        else:
            self._open(truncate=True)
            if fmt == ".csv":
                self._write(_encode(",".join(FIELDS) + "\n"))

    def _whole_row(self, torn: bytes, end: int) -> bool:
        """Whether the bytes after the last newline are a whole row that only lacks its newline
        (a file someone edited): such a row is kept. A JSON line is whole when it parses; a CSV
        row when it has every column, with the scores in place (a row torn inside its last
        column, a message, is kept with that message cut short)."""
        if end == 0 or b"\n" in torn:
            return False
        try:
            if self.fmt == ".csv":
                if _csv_state(torn, _START) == _QUOTED:
                    return False
                _csv_record(_csv_row(torn, ""), list(FIELDS), "")
            else:
                _jsonl_record(torn, "")
            return True
        except OutputError:
            return False

    def _check_torn(self, torn: bytes, end: int) -> None:
        """Refuse to cut what cannot be the torn row of a killed write: text where the header
        should be, a JSON line that does not start as joint writes them, or a quoted field that
        opens and spans lines of whole rows (a stray double quote typed at the start of a field)."""
        why = None
        if self.fmt == ".csv" and end == 0:
            header = _encode(",".join(FIELDS))
            if not header.startswith(torn.rstrip(b"\r\n")):
                why = "it does not start with the score file's header"
        elif self.fmt != ".csv":
            start = _JSONL_START[:len(torn)]
            if not torn.startswith(start):
                why = "joint writes no line that starts so"
        elif b"\n" in torn:
            for line in torn.split(b"\n")[1:]:
                try:
                    _csv_record(_csv_row(line, ""), list(FIELDS), "")
                except OutputError:
                    continue
                why = ("a quoted field opens there and never closes, and the rows after it would be lost "
                       "(a stray double quote?)")
                break
        if why:
            raise OutputError(f"{self.path}, byte {end}: the text from there to the end is not a whole row, and "
                              f"not what an interrupted run leaves ({why}); nothing was changed. Fix or remove it "
                              "by hand, then resume")

    def _open(self, truncate: bool = False) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.f = open(self.path, "wb" if truncate else "ab", buffering=0)
        except OSError as e:
            raise _err(self.path, e) from None

    def _truncate(self, size: int) -> None:
        os.ftruncate(self.f.fileno(), size)
        self.f.seek(size)

    def _write(self, data: bytes) -> None:
        start = self.f.seek(0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                n = self.f.write(view)
                view = view[n:]
        except OSError as e:
            try:
                self._truncate(start)  # whole batches only, even on a full disk
            except OSError:
                pass
            raise _err(self.path, e) from None

    def write(self, records: List[Dict[str, Any]]) -> None:
        recs = [clean_record(r) for r in records]
        text = _csv_text(recs) if self.fmt == ".csv" else _jsonl_text(recs)
        self._write(_encode(text))
        self.rows += len(recs)

    def close(self) -> None:
        if not self.f.closed:
            self.f.close()


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


class _Lock:
    """An exclusive ``flock`` on the score file's lock file for the life of a run, so that a
    second ``joint score`` on the same ``--out`` (a resume started while the first run still
    goes) is refused instead of doubling rows. The kernel drops it when the process dies, even
    by SIGKILL, so a lock never outlives its run; forked children close their copy at once
    (:func:`_close_locks_in_child`). No-op where ``fcntl`` is missing (Windows)."""

    def __init__(self, path: str):
        self.fd: Optional[int] = None
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return
        lock = lock_path(path)
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise _err(path, e) from None
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


class Sink:
    """Appends batches of records to a score file; see the module doc for the formats.

    ``mode``: ``"new"`` (the file must not hold rows yet), ``"resume"`` (keep the rows it holds
    and append) or ``"overwrite"``. Opening creates the file, so a path that cannot be written is
    an :class:`OutputError` before any work is done. ``rows`` counts the rows the file holds.
    """

    def __init__(self, path: str, mode: str = "new"):
        if mode not in ("new", "resume", "overwrite"):
            raise ValueError(f"mode must be new, resume or overwrite, got {mode!r}")
        from ..outputs import parent_problem, special_kind

        self.path = path
        self.fmt = out_format(path)
        p0 = Path(path)
        problem = parent_problem(p0)
        if problem is None and special_kind(p0):
            problem = f"is a {special_kind(p0)}, not a file joint can write"
        if problem:
            raise OutputError(f"{path}: {problem}")
        if self.fmt != ".parquet" and p0.is_dir():
            raise OutputError(f"{path}: is a folder")
        if self.fmt == ".parquet":
            from .sources import _pyarrow_parquet

            _pyarrow_parquet()  # a clear error naming the extra before anything is created
            if p0.is_file() and mode != "overwrite":
                raise OutputError(f"{path}: is a file; a Parquet output of joint is a folder of parts "
                                  "(pass --overwrite to replace the file)")
            if p0.is_file():
                remove_output(path)
        self._lock = _Lock(path)   # before anything is read or truncated
        try:
            self._open(path, mode)
        except BaseException:
            self._lock.release()
            raise

    def _open(self, path: str, mode: str) -> None:
        if mode == "new" and has_rows(path):
            raise OutputError(f"{path}: already exists; pass --resume to continue it or --overwrite "
                              "to replace it")
        if mode == "overwrite":
            remove_output(path)
        resume = mode == "resume"
        p = Path(path)
        if self.fmt in (".csv", ".jsonl"):
            self._file = _LineFile(p, self.fmt, resume)
        elif self.fmt == ".json":
            if p.is_dir():
                raise OutputError(f"{path}: is a folder")
            partial = Path(path + PARTIAL_SUFFIX)
            seed = resume and p.is_file() and not partial.exists()
            self._file = _LineFile(partial, ".jsonl", resume)
            if seed:  # a finished .json being resumed: its rows go back into the partial file
                rows = list(_json_rows(p))
                self._file.write(rows)
        else:
            self._parquet_open(p, resume)

    @property
    def notes(self) -> List[str]:
        """What opening the file changed in it (a torn last row removed), for the user."""
        return list(self._file.notes)

    @property
    def rows(self) -> int:
        if self.fmt == ".parquet":
            return self._part_rows + self._file.rows
        return self._file.rows

    @property
    def partial_path(self) -> str:
        """Where the rows are while the run is not finished."""
        return str(self._file.path) if self.fmt == ".json" else self.path

    def write(self, records: List[Dict[str, Any]]) -> None:
        """Append one batch; when this returns, the rows survive the process being killed."""
        if not records:
            return
        self._file.write(records)
        if self.fmt == ".parquet" and self._file.rows >= ROWS_PER_PART:
            self._roll()

    def close(self, finish: bool = True) -> None:
        """Close; with ``finish``, turn the file into its final form (``.json``: the array;
        ``.parquet``: the last part). A failure leaves the rows where :attr:`partial_path` says."""
        try:
            self._file.close()
            if not finish:
                return
            if self.fmt == ".json":
                self._finish_json()
            elif self.fmt == ".parquet" and self._file.rows:
                self._roll(reopen=False)
            elif self.fmt == ".parquet":
                self._file.path.unlink(missing_ok=True)
        finally:
            self._lock.release()

    # -- .json ---------------------------------------------------------------------------

    def _finish_json(self) -> None:
        partial = self._file.path
        tmp = Path(self.path + ".tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write("[")
                for i, rec in enumerate(read_rows(self.path)):
                    f.write(("," if i else "") + "\n  " + json.dumps(rec, ensure_ascii=True))
                f.write("\n]\n")
            os.replace(tmp, self.path)
        except OSError as e:
            _remove_quietly(tmp)
            raise OutputError(f"{self.path}: cannot write ({e.strerror or e}); all {self.rows} rows are "
                              f"kept in {partial} (JSON lines)") from None
        partial.unlink(missing_ok=True)

    # -- .parquet --------------------------------------------------------------------------

    def _parquet_open(self, d: Path, resume: bool) -> None:
        from .sources import _pyarrow_parquet

        _pyarrow_parquet()  # a clear error before anything else if pyarrow is missing
        if d.is_file():
            raise OutputError(f"{d}: is a file; a Parquet output of joint is a folder of parts "
                              "(pass --overwrite to replace the file)")
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _err(d, e) from None
        parts = _parquet_parts(d)
        self._part_rows = 0
        if resume:
            from .sources import _pyarrow_parquet as _pq

            pq = _pq()
            for f in parts:
                try:
                    self._part_rows += pq.ParquetFile(f).metadata.num_rows
                except Exception as e:  # noqa: BLE001
                    raise OutputError(f"{f}: cannot read Parquet ({e})") from None
        self._next = (int(parts[-1].stem.split("-")[-1]) + 1) if parts else 0
        for j in _journals(d):  # journals of parts already written are leftovers of a kill
            if int(j.stem.split("-")[-1]) < self._next:
                j.unlink()
        self._file = _LineFile(self._journal(), ".jsonl", resume)

    def _journal(self) -> Path:
        return Path(self.path) / f"_journal-{self._next:05d}.jsonl"

    def _roll(self, reopen: bool = True) -> None:
        """The journal's rows -> the next part (written to a temporary name, then renamed), then
        the journal goes; a kill in between leaves a journal that resuming recognises as done."""
        import pyarrow as pa

        from .sources import _pyarrow_parquet

        pq = _pyarrow_parquet()
        self._file.close()
        journal = self._file.path
        rows = [rec for rec, _ in _line_records(journal, ".jsonl")]
        cols: Dict[str, list] = {k: [r[k] for r in rows] for k in FIELDS}
        raw = [_raw_name(s) for s in cols["source"]]
        cols["source"] = [s if b is None else b.decode("utf-8", "backslashreplace")
                          for s, b in zip(cols["source"], raw)]
        for k in ("error", "warning"):   # messages that quote a name that is not UTF-8
            cols[k] = [_utf8_text(m) for m in cols[k]]
        table = pa.table({
            "source": pa.array(cols["source"], pa.string()),
            "technical": pa.array(cols["technical"], pa.float64()),
            "rationality": pa.array(cols["rationality"], pa.float64()),
            "naturalness": pa.array(cols["naturalness"], pa.float64()),
            "error": pa.array(cols["error"], pa.string()),
            "warning": pa.array(cols["warning"], pa.string()),
            "source_bytes": pa.array(raw, pa.binary()),
        })
        part = Path(self.path) / f"part-{self._next:05d}.parquet"
        tmp = Path(self.path) / f".part-{self._next:05d}.parquet.tmp"
        try:
            pq.write_table(table, tmp, row_group_size=max(1, len(rows)))
            os.replace(tmp, part)
        except OSError as e:
            _remove_quietly(tmp)
            raise OutputError(f"{part}: cannot write ({e.strerror or e}); the rows are kept in {journal}") from None
        journal.unlink()
        self._part_rows += len(rows)
        self._file.rows = 0          # they are counted in the parts now
        self._next += 1
        if reopen:
            self._file = _LineFile(self._journal(), ".jsonl", resume=False)


def _remove_quietly(path: Path) -> None:
    """Remove a temporary file after a failed write; failing to (a folder of that name, a
    read-only disk) must not hide the error that says where the rows are."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _raw_name(s: str) -> Optional[bytes]:
    """The bytes of a name that is not valid UTF-8 (it holds surrogate escapes), else None."""
    try:
        s.encode("utf-8")
        return None
    except UnicodeEncodeError:
        return s.encode("utf-8", "surrogateescape") if _only_escapes(s) else s.encode("utf-8", "surrogatepass")


def _utf8_text(s: Optional[str]) -> Optional[str]:
    """``s`` as text Parquet can store: the bytes of surrogate escapes as ``\\xff``."""
    raw = _raw_name(s) if s is not None else None
    return s if raw is None else raw.decode("utf-8", "backslashreplace")


def _only_escapes(s: str) -> bool:
    return all(not ("\ud800" <= c <= "\udfff") or "\udc80" <= c <= "\udcff" for c in s)


def has_rows(path: str) -> bool:
    """Whether ``path`` already holds a score file's work (rows, a partial file, parts)."""
    p = Path(path)
    fmt = out_format(path)
    if fmt == ".parquet":
        if p.is_file():
            return True
        return p.is_dir() and any(f.name not in ("_joint.lock",) for f in p.iterdir())
    if fmt == ".json" and Path(path + PARTIAL_SUFFIX).exists():
        return True
    if p.is_dir():
        return False  # reported as "is a folder" when opened
    try:
        return p.stat().st_size > 0
    except OSError:
        return False


def remove_output(path: str) -> None:
    """Remove a score file and what belongs to it (partial file, job description, parts). A
    Parquet folder is emptied of joint's files only; one that holds anything else is refused."""
    p = Path(path)
    fmt = out_format(path)
    try:
        if fmt == ".parquet" and p.is_dir():
            ours = set(_parquet_parts(p)) | set(_journals(p)) | {p / PARQUET_META}
            ours |= set(p.glob(".part-*.parquet.tmp"))
            others_ok = {p / "_joint.lock"}   # held by this run; kept
            others = [f for f in p.iterdir() if f not in ours and f not in others_ok]
            if others:
                raise OutputError(f"{path}: holds files joint did not write ({others[0].name}, ...); "
                                  "not replacing it")
            for f in ours:
                f.unlink(missing_ok=True)
            return
        if p.is_dir():
            raise OutputError(f"{path}: is a folder")
        p.unlink(missing_ok=True)
        Path(path + PARTIAL_SUFFIX).unlink(missing_ok=True)
        Path(path + META_SUFFIX).unlink(missing_ok=True)
    except OSError as e:
        raise _err(path, e, "cannot replace") from None


def write_rows(path: str, records: Iterator[Dict[str, Any]]) -> int:
    """Write a complete score file (merge, the sorted result) so that ``path`` is replaced only
    once the new content is whole: written next to it under a temporary name, then renamed."""
    fmt = out_format(path)
    final = Path(path)
    tmp = final.with_name(f".{final.stem}.tmp-{os.getpid()}{final.suffix}")
    sink = Sink(str(tmp), mode="overwrite")
    try:
        batch: List[Dict[str, Any]] = []
        for rec in records:
            batch.append(rec)
            if len(batch) >= 4096:
                sink.write(batch)
                batch = []
        sink.write(batch)
        sink.close()
        n = sink.rows
        _replace(tmp, final, fmt)
    except BaseException:
        _discard(tmp, fmt)
        raise
    finally:
        if fmt != ".parquet":  # the temporary name's lock: no other process knows that name
            lock_path(str(tmp)).unlink(missing_ok=True)
    return n


def _replace(tmp: Path, final: Path, fmt: str) -> None:
    try:
        if fmt == ".parquet":
            if final.exists():
                remove_output(str(final))
                if final.is_dir():
                    final.rmdir()
            os.replace(tmp, final)
        else:
            os.replace(tmp, final)
    except OSError as e:
        raise _err(final, e) from None


def _discard(tmp: Path, fmt: str) -> None:
    try:
        if fmt == ".parquet" and tmp.is_dir():
            remove_output(str(tmp))
            tmp.rmdir()
        else:
            tmp.unlink(missing_ok=True)
            Path(str(tmp) + PARTIAL_SUFFIX).unlink(missing_ok=True)
    except (OSError, OutputError):
        pass
