"""Opt-in int8 of the default's ViT: ``joint_core.int8``, ``NaturalnessScorer(int8=True)``,
``joint score --int8``, on the shipped default and scikit-image photographs."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from scipy.stats import spearmanr

from joint_core import NaturalnessScorer
from joint_core.checkpoint import load_model, shipped_models
from joint_core.cli import main
from joint_core.int8 import calibration_frames
from joint_core.stream import model_description
from joint_core.stream.ray_engine import actor_model


def _damaged(img: np.ndarray) -> list:
    pil = Image.fromarray(img)
    noisy = img.astype(np.float32) + np.random.default_rng(0).normal(0, 30, img.shape)
    return [np.asarray(pil.filter(ImageFilter.GaussianBlur(3))), np.clip(noisy, 0, 255).astype(np.uint8)]


@pytest.fixture(scope="module")
def images(photos):
    """Four photographs, each followed by its blurred and its noisy copy."""
    return [x for img in photos.values() for x in [img] + _damaged(img)]


@pytest.fixture(scope="module")
def scored(images):
    out = {}
    for int8 in (False, True):
        scorer = NaturalnessScorer.from_pretrained("default", device="cpu", int8=int8)
        out[int8] = (scorer, scorer.score(images, progress=False))
    return out


def test_int8_stays_close_to_float_and_keeps_the_order(scored):
    (_, f), (q, i) = scored[False], scored[True]
    assert q.int8 and q.info()["dtype"] == "float32+int8"
    for axis in ("technical", "rationality", "naturalness"):
        a, b = getattr(f, axis).numpy(), getattr(i, axis).numpy()
        assert np.abs(a - b).max() > 1e-4          # the layers really are int8
        assert np.abs(a - b).max() < 0.3, axis     # measured up to about 0.1-0.2
        assert spearmanr(a, b)[0] > 0.95, axis
    n = i.naturalness.numpy().reshape(4, 3)        # clean, blurred, noisy for each photo
    assert (n[:, :1] > n[:, 1:]).all()             # every damaged copy still below its clean photo


def test_int8_is_deterministic_and_batch_invariant(scored, images):
    q, i = scored[True]
    again = NaturalnessScorer.from_pretrained("default", device="cpu", int8=True)
    assert torch.equal(again.score(images, progress=False).naturalness, i.naturalness)
    alone = q.score(images[4:5], progress=False).naturalness
    assert torch.equal(alone, i.naturalness[4:5])


def test_calibration_frames_are_seeded():
    a, b, c = calibration_frames(2, 64, seed=0), calibration_frames(2, 64, seed=0), calibration_frames(2, 64, seed=1)
    assert [x.shape for x in a] == [(3, 64, 64)] * 2 and a[0].dtype == torch.uint8
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[0], a[1])
    assert a[0].float().std() > 10                 # not a flat frame


def test_int8_refuses_what_it_cannot_do(scored, tmp_path):
    with pytest.raises(ValueError, match="vision transformer.*efficientnet_lite0"):
        NaturalnessScorer.from_pretrained("fast", device="cpu", int8=True)
    with pytest.raises(ValueError, match="CPU in float32"):
        NaturalnessScorer.from_pretrained("default", device="cpu", dtype="bfloat16", int8=True)
    q, _ = scored[True]
    with pytest.raises(ValueError, match="stays on CPU in float32"):
        q.to(dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="cannot be saved"):
        q.save_pretrained(tmp_path / "int8")
    with pytest.raises(ValueError, match="cannot run on Ray actors"):
        actor_model(q, ray=None)


def test_job_records_keep_int8_and_float_apart(scored, photos, tmp_path, capsys):
    f, _ = scored[False]
    q, _ = scored[True]
    assert model_description(q)["sha256"] == model_description(f)["sha256"]     # the same model ...
    assert (model_description(q)["dtype"], model_description(f)["dtype"]) == ("float32+int8", "float32")
    # ... also when built in memory (its packed int8 layers cannot be hashed: the float weights were)
    net = load_model(shipped_models()["default"])
    mem = NaturalnessScorer(net, device="cpu", int8=True)
    assert isinstance(net.technical.backbone.blocks[0].attn.qkv, torch.nn.Linear)   # the caller's model stays float
    assert mem.info()["parameters"] == net.num_parameters()
    assert model_description(mem)["sha256"] == model_description(NaturalnessScorer(load_model(
        shipped_models()["default"]), device="cpu"))["sha256"]

    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("astronaut", "coffee"):
        Image.fromarray(photos[name]).save(folder / f"{name}.png")
    out = tmp_path / "scores.csv"
    assert main(["score", str(folder), "--int8", "--device", "cpu", "--out", str(out), "-q"]) == 0
    assert len(out.read_text().splitlines()) == 3
    capsys.readouterr()
    assert main(["score", str(folder), "--device", "cpu", "--out", str(out), "--resume", "-q"]) == 2
    assert "float32+int8" in capsys.readouterr().err
    assert main(["score", str(folder), "--int8", "--engine", "ray", "-q"]) == 2
    assert "--int8 runs with --engine local only" in capsys.readouterr().err
    assert main(["score", str(folder), "--int8", "--model", "fast", "-q"]) == 2
    assert "vision transformer" in capsys.readouterr().err
