"""The ranking key: what "best" means when images are ranked, in one home.

A ranking key (``by`` in the Python API) is one score axis or a weighted mix ``{axis: weight}``
(weights >= 0, not all zero), read as ``sum(w * score) / sum(w)`` so that a mix stays on the
scores' 1-5 scale. Every face takes one:

- Python: ``ScoreResult.keep(by=...)``, ``ranking(by=...)``, ``scores(by=...)``; the diffusers
  hook's ``by=``;
- CLI: ``joint score --sort KEY`` and ``joint filter --by KEY``, where KEY is an axis or a mix
  written ``naturalness=1,technical=1`` (:func:`parse_by`);
- ComfyUI: the Best-of-N node's ``rank_by`` (an axis, a mix, or "model default");
- a model's ``config.json``: ``ranking``, the key the model was made for, which every face uses
  when none is named (``by=None``; the CLI's ``--top`` without ``--sort``).

:data:`DEFAULT_BY` is the fallback where nothing names one (a config without ``ranking``, a
score file without a job record).
"""

from __future__ import annotations

import argparse
import math
from typing import Any, Dict, Literal, Mapping, Union

AXES = ("technical", "rationality", "naturalness")
Axis = Literal["technical", "rationality", "naturalness"]
By = Union[str, Mapping[str, float]]

DEFAULT_BY = "naturalness"   # the fallback ranking key, defined here only


def check_axis(by: str) -> str:
    if by not in AXES:
        raise ValueError(f"unknown score axis {by!r}; choose one of {list(AXES)}")
    return by


def check_weights(weights: Mapping[str, float]) -> Dict[str, float]:
    """Validate a ``{axis: weight}`` mix: known axes, finite weights >= 0, not all zero."""
    out = {check_axis(ax): float(w) for ax, w in weights.items()}
    bad = {ax: w for ax, w in out.items() if not math.isfinite(w) or w < 0}
    if bad:
        raise ValueError(f"mix weights must be finite and >= 0, got {bad}")
    if not out or sum(out.values()) <= 0:
        raise ValueError(f"mix weights must not all be zero, got {dict(weights)}")
    return out


def check_by(by: Any, arg: str = "by") -> Union[str, Dict[str, float]]:
    """A ranking key: an axis name, or a weighted mix ``{axis: weight}``. Errors name ``arg``."""
    if isinstance(by, str):
        try:
            return check_axis(by)
        except ValueError as e:
            raise ValueError(f"{arg}: {e}") from None
    if isinstance(by, Mapping):
        try:
            return check_weights(by)
        except ValueError as e:
            raise ValueError(f"{arg}: {e}") from None
    raise TypeError(f"{arg} must be an axis name or a {{axis: weight}} mix, got {type(by).__name__}")


def describe_by(by: By) -> str:
    """``"naturalness"`` or ``"1*naturalness + 0.25*technical"`` (zero weights left out)."""
    if isinstance(by, str):
        return by
    return " + ".join(f"{w:g}*{ax}" for ax, w in by.items() if w)


def parse_by(text: str, arg: str = "by") -> Union[str, Dict[str, float]]:
    """A ranking key written on a command line: an axis (``naturalness``) or a mix
    (``naturalness=1,technical=0.5``); a ValueError naming ``arg`` otherwise."""
    text = text.strip()
    if "=" not in text:
        return check_by(text, arg)
    weights: Dict[str, float] = {}
    for part in text.split(","):
        axis, sep, value = part.strip().partition("=")
        if not sep:
            raise ValueError(f"{arg}: expected AXIS=WEIGHT in a mix, got {part.strip()!r}")
        if axis.strip() in weights:
            raise ValueError(f"{arg}: {axis.strip()!r} appears twice in {text!r}")
        try:
            weights[axis.strip()] = float(value)
        except ValueError:
            raise ValueError(f"{arg}: {value.strip()!r} is not a weight (in {text!r})") from None
    return check_by(weights, arg)


def by_argument(flag: str):
    """An argparse ``type`` for a ranking key (:func:`parse_by`); errors name ``flag``."""
    def parse(text: str) -> Union[str, Dict[str, float]]:
        try:
            return parse_by(text, flag)
        except ValueError as e:
            raise argparse.ArgumentTypeError(
                f"{e} (a ranking key is an axis - {', '.join(AXES)} - or a mix such as "
                "naturalness=1,technical=1)") from None

    return parse


BY_HELP = "an axis (technical, rationality, naturalness) or a weighted mix such as naturalness=1,technical=1"
