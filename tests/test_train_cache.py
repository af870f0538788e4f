"""The training image cache: decoded once, capped like the scorer caps, keyed on what shaped it."""

import numpy as np
import pytest
import torch
from PIL import Image

from joint_core.preprocess.images import ImageInputError
from joint_core.preprocess.pipeline import cap_longer
from train.cache import ImageCache
from train.data import prepare_data
from train.recipe import recipe_from_dict
from train.synthetic import GROUP_RULE, make_synthetic_set


@pytest.fixture()
def images(tmp_path):
    rng = np.random.default_rng(0)
    paths = {}
    for name, (h, w) in {"wide": (60, 150), "small": (40, 30)}.items():
        p = tmp_path / f"{name}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(p)
        paths[name] = str(p)
    return paths


def _expected(path, max_side, mode):
    x = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 255
    return torch.round(cap_longer(x[None], max_side, mode)[0] * 255).clamp(0, 255).to(torch.uint8)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_cache_caps_the_longer_side_with_the_models_interpolation(images, tmp_path, mode):
    cache = ImageCache.build(sorted(images.items()), max_side=100, root=tmp_path / "c", progress=False,
                             interpolation=mode)
    wide, small = cache["wide"], cache["small"]
    assert wide.dtype == torch.uint8 and tuple(wide.shape) == (3, 40, 100)
    assert tuple(small.shape) == (3, 40, 30)  # never upscaled
    assert torch.equal(wide, _expected(images["wide"], 100, mode))
    assert torch.equal(small, _expected(images["small"], 100, mode))


def test_interpolation_is_part_of_the_cache_key(images, tmp_path):
    items = sorted(images.items())
    a = ImageCache.build(items, max_side=100, root=tmp_path, progress=False)
    again = ImageCache.build(items, max_side=100, root=tmp_path, progress=False)
    b = ImageCache.build(items, max_side=100, root=tmp_path, progress=False, interpolation="bicubic")
    assert again.folder == a.folder and b.folder != a.folder
    assert not torch.equal(a["wide"], b["wide"])


def test_undecodable_image_is_named(images, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageInputError, match="broken.png"):
        ImageCache.build(sorted(images.items()) + [("broken", str(bad))], max_side=100,
                         root=tmp_path / "c", progress=False)


def test_training_data_is_cached_with_the_recipes_interpolation(tmp_path):
    labels, folder = make_synthetic_set(tmp_path / "data", scenes=5, per_scene=2, size=64, seed=0)
    recipe = recipe_from_dict({
        "name": "bicubic",
        "model": {"preset": "tiny-test", "init": {"technical": "none", "rationality": "none"},
                  "config": {"preprocess": {"interpolation": "bicubic"}}},
        "data": [{"name": "synth", "kind": "agin",
                  "args": {"labels": str(labels), "image_dir": str(folder), "group_rule": GROUP_RULE},
                  "rescale": None, "split": {"kind": "random", "ratios": [0.6, 0.2, 0.2], "n_splits": 1}}],
        "train": {"cache_max_side": 48, "device": "cpu"},
    })
    data = prepare_data(recipe, 0, cache_root=tmp_path / "cache", progress=False)
    item = data.items("train")[0]
    assert torch.equal(data.cache[item.key], _expected(item.sample.path, 48, "bicubic"))


def test_cache_decodes_large_files_as_the_scorer_does(tmp_path):
    """A large JPEG is shrunk while it is read (the scorer's ImageLimits), so the cached copy is
    the pixels the scorer would see, not a full decode resized afterwards."""
    from joint_core.preprocess.images import ImageLimits, load_image
    from train.cache import decode

    rng = np.random.default_rng(0)
    big = np.kron(rng.integers(0, 255, (60, 90, 3), dtype=np.uint8), np.ones((40, 40, 1), np.uint8))
    path = tmp_path / "big.jpg"
    Image.fromarray(big).save(path, quality=90)          # 3600 x 2400
    cached = decode(str(path), 512)
    assert cached.shape == (3, 341, 512) and cached.dtype == np.uint8
    scorer_view = load_image(path, ImageLimits(max_side=512))
    assert scorer_view.shape[-1] < 3600                   # shrunk on read
    expected = cap_longer(scorer_view.float()[None] / 255.0, 512, "bilinear")[0]
    assert np.array_equal(cached, (expected * 255).round().clamp(0, 255).to(torch.uint8).numpy())
