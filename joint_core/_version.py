"""The version of joint, in one place: pyproject.toml reads it from here (``dynamic``)."""

__version__ = "0.1.0"
