"""The one exception family of joint: every error the project raises on purpose is a
:class:`JointError`, so a caller can ``except JointError`` and the ``joint`` command maps them
all to one exit code (:mod:`joint_core.cli`).

Each subclass keeps the built-in base it always had (``ValueError`` or ``RuntimeError``), so code
that catches those still works, and its message names the file, argument or input at fault.
The modules that raise them re-export them under their old homes
(``joint_core.config.ConfigError``, ``joint_core.stream.InputError``, ...).
"""

from __future__ import annotations

from typing import Any, Optional


class JointError(Exception):
    """Base of every error joint raises on purpose; the message says what is wrong and where."""


class ConfigError(JointError, ValueError):
    """A configuration that cannot describe a working model (names the offending field)."""


class ImageInputError(JointError, ValueError):
    """An input that cannot be turned into an RGB image; the message names the input."""


class InputError(JointError, ValueError):
    """An input that cannot be read at all (a missing table column, an unreadable list); the
    message names the file or argument."""


class OutputError(JointError, RuntimeError):
    """The score file cannot be created, read or written; the message names it and says why."""


class CheckpointError(JointError, RuntimeError):
    """A model that cannot be found, read or loaded; the message says which file and why."""


class NoModelError(CheckpointError):
    """No model was given and none could be found in the resolution order."""


class WeightMappingError(JointError, ValueError):
    """A foreign state dict does not fit the target model (names the offending tensors)."""


class LocalizerError(JointError, RuntimeError):
    """A localizer that cannot be loaded or that returns something that is not a mask."""


class ReportError(JointError, ValueError):
    """A scores table the report cannot use; the message says what to change."""


class ScoringError(JointError, RuntimeError):
    """Raised by ``score(..., on_error="raise")``; ``.result`` holds what was scored
    (a :class:`~joint_core.result.ScoreResult`)."""

    def __init__(self, message: str, result: Optional[Any] = None):
        super().__init__(message)
        self.result = result


class MissingExtraError(JointError, ImportError):
    """An optional dependency is not installed; the message names the extra that brings it
    (see :func:`joint_core.extras.require`)."""


__all__ = ["CheckpointError", "ConfigError", "ImageInputError", "InputError", "JointError", "LocalizerError",
           "MissingExtraError", "NoModelError", "OutputError", "ReportError", "ScoringError",
           "WeightMappingError"]
