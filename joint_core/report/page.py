"""The report's page: summary, histograms, group table and plot, the image grid (drawn by the
page's script from the embedded rows), the images that could not be scored - and
:func:`write_html_report`, which reads, renders and writes it. The CSS and JavaScript are the
package data files ``page.css`` and ``page.js`` beside this module."""

from __future__ import annotations

import datetime
import html
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, List, Mapping, Optional, Sequence, Union

from ..errors import OutputError, ReportError
from ..outputs import existing_output, input_conflict, publish
from ..result import AXES
from ..stats import histogram
from ..stream.job import id_kinds, read_meta
from ..stream.sinks import read_paths
from .rows import (AUTO, SCORE_FORMATS, GroupStats, ReportRow, assign_groups, group_stats, make_thumbnails,
                   read_scores, to_rows)

HERE = Path(__file__).parent

HIST_BINS = 24
AXIS_COLOURS = {"technical": "#4e79a7", "rationality": "#f28e2b", "naturalness": "#59a14f"}


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
    if Path(scores).suffix.lower() not in SCORE_FORMATS:
        return [os.fspath(scores)]   # read_scores says what is wrong with it
    return read_paths(os.fspath(scores))


def _table_ids(scores: Union[str, os.PathLike]) -> str:
    """What the table's ids are, by its job record (:func:`joint_core.stream.job.id_kinds`)."""
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
    return _PAGE.format(title=html.escape(title), css=_asset("page.css"), summary=summary, origin=html.escape(origin),
                        made=made, body="\n".join(body), data=_script_json(data), js=_asset("page.js"), marker=meta)


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
        level: the confidence level of the bootstrap intervals of the group means.
        resamples: the bootstrap's resamples.
        seed: the bootstrap's random seed.
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


def _asset(name: str) -> str:
    """A package data file of the page (``page.css``, ``page.js``), read once."""
    if name not in _ASSETS:
        _ASSETS[name] = (HERE / name).read_text(encoding="utf-8")
    return _ASSETS[name]


_ASSETS: dict = {}
