"""Shared fixtures: a tiny random model saved to disk, real photographs from scikit-image, and for
the slow end-to-end tests a real ComfyUI server and a headless Chromium (skipped where they are
missing, except in CI: ``JOINT_CI=1``, set by ``.ci/run``, turns those skips into failures)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network

REPO = Path(__file__).resolve().parents[1]


def _shared() -> Path:
    """The project's shared folder: ``$JOINT_SHARED``, else the nearest ``shared/`` beside this
    checkout or beside a folder above it (``../shared`` for a clone, ``../../shared`` for a worktree)."""
    if os.environ.get("JOINT_SHARED"):
        return Path(os.environ["JOINT_SHARED"])
    return next((p / "shared" for p in REPO.parents if (p / "shared").is_dir()), REPO.parent / "shared")


SHARED = _shared()


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


# read once, before any test can monkeypatch it (isolated_models hides it)
SHIPPED_DEFAULT = Path(__file__).resolve().parents[1] / "joint_core" / "weights" / "default"


@pytest.fixture(scope="session")
def default_scorer():
    """The shipped default model, loaded once per session (87.5 MiB, a CLIP ViT-B/16: seconds to
    build, hundreds of MB), for the tests whose numbers are the default model's own; tests whose
    numbers do not matter use ``tiny_scorer``. Skipped where this checkout ships no default."""
    from joint_core import NaturalnessScorer

    if not (SHIPPED_DEFAULT / "model.safetensors").is_file():
        pytest.skip("this checkout ships no default model")
    return NaturalnessScorer.from_pretrained(SHIPPED_DEFAULT, device="cpu")


@pytest.fixture
def isolated_models(tmp_path, monkeypatch):
    """No $JOINT_MODEL, an empty user cache, and no shipped models: resolution finds nothing."""
    from joint_core import checkpoint

    monkeypatch.delenv("JOINT_MODEL", raising=False)
    monkeypatch.setenv("JOINT_HOME", str(tmp_path / "joint-home"))
    monkeypatch.setattr(checkpoint, "SHIPPED_DEFAULT", tmp_path / "no-shipped-default")
    monkeypatch.setattr(checkpoint, "SHIPPED_FAST", tmp_path / "no-shipped-fast")
    return tmp_path


# --------------------------------------------------------------------------------------------
# a real ComfyUI server, a real browser
# --------------------------------------------------------------------------------------------


def unavailable(reason: str) -> None:
    """Skip a test that lacks an outside program - or fail it in CI (``JOINT_CI=1``), which must run it."""
    if os.environ.get("JOINT_CI", "") not in ("", "0"):
        pytest.fail(f"{reason} (JOINT_CI is set: CI installs this and must run the test)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def comfyui(tmp_path_factory):
    """One real ComfyUI server for the session, with this checkout as its ``joint`` node pack
    (tests/comfyui_server.py: which ComfyUI, where its folders are)."""
    import comfyui_server

    with comfyui_server.start(tmp_path_factory.mktemp("comfyui")) as server:
        yield server


CHROMIUM_ARGS = [   # as root (CI, sessions) without a sandbox; no background connections on a closed network
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]


@pytest.fixture(scope="session")
def chromium():
    """Headless Chromium (``$CHROMIUM``, else Debian's ``chromium`` on the PATH) driven by Playwright
    for Python. Playwright's own browser download is never used."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright for Python is not installed (pip install playwright)")
    exe = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        unavailable("no Chromium: install Debian's chromium package (apt-get install chromium) or set CHROMIUM")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory) -> Path:
    """Where the browser tests save their screenshots: ``$JOINT_SCREENSHOTS`` (the README's
    pictures in docs/img/ are copied from there), else a temporary folder."""
    out = Path(os.environ["JOINT_SCREENSHOTS"]) if os.environ.get("JOINT_SCREENSHOTS") \
        else tmp_path_factory.mktemp("screenshots")
    out.mkdir(parents=True, exist_ok=True)
    return out


def save_screenshot(page, path: Path, **kw) -> Path:
    """A PNG of a Playwright page (``kw``: its ``screenshot`` options), reduced to 256 colours so
    that the README's pictures stay small."""
    import io

    from PIL import Image

    img = Image.open(io.BytesIO(page.screenshot(**kw))).convert("RGB")
    img.quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """``item.failed_call``: whether the test body failed (browser fixtures then save a screenshot)."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.failed_call = report.failed


def pytest_terminal_summary(terminalreporter):
    """The fuzz suite's examples, time and memory per parser (when it ran)."""
    fuzzkit = __import__("sys").modules.get("fuzzkit")
    for line in (fuzzkit.summary_lines() if fuzzkit else []):
        terminalreporter.write_line(line)
