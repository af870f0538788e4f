"""Compatibility with the authors' JOINT_2024.pth and their test_single_image.py pipeline.

A synthetic checkpoint with exactly the official key names and shapes (torchvision swin_t with
its head removed, resnet50 with fc, two 2-layer heads) is built from random weights, converted
with ``joint convert``, and the converted model must give the reference model's outputs.
"""

import numpy as np
import pytest
import torch
from torch import nn

from joint_core import CheckpointError, NaturalnessScorer, get_preset, load_model
from joint_core.official import map_official_state
from joint_core.cli import main as joint_main
from joint_core.preprocess import Preprocessor

torchvision = pytest.importorskip("torchvision")


class OfficialLayout(nn.Module):
    """The authors' network, in torchvision's layout (written from the checkpoint's key names)."""

    def __init__(self):
        super().__init__()
        self.technical_feature_extraction = torchvision.models.swin_t()
        self.technical_feature_extraction.head = nn.Identity()
        self.rationality_feature_extraction = torchvision.models.resnet50()
        self.quality_T = nn.Sequential(nn.Linear(768, 128), nn.Linear(128, 1))
        self.quality_R = nn.Sequential(nn.Linear(1000, 128), nn.Linear(128, 1))

    def forward(self, x_t, x_r):
        t = self.quality_T(self.technical_feature_extraction(x_t)).squeeze(1)
        r = self.quality_R(self.rationality_feature_extraction(x_r)).squeeze(1)
        return t, r, 0.145 * t + 0.769 * r


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    torch.manual_seed(0)
    ref = OfficialLayout().eval()
    with torch.no_grad():  # make every float tensor non-trivial, BN statistics included
        for name, t in ref.state_dict().items():
            if t.is_floating_point():
                t.add_(torch.randn_like(t) * 0.02)
                if name.endswith("running_var"):
                    t.abs_().add_(0.5)
    path = tmp_path_factory.mktemp("official") / "JOINT_2024.pth"
    state = {k: v.clone() for k, v in ref.state_dict().items()}
    torch.save(state, path)
    return ref, path, state


def test_synthetic_checkpoint_has_the_official_layout(official):
    _, _, state = official
    assert len(state) == 511
    n_params = sum(v.numel() for k, v in state.items()
                   if not k.endswith(("num_batches_tracked", "running_mean", "running_var",
                                      "relative_position_index")))
    assert n_params == 53_303_204
    assert state["technical_feature_extraction.features.0.0.weight"].shape == (96, 3, 4, 4)
    assert state["quality_R.0.weight"].shape == (128, 1000)


def test_converted_model_reproduces_the_reference(official, tmp_path):
    ref, path, _ = official
    out = tmp_path / "converted"
    assert joint_main(["convert", str(path), str(out)]) == 0
    model = load_model(out)
    assert model.config.name == "joint-official"
    torch.manual_seed(1)
    x_t, x_r = torch.randn(2, 3, 224, 224), torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        t, r, n = ref(x_t, x_r)
        ours = model(x_t, x_r)
    torch.testing.assert_close(ours.technical, t, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.rationality, r, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.naturalness, n, atol=1e-4, rtol=1e-4)
    # --force over an earlier model folder: its stale card must not survive to describe this one
    (out / "MODEL_CARD.md").write_text("# some other model")
    assert joint_main(["convert", str(path), str(out)]) == 2
    assert joint_main(["convert", str(path), str(out), "--force"]) == 0
    assert not (out / "MODEL_CARD.md").exists() and load_model(out).config.name == "joint-official"
    # the scorer loads it like any model
    scorer = NaturalnessScorer.from_pretrained(out, device="cpu")
    res = scorer.score(torch.rand(1, 3, 96, 128))
    assert torch.isfinite(res.naturalness).all()


def test_converter_refuses_foreign_and_broken_checkpoints(official, tmp_path):
    _, _, state = official
    bad = dict(state)
    bad["something_else.weight"] = torch.zeros(1)
    torch.save(bad, tmp_path / "foreign.pth")
    assert joint_main(["convert", str(tmp_path / "foreign.pth"), str(tmp_path / "o1")]) == 2
    missing = {k: v for k, v in state.items() if k != "quality_T.1.bias"}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="missing 1"):
        from joint_core import convert_official
        convert_official(tmp_path / "missing.pth", tmp_path / "o2")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    assert joint_main(["convert", str(tmp_path / "junk.pth"), str(tmp_path / "o3")]) == 2


def test_module_prefix_from_data_parallel_is_accepted(official):
    _, _, state = official
    wrapped = {"module." + k: v for k, v in list(state.items())[:5]}
    mapped = map_official_state(wrapped)
    assert all(k.startswith(("technical.", "rationality.")) for k in mapped)


def test_calibration_npy_is_stored(official, tmp_path):
    _, path, _ = official
    np.save(tmp_path / "JOINT_2024.npy", np.array([8.1866, 1.0193, 4.3916, 1.3753]))
    out = tmp_path / "with-cal"
    assert joint_main(["convert", str(path), str(out), "--calibration",
                       str(tmp_path / "JOINT_2024.npy")]) == 0
    cfg = load_model(out).config
    assert cfg.calibration.params == (8.1866, 1.0193, 4.3916, 1.3753) and cfg.calibration.input == "sum"


# --------------------------------------------------------------------------------------------
# the official preprocessing, rebuilt from PIL + torchvision transforms as the authors ran it
# --------------------------------------------------------------------------------------------


def _official_transform():
    from torchvision import transforms

    return transforms.Compose([
        transforms.Resize(384), transforms.CenterCrop(224), transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])


def test_official_preprocessing_matches_a_pil_pipeline():
    from PIL import Image

    from conftest import photo
    from joint_core.preprocess.partition import apply_permutation, partition_permutation
    from test_lowfreq import reference_map

    img = photo("astronaut")                     # 512x512 like the AGIN images
    cfg = get_preset("official").preprocess
    pre = Preprocessor(cfg)
    x = pre.prepare([torch.from_numpy(img).permute(2, 0, 1)])
    ours_t, ours_r = pre(x)

    # technical: 224 resize -> the same (seeded) partition -> Resize(384)/CenterCrop(224)
    small = np.asarray(Image.fromarray(img).resize((224, 224), Image.BILINEAR))
    perm = partition_permutation(torch.zeros((1, 49), dtype=torch.bool), pre._priorities)
    shuffled = apply_permutation(torch.from_numpy(small.copy()).permute(2, 0, 1)[None].float(), perm, 7)
    part = Image.fromarray(shuffled[0].permute(1, 2, 0).numpy().astype(np.uint8))
    ref_t = _official_transform()(part)
    # rationality: low-frequency map of the full-resolution image -> Resize(384)/CenterCrop(224)
    ref_r = _official_transform()(Image.fromarray(reference_map(img)))

    # one 8-bit level is 1/255/0.225 ~ 0.017 after normalisation: PIL and torch resample
    # slightly differently, so most pixels agree to a level and almost all to three
    for ours, ref in ((ours_t[0], ref_t), (ours_r[0], ref_r)):
        err = (ours - ref).abs()
        assert float(err.mean()) < 0.01
        assert float((err < 0.06).float().mean()) > 0.99
