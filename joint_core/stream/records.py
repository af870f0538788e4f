"""One record of a score file <-> one CSV or JSON line: the columns, the typed record, the
CSV cell escaping that keeps spreadsheets from running file names as formulas, the CSV parser
state that tells a whole record from a torn one, and the bytes of names that are not UTF-8.
See :mod:`.sinks` for the formats."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any, Dict, List, Optional, Tuple

from ..errors import OutputError
from ..ranking import AXES

FIELDS = ("source", "technical", "rationality", "naturalness", "error", "warning")
REQUIRED = FIELDS[:5]     # what a score file must have to be read; ``warning`` came later


def file_error(path: Any, e: BaseException, what: str = "cannot write") -> OutputError:
    reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    return OutputError(f"{path}: {what} ({reason})")


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


def csv_text(records: List[Dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for r in records:
        w.writerow(["" if r[k] is None else csv_cell(r[k]) if k in TEXT_FIELDS else r[k] for k in FIELDS])
    return buf.getvalue()


JSONL_START = b'{"source": '   # how every line joint writes to a JSON-lines score file begins


def csv_row(line: bytes, where: str) -> List[str]:
    """The cells of one CSV record (its bytes, newline included)."""
    try:
        return next(csv.reader(io.StringIO(line.decode("utf-8", "surrogateescape"), newline="")), [])
    except csv.Error as e:
        raise OutputError(f"{where}: not a CSV row ({e})") from None


def csv_record(row: List[str], header: List[str], where: str, extra: Tuple[str, ...] = ()) -> Dict[str, Any]:
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


def jsonl_text(records: List[Dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=True) + "\n" for r in records)


def jsonl_record(line: bytes, where: str, extra: Tuple[str, ...] = ()) -> Dict[str, Any]:
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


def encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


# the states of a CSV field (Python's csv module, excel dialect, strict=False)
CSV_START, CSV_FIELD, CSV_QUOTED, CSV_QUOTE_IN_QUOTED = range(4)


def csv_state(line: bytes, state: int) -> int:
    """The CSV parser's state after ``line`` (which ends with its newline, unless torn), from
    ``state``: a record ends at a newline outside a quoted field. As the csv module reads: a
    quote opens a quoted field only at the start of a field; elsewhere it is a plain character
    (``note: "checked`` is one whole field)."""
    if b'"' not in line and state in (CSV_START, CSV_FIELD):
        return CSV_START if line.endswith(b"\n") else CSV_FIELD
    for c in line:
        if state == CSV_QUOTED:
            if c == 34:                      # "
                state = CSV_QUOTE_IN_QUOTED
        elif c == 10:                        # \n outside quotes: the record ends
            state = CSV_START
        elif state == CSV_QUOTE_IN_QUOTED:
            state = CSV_QUOTED if c == 34 else CSV_START if c == 44 else CSV_FIELD
        elif c == 44:                        # ,
            state = CSV_START
        elif state == CSV_START and c == 34:
            state = CSV_QUOTED
        else:
            state = CSV_FIELD
    return state


def raw_name(s: str) -> Optional[bytes]:
    """The bytes of a name that is not valid UTF-8 (it holds surrogate escapes), else None."""
    try:
        s.encode("utf-8")
        return None
    except UnicodeEncodeError:
        return s.encode("utf-8", "surrogateescape") if _only_escapes(s) else s.encode("utf-8", "surrogatepass")


def utf8_text(s: Optional[str]) -> Optional[str]:
    """``s`` as text Parquet can store: the bytes of surrogate escapes as ``\\xff``."""
    raw = raw_name(s) if s is not None else None
    return s if raw is None else raw.decode("utf-8", "backslashreplace")


def _only_escapes(s: str) -> bool:
    return all(not ("\ud800" <= c <= "\udfff") or "\udc80" <= c <= "\udcff" for c in s)
