"""What the subcommands share: exit codes, argument types, loading a scorer."""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from ..checkpoint import CheckpointError
from ..config import ConfigError
from ..scorer import NaturalnessScorer

EXIT_OK, EXIT_SOME_FAILED, EXIT_ERROR = 0, 1, 2


def int_at_least(minimum: int, what: str):
    """An argparse ``type``: an integer >= ``minimum``; the error says ``expected <what>``."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {v}")
        return v

    return parse


positive_int = int_at_least(1, "a positive integer")
non_negative_int = int_at_least(0, "an integer >= 0")


def load_scorer(model: Optional[str], device: str = "auto", dtype: str = "auto",
                localizer: Optional[str] = None, int8: bool = False) -> NaturalnessScorer:
    """The scorer, or a :class:`CheckpointError` with one line that says why not."""
    try:
        return NaturalnessScorer.from_pretrained(model, device=device, dtype=dtype, localizer=localizer, int8=int8)
    except (CheckpointError, ConfigError):
        raise
    except ValueError as e:  # bad device / dtype names
        raise CheckpointError(str(e)) from None
    except Exception as e:  # noqa: BLE001 - one line for the user, not a traceback
        raise CheckpointError(f"could not load the model: {e}") from None


def show(text: object, stream=None) -> str:
    """``text`` as any terminal can print it, whatever the locale: bytes of a file name that are
    not UTF-8 as ``\\xNN``, control and invisible formatting characters (newlines, ANSI escapes,
    right-to-left overrides) escaped, characters the stream's encoding lacks as ``\\uNNNN``."""
    s = str(text)
    try:
        s = s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # lone surrogates that are not escaped bytes
        s = s.encode("utf-8", "backslashreplace").decode("utf-8")
    if not s.isprintable():
        s = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in s)
    enc = getattr(stream if stream is not None else sys.stdout, "encoding", None) or "utf-8"
    try:
        return s.encode(enc, "backslashreplace").decode(enc)
    except LookupError:
        return s


def safe_streams() -> None:
    """Make stdout/stderr escape what their encoding cannot print instead of raising (a file
    name under ``PYTHONIOENCODING=ascii``, in a C locale)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError):  # replaced streams (pytest capture, StringIO)
            pass
