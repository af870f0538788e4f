"""The ``joint`` command: thin - it parses, calls :class:`NaturalnessScorer`, prints.

Exit codes: 0 everything scored; 1 some images could not be scored (the others were);
2 nothing could be done (bad arguments, no model, no images).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import warnings
from pathlib import Path
from typing import List, Optional, Sequence

from . import __version__
from .checkpoint import (CONFIG_NAME, MODEL_CARD_NAME, WEIGHTS_NAME, CheckpointError, convert_official,
                         default_model_dir, read_config_dict)
from .config import ConfigError
from .scorer import AXES, NaturalnessScorer, ScoreResult

EXIT_OK, EXIT_SOME_FAILED, EXIT_ERROR = 0, 1, 2


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="joint",
        description="Naturalness of AI-generated images (JOINT, AGIN paper): technical, "
                    "rationality and overall naturalness scores.")
    p.add_argument("--version", action="version", version=f"joint {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("score", help="score image files, folders or globs",
                       description="Score images. Without --model: $JOINT_MODEL, then the user "
                                   "cache, then the default model shipped with joint.")
    s.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders or glob patterns")
    s.add_argument("--model", "-m", help="model folder or hub id (owner/name); 'default' for the shipped one")
    s.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:1, mps")
    s.add_argument("--dtype", default="auto", help="auto (bf16/fp16 on GPU, fp32 on CPU), fp32, fp16, bf16")
    s.add_argument("--batch-size", "-b", type=_positive_int, default=16, help="images per batch (default 16)")
    s.add_argument("--out", "-o", help="also write the scores to FILE.csv, FILE.jsonl or FILE.json")
    s.add_argument("--sort", choices=AXES, help="list best first by this score")
    s.add_argument("--ascending", action="store_true", help="with --sort/--top: worst first")
    s.add_argument("--top", type=_positive_int, metavar="K",
                   help="keep only the K best (by --sort, default naturalness)")
    s.add_argument("--recursive", "-r", action="store_true", help="look into sub-folders of folders")
    s.add_argument("--localizer", help="artifact localizer: path to a TorchScript PAL4VST end2end.pt")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("--quiet", "-q", action="store_true", help="no table on the terminal")

    c = sub.add_parser("convert", help="convert the authors' JOINT_2024.pth into a joint model folder")
    c.add_argument("src", help="the authors' checkpoint (.pth)")
    c.add_argument("out_dir", nargs="?", help=f"output folder (default: {default_model_dir()}, "
                                              "used automatically by `joint score`)")
    c.add_argument("--calibration", metavar="NPY", help="also store the logistic of JOINT_2024.npy "
                                                       "(the authors' script does not apply it)")
    c.add_argument("--force", action="store_true", help="overwrite an existing model folder")

    i = sub.add_parser("info", help="show a model's configuration, size and origin")
    i.add_argument("model", nargs="?", help="model folder or hub id (default: the resolution order)")
    i.add_argument("--json", action="store_true", help="print JSON")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "score":
            return cmd_score(args)
        if args.command == "convert":
            return cmd_convert(args)
        if args.command == "info":
            return cmd_info(args)
    except (CheckpointError, ConfigError) as e:
        print(f"joint: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("joint: interrupted", file=sys.stderr)
        return 130
    return EXIT_ERROR  # pragma: no cover


# --------------------------------------------------------------------------------------------


def _load(model: Optional[str], device: str = "auto", dtype: str = "auto",
          localizer: Optional[str] = None) -> NaturalnessScorer:
    try:
        return NaturalnessScorer.from_pretrained(model, device=device, dtype=dtype, localizer=localizer)
    except ValueError as e:  # bad device / dtype names
        raise CheckpointError(str(e)) from None


def cmd_score(args: argparse.Namespace) -> int:
    from .preprocess.images import expand_paths

    if args.out and Path(args.out).suffix.lower() not in OUT_FORMATS:
        print(f"joint: error: --out {args.out}: unknown format {Path(args.out).suffix.lower()!r}; "
              f"use {', '.join(OUT_FORMATS)}", file=sys.stderr)
        return EXIT_ERROR
    paths = expand_paths(args.paths, recursive=args.recursive)
    if not paths:
        print("joint: error: no images found in " + " ".join(args.paths), file=sys.stderr)
        return EXIT_ERROR
    try:
        scorer = _load(args.model, args.device, args.dtype, args.localizer)
    except Exception as e:
        if isinstance(e, (CheckpointError, ConfigError)):
            raise
        raise CheckpointError(f"could not load the model: {e}") from None
    progress = False if args.no_progress else (None if len(paths) > args.batch_size else False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # failures are reported below, file by file
        result = scorer.score(paths, batch_size=args.batch_size, progress=progress)
    order = list(range(len(result)))
    if args.sort or args.top:
        by = args.sort or "naturalness"
        order = result.best_indices(args.top, by, descending=not args.ascending) if args.top else \
            result.ranking(by=by, descending=not args.ascending)
    records = result.to_records()
    rows = [records[i] for i in order]
    if not args.quiet:
        print(format_table(rows, result))
    for i in sorted(result.errors):
        print(f"joint: skipped {result.errors[i]}", file=sys.stderr)
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
                         f"{r['source']}")
    return "\n".join(lines)


OUT_FORMATS = (".csv", ".jsonl", ".json")


def write_records(rows: List[dict], out: str) -> None:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = ["source", "technical", "rationality", "naturalness", "error"]
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


def cmd_convert(args: argparse.Namespace) -> int:
    out = Path(args.out_dir) if args.out_dir else default_model_dir()
    if out.exists() and any(out.iterdir()) and not args.force:
        print(f"joint: error: {out} exists and is not empty (use --force to overwrite)", file=sys.stderr)
        return EXIT_ERROR
    if args.force and out.is_dir():  # no stale card or notice from an earlier model may survive
        for name in (CONFIG_NAME, WEIGHTS_NAME, MODEL_CARD_NAME):
            (out / name).unlink(missing_ok=True)
    path = convert_official(args.src, out, calibration=args.calibration)
    print(f"converted {args.src} -> {path}")
    if not args.out_dir:
        print("it is now the default model for `joint score` (unless --model or $JOINT_MODEL say otherwise)")
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    scorer = _load(args.model, device="cpu", dtype="float32")
    info = scorer.info()
    assert scorer.source is not None
    info["config"] = read_config_dict(scorer.source.path)
    if args.json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
    width = max(len(k) for k in info)
    for k, v in info.items():
        if k == "config":
            continue
        if k == "parameters":
            v = f"{v:,} ({v / 1e6:.1f} M)"
        print(f"{k:<{width}}  {v}")
    card = scorer.source.path / "MODEL_CARD.md"
    if card.is_file():
        print(f"{'model card':<{width}}  {card}")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
