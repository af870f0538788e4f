"""An HTML report of scored images: one self-contained file for people who look before they trust.

Input: the scores table that ``joint score --out`` writes (``.csv``, ``.jsonl`` or ``.json``), read
by column name - ``source``, ``technical``, ``rationality``, ``naturalness``, ``error``; any other
column is kept and shown on the image's card - or the same rows as dicts (``ScoreResult.to_records()``).

Output: one HTML file with its CSS, its JavaScript and its thumbnails (``data:`` URLs) inside. It
opens from disk, offline, in any browser, and asks nothing of any server:

- a grid of thumbnails with the three scores under each, sorted by any axis worst first or best
  first, filtered by a threshold on an axis (and by group), shown a page at a time, so that only
  one page of images is decoded even for 10,000 images;
- a histogram of each axis;
- groups - a ``group_by`` column (a generator, a prompt), or the sources' folders when they span
  more than one: each group's mean of each axis with a bootstrap 95 % interval
  (:mod:`joint_core.stats`), as a table and as a plot;
- the images that could not be scored, with their error.

Thumbnails are decoded by the scorer's own reader (:func:`joint_core.preprocess.images.load_image`:
EXIF rotation, 16-bit, CMYK and palette images come out as they were scored) and bounded to
``thumb_size`` pixels on their long side, as JPEG: about 5 KB each at the default 160 px.
"""

from __future__ import annotations

import base64
import csv
import datetime
import html
import io
import json
import math
import os
import posixpath
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

from .outputs import existing_output, input_conflict, is_file, publish
from .result import AXES
from .stream.sinks import TEXT_FIELDS, csv_uncell
from .stats import MeanInterval, bootstrap_mean, histogram
from .errors import ReportError

SCORE_FORMATS = (".csv", ".jsonl", ".json")
FOLDER = "folder"                  # group_by value: the folder each source is in
AUTO = "auto"                      # group_by default: folders, when the sources span more than one
HIST_BINS = 24
AXIS_COLOURS = {"technical": "#4e79a7", "rationality": "#f28e2b", "naturalness": "#59a14f"}


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


@dataclass
class ReportSummary:
    """What :func:`write_html_report` wrote."""

    path: Path
    images: int
    scored: int
    failed: int
    groups: List[GroupStats]
    missing_thumbnails: int
    bytes: int


# --------------------------------------------------------------------------------------------
# reading the scores table
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# thumbnails, with the scorer's decoding
# --------------------------------------------------------------------------------------------


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
    import torch
    from PIL import Image

    from .preprocess.images import load_image

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


# --------------------------------------------------------------------------------------------
# the page
# --------------------------------------------------------------------------------------------


def _fmt(v: float, digits: int = 3) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def _histogram_svg(axis: str, values: List[float], lo: float, hi: float) -> str:
    counts, edges = histogram(values, HIST_BINS, lo, hi)
    w, h, pad = 300, 120, 22
    top = max(counts) or 1
    bw = (w - 2 * pad) / len(counts)
    bars = []
    for i, c in enumerate(counts):
        bh = (h - 2 * pad) * c / top
        bars.append(f'<rect class="bar" x="{pad + i * bw:.1f}" y="{h - pad - bh:.1f}" width="{max(bw - 1, 1):.1f}" '
                    f'height="{bh:.1f}" fill="{AXIS_COLOURS[axis]}" data-count="{c}">'
                    f'<title>{edges[i]:.2f}–{edges[i + 1]:.2f}: {c}</title></rect>')
    ticks = "".join(f'<text x="{pad + (w - 2 * pad) * (t - lo) / (hi - lo):.1f}" y="{h - 6}" class="tick">{t:g}</text>'
                    for t in _ticks(lo, hi))
    return (f'<figure class="hist" data-axis="{axis}"><figcaption>{axis} <span class="muted">'
            f'({len(values)} images)</span></figcaption><svg viewBox="0 0 {w} {h}" role="img" '
            f'aria-label="histogram of {axis}"><line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" '
            f'class="axis"/>{"".join(bars)}{ticks}</svg></figure>')


MAX_TICKS = 9


def _ticks(lo: float, hi: float) -> List[float]:
    """Axis labels: every 0.5 or 1 on a score scale, a round step (1, 2 or 5 x 10^k) that
    gives at most MAX_TICKS labels on any other range (a file with a score of 1.7e10)."""
    span = hi - lo
    if not (math.isfinite(span) and span > 0):
        return []
    step = 0.5 if span <= 3 else 1.0
    least = span / (MAX_TICKS - 1)   # the smallest step that keeps to MAX_TICKS
    if step < least:
        magnitude = 10.0 ** math.floor(math.log10(least))
        step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= least)
    first = math.ceil(lo / step) * step
    ticks = (float(f"{first + i * step:.12g}") for i in range(max(0, int((hi - first) / step + 1e-9) + 1)))
    return [t for t in ticks if lo <= t <= hi]


def _groups_html(groups: List[GroupStats], grouped_by: str, level: float) -> str:
    pct = f"{100 * level:g} %"
    head = "".join(f'<th>{ax}<br><span class="muted">mean [{pct} CI]</span></th>' for ax in AXES)
    body = []
    for g in groups:
        cells = "".join(
            f'<td data-axis="{ax}" data-mean="{m.mean!r}" data-low="{m.low!r}" data-high="{m.high!r}">'
            f'{_fmt(m.mean)} <span class="muted">[{_fmt(m.low)}, {_fmt(m.high)}]</span></td>'
            for ax, m in g.axes.items())
        body.append(f'<tr data-group="{html.escape(g.name)}"><th scope="row">{html.escape(g.name)}</th>'
                    f'<td class="num">{g.n}</td>{cells}</tr>')
    table = (f'<table id="groups"><thead><tr><th>{html.escape(grouped_by)}</th><th>images</th>{head}</tr></thead>'
             f'<tbody>{"".join(body)}</tbody></table>')
    return table + _groups_plot(groups, level)


def _groups_plot(groups: List[GroupStats], level: float) -> str:
    """Per axis, each group's mean (dot) and interval (line), groups in rows: one glance compares them."""
    label_w, panel_w, gap, row_h, pad = 150, 260, 40, 22, 24
    h = pad * 2 + row_h * len(groups)
    parts = []
    for k, ax in enumerate(AXES):
        x0 = label_w + k * (panel_w + gap)
        vals = [v for g in groups for v in (g.axes[ax].low, g.axes[ax].high, g.axes[ax].mean) if math.isfinite(v)]
        lo, hi = (min(vals), max(vals)) if vals else (1.0, 5.0)
        span = max(hi - lo, 0.05, abs(hi) * 1e-9)   # (at 7e13, 0.05 is below float resolution)
        lo, hi = lo - 0.1 * span, hi + 0.1 * span

        def x(v: float, x0: int = x0, lo: float = lo, hi: float = hi) -> float:
            return x0 + panel_w * (v - lo) / (hi - lo)

        parts.append(f'<text x="{x0 + panel_w / 2}" y="14" class="panel">{ax}</text>'
                     f'<line x1="{x0}" y1="{h - pad}" x2="{x0 + panel_w}" y2="{h - pad}" class="axis"/>'
                     f'<text x="{x0}" y="{h - 6}" class="tick start">{lo:.2f}</text>'
                     f'<text x="{x0 + panel_w}" y="{h - 6}" class="tick end">{hi:.2f}</text>')
        for i, g in enumerate(groups):
            m, y = g.axes[ax], pad + row_h * i + row_h / 2
            if math.isfinite(m.low) and math.isfinite(m.high):
                parts.append(f'<line x1="{x(m.low):.1f}" y1="{y}" x2="{x(m.high):.1f}" y2="{y}" '
                             f'stroke="{AXIS_COLOURS[ax]}" stroke-width="3"/>')
            if math.isfinite(m.mean):
                parts.append(f'<circle cx="{x(m.mean):.1f}" cy="{y}" r="4.5" fill="{AXIS_COLOURS[ax]}">'
                             f'<title>{html.escape(g.name)}: {_fmt(m.mean)} [{_fmt(m.low)}, {_fmt(m.high)}]</title>'
                             '</circle>')
    labels = "".join(f'<text x="{label_w - 8}" y="{pad + row_h * i + row_h / 2 + 4}" class="label">'
                     f'{html.escape(g.name[:24])}</text>' for i, g in enumerate(groups))
    w = label_w + len(AXES) * (panel_w + gap)
    return (f'<svg id="groups-plot" viewBox="0 0 {w} {h}" role="img" aria-label="group means with '
            f'{100 * level:g} % intervals">{labels}{"".join(parts)}</svg>')


def _failed_html(rows: Sequence[ReportRow]) -> str:
    items = "".join(f'<tr><td class="path">{html.escape(r.source)}</td><td>{html.escape(r.error or "")}</td></tr>'
                    for r in rows)
    return (f'<table id="failed"><thead><tr><th>image</th><th>why it was not scored</th></tr></thead>'
            f'<tbody>{items}</tbody></table>')


def _script_json(data: Any) -> str:
    """JSON that can sit inside a <script> element whatever the strings hold: every ``<``, ``>``
    and ``&`` is a ``\\u`` escape, so no ``</script>``, ``<!--`` or ``<script`` (which switch the
    HTML parser's script states) can appear; JSON.parse reads the same strings back."""
    text = json.dumps(data, ensure_ascii=True, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _controls_html(groups: List[GroupStats], page_size: int) -> str:
    sorts = "".join(f'<button type="button" class="sort" data-axis="{ax}">{ax}</button>' for ax in AXES)
    axes = "".join(f"<option>{ax}</option>" for ax in AXES)
    sizes = "".join(f'<option{" selected" if n == page_size else ""}>{n}</option>'
                    for n in sorted({50, 100, 200, page_size}))
    group = ""
    if groups:
        options = "".join(f'<option value="{html.escape(g.name)}">{html.escape(g.name)}</option>' for g in groups)
        group = f'<label>group <select id="filter-group"><option value="">all</option>{options}</select></label>'
    return f"""<div class="controls">
  <span>sort by</span>{sorts} <span id="sort-state" class="muted"></span>
  <label>show <select id="filter-axis">{axes}</select>
    <select id="filter-op"><option value="lt">&lt;</option><option value="ge">&ge;</option></select>
    <input id="threshold" type="number" step="0.05" placeholder="threshold" size="8"></label>
  {group}
  <label>per page <select id="page-size">{sizes}</select></label>
</div>
<div class="pager"><button type="button" id="prev">&larr; previous</button> <span id="page-state"></span>
  <button type="button" id="next">next &rarr;</button></div>
<div id="grid"></div>"""


def _table_files(scores: Union[str, os.PathLike]) -> List[str]:
    from .stream.sinks import read_paths

    if Path(scores).suffix.lower() not in SCORE_FORMATS:
        return [os.fspath(scores)]   # read_scores says what is wrong with it
    return read_paths(os.fspath(scores))


def _table_ids(scores: Union[str, os.PathLike]) -> str:
    """What the table's ids are, by its job record (:func:`joint_core.stream.job.id_kinds`)."""
    from .stream.job import id_kinds, read_meta
    from .stream.sinks import OutputError

    if Path(scores).suffix.lower() not in SCORE_FORMATS:
        return "unknown"
    try:
        return id_kinds(read_meta(os.fspath(scores)))
    except OutputError as e:
        raise ReportError(str(e)) from None


def _marker(scores: Any) -> Optional[str]:
    """What the page says it was made from (a ``<meta name="joint-scores">``): the scores
    file's absolute path, so that a rerun may replace its own report."""
    return os.path.abspath(os.fspath(scores)) if isinstance(scores, (str, os.PathLike)) else None


_MARKER_RE = re.compile(rb'<meta name="joint-scores" content="([^"]*)">')


def _replaceable(out: Path, scores: Any, overwrite: bool) -> Optional[str]:
    """Why ``out`` may not be written (see :mod:`joint_core.outputs`), else None. Without
    ``overwrite`` an existing file is replaced only if it is a report of the same scores file."""
    problem = existing_output(out, True, what="the report")
    if problem or overwrite or not (out.exists() or out.is_symlink()):
        return problem
    marker = _marker(scores)
    try:
        with open(out, "rb") as f:
            head = f.read(4096)
    except OSError:
        head = b""
    found = _MARKER_RE.search(head)
    if marker is not None and found and html.unescape(found.group(1).decode("utf-8", "replace")) == marker:
        return None
    return (f"the report {out}: already exists" + (" and was not made from this scores file" if found else "")
            + "; pass --overwrite to replace it")


def render_html(rows: Sequence[ReportRow], title: str, groups: List[GroupStats], grouped_by: Optional[str],
                level: float, page_size: int, origin: str, marker: Optional[str] = None) -> str:
    """The page: summary, histograms, groups, the image grid (drawn by the page's script from the
    embedded rows), the images that could not be scored."""
    scored = [r for r in rows if r.scored]
    failed = [r for r in rows if not r.scored]
    data = {
        "axes": list(AXES),
        "pageSize": page_size,
        "rows": [{"source": r.source, "group": r.group, "thumb": r.thumbnail, "thumbError": r.thumbnail_error,
                  "extra": {k: v for k, v in r.extra.items() if v and k != grouped_by},
                  **{ax: r.scores[ax] for ax in AXES}}
                 for r in scored],
    }
    values = [r.scores[ax] for r in scored for ax in AXES]
    lo, hi = math.floor(min([1.0] + values) * 2) / 2, math.ceil(max([5.0] + values) * 2) / 2
    hists = "".join(_histogram_svg(ax, [r.scores[ax] for r in scored], lo, hi) for ax in AXES)
    body = [f'<section id="histograms"><h2>Scores</h2><div class="hists">{hists}</div></section>']
    if groups:
        body.append(f'<section id="group-section"><h2>By {html.escape(grouped_by or "group")}</h2>'
                    f'{_groups_html(groups, grouped_by or "group", level)}</section>')
    body.append(f'<section id="images"><h2>Images</h2>{_controls_html(groups, page_size)}</section>')
    if failed:
        body.append(f'<section id="failed-section"><h2>Not scored ({len(failed)})</h2>'
                    f'{_failed_html(failed)}</section>')
    summary = f"{len(rows)} images: {len(scored)} scored"
    if failed:
        summary += f", {len(failed)} could not be scored"
    if groups:
        summary += f"; {len(groups)} groups by {html.escape(grouped_by or '')}"
    made = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    meta = f'<meta name="joint-scores" content="{html.escape(marker)}">' if marker else ""
    return _PAGE.format(title=html.escape(title), css=_CSS, summary=summary, origin=html.escape(origin), made=made,
                        body="\n".join(body), data=_script_json(data), js=_JS, marker=meta)


def write_html_report(scores: Union[str, os.PathLike, Iterable[Mapping[str, Any]], Any],
                      out: Union[str, os.PathLike], group_by: Optional[str] = AUTO,
                      root: Optional[Union[str, os.PathLike]] = None, thumb_size: int = 160,
                      title: Optional[str] = None, page_size: int = 100, level: float = 0.95,
                      resamples: int = 2000, seed: int = 0,
                      progress: Optional[Callable[[int, int], None]] = None, overwrite: bool = False,
                      ids: Optional[str] = None, made_from: Optional[Union[str, os.PathLike]] = None
                      ) -> ReportSummary:
    """Write the HTML report of a scores table to ``out``.

    Args:
        scores: the path of a table ``joint score --out`` wrote (.csv, .jsonl, .json), rows as
            dicts, or a :class:`~joint_core.ScoreResult`.
        group_by: a column to group by, ``"folder"``, ``"auto"`` (folders when there are several),
            or None for no groups.
        root: the folder relative sources are relative to (default: the current folder, then the
            table's folder).
        thumb_size: the thumbnails' long side in pixels.
        page_size: images per page of the grid (the page can change it).
        level, resamples, seed: the bootstrap intervals of the group means.
        progress: called as ``progress(done, total)`` while thumbnails are made.
        overwrite: replace an existing ``out``. Without it, only a report that was made from the
            same scores file (a rerun, ``joint score --resume --report``) is replaced.
        ids: what the sources are - ``"paths"`` (local files, shown as thumbnails), ``"keys"``
            or ``"mixed"`` (tar members or table rows: never looked up on the disk); default:
            what the scores file's job record says (``"unknown"``, taken as paths, without one).
        made_from: when ``scores`` are rows, the scores file they were read from (the report
            names it, and a rerun may replace the report without ``overwrite``).
    """
    if made_from is not None and isinstance(scores, (str, os.PathLike)):
        raise TypeError("made_from is for rows; a scores file names itself")
    marked = made_from if made_from is not None else scores
    out = Path(out)
    if isinstance(marked, (str, os.PathLike)):
        problem = input_conflict(out, _table_files(marked), what="the report")
        if problem:
            raise ReportError(problem)
    problem = _replaceable(out, marked, overwrite)
    if problem:
        raise ReportError(problem)
    replace = out.exists() or out.is_symlink()   # allowed by now; anything that appears later is not
    if not 16 <= int(thumb_size) <= 1024:
        raise ReportError(f"thumb_size must be 16-1024 pixels, got {thumb_size}")
    if int(page_size) < 1:
        raise ReportError(f"page_size must be >= 1, got {page_size}")
    bases: List[Path] = [Path(root)] if root is not None else [Path.cwd()]
    if isinstance(scores, (str, os.PathLike)):
        records = read_scores(scores)
        origin = str(scores)
        if root is None:
            bases.append(Path(scores).resolve().parent)
        if ids is None:
            ids = _table_ids(scores)
    elif hasattr(scores, "to_records"):
        records, origin = scores.to_records(), "a ScoreResult"
    else:
        records, origin = list(scores), "rows"
    rows = to_rows(records)
    grouped_by = assign_groups(rows, group_by)
    groups = group_stats(rows, level, resamples, seed) if grouped_by else []
    make_thumbnails(rows, bases, int(thumb_size), progress, ids=ids or "unknown")
    if title is None:
        title = f"joint report: {Path(origin).name}" if isinstance(scores, (str, os.PathLike)) else "joint report"
    marker = _marker(marked)
    page = render_html(rows, title, groups, grouped_by, level, int(page_size), origin, marker)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.part-{os.getpid()}")
    try:
        tmp.write_text(page, encoding="utf-8", errors="backslashreplace")   # a name that is not UTF-8: \udcff
        publish(tmp, out, overwrite=replace)
    except FileExistsError:
        raise ReportError(f"{out}: a file appeared there while the report was made; not replaced") from None
    finally:
        tmp.unlink(missing_ok=True)
    scored = sum(r.scored for r in rows)
    return ReportSummary(out, len(rows), scored, len(rows) - scored, groups,
                         sum(1 for r in rows if r.scored and r.thumbnail is None), out.stat().st_size)


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="joint report">{marker}
<title>{title}</title>
<style>{css}</style></head>
<body>
<header><h1>{title}</h1>
<p id="summary">{summary}</p>
<p class="muted">Scores on the 1–5 scale, higher is better. Made {made} from {origin}.</p></header>
{body}
<script type="application/json" id="joint-data">{data}</script>
<script>{js}</script>
</body></html>
"""

_CSS = """
:root { color-scheme: light dark; --fg: #1d1d1f; --bg: #fafafa; --card: #fff; --muted: #6e6e73;
        --line: #d2d2d7; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #f5f5f7; --bg: #161617; --card: #1f1f21; --muted: #a1a1a6; --line: #3a3a3c; } }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1400px; padding: 16px 24px 48px; color: var(--fg); background: var(--bg);
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; }
h1 { font-size: 22px; margin: 8px 0 4px; } h2 { font-size: 17px; margin: 28px 0 10px; }
.muted { color: var(--muted); font-weight: normal; }
.hists { display: flex; flex-wrap: wrap; gap: 16px; }
figure.hist { margin: 0; background: var(--card); border: 1px solid var(--line); border-radius: 8px;
              padding: 8px 10px; }
figure.hist svg { width: 300px; height: 120px; display: block; }
figcaption { font-weight: 600; }
svg text { fill: var(--muted); font-size: 10px; text-anchor: middle; }
svg text.label { text-anchor: end; font-size: 12px; fill: var(--fg); }
svg text.start { text-anchor: start; } svg text.end { text-anchor: end; }
svg text.panel { font-size: 12px; font-weight: 600; fill: var(--fg); }
svg .axis { stroke: var(--line); }
table { border-collapse: collapse; background: var(--card); }
th, td { border: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: top; }
td.num, td[data-axis] { text-align: right; font-variant-numeric: tabular-nums; }
td.path { font-family: ui-monospace, monospace; font-size: 12px; word-break: break-all; }
#groups-plot { display: block; max-width: 100%; margin-top: 14px; background: var(--card);
               border: 1px solid var(--line); border-radius: 8px; }
.controls, .pager { display: flex; flex-wrap: wrap; align-items: center; gap: 8px; margin: 8px 0; }
button, select, input { font: inherit; color: inherit; background: var(--card); border: 1px solid var(--line);
                        border-radius: 6px; padding: 3px 9px; }
button.sort.active { border-color: currentColor; font-weight: 600; }
button:disabled { opacity: 0.4; }
#grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(176px, 1fr)); gap: 12px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 8px; overflow: hidden; }
.card .thumb { height: 160px; display: flex; align-items: center; justify-content: center; border-radius: 4px;
               background: rgba(127, 127, 127, 0.08); }
.card img { max-width: 100%; max-height: 160px; }
.card .none { color: var(--muted); font-size: 12px; padding: 8px; text-align: center; }
.card .scores { display: grid; grid-template-columns: auto 1fr; gap: 0 8px; margin-top: 6px; font-size: 13px;
                font-variant-numeric: tabular-nums; }
.card .scores span:nth-child(odd) { color: var(--muted); }
.card .scores .key { font-weight: 700; }
.card .name { margin-top: 4px; font-size: 12px; word-break: break-all; }
.card .extra { font-size: 11px; color: var(--muted); word-break: break-word; }
"""

_JS = r"""
(() => {
  const data = JSON.parse(document.getElementById("joint-data").textContent);
  const axes = data.axes, rows = data.rows;
  const state = { axis: "naturalness", best: false, filterAxis: "naturalness", op: "lt", threshold: null,
                  group: "", page: 0, pageSize: data.pageSize };
  const $ = (id) => document.getElementById(id);
  const fmt = (v) => (v === null || v === undefined) ? "–" : v.toFixed(3);
  const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls;
                                   if (text !== undefined) e.textContent = text; return e; };
  function shown() {
    let list = rows.filter((r) => (!state.group || r.group === state.group) &&
      (state.threshold === null || (state.op === "lt" ? r[state.filterAxis] < state.threshold
                                                       : r[state.filterAxis] >= state.threshold)));
    const sign = state.best ? -1 : 1, ax = state.axis;
    // stable: ties keep the table's order
    return list.map((r, i) => [r, i]).sort((a, b) => sign * (a[0][ax] - b[0][ax]) || a[1] - b[1]).map((p) => p[0]);
  }
  function card(r) {
    const c = el("div", "card");
    c.dataset.source = r.source;
    for (const ax of axes) c.dataset[ax] = r[ax];
    const t = el("div", "thumb");
    if (r.thumb) { const img = el("img"); img.decoding = "async"; img.loading = "lazy"; img.alt = r.source;
                   img.src = r.thumb; t.appendChild(img); }
    else t.appendChild(el("div", "none", r.thumbError || "no image"));
    c.appendChild(t);
    const s = el("div", "scores");
    for (const ax of axes) { s.appendChild(el("span", ax === state.axis ? "key" : "", ax));
                             s.appendChild(el("span", ax === state.axis ? "key" : "", fmt(r[ax]))); }
    c.appendChild(s);
    const name = el("div", "name", r.source.split(/[\\/]/).pop()); name.title = r.source; c.appendChild(name);
    if (r.group !== null && r.group !== undefined) c.appendChild(el("div", "extra", r.group));
    for (const [k, v] of Object.entries(r.extra)) c.appendChild(el("div", "extra", k + ": " + v));
    return c;
  }
  function render() {
    const list = shown();
    const pages = Math.max(1, Math.ceil(list.length / state.pageSize));
    state.page = Math.min(state.page, pages - 1);
    const start = state.page * state.pageSize, part = list.slice(start, start + state.pageSize);
    const grid = $("grid");
    grid.replaceChildren(...part.map(card));   // only this page's images are in the document
    $("page-state").textContent = list.length
      ? `${start + 1}–${start + part.length} of ${list.length} images (page ${state.page + 1} of ${pages})`
      : `no image of ${rows.length} matches`;
    $("prev").disabled = state.page === 0;
    $("next").disabled = state.page >= pages - 1;
    for (const b of document.querySelectorAll("button.sort")) {
      const on = b.dataset.axis === state.axis;
      b.classList.toggle("active", on);
      b.textContent = b.dataset.axis + (on ? (state.best ? " \u25bc" : " \u25b2") : "");
    }
    $("sort-state").textContent = state.best ? "best first" : "worst first";
  }
  for (const b of document.querySelectorAll("button.sort")) b.addEventListener("click", () => {
    // a new axis: worst first; the same axis again: the other way round
    if (state.axis === b.dataset.axis) state.best = !state.best;
    else { state.axis = b.dataset.axis; state.best = false; }
    state.page = 0; render();
  });
  const refilter = () => {
    const v = $("threshold").value.trim();
    state.threshold = v === "" || isNaN(Number(v)) ? null : Number(v);
    state.filterAxis = $("filter-axis").value; state.op = $("filter-op").value;
    state.group = $("filter-group") ? $("filter-group").value : "";
    state.page = 0; render();
  };
  for (const id of ["threshold", "filter-axis", "filter-op", "filter-group"]) {
    if ($(id)) $(id).addEventListener("input", refilter);
  }
  $("filter-axis").value = state.filterAxis;
  $("page-size").addEventListener("input", () => {
    state.pageSize = Number($("page-size").value); state.page = 0; render(); });
  $("prev").addEventListener("click", () => { state.page--; render(); });
  $("next").addEventListener("click", () => { state.page++; render(); });
  render();
})();
"""
