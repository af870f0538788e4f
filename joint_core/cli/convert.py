"""``joint convert``: the authors' JOINT_2024.pth -> a joint model folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..checkpoint import CONFIG_NAME, MODEL_CARD_NAME, WEIGHTS_NAME, convert_official, default_model_dir
from .common import EXIT_ERROR, EXIT_OK


def register(sub) -> argparse.ArgumentParser:
    c = sub.add_parser("convert", help="convert the authors' JOINT_2024.pth into a joint model folder")
    c.add_argument("src", help="the authors' checkpoint (.pth)")
    c.add_argument("out_dir", nargs="?", help=f"output folder (default: {default_model_dir()}, "
                                              "used automatically by `joint score`)")
    c.add_argument("--calibration", metavar="NPY", help="also store the logistic of JOINT_2024.npy "
                                                       "(the authors' script does not apply it)")
    c.add_argument("--force", action="store_true", help="overwrite an existing model folder")
    return c


def run(args: argparse.Namespace) -> int:
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
