"""The TorchScript localizer loader, tested with tiny TorchScript modules scripted here."""

import pytest
import torch
from torch import nn

from joint_core import NaturalnessScorer, get_preset
from joint_core.preprocess import LocalizerError, NoLocalizer, Preprocessor, TorchScriptLocalizer, build_localizer


class RedIsArtifact(nn.Module):
    """2-class logits: class 1 wherever the (normalised) red channel is high."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red = x[:, 0:1]
        return torch.cat([-red, red], 1)


class ClassMap(nn.Module):
    """An argmax map [1, 1, H, W] at a quarter of the input resolution, like fixed-shape exports."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red = x[:, 0:1, ::4, ::4]
        return (red > 0).long()  # novermin (a tensor method, not Python 2 long)


def _save(module: nn.Module, path):
    torch.jit.script(module).save(str(path))
    return path


def _red_square_image(size=64, box=(0, 16, 0, 16)):
    x = torch.zeros((1, 3, size, size))
    top, bottom, left, right = box
    x[:, 0, top:bottom, left:right] = 1.0
    return x


@pytest.mark.parametrize("module", [RedIsArtifact(), ClassMap()])
def test_torchscript_masks_follow_the_module(tmp_path, module):
    loc = TorchScriptLocalizer(_save(module, tmp_path / "end2end.pt"), input_size=32)
    img = _red_square_image(64, (8, 24, 40, 56))
    mask = loc(img)
    assert mask.shape == (1, 64, 64) and mask.dtype == torch.bool
    assert mask[0, 12:20, 44:52].all()
    assert not mask[0, 40:, :32].any()


def test_artifact_patches_stay_in_place_in_the_technical_input(tmp_path):
    cfg = get_preset("tiny-test").preprocess          # 64x64, 4x4 grid of 16px patches
    cfg.technical.resize = None
    loc = TorchScriptLocalizer(_save(RedIsArtifact(), tmp_path / "end2end.pt"), input_size=64)
    img = torch.rand(3, 64, 64) * 0.2
    img[0, 0:16, 16:32] = 1.0                         # cell (0, 1) holds an "artifact"
    with_loc = Preprocessor(cfg, loc).technical([img])
    without = Preprocessor(cfg, NoLocalizer()).technical([img])
    mean = torch.tensor(cfg.mean).view(3, 1, 1)
    std = torch.tensor(cfg.std).view(3, 1, 1)
    back = with_loc[0] * std + mean
    torch.testing.assert_close(back[:, 0:16, 16:32], img[:, 0:16, 16:32], atol=1e-5, rtol=0)
    back2 = without[0] * std + mean
    assert not torch.allclose(back2[:, 0:16, 16:32], img[:, 0:16, 16:32], atol=1e-3)


def test_scorer_accepts_a_localizer_path(tmp_path, tiny_model_dir):
    path = _save(RedIsArtifact(), tmp_path / "end2end.pt")
    scorer = NaturalnessScorer.from_pretrained(tiny_model_dir, device="cpu", localizer=str(path))
    assert isinstance(scorer.localizer, TorchScriptLocalizer)
    res = scorer.score(torch.rand(2, 3, 64, 64))
    assert torch.isfinite(res.naturalness).all()


def test_bad_localizer_files(tmp_path):
    with pytest.raises(LocalizerError, match="no such file"):
        TorchScriptLocalizer(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"garbage")
    with pytest.raises(LocalizerError, match="not a TorchScript file"):
        TorchScriptLocalizer(junk)

    class Bad(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.sum()

    loc = TorchScriptLocalizer(_save(Bad(), tmp_path / "bad.pt"), input_size=8)
    with pytest.raises(LocalizerError, match="not a class map"):
        loc(torch.rand(1, 3, 8, 8))


def test_build_localizer():
    assert isinstance(build_localizer(None), NoLocalizer)
    assert isinstance(build_localizer("none"), NoLocalizer)
    loc = NoLocalizer()
    assert build_localizer(loc) is loc
    with pytest.raises(TypeError, match="localizer must be"):
        build_localizer(3)
    assert not NoLocalizer()(torch.rand(2, 3, 5, 6)).any()
