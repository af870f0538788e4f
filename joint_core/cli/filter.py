"""``joint filter``: act on a score file - copy, hard-link, symlink or list the images that pass -
without writing a script. The destination mirrors the sources' folder layout. Sources are never
deleted, moved or overwritten.

Selection is :meth:`ScoreResult.keep <joint_core.result.ScoreResult.keep>`, the project's one
rule: each criterion (``--min AXIS=VALUE``, ``--top-percent P``, ``--top K``) is one ``keep``
call, per group when asked (``--per-folder`` or ``--group-column``), and an image passes when it
passes all of them. Images that could not be scored never pass.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import List, Optional, Set, Tuple

from ..outputs import existing_output, input_conflict, is_file, publish
from ..ranking import AXES, BY_HELP, DEFAULT_BY, by_argument
from ..stream import InputError, OutputError, read_meta, read_rows, result_from_rows
from ..stream.job import id_kinds
from ..stream.sinks import meta_path, read_paths
from .common import EXIT_ERROR, EXIT_OK, EXIT_SOME_FAILED, positive_int, show

MODES = ("copy", "hardlink", "symlink", "list")


def axis_value(text: str) -> Tuple[str, float]:
    axis, sep, value = text.partition("=")
    if not sep or axis not in AXES:
        raise argparse.ArgumentTypeError(f"expected AXIS=VALUE with AXIS one of {', '.join(AXES)}, got {text!r}")
    try:
        v = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: {value!r} is not a number") from None
    if v != v:
        raise argparse.ArgumentTypeError(f"{text!r}: NaN is not a threshold")
    return axis, v


def percent(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a percentage in (0, 100], got {text!r}") from None
    if not 0 < v <= 100:
        raise argparse.ArgumentTypeError(f"expected a percentage in (0, 100], got {text!r}")
    return v


def register(sub) -> argparse.ArgumentParser:
    f = sub.add_parser("filter", help="copy, link or list the images of a score file that pass thresholds",
                       description="Select images from a score file (.csv, .jsonl, .json, .parquet) and copy, "
                                   "hard-link or symlink them into DEST, mirroring their folders, or list them. "
                                   "Sources are never deleted, moved or overwritten.")
    f.add_argument("scores", help="a score file written by `joint score --out`")
    f.add_argument("--to", metavar="DEST", help="destination folder (for --mode list: a file; default stdout)")
    f.add_argument("--mode", choices=MODES, default="copy", help="copy (default), hardlink, symlink or list")
    f.add_argument("--min", type=axis_value, action="append", default=[], metavar="AXIS=VALUE",
                   help="keep images whose AXIS score is >= VALUE (repeatable; all must hold)")
    f.add_argument("--top-percent", type=percent, metavar="P",
                   help="keep the best P %% (by --by) of each group (at least one image per group)")
    f.add_argument("--top", type=positive_int, metavar="K", help="keep the K best (by --by) of each group")
    f.add_argument("--by", type=by_argument("--by"), metavar="KEY",
                   help=f"the ranking key --top/--top-percent rank by: {BY_HELP} (default: the model's own "
                        f"ranking, from the file's job description, else {DEFAULT_BY})")
    grouping = f.add_mutually_exclusive_group()
    grouping.add_argument("--per-folder", action="store_true", help="--top/--top-percent within each folder")
    grouping.add_argument("--group-column", metavar="COL",
                          help="--top/--top-percent within each value of COL, a column added to the score file")
    f.add_argument("--root", help="the folder whose layout DEST mirrors (default: the deepest folder holding "
                                  "every source)")
    f.add_argument("--null", "-0", action="store_true", help="--mode list: separate paths by NUL bytes")
    f.add_argument("--overwrite", action="store_true", help="--mode list: replace an existing --to file "
                                                           "(never the score file or its job record)")
    f.add_argument("--dry-run", "-n", action="store_true", help="say what would be done, do nothing")
    f.add_argument("--quiet", "-q", action="store_true", help="only errors")
    return f


def run(args: argparse.Namespace) -> int:
    def fail(msg: str) -> int:
        print(f"joint: error: {show(msg, sys.stderr)}", file=sys.stderr)
        return EXIT_ERROR

    if not (args.min or args.top_percent or args.top):
        return fail("say what passes: --min AXIS=VALUE, --top-percent P and/or --top K")
    if args.mode != "list" and not args.to:
        return fail(f"--mode {args.mode} needs --to DEST (a folder)")
    if args.to:
        problem = input_conflict(args.to, read_paths(args.scores), what="--to")
        if problem is None and args.mode == "list":
            problem = existing_output(args.to, args.overwrite, what="--to")
        elif problem is None and (Path(args.to).exists() or Path(args.to).is_symlink()) \
                and not Path(args.to).is_dir():
            problem = f"--to {args.to}: is a file; --mode {args.mode} puts images into a folder"
        if problem:
            return fail(problem)
    extra = (args.group_column,) if args.group_column else ()
    try:
        meta = read_meta(args.scores)
        rows = list(read_rows(args.scores, extra=extra))
    except (OutputError, InputError) as e:
        return fail(str(e))
    ids = id_kinds(meta)
    if args.mode != "list" and ids in ("keys", "mixed"):
        what = "all" if ids == "keys" else "some"
        return fail(f"{args.scores}: {what} of its ids name WebDataset tar members or table rows, not files "
                    f"(its job record {meta_path(args.scores)} says so), so they are never looked up on this "
                    "disk, where the same name may be another file; --mode list writes the ids that pass"
                    + ("; score the files and the tars/tables into separate score files to copy the files"
                       if ids == "mixed" else ""))
    default_by = ((meta or {}).get("model") or {}).get("ranking") or DEFAULT_BY
    result = result_from_rows(rows, default_by)
    labels = None
    if args.per_folder:
        labels = [os.path.dirname(r["source"]) for r in rows]
    elif args.group_column:
        labels = [r[args.group_column] for r in rows]
    passing: Optional[Set[int]] = None
    for axis, value in args.min:
        passing = _meet(passing, result.keep(axis, threshold=value, groups=labels))
    if args.top_percent:
        passing = _meet(passing, result.keep(args.by, fraction=args.top_percent / 100.0, groups=labels))
    if args.top:
        passing = _meet(passing, result.keep(args.by, k=args.top, groups=labels))
    chosen = [i for i in range(len(rows)) if i in (passing or set())]
    sources = [rows[i]["source"] for i in chosen]
    if args.mode == "list":
        return _list(sources, args)
    return _place(sources, [r["source"] for r in rows], args, len(rows), len(result.errors))


def _meet(a: Optional[Set[int]], b: List[int]) -> Set[int]:
    return set(b) if a is None else a & set(b)


def _list(sources: List[str], args: argparse.Namespace) -> int:
    """Paths as bytes, one a line (or NUL-separated): what `joint score --files-from` reads back."""
    sep = b"\0" if args.null else b"\n"
    data = b"".join(os.fsencode(s) + sep for s in sources)
    if args.dry_run:
        print(f"would list {len(sources)} images" + (f" in {show(args.to)}" if args.to else ""))
        return EXIT_OK
    if args.to:
        tmp = Path(args.to).with_name(f".{Path(args.to).name}.tmp-{os.getpid()}")
        try:
            tmp.write_bytes(data)
            publish(tmp, args.to, args.overwrite)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            why = "appeared meanwhile; not replaced" if isinstance(e, FileExistsError) else \
                f"cannot write ({e.strerror or e})"
            print(f"joint: error: {show(args.to, sys.stderr)}: {why}", file=sys.stderr)
            return EXIT_ERROR
        if not args.quiet:
            print(f"listed {len(sources)} images in {show(args.to)}", file=sys.stderr)
    else:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    return EXIT_OK


def _root(all_sources: List[str], given: Optional[str]) -> Path:
    if given:
        return Path(os.path.abspath(given))
    dirs = {os.path.dirname(os.path.abspath(s)) for s in all_sources}
    return Path(os.path.commonpath(sorted(dirs))) if dirs else Path.cwd()


def _place(sources: List[str], all_sources: List[str], args: argparse.Namespace, n_rows: int,
           n_failed: int) -> int:
    dest_root = Path(args.to)
    root = _root(all_sources, args.root)
    done = already = 0
    problems: List[str] = []
    verb = {"copy": "copied", "hardlink": "hard-linked", "symlink": "symlinked"}[args.mode]
    for src in sources:
        if not is_file(src):
            problems.append(f"{src}: not a file (only image files can be {verb}; list ids with --mode list)")
            continue
        absolute = Path(os.path.abspath(src))
        try:
            rel = absolute.relative_to(root)
        except ValueError:
            problems.append(f"{src}: not under --root {root}")
            continue
        dest = dest_root / rel
        if args.dry_run:
            done += 1
            continue
        try:
            if dest.exists() or dest.is_symlink():
                if dest.exists() and os.path.samefile(dest, absolute):
                    already += 1  # DEST is (or links to) the source itself: nothing to do
                elif _same_content(dest, absolute, args.mode):
                    already += 1
                else:
                    problems.append(f"{dest}: exists and is another file; not overwritten")
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            _act(args.mode, absolute, dest)
            done += 1
        except OSError as e:
            hint = " (hard links cannot cross file systems: use --mode copy or symlink)" \
                if args.mode == "hardlink" and getattr(e, "errno", None) == 18 else ""
            problems.append(f"{src} -> {dest}: {e.strerror or e}{hint}")
    for p in problems:
        print(f"joint: {show(p, sys.stderr)}", file=sys.stderr)
    if not args.quiet:
        what = "would be " + verb if args.dry_run else verb
        print(f"{len(sources)} of {n_rows} images pass ({n_failed} unscored never do); {done} {what} into "
              f"{show(dest_root)}" + (f", {already} already there" if already else "")
              + f" (layout of {show(root)})")
    if problems:
        return EXIT_SOME_FAILED if done or already else EXIT_ERROR
    return EXIT_OK


def _act(mode: str, src: Path, dest: Path) -> None:
    """Put ``src`` at ``dest`` without touching ``src``; a copy appears whole or not at all."""
    if mode == "hardlink":
        os.link(src, dest)
    elif mode == "symlink":
        os.symlink(src, dest)
    else:
        tmp = dest.with_name(f".{dest.name}.joint-tmp-{os.getpid()}")
        try:
            shutil.copy2(src, tmp)
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def _same_content(dest: Path, src: Path, mode: str) -> bool:
    """An earlier run's copy of the same file (same size and modification time, as copy2 keeps)."""
    if mode == "symlink":
        return dest.is_symlink() and os.readlink(dest) == str(src)
    try:
        a, b = dest.stat(), src.stat()
    except OSError:
        return False
    return a.st_size == b.st_size and int(a.st_mtime) == int(b.st_mtime)

