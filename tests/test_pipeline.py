import pytest
import torch

from joint_core import get_preset
from joint_core.config import TechnicalInputConfig
from joint_core.preprocess import Preprocessor
from joint_core.preprocess.pipeline import crop_offsets, resize_shorter


def _pre(preset="tiny-test", **tech):
    cfg = get_preset(preset).preprocess
    for k, v in tech.items():
        setattr(cfg.technical, k, v)
    return Preprocessor(cfg)


@pytest.mark.parametrize("preset,size", [("paper", 224), ("official", 224), ("tiny-test", 64)])
def test_shapes_for_presets(preset, size):
    pre = Preprocessor(get_preset(preset).preprocess)
    imgs = pre.prepare([torch.rand(3, 300, 400), torch.rand(3, 512, 512), torch.rand(3, 64, 50)])
    t, r = pre(imgs)
    assert t.shape == (3, 3, size, size) and r.shape == (3, 3, size, size)
    assert torch.isfinite(t).all() and torch.isfinite(r).all()


def test_mixed_sizes_equal_one_by_one():
    pre = _pre("official")
    imgs = pre.prepare([torch.rand(3, 120, 90), torch.rand(3, 64, 64), torch.rand(3, 120, 90)])
    t, r = pre(imgs)
    for i, im in enumerate(imgs):
        t1, r1 = pre([im])
        assert torch.equal(t1[0], t[i]) and torch.equal(r1[0], r[i])


def test_uint8_and_float_inputs_agree():
    u8 = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8)
    pre = _pre()
    a = pre(pre.prepare([u8]))
    b = pre(pre.prepare([u8.float() / 255]))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_fragments_keep_native_pixels():
    pre = _pre(sampling="fragments", grid=4, fragment=8, partition=False, resize=None, crop=32)
    img = torch.rand(3, 100, 80)
    t = pre.technical([img])[0]
    cfg = pre.config
    back = t * torch.tensor(cfg.std).view(3, 1, 1) + torch.tensor(cfg.mean).view(3, 1, 1)
    # cell (0, 0) spans rows 0..25, cols 0..20: its centred 8x8 fragment starts at (9, 6)
    torch.testing.assert_close(back[:, :8, :8], img[:, 9:17, 6:14], atol=1e-5, rtol=0)
    # last cell spans rows 75..100, cols 60..80
    torch.testing.assert_close(back[:, 24:, 24:], img[:, 84:92, 66:74], atol=1e-5, rtol=0)


def test_fragments_upscale_small_images():
    pre = _pre(sampling="fragments", grid=4, fragment=16, resize=None, crop=64)
    t = pre.technical(pre.prepare([torch.rand(3, 20, 30)]))
    assert t.shape == (1, 3, 64, 64)


def test_training_randomness_is_seeded():
    pre = _pre(sampling="fragments", grid=4, fragment=16, resize=None, crop=64)
    imgs = pre.prepare([torch.rand(3, 200, 200) for _ in range(3)])
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    a = pre.technical(imgs, train=True, generator=g(1))
    b = pre.technical(imgs, train=True, generator=g(1))
    c = pre.technical(imgs, train=True, generator=g(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    e1, e2 = pre.technical(imgs), pre.technical(imgs)
    assert torch.equal(e1, e2)
    r1 = pre.rationality(imgs, train=True, generator=g(1))
    r2 = pre.rationality(imgs, train=True, generator=g(1))
    assert torch.equal(r1, r2)


def test_rationality_pair_shares_the_crop():
    cfg = get_preset("tiny-test").preprocess
    cfg.rationality.resize = 96
    pre = Preprocessor(cfg)
    img = torch.zeros(3, 96, 160)
    img[:, :, :80] = 1.0                                   # left half white
    x, lfm = pre.rationality_pair([img], train=True, generator=torch.Generator().manual_seed(3))
    assert x.shape == lfm.shape == (1, 3, 64, 64)
    # the low-frequency map of a step edge is a step edge at the same column
    col_x = (x[0, 0] > x[0, 0].mean()).float().mean(0)
    col_l = (lfm[0, 0] > lfm[0, 0].mean()).float().mean(0)
    assert torch.equal(col_x, col_l)


def test_official_rationality_sees_the_low_frequency_map():
    pre = Preprocessor(get_preset("official").preprocess)
    img = pre.prepare([torch.rand(3, 96, 96)])
    r = pre.rationality(img)
    img_only = Preprocessor(get_preset("paper").preprocess).rationality(img)
    assert r.shape == img_only.shape
    # noise is smoothed: far less pixel-to-pixel variation than the noise image itself
    tv = lambda t: (t[..., 1:, :] - t[..., :-1, :]).abs().mean()  # noqa: E731
    assert tv(r) < tv(img_only)


def test_resize_shorter_and_crops():
    x = torch.rand(2, 3, 100, 200)
    assert resize_shorter(x, 50).shape[-2:] == (50, 100)
    assert resize_shorter(x.transpose(-1, -2), 50).shape[-2:] == (100, 50)
    off = crop_offsets(100, 200, 64, 2, False, None)
    assert off.tolist() == [[18, 68], [18, 68]]


def test_technical_config_validation_hint():
    with pytest.raises(Exception, match="multiple of grid"):
        cfg = get_preset("tiny-test")
        cfg.preprocess.technical = TechnicalInputConfig(size=65, grid=4, resize=None, crop=64)
        cfg.validate()


def test_native_rationality_crops_keep_pixels():
    cfg = get_preset("tiny-test").preprocess
    cfg.rationality.native = True
    pre = Preprocessor(cfg)
    img = torch.rand(3, 90, 120)
    x = pre.rationality([img])[0]
    back = x * torch.tensor(cfg.std).view(3, 1, 1) + torch.tensor(cfg.mean).view(3, 1, 1)
    top, left = round((90 - 64) / 2), round((120 - 64) / 2)
    torch.testing.assert_close(back, img[:, top:top + 64, left:left + 64], atol=1e-5, rtol=0)
    small = pre.rationality([torch.rand(3, 40, 50)])     # smaller than the crop: padded
    assert small.shape == (1, 3, 64, 64)


def test_crops_of_images_smaller_than_the_crop_are_padded():
    from joint_core.preprocess.pipeline import crop

    x = torch.ones(2, 3, 40, 100)
    for train in (False, True):
        off = crop_offsets(40, 100, 64, 2, train, torch.Generator().manual_seed(0))
        assert (off[:, 0] == 0).all() and (off[:, 1] >= 0).all() and (off[:, 1] <= 36).all()
        out = crop(x, 64, off)
        assert out.shape == (2, 3, 64, 64)
        assert out[:, :, 12:52].min() == 1 and out[:, :, :12].max() == 0   # centred padding


def test_each_branch_can_have_its_own_normalisation():
    """A CLIP technical branch next to an ImageNet rationality branch: each input is normalised
    with its branch's mean/std; a branch without its own uses the model-wide ones; configs
    written before the per-branch fields existed load unchanged."""
    import json

    from joint_core.config import JointConfig, PreprocessConfig

    clip_mean, clip_std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    cfg = get_preset("tiny-test")
    cfg.preprocess.technical.mean, cfg.preprocess.technical.std = clip_mean, clip_std
    pre = Preprocessor(cfg.preprocess)
    img = pre.prepare([torch.rand(3, 64, 64)])
    t, r = pre(img)
    plain = Preprocessor(get_preset("tiny-test").preprocess)
    t0, r0 = plain(img)
    m0, s0 = torch.tensor(PreprocessConfig().mean).view(3, 1, 1), torch.tensor(PreprocessConfig().std).view(3, 1, 1)
    m1, s1 = torch.tensor(clip_mean).view(3, 1, 1), torch.tensor(clip_std).view(3, 1, 1)
    torch.testing.assert_close(t[0], (t0[0] * s0 + m0 - m1) / s1, atol=1e-5, rtol=1e-5)
    assert torch.equal(r, r0)
    assert cfg.preprocess.normalization("technical") == (clip_mean, clip_std)
    assert cfg.preprocess.normalization("rationality") == (PreprocessConfig().mean, PreprocessConfig().std)
    back = JointConfig.from_json(cfg.to_json())
    assert back.preprocess.technical.mean == clip_mean and back.preprocess.rationality.mean is None
    old = json.loads(get_preset("tiny-test").to_json())
    for branch in ("technical", "rationality"):
        for key in ("mean", "std"):
            del old["preprocess"][branch][key]
    assert JointConfig.from_dict(old).preprocess.normalization("technical") == (PreprocessConfig().mean,
                                                                                  PreprocessConfig().std)
    cfg.preprocess.rationality.std = (0.2, 0.0, 0.2)
    with pytest.raises(Exception, match="preprocess.rationality.std must be positive"):
        cfg.validate()
