"""Shared fixtures: a tiny random model saved to disk, real photographs from scikit-image."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def photo(name: str) -> np.ndarray:
    """A real photograph shipped with scikit-image (uint8 HxWx3)."""
    data = pytest.importorskip("skimage.data", reason="scikit-image provides the sample photos")
    return getattr(data, name)()


@pytest.fixture(scope="session")
def photos() -> dict:
    return {n: photo(n) for n in ("astronaut", "coffee", "chelsea", "rocket")}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from joint_core import NaturalnessScorer

    torch.manual_seed(0)
    scorer = NaturalnessScorer.from_config("tiny-test", device="cpu")
    out = tmp_path_factory.mktemp("models") / "tiny"
    scorer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_scorer(tiny_model_dir):
    from joint_core import NaturalnessScorer

    return NaturalnessScorer.from_pretrained(tiny_model_dir, device="cpu")


@pytest.fixture
def isolated_models(tmp_path, monkeypatch):
    """No $JOINT_MODEL, an empty user cache, and no shipped default: resolution finds nothing."""
    from joint_core import checkpoint

    monkeypatch.delenv("JOINT_MODEL", raising=False)
    monkeypatch.setenv("JOINT_HOME", str(tmp_path / "joint-home"))
    monkeypatch.setattr(checkpoint, "SHIPPED_DEFAULT", tmp_path / "no-shipped-default")
    return tmp_path
