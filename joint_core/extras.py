"""Optional dependencies, checked in one place: :func:`require` imports one and, when it is
missing, raises an error that names the feature that needs it and the extra of
``joint-naturalness`` that installs it. Every optional import of the project goes through here,
so ``import joint_core`` (and each face) works without any of them."""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType
from typing import Any, Callable, Mapping, Optional

from .errors import MissingExtraError

# top-level module -> (the extra of joint-naturalness that installs it, what it is called)
EXTRAS = {
    "pyarrow": ("parquet", "pyarrow"),
    "ray": ("ray", "Ray Data"),
    "diffusers": ("diffusers", "diffusers"),
    "playwright": ("browser", "Playwright for Python"),
    "onnx": ("train", "the onnx package"),
    "scipy": ("train", "scipy"),
    "yaml": ("train", "pyyaml"),
    "huggingface_hub": (None, "huggingface_hub"),   # a core dependency, but importable apart
}


def install_hint(module: str) -> str:
    """How to install ``module``: the extra that brings it, or the package itself."""
    extra, name = EXTRAS.get(module.split(".")[0], (None, module))
    if extra is None:
        return f"pip install {name}"
    return f"pip install 'joint-naturalness[{extra}]'"


def require(module: str, feature: str, error: Optional[type] = None) -> ModuleType:
    """Import ``module`` (e.g. ``"pyarrow.parquet"``) for ``feature`` (e.g. ``"reading or writing
    Parquet"``), or raise ``error`` (a :class:`~joint_core.errors.MissingExtraError` by default,
    which is an ImportError; callers pass the error of their domain, e.g. ``OutputError`` for a
    Parquet score file) naming the feature and the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        name = EXTRAS.get(module.split(".")[0], (None, module))[1]
        raise (error or MissingExtraError)(
            f"{feature} needs {name}, which is not installed ({e}); install it with: "
            f"{install_hint(module)}") from None


def available(module: str) -> bool:
    """Whether ``module`` can be imported (without raising)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def moved(module: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for names that moved out of ``module``: each of ``names`` (name ->
    its new module) is still importable from the old one, with a DeprecationWarning."""

    def __getattr__(name: str) -> Any:
        if name in names:
            warnings.warn(f"{module}.{name} moved to {names[name]}.{name}; import it from there",
                          DeprecationWarning, stacklevel=2)
            return getattr(importlib.import_module(names[name]), name)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
