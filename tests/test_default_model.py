"""The default model that ships inside the package (joint_core/weights/default)."""

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from joint_core import NaturalnessScorer, load_model
from joint_core.checkpoint import MODEL_CARD_NAME, SHIPPED_DEFAULT, WEIGHTS_NAME, read_weights

pytestmark = pytest.mark.skipif(not (SHIPPED_DEFAULT / WEIGHTS_NAME).is_file(),
                                reason="this checkout ships no default model")

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")


@pytest.fixture(scope="module")
def default_scorer():
    return NaturalnessScorer.from_pretrained("default", device="cpu")


def test_shipped_files_load_strictly_and_are_small():
    files = {p.name for p in SHIPPED_DEFAULT.iterdir()}
    assert {"config.json", WEIGHTS_NAME, MODEL_CARD_NAME} <= files
    assert (SHIPPED_DEFAULT / WEIGHTS_NAME).stat().st_size <= 30 * 2**20
    state = read_weights(SHIPPED_DEFAULT / WEIGHTS_NAME)       # checksum verified
    model = load_model(SHIPPED_DEFAULT)                         # strict: every key, every shape
    assert set(model.state_dict()) == set(state)
    cfg = json.loads((SHIPPED_DEFAULT / "config.json").read_text())
    assert cfg["score_range"] == [1.0, 5.0]


def test_is_what_the_resolution_order_falls_back_to(isolated_models, monkeypatch):
    from joint_core import checkpoint

    monkeypatch.setattr(checkpoint, "SHIPPED_DEFAULT", SHIPPED_DEFAULT)
    r = checkpoint.resolve_model()
    assert r.origin == "shipped default" and r.path == SHIPPED_DEFAULT


def _damaged(img: np.ndarray):
    pil = Image.fromarray(img)
    rng = np.random.default_rng(0)
    noisy = np.clip(img.astype(np.float32) + rng.normal(0, 40, img.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=5)
    return {
        "blur": np.asarray(pil.filter(ImageFilter.GaussianBlur(radius=6))),
        "noise": noisy,
        "jpeg q5": np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")),
    }


def test_damaged_copies_score_lower_on_the_technical_axis(default_scorer):
    from conftest import photo

    for name in PHOTOS:
        img = photo(name)
        if img.ndim == 2:
            img = np.stack([img] * 3, -1)
        damaged = _damaged(img)
        res = default_scorer.score([img] + list(damaged.values()))
        clean = float(res.technical[0])
        for i, kind in enumerate(damaged, 1):
            assert float(res.technical[i]) < clean, (name, kind, clean, float(res.technical[i]))


def test_scores_live_on_the_documented_scale(default_scorer):
    from conftest import photo

    res = default_scorer.score([photo(n) for n in PHOTOS])
    for axis in ("technical", "rationality", "naturalness"):
        v = getattr(res, axis)
        assert torch.isfinite(v).all()
        assert float(v.min()) > 0.0 and float(v.max()) < 6.0, (axis, v)


def test_every_face_uses_it_when_no_model_is_named(isolated_models, monkeypatch, default_scorer):
    from comfyui_joint import nodes, host
    from diffusers_hook._common import resolve_scorer
    from joint_core import checkpoint

    monkeypatch.setattr(checkpoint, "SHIPPED_DEFAULT", SHIPPED_DEFAULT)
    img = np.array(Image.new("RGB", (96, 80), (120, 160, 90)))
    want = float(default_scorer.score(img).naturalness[0])
    hook = resolve_scorer(None, device="cpu")                       # diffusers hook, no model given
    assert hook.source.origin == "shipped default"
    assert float(hook.score(img).naturalness[0]) == want
    choice = host.model_choices()[0]                             # ComfyUI loader lists it first
    assert choice == "default (shipped)"
    (model,) = nodes.LoadNaturalnessModel().load(choice, "cpu", "fp32")
    comfy_image = torch.from_numpy(img).float()[None] / 255          # [B, H, W, 3]
    res = model.score([comfy_image.permute(0, 3, 1, 2)])
    assert float(res.naturalness[0]) == pytest.approx(want, abs=1e-5)
