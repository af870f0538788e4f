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

Two rooms: :mod:`.rows` (the table read into rows, groups and their statistics, thumbnails) and
:mod:`.page` (the HTML, and writing it); the page's CSS and JavaScript are package data files
beside them (``page.css``, ``page.js``).
"""


from .page import (AXIS_COLOURS, HIST_BINS, MAX_TICKS, ReportSummary, _replaceable, _ticks, render_html,
                   write_html_report)
from .rows import (AUTO, FOLDER, NOT_A_FILE, SCORE_FORMATS, GroupStats, ReportError, ReportRow, assign_groups,
                   group_stats, locate, make_thumbnails, read_scores, thumbnail, to_rows)

__all__ = [
    "AUTO", "AXIS_COLOURS", "FOLDER", "HIST_BINS", "MAX_TICKS", "NOT_A_FILE", "SCORE_FORMATS", "GroupStats",
    "ReportError", "ReportRow", "ReportSummary", "_replaceable", "_ticks", "assign_groups", "group_stats", "locate",
    "make_thumbnails", "read_scores", "render_html", "thumbnail", "to_rows", "write_html_report",
]
