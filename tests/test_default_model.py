"""The default model that ships inside the package (joint_core/weights/default)."""

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from joint_core import load_model
from joint_core.checkpoint import MODEL_CARD_NAME, SHIPPED_DEFAULT, WEIGHTS_NAME, read_weights

pytestmark = pytest.mark.skipif(not (SHIPPED_DEFAULT / WEIGHTS_NAME).is_file(),
                                reason="this checkout ships no default model")

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")


def test_shipped_files_load_strictly_and_fit_the_size_budget():
    """The package default may be up to 100 MB (issue 13: only because the CLIP technical branch
    beats the best model within 30 MB by more than 0.03 SRCC on AGIQA-3K, docs/default-model.md)."""
    _, cfg = check_shipped_folder(SHIPPED_DEFAULT, max_bytes=100 * 10**6)
    assert cfg["score_range"] == [1.0, 5.0]


def check_shipped_folder(folder, max_bytes: int):
    """A shipped model folder: config, weights and card present, within ``max_bytes``, the
    weights' checksum verified and every key loaded strictly. Returns (model, config dict)."""
    files = {p.name for p in folder.iterdir()}
    assert {"config.json", WEIGHTS_NAME, MODEL_CARD_NAME} <= files
    assert sum(p.stat().st_size for p in folder.iterdir()) <= max_bytes
    state = read_weights(folder / WEIGHTS_NAME)                 # checksum verified
    model = load_model(folder)                                  # strict: every key, every shape
    assert set(model.state_dict()) == set(state)
    return model, json.loads((folder / "config.json").read_text())


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


def _broken_and_clean():
    """Clean photographs and clearly broken frames (what a failed or damaged generation looks
    like), all made here: scikit-image's sample photos, flat and black frames (a black frame is
    what Stable Diffusion's safety checker returns), pure noise, and photos destroyed by heavy
    blur, heavy noise, block garbling and extreme JPEG."""
    from conftest import photo

    clean = {n: photo(n) for n in ("astronaut", "coffee", "chelsea", "rocket")}
    rng = np.random.default_rng(7)

    def jpeg(img, q):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=q)
        return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))

    def garble(img, block=32):
        h, w = (img.shape[0] // block) * block, (img.shape[1] // block) * block
        tiles = img[:h, :w].reshape(h // block, block, w // block, block, 3).swapaxes(1, 2).reshape(-1, block, block, 3)
        tiles = tiles[rng.permutation(len(tiles))]
        return tiles.reshape(h // block, w // block, block, block, 3).swapaxes(1, 2).reshape(h, w, 3)

    broken = {
        "flat grey": np.full((512, 512, 3), 128, np.uint8),
        "black frame": np.zeros((512, 512, 3), np.uint8),
        "pure noise": rng.integers(0, 256, (512, 512, 3), dtype=np.uint8),
        "blurred to nothing": np.asarray(Image.fromarray(clean["astronaut"]).filter(ImageFilter.GaussianBlur(16))),
        "drowned in noise": np.clip(clean["coffee"] + rng.normal(0, 90, clean["coffee"].shape), 0,
                                    255).astype(np.uint8),
        "garbled blocks": garble(clean["chelsea"]),
        "JPEG quality 1": jpeg(clean["rocket"], 1),
    }
    return clean, broken


@pytest.mark.filterwarnings("ignore::joint_core.preprocess.images.FlaggedImageWarning")   # flat, black, noise
def test_the_default_ranking_puts_broken_frames_below_clean_photos(default_scorer):
    """The key every face ranks by when the user names none (JointConfig.ranking): each clearly
    broken frame must rank below each clean photograph."""
    clean, broken = _broken_and_clean()
    res = default_scorer.score(list(clean.values()) + list(broken.values()))
    key = res.scores(None)                       # the model's default ranking
    good, bad = key[: len(clean)], key[len(clean):]
    worst_clean = float(good.min())
    wrong = {name: round(float(v), 3) for name, v in zip(broken, bad) if float(v) >= worst_clean}
    assert not wrong, (f"ranked at or above the worst clean photo ({worst_clean:.3f}) by "
                       f"{default_scorer.config.ranking}: {wrong}")


@pytest.mark.filterwarnings("ignore::joint_core.preprocess.images.FlaggedImageWarning")   # flat, black, noise
def test_degenerate_frames_score_below_photos_on_the_technical_axis_and_the_ranking(default_scorer):
    """Flat grey, black and pure-noise frames land below every clean photo on the technical
    axis and on the default ranking (the first default scored them 4.9-5.0 on naturalness, above
    the photos' 3.6-4.3)."""
    clean, broken = _broken_and_clean()
    frames = [broken[k] for k in ("flat grey", "black frame", "pure noise")]
    res = default_scorer.score(list(clean.values()) + frames)
    for key in ("technical", None):
        s = res.scores(key)
        assert float(s[len(clean):].max()) < float(s[: len(clean)].min()), (key, s.tolist())


def test_naturalness_falls_for_every_degraded_copy_and_broken_frame(default_scorer):
    """Issue 21: the score people read, naturalness (the default ranking since v3), puts every
    blurred, noisy or JPEG-compressed copy of a photograph below the photograph itself - even
    JPEG quality 80 - and every broken frame below every clean photograph (v2 scored a blurred
    astronaut 3.68 against 3.50 for the clean one, and broken frames 4.3-4.8 above the photos)."""
    from conftest import photo

    assert default_scorer.config.ranking == {"naturalness": 1.0}
    rng = np.random.default_rng(0)

    def jpeg(img, q):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=q)
        return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))

    for name in PHOTOS:
        img = photo(name)
        if img.ndim == 2:
            img = np.stack([img] * 3, -1)
        pil = Image.fromarray(img)
        copies = {
            "blur r2": np.asarray(pil.filter(ImageFilter.GaussianBlur(radius=2))),
            "noise sigma 15": np.clip(img + rng.normal(0, 15, img.shape), 0, 255).astype(np.uint8),
            "JPEG q80": jpeg(img, 80),
            "JPEG q30": jpeg(img, 30),
        }
        n = default_scorer.score([img] + list(copies.values())).naturalness.tolist()
        wrong = {k: round(v, 3) for k, v in zip(copies, n[1:]) if v >= n[0]}
        assert not wrong, (name, round(n[0], 3), wrong)
    clean, broken = _broken_and_clean()
    with pytest.warns(Warning):      # flat, black and noise frames are flagged as well
        res = default_scorer.score(list(clean.values()) + list(broken.values()))
    nat = res.naturalness.tolist()
    worst_clean = min(nat[: len(clean)])
    wrong = {k: round(v, 3) for k, v in zip(broken, nat[len(clean):]) if v >= worst_clean}
    assert not wrong, (round(worst_clean, 3), wrong)
