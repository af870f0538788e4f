"""What the subcommands share: exit codes, argument types, loading a scorer."""

from __future__ import annotations

import argparse
from typing import Optional

from ..checkpoint import CheckpointError
from ..config import ConfigError
from ..scorer import NaturalnessScorer

EXIT_OK, EXIT_SOME_FAILED, EXIT_ERROR = 0, 1, 2


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def load_scorer(model: Optional[str], device: str = "auto", dtype: str = "auto",
                localizer: Optional[str] = None) -> NaturalnessScorer:
    """The scorer, or a :class:`CheckpointError` with one line that says why not."""
    try:
        return NaturalnessScorer.from_pretrained(model, device=device, dtype=dtype, localizer=localizer)
    except (CheckpointError, ConfigError):
        raise
    except ValueError as e:  # bad device / dtype names
        raise CheckpointError(str(e)) from None
    except Exception as e:  # noqa: BLE001 - one line for the user, not a traceback
        raise CheckpointError(f"could not load the model: {e}") from None
