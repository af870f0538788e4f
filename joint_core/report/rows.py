"""The report's data: the scores table read into :class:`ReportRow` s, their groups with bootstrap
intervals of the means (:mod:`joint_core.stats`), and their thumbnails, decoded by the scorer's
own reader. The HTML is :mod:`.page`'s job."""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import os
import posixpath
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import torch
from PIL import Image

from ..errors import ReportError
from ..outputs import is_file
from ..preprocess.images import load_image
from ..result import AXES
from ..stats import MeanInterval, bootstrap_mean
from ..stream.sinks import TEXT_FIELDS, csv_uncell

SCORE_FORMATS = (".csv", ".jsonl", ".json")
FOLDER = "folder"                  # group_by value: the folder each source is in
AUTO = "auto"                      # group_by default: folders, when the sources span more than one


@dataclass
class ReportRow:
    """One image of the table: its scores (``None`` where missing), the error that kept it from
    being scored, the other columns as text, its group, and its thumbnail (a ``data:`` URL)."""

    source: str
    scores: Dict[str, Optional[float]]
    error: Optional[str] = None
    extra: Dict[str, str] = field(default_factory=dict)
    group: Optional[str] = None
    thumbnail: Optional[str] = None
    thumbnail_error: Optional[str] = None

    @property
    def scored(self) -> bool:
        return self.error is None


@dataclass
class GroupStats:
    name: str
    n: int
    axes: Dict[str, MeanInterval]


def read_scores(path: Union[str, os.PathLike]) -> List[Dict[str, Any]]:
    """The rows of a scores table (``.csv``, ``.jsonl``, ``.json``) as dicts, values as stored."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SCORE_FORMATS:
        raise ReportError(f"{path}: unknown format {suffix!r}; the report reads the table `joint score --out` "
                          f"writes: {', '.join(SCORE_FORMATS)}")
    if not path.is_file():
        raise ReportError(f"{path}: no such file")
    try:
        # file names that are not UTF-8 are stored as their bytes (joint score's CSV): keep them
        text = path.read_bytes().decode("utf-8-sig", "surrogateescape")
        if suffix == ".csv":   # joint's CSV escapes cells that a spreadsheet would run (stream.sinks.csv_cell)
            rows: Any = [{k: csv_uncell(v) if k in TEXT_FIELDS and isinstance(v, str) else v for k, v in r.items()}
                         for r in csv.DictReader(io.StringIO(text, newline=""))]
        elif suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            rows = json.loads(text)
    except (ValueError, csv.Error, UnicodeDecodeError) as e:
        raise ReportError(f"{path}: cannot read it as {suffix[1:]} ({e})") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ReportError(f"{path}: expected a list of rows (objects), got {type(rows).__name__}")
    return rows


def _number(value: Any, where: str) -> Optional[float]:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "nan", "none", "null")):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ReportError(f"{where}: {value!r} is not a number") from None
    return v if math.isfinite(v) else None


def to_rows(records: Sequence[Mapping[str, Any]]) -> List[ReportRow]:
    """Check and convert table rows: ``source`` and the three axes are required columns, ``error``
    optional, any other column is kept as text. A row without an error but with a missing score
    counts as not scored."""
    if not records:
        raise ReportError("the scores table has no rows")
    columns = list(dict.fromkeys(k for r in records for k in r))
    missing = [c for c in ("source",) + AXES if c not in columns]
    if missing:
        raise ReportError(f"the scores table lacks the column(s) {missing}; it has {columns} (write it with "
                          "`joint score ... --out scores.csv`)")
    rows = []
    for i, rec in enumerate(records):
        where = f"row {i + 1} ({rec.get('source')})"
        scores = {ax: _number(rec.get(ax), f"{where}, column {ax!r}") for ax in AXES}
        error = rec.get("error")
        error = str(error).strip() if error not in (None, "") else None
        if error is None and any(v is None for v in scores.values()):
            error = "no score in the table"
        extra = {k: "" if v is None else str(v) for k, v in rec.items()
                 if k not in ("source", "error", "index") + AXES}
        rows.append(ReportRow(str(rec.get("source") or f"row {i + 1}"), scores, error, extra))
    return rows


def assign_groups(rows: List[ReportRow], group_by: Optional[str] = AUTO) -> Optional[str]:
    """Set each row's group; returns what the groups are (a column name, ``"folder"``) or None.

    ``group_by``: a column of the table; ``"folder"``: the folder of each source (unless the
    table has a column of that name); ``"auto"``: folders when the sources lie in more than one;
    ``None``: no groups."""
    if group_by is None:
        return None
    columns = set().union(*(r.extra for r in rows))
    if group_by not in (AUTO, FOLDER) or group_by in columns:
        if group_by not in columns:
            raise ReportError(f"--group-by {group_by!r}: no such column; the table has "
                              f"{sorted(columns) or 'no columns'} besides source, the scores and error "
                              f"(or use '{FOLDER}' for the images' folders)")
        for r in rows:
            r.group = r.extra.get(group_by) or "(none)"
        return group_by
    folders = [posixpath.dirname(r.source.replace("\\", "/")) for r in rows]
    if group_by == AUTO and len(set(folders)) < 2:
        return None
    try:
        common = posixpath.commonpath(folders) if all(folders) else ""
    except ValueError:              # absolute and relative paths mixed
        common = ""
    for r, folder in zip(rows, folders):
        rel = posixpath.relpath(folder, common) if common else folder
        r.group = rel if rel not in ("", ".") else (posixpath.basename(folder) or folder or ".")
    return FOLDER


def group_stats(rows: Sequence[ReportRow], level: float = 0.95, resamples: int = 2000,
                seed: int = 0) -> List[GroupStats]:
    """Each group's scored images: count, and per axis the mean with its bootstrap interval."""
    groups: Dict[str, List[ReportRow]] = {}
    for r in rows:
        if r.group is not None and r.scored:
            groups.setdefault(r.group, []).append(r)
    return [GroupStats(name, len(members),
                       {ax: bootstrap_mean([m.scores[ax] for m in members], level, resamples, seed) for ax in AXES})
            for name, members in sorted(groups.items(), key=lambda kv: _natural_key(kv[0]))]


def _natural_key(text: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def locate(source: str, bases: Sequence[Path]) -> Optional[Path]:
    """The image file a table's ``source`` names: as it stands, else under each of ``bases``."""
    p = Path(source)
    if is_file(p):
        return p
    if not p.is_absolute():
        for base in bases:
            if is_file(base / p):
                return base / p
    return None


def thumbnail(path: Union[str, os.PathLike], size: int = 160, quality: int = 75) -> str:
    """A JPEG ``data:`` URL of the image at ``path``, at most ``size`` pixels on its long side,
    decoded exactly as the scorer decodes it."""
    t = load_image(path)
    if t.dtype != torch.uint8:
        t = (t.float().clamp(0, 1) * 255).round().to(torch.uint8)
    img = Image.fromarray(t.permute(1, 2, 0).contiguous().numpy())
    img.thumbnail((size, size), Image.BICUBIC, reducing_gap=3.0)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


NOT_A_FILE = "no image file: its id names a tar member or a table row"


def make_thumbnails(rows: Sequence[ReportRow], bases: Sequence[Path], size: int = 160,
                    progress: Optional[Callable[[int, int], None]] = None, workers: Optional[int] = None,
                    ids: str = "paths") -> None:
    """Fill ``thumbnail`` (or ``thumbnail_error``) of the scored rows, decoding in threads.
    ``ids``: what the sources are (:func:`joint_core.stream.job.id_kinds`); unless they are
    local paths (``"paths"``, ``"unknown"``), nothing is looked up on the disk."""
    todo = [r for r in rows if r.scored]
    if ids not in ("paths", "unknown"):
        for r in todo:
            r.thumbnail_error = NOT_A_FILE
        todo = []

    def one(row: ReportRow) -> None:
        path = locate(row.source, bases)
        if path is None:
            row.thumbnail_error = "image file not found"
            return
        try:
            row.thumbnail = thumbnail(path, size)
        except Exception as e:  # noqa: BLE001 - a file that changed since it was scored: say so on its card
            why = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            row.thumbnail_error = f"cannot read the image now ({why})"

    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done, _ in enumerate(pool.map(one, todo), 1):
            if progress is not None:
                progress(done, len(todo))
