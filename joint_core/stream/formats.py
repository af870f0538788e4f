"""Reading score files of every format (:func:`read_rows`) and where a score file's pieces live
(its format, partial file, job record, Parquet parts and journals). See :mod:`.sinks` for the
formats and for writing them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from ..errors import OutputError
from ..extras import require
from .records import (FIELDS, REQUIRED, CSV_QUOTED, CSV_START, csv_record, csv_row, csv_state, file_error,
                      jsonl_record, _typed, _with_extra)

FORMATS = (".csv", ".jsonl", ".json", ".parquet")
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
        state = CSV_START
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
                state = csv_state(line, state)
                if state == CSV_QUOTED:
                    continue  # inside a quoted field that holds a newline
            yield b"".join(pending), pos
            pending, size = [], 0
        if tail is not None:
            tail.append(b"".join(pending))


def line_records(path: Path, fmt: str, strict: bool = True, extra: Tuple[str, ...] = (),
                  tail: Optional[List[bytes]] = None) -> Iterator[Tuple[Dict[str, Any], int]]:
    """Records of a CSV / JSONL file with the byte offset after each (the CSV header gives
    ``{}``). ``strict``: the CSV header must be exactly the score columns (a file to append to);
    otherwise it must hold them, and the ``extra`` columns are read too. ``tail``: as for
    :func:`_complete_lines`."""
    header: Optional[List[str]] = None
    for line, end in _complete_lines(path, fmt == ".csv", tail):
        where = f"{path}, byte {end - len(line)}"
        if fmt == ".csv":
            row = csv_row(line, where)
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
            yield csv_record(row, header, where, extra), end
        else:
            if line.strip():
                yield jsonl_record(line, where, extra), end


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
            yield from json_rows(p, extra)
            return
    if not p.is_file():
        raise OutputError(f"{path}: " + ("is a folder" if p.is_dir() else "no such file"))
    try:
        for rec, _ in line_records(p, fmt, strict=False, extra=extra):
            if rec:
                yield rec
    except OSError as e:
        raise file_error(path, e, "cannot read") from None


def json_rows(p: Path, extra: Tuple[str, ...] = ()) -> Iterator[Dict[str, Any]]:
    try:
        data = json.loads(p.read_bytes())
    except (OSError, ValueError) as e:
        raise file_error(p, e, "cannot read") from None
    if not isinstance(data, list):
        raise OutputError(f"{p}: not a joint score file (expected a JSON array of records)")
    for i, rec in enumerate(data):
        if not isinstance(rec, dict) or "source" not in rec:
            raise OutputError(f"{p}: not a joint score file (an entry has no 'source')")
        where = f"{p}, entry {i}"
        yield _with_extra(_typed(rec, where), rec, extra, where)


def parquet_parts(d: Path) -> List[Path]:
    return sorted(d.glob("part-*.parquet"))


def journal_files(d: Path) -> List[Path]:
    return sorted(d.glob("_journal-*.jsonl"))


def _parquet_rows(p: Path, extra: Tuple[str, ...] = ()) -> Iterator[Dict[str, Any]]:
    pq = parquet()
    if p.is_file():
        files, journals = [p], []
    elif p.is_dir():
        files = parquet_parts(p) or sorted(f for f in p.glob("*.parquet"))
        done = {f.stem.split("-")[-1] for f in files}
        journals = [j for j in journal_files(p) if j.stem.split("-")[-1] not in done]
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
        for rec, _ in line_records(j, ".jsonl", extra=extra):
            yield rec


def parquet(error: type = OutputError):
    """``pyarrow.parquet``, or ``error`` naming the ``parquet`` extra (the one check for it)."""
    return require("pyarrow.parquet", "reading or writing Parquet", error)
