"""``joint convert``: the authors' JOINT_2024.pth -> a joint model folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..checkpoint import CONFIG_NAME, MODEL_CARD_NAME, WEIGHTS_NAME, default_model_dir
from ..official import convert_official
from ..outputs import input_conflict, parent_problem
from .common import EXIT_ERROR, EXIT_OK


def register(sub) -> argparse.ArgumentParser:
    c = sub.add_parser("convert", help="convert the authors' JOINT_2024.pth into a joint model folder")
    c.add_argument("src", help="the authors' checkpoint (.pth)")
    c.add_argument("out_dir", nargs="?", help=f"output folder (default: {default_model_dir()}, "
                                              "used automatically by `joint score`)")
    c.add_argument("--calibration", metavar="NPY", help="also store the logistic of JOINT_2024.npy "
                                                       "(the authors' script does not apply it)")
    c.add_argument("--overwrite", "--force", dest="force", action="store_true",
                   help="replace the model in an existing model folder")
    return c


def run(args: argparse.Namespace) -> int:
    out = Path(args.out_dir) if args.out_dir else default_model_dir()
    problem = input_conflict(out, [args.src, args.calibration], what="the output folder") or parent_problem(out)
    if problem is None and (out.exists() or out.is_symlink()) and not out.is_dir():
        problem = f"{out}: is a file, not a folder"
    elif problem is None and out.is_dir() and any(out.iterdir()) and not args.force:
        problem = f"{out} exists and is not empty (pass --overwrite to replace the model in it)"
    if problem:
        print(f"joint: error: {problem}", file=sys.stderr)
        return EXIT_ERROR
    if args.force and out.is_dir():  # no stale card or notice from an earlier model may survive
        for name in (CONFIG_NAME, WEIGHTS_NAME, MODEL_CARD_NAME):
            (out / name).unlink(missing_ok=True)
    path = convert_official(args.src, out, calibration=args.calibration)
    print(f"converted {args.src} -> {path}")
    if not args.out_dir:
        print("it is now the default model for `joint score` (unless --model or $JOINT_MODEL say otherwise)")
    return EXIT_OK
