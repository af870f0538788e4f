"""One exception family: every error class joint defines is a JointError, keeps its old home and
built-in base, and the CLI turns any JointError into exit code 2 in one place."""

import ast

import pytest

import joint_core
from joint_core import errors
from joint_core.errors import JointError

from conftest import REPO

PACKAGES = ("joint_core", "comfyui_joint", "diffusers_hook", "train")


def _exception_classes():
    """(file, class name) of every class in the code whose name ends in Error or Exception."""
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef) and node.name.endswith(("Error", "Exception")):
                    yield path.relative_to(REPO), node


def test_every_error_class_is_defined_once_and_joins_the_family():
    found = list(_exception_classes())
    assert len(found) >= 12
    homes = {}
    for path, node in found:
        assert node.name not in homes, f"{node.name} defined twice: {homes.get(node.name)} and {path}"
        homes[node.name] = path
        if node.name == "JointError":
            continue
        bases = {b.id if isinstance(b, ast.Name) else b.attr for b in node.bases}
        family = {n for n in homes if n != node.name} | {c.__name__ for c in vars(errors).values()
                                                         if isinstance(c, type) and issubclass(c, JointError)}
        assert bases & family, f"{path}: {node.name} does not derive from JointError"
    # the core's own errors all live in joint_core/errors.py
    assert {str(p) for p, n in found if str(p).startswith("joint_core")} == {"joint_core/errors.py"}


@pytest.mark.parametrize("old_home, name, builtin", [
    ("joint_core.config", "ConfigError", ValueError),
    ("joint_core.checkpoint", "CheckpointError", RuntimeError),
    ("joint_core.checkpoint", "NoModelError", RuntimeError),
    ("joint_core.preprocess.images", "ImageInputError", ValueError),
    ("joint_core.preprocess.localizer", "LocalizerError", RuntimeError),
    ("joint_core.stream", "InputError", ValueError),
    ("joint_core.stream", "OutputError", RuntimeError),
    ("joint_core.report", "ReportError", ValueError),
    ("joint_core.result", "ScoringError", RuntimeError),
    ("joint_core.backbones", "WeightMappingError", ValueError),
])
def test_old_homes_still_export_the_same_class(old_home, name, builtin):
    import importlib

    cls = getattr(importlib.import_module(old_home), name)
    assert cls is getattr(errors, name)
    assert issubclass(cls, JointError) and issubclass(cls, builtin)
    assert joint_core.JointError is JointError


def test_cli_maps_any_joint_error_to_exit_2(monkeypatch, capsys):
    from joint_core.cli import info, main

    def broken(args):
        raise errors.OutputError("scores.csv: cannot write (disk full)")

    monkeypatch.setattr(info, "run", broken)
    assert main(["info"]) == 2
    assert capsys.readouterr().err.strip() == "joint: error: scores.csv: cannot write (disk full)"


def test_train_errors_join_the_family():
    from train.datasets.base import DatasetError
    from train.recipe import RecipeError

    assert issubclass(RecipeError, JointError) and issubclass(DatasetError, JointError)
