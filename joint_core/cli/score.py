"""``joint score``: score image files, folders or globs; print a table, write CSV/JSONL/JSON."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import warnings
from pathlib import Path
from typing import List

from ..checkpoint import CheckpointError
from ..result import AXES, ScoreResult
from .common import EXIT_ERROR, EXIT_OK, EXIT_SOME_FAILED, load_scorer, positive_int

OUT_FORMATS = (".csv", ".jsonl", ".json")


def register(sub) -> argparse.ArgumentParser:
    s = sub.add_parser("score", help="score image files, folders or globs",
                       description="Score images. Without --model: $JOINT_MODEL, then the user "
                                   "cache, then the default model shipped with joint.")
    s.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders or glob patterns")
    s.add_argument("--model", "-m", help="model folder or hub id (owner/name); 'default' for the shipped one")
    s.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:1, mps")
    s.add_argument("--dtype", default="auto", help="auto (bf16/fp16 on GPU, fp32 on CPU), fp32, fp16, bf16")
    s.add_argument("--batch-size", "-b", type=positive_int, default=16, help="images per batch (default 16)")
    s.add_argument("--out", "-o", help="also write the scores to FILE.csv, FILE.jsonl or FILE.json")
    s.add_argument("--sort", choices=AXES,
                   help="list best first by this score (default with --top: the model's own ranking)")
    s.add_argument("--ascending", action="store_true", help="with --sort/--top: worst first")
    s.add_argument("--top", type=positive_int, metavar="K",
                   help="keep only the K best (by --sort, default the model's own ranking)")
    s.add_argument("--recursive", "-r", action="store_true", help="look into sub-folders of folders")
    s.add_argument("--localizer", help="artifact localizer: path to a TorchScript PAL4VST end2end.pt")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("--quiet", "-q", action="store_true", help="no table on the terminal")
    return s


def run(args: argparse.Namespace) -> int:
    from ..preprocess.images import expand_paths

    if args.out and Path(args.out).suffix.lower() not in OUT_FORMATS:
        print(f"joint: error: --out {args.out}: unknown format {Path(args.out).suffix.lower()!r}; "
              f"use {', '.join(OUT_FORMATS)}", file=sys.stderr)
        return EXIT_ERROR
    paths = expand_paths(args.paths, recursive=args.recursive)
    if not paths:
        print("joint: error: no images found in " + " ".join(args.paths), file=sys.stderr)
        return EXIT_ERROR
    scorer = load_scorer(args.model, args.device, args.dtype, args.localizer)
    progress = False if args.no_progress else (None if len(paths) > args.batch_size else False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # failures are reported below, file by file
        result = scorer.score(paths, batch_size=args.batch_size, progress=progress)
    order = list(range(len(result)))
    if args.sort or args.top:
        order = result.keep(args.sort, k=args.top, sort=True, descending=not args.ascending)
    records = result.to_records()
    rows = [records[i] for i in order]
    if not args.quiet:
        print(format_table(rows, result))
    for i in sorted(result.errors):
        print(f"joint: skipped {result.errors[i]}", file=sys.stderr)
    for i in sorted(result.warnings):
        print(f"joint: warning: {result.warnings[i]}", file=sys.stderr)
    if args.out:
        write_records(rows, args.out)
        if not args.quiet:
            print(f"wrote {len(rows)} rows to {args.out}")
    if not args.quiet:
        print(f"{result.summary()} with {scorer.source.describe() if scorer.source else 'model'}; "
              f"scores on the {result.score_range[0]:g}-{result.score_range[1]:g} scale, higher is better")
    if len(result.errors) == len(result):
        return EXIT_ERROR
    return EXIT_SOME_FAILED if result.errors else EXIT_OK


def format_table(rows: List[dict], result: ScoreResult) -> str:
    head = f"{'technical':>10} {'rationality':>12} {'naturalness':>12}  file"
    lines = [head, "-" * len(head)]
    for r in rows:
        if r["error"]:
            lines.append(f"{'-':>10} {'-':>12} {'-':>12}  {r['source']}  (unreadable)")
        else:
            lines.append(f"{r['technical']:>10.4f} {r['rationality']:>12.4f} {r['naturalness']:>12.4f}  "
                         f"{r['source']}" + ("  (flagged)" if r.get("warning") else ""))
    return "\n".join(lines)


def write_records(rows: List[dict], out: str) -> None:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = ["source", "technical", "rationality", "naturalness", "error", "warning"]
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fields})
    elif suffix == ".jsonl":
        with path.open("w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps({k: r.get(k) for k in fields}) + "\n")
    elif suffix == ".json":
        path.write_text(json.dumps([{k: r.get(k) for k in fields} for r in rows], indent=2) + "\n",
                        encoding="utf-8")
    else:
        raise CheckpointError(f"--out {out}: unknown format {suffix!r}; use .csv, .jsonl or .json")
