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

This module writes them (:class:`Sink`, :func:`write_rows`) and replaces them; the rooms beside
it: :mod:`.records` (one record <-> one line), :mod:`.formats` (reading every format, where a
file's pieces live) and :mod:`.lock` (one writer per file). Their public names are importable
from here too.
"""


from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional


from ..errors import OutputError
from ..extras import require
from ..outputs import existing_output, parent_problem, special_kind
from .formats import (FORMATS, META_SUFFIX, PARQUET_META, PARTIAL_SUFFIX, json_rows, journal_files, line_records,
                      meta_path, out_format, parquet, parquet_parts, read_paths, read_rows)
from .lock import Lock, lock_path
from .records import (CSV_QUOTED, CSV_START, FIELDS, JSONL_START, REQUIRED, TEXT_FIELDS, clean_record, csv_cell,
                      csv_record, csv_row, csv_state, csv_text, csv_uncell, encode, file_error, jsonl_record,

                      jsonl_text, raw_name, utf8_text)

__all__ = ["FIELDS", "FORMATS", "META_SUFFIX", "PARQUET_META", "PARTIAL_SUFFIX", "REQUIRED", "ROWS_PER_PART",
           "TEXT_FIELDS", "OutputError", "Sink", "clean_record", "csv_cell", "csv_uncell", "existing_score_file",
           "has_rows", "lock_path", "meta_path", "out_format", "read_paths", "read_rows", "remove_output",
           "write_rows"]

ROWS_PER_PART = 65536


def existing_score_file(path: str, overwrite: bool) -> Optional[str]:
    """Why score file ``path`` cannot be created now (see :mod:`joint_core.outputs`): it exists
    (a Parquet folder: holds parts) and ``overwrite`` is off, or it cannot be a file/folder."""
    if out_format(path) == ".parquet" and Path(path).is_dir():
        problem = existing_output(Path(path) / "part-00000.parquet", True)   # the folders above it
        if problem is None and has_rows(path) and not overwrite:
            problem = f"{path}: already exists; pass --overwrite to replace it"
        return problem
    return existing_output(path, overwrite, what="")


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
                for rec, pos in line_records(path, fmt, tail=tail):
                    end = pos
                    if rec:
                        self.rows += 1
            except OSError as e:
                raise file_error(path, e, "cannot read") from None
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
                self._write(encode(",".join(FIELDS) + "\n"))
        else:
            self._open(truncate=True)
            if fmt == ".csv":
                self._write(encode(",".join(FIELDS) + "\n"))

    def _whole_row(self, torn: bytes, end: int) -> bool:
        """Whether the bytes after the last newline are a whole row that only lacks its newline
        (a file someone edited): such a row is kept. A JSON line is whole when it parses; a CSV
        row when it has every column, with the scores in place (a row torn inside its last
        column, a message, is kept with that message cut short)."""
        if end == 0 or b"\n" in torn:
            return False
        try:
            if self.fmt == ".csv":
                if csv_state(torn, CSV_START) == CSV_QUOTED:
                    return False
                csv_record(csv_row(torn, ""), list(FIELDS), "")
            else:
                jsonl_record(torn, "")
            return True
        except OutputError:
            return False

    def _check_torn(self, torn: bytes, end: int) -> None:
        """Refuse to cut what cannot be the torn row of a killed write: text where the header
        should be, a JSON line that does not start as joint writes them, or a quoted field that
        opens and spans lines of whole rows (a stray double quote typed at the start of a field)."""
        why = None
        if self.fmt == ".csv" and end == 0:
            header = encode(",".join(FIELDS))
            if not header.startswith(torn.rstrip(b"\r\n")):
                why = "it does not start with the score file's header"
        elif self.fmt != ".csv":
            start = JSONL_START[:len(torn)]
            if not torn.startswith(start):
                why = "joint writes no line that starts so"
        elif b"\n" in torn:
            for line in torn.split(b"\n")[1:]:
                try:
                    csv_record(csv_row(line, ""), list(FIELDS), "")
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
            raise file_error(self.path, e) from None

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
            raise file_error(self.path, e) from None

    def write(self, records: List[Dict[str, Any]]) -> None:
        recs = [clean_record(r) for r in records]
        text = csv_text(recs) if self.fmt == ".csv" else jsonl_text(recs)
        self._write(encode(text))
        self.rows += len(recs)

    def close(self) -> None:
        if not self.f.closed:
            self.f.close()


class Sink:
    """Appends batches of records to a score file; see the module doc for the formats.

    ``mode``: ``"new"`` (the file must not hold rows yet), ``"resume"`` (keep the rows it holds
    and append) or ``"overwrite"``. Opening creates the file, so a path that cannot be written is
    an :class:`OutputError` before any work is done. ``rows`` counts the rows the file holds.
    """

    def __init__(self, path: str, mode: str = "new"):
        if mode not in ("new", "resume", "overwrite"):
            raise ValueError(f"mode must be new, resume or overwrite, got {mode!r}")
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
            parquet()  # a clear error naming the extra before anything is created
            if p0.is_file() and mode != "overwrite":
                raise OutputError(f"{path}: is a file; a Parquet output of joint is a folder of parts "
                                  "(pass --overwrite to replace the file)")
            if p0.is_file():
                remove_output(path)
        self._lock = Lock(path)   # before anything is read or truncated
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
                rows = list(json_rows(p))
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
        parquet()  # a clear error before anything else if pyarrow is missing
        if d.is_file():
            raise OutputError(f"{d}: is a file; a Parquet output of joint is a folder of parts "
                              "(pass --overwrite to replace the file)")
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise file_error(d, e) from None
        parts = parquet_parts(d)
        self._part_rows = 0
        if resume:
            pq = parquet()
            for f in parts:
                try:
                    self._part_rows += pq.ParquetFile(f).metadata.num_rows
                except Exception as e:  # noqa: BLE001
                    raise OutputError(f"{f}: cannot read Parquet ({e})") from None
        self._next = (int(parts[-1].stem.split("-")[-1]) + 1) if parts else 0
        for j in journal_files(d):  # journals of parts already written are leftovers of a kill
            if int(j.stem.split("-")[-1]) < self._next:
                j.unlink()
        self._file = _LineFile(self._journal(), ".jsonl", resume)

    def _journal(self) -> Path:
        return Path(self.path) / f"_journal-{self._next:05d}.jsonl"

    def _roll(self, reopen: bool = True) -> None:
        """The journal's rows -> the next part (written to a temporary name, then renamed), then
        the journal goes; a kill in between leaves a journal that resuming recognises as done."""
        pq = parquet()
        pa = require("pyarrow", "writing Parquet", OutputError)
        self._file.close()
        journal = self._file.path
        rows = [rec for rec, _ in line_records(journal, ".jsonl")]
        cols: Dict[str, list] = {k: [r[k] for r in rows] for k in FIELDS}
        raw = [raw_name(s) for s in cols["source"]]
        cols["source"] = [s if b is None else b.decode("utf-8", "backslashreplace")
                          for s, b in zip(cols["source"], raw)]
        for k in ("error", "warning"):   # messages that quote a name that is not UTF-8
            cols[k] = [utf8_text(m) for m in cols[k]]
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
            ours = set(parquet_parts(p)) | set(journal_files(p)) | {p / PARQUET_META}
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
        raise file_error(path, e, "cannot replace") from None


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
        raise file_error(final, e) from None


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
