"""The ``joint`` command: thin - it parses, calls the core, prints.

Each subcommand is one module of this package with ``register(subparsers)`` (adds its parser)
and ``run(args) -> int``; :data:`COMMANDS` lists them in the order ``joint --help`` shows.

Exit codes: 0 everything done; 1 some images could not be scored (the others were);
2 nothing could be done (bad arguments, no model, no images): any :class:`~joint_core.errors.JointError`
that reaches :func:`main` is printed as one line and gives 2 - the one place errors become exit codes.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from .. import __version__
from ..errors import JointError
from .common import EXIT_ERROR, safe_streams

COMMANDS = ("score", "filter", "merge", "report", "convert", "info")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="joint",
        description="Naturalness of AI-generated images (JOINT, AGIN paper): technical, "
                    "rationality and overall naturalness scores.")
    p.add_argument("--version", action="version", version=f"joint {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"{__name__}.{name}")
        module.register(sub).set_defaults(run=module.run)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    safe_streams()
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # to tell the user how to resume
    try:
        return args.run(args)
    except JointError as e:
        print(f"joint: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("joint: interrupted", file=sys.stderr)
        return 130


__all__ = ["COMMANDS", "build_parser", "main"]
