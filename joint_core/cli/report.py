"""``joint report``: one self-contained HTML page of scored images (joint_core.report)."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

from tqdm.auto import tqdm

from ..outputs import input_conflict
from ..report import ReportError, _replaceable, write_html_report
from .common import EXIT_ERROR, EXIT_OK, positive_int, show


def register(sub) -> argparse.ArgumentParser:
    r = sub.add_parser("report", help="an HTML report of a scores table: thumbnails, histograms, group means",
                       description="Write one HTML file that opens offline: the images of a scores table "
                                   "(written by `joint score --out`) with their scores, sortable and "
                                   "filterable, histograms of each axis, and each group's mean with a "
                                   "bootstrap 95% interval.")
    r.add_argument("scores", metavar="SCORES", help="the table `joint score --out` wrote (.csv, .jsonl, .json)")
    r.add_argument("--out", "-o", required=True, help="the HTML file to write")
    r.add_argument("--group-by", default="auto", metavar="COLUMN",
                   help="a column to group by (e.g. generator, prompt), 'folder' for the images' folders, "
                        "'none' for no groups (default 'auto': folders, when the images are in several)")
    r.add_argument("--root", help="folder that relative image paths are relative to (default: the current "
                                  "folder, then the table's folder)")
    r.add_argument("--thumb-size", type=positive_int, default=160, metavar="PX",
                   help="thumbnails' long side in pixels (default 160, about 5 KB each)")
    r.add_argument("--page-size", type=positive_int, default=100, metavar="N", help="images per page (default 100)")
    r.add_argument("--title", help="the page's title")
    r.add_argument("--overwrite", action="store_true", help="replace an existing --out (a report made from "
                                                           "the same SCORES is replaced without it)")
    r.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    return r


def progress_bar():
    """A ``progress(done, total)`` callback drawing the thumbnails' bar on a terminal, else None."""
    if not sys.stderr.isatty():
        return None

    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc="thumbnails", unit="img")
        bar.update(done - bar.n)
        if done == total:
            bar.close()

    return progress


def check_report_path(path: str, scores: Optional[str], overwrite: bool,
                      inputs: Sequence[str] = ()) -> Optional[str]:
    """Why the report cannot be written to ``path`` (one of the inputs, an existing file it may
    not replace, a folder, a folder that cannot be made or written), checked before any scoring;
    None when it can. ``scores``: the scores file it will be made from (None: rows in memory)."""
    p = Path(path)
    problem = input_conflict(path, inputs, what="--report") or _replaceable(p, scores, overwrite)
    if problem:
        return problem
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=p.parent, prefix=f".{p.name}.", suffix=".check"):
            pass
    except OSError as e:
        return f"--report {path}: cannot write there ({e.strerror or e})"
    return None


def run(args: argparse.Namespace) -> int:
    progress = None if args.quiet else progress_bar()
    group_by = None if args.group_by.lower() == "none" else args.group_by
    try:
        summary = write_html_report(args.scores, args.out, group_by=group_by, root=args.root,
                                    thumb_size=args.thumb_size, title=args.title, page_size=args.page_size,
                                    progress=progress, overwrite=args.overwrite)
    except ReportError as e:
        print(f"joint: error: {show(e, sys.stderr)}", file=sys.stderr)
        return EXIT_ERROR
    if not args.quiet:
        groups = f", {len(summary.groups)} groups" if summary.groups else ""
        failed = f" ({summary.failed} not scored)" if summary.failed else ""
        missing = f"; {summary.missing_thumbnails} image file(s) not found" if summary.missing_thumbnails else ""
        print(f"wrote {show(summary.path)}: {summary.images} images{failed}{groups}, "
              f"{summary.bytes / 1e6:.1f} MB{missing}")
    return EXIT_OK
