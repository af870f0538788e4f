import pytest
import torch

from joint_core import CalibrationConfig, JointModel, get_preset, logistic4


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return JointModel(get_preset("tiny-test")).eval()


def test_branch_outputs_and_stage_features(tiny):
    x = torch.rand(2, 3, 64, 64)
    out = tiny(x, x, return_features=True)
    assert out.technical.shape == out.rationality.shape == out.naturalness.shape == (2,)
    assert out.rationality_embedding.shape == (2, tiny.rationality.feature_dim)
    stages = out.rationality_stages
    assert len(stages) == 5                     # ResNet: stem + 4 stages, as paper eq. 3 needs
    assert [s.shape[1] for s in stages] == [32, 32, 48, 192, 96]
    emb, st = tiny.rationality_features(x)
    torch.testing.assert_close(emb, out.rationality_embedding)


def test_paper_resnet50_has_five_stages():
    cfg = get_preset("paper")
    model = JointModel(cfg).eval()
    with torch.inference_mode():
        emb, stages = model.rationality_features(torch.rand(1, 3, 224, 224))
    assert emb.shape == (1, 2048)
    assert [s.shape[1] for s in stages] == [64, 256, 512, 1024, 2048]
    assert model.technical.feature_dim == 768


def test_fusion_weights_and_bias(tiny):
    t = torch.tensor([1.0, 2.0, 5.0])
    r = torch.tensor([3.0, 1.0, 4.0])
    torch.testing.assert_close(tiny.fuse(t, r), 0.145 * t + 0.769 * r)
    cfg = get_preset("tiny-test")
    cfg.fusion.bias = 0.5
    m = JointModel(cfg)
    torch.testing.assert_close(m.fuse(t, r), 0.145 * t + 0.769 * r + 0.5)


def test_logistic_calibration():
    params = (8.1866, 1.0193, 4.3916, 1.3753)
    x = torch.tensor([-100.0, 4.3916, 100.0])
    y = logistic4(x, params)
    assert abs(float(y[1]) - (8.1866 + 1.0193) / 2) < 1e-4      # midpoint at b3
    assert abs(float(y[2]) - 8.1866) < 1e-3 and abs(float(y[0]) - 1.0193) < 1e-3
    cfg = get_preset("tiny-test")
    cfg.calibration = CalibrationConfig(params=params, input="sum")
    m = JointModel(cfg)
    t, r = torch.tensor([2.0]), torch.tensor([3.0])
    torch.testing.assert_close(m.fuse(t, r), logistic4(t + r, params))


def test_logits_head_layout():
    cfg = get_preset("tiny-test")
    cfg.rationality.head_input = "logits"
    cfg.rationality.num_logits = 10
    m = JointModel(cfg).eval()
    assert m.rationality.feature_dim == 10
    assert m.rationality.head[0].in_features == 10
    out = m(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64), return_features=True)
    assert out.rationality_embedding.shape == (1, 10)


def test_unknown_backbone_is_a_clear_error():
    from joint_core import ConfigError

    cfg = get_preset("tiny-test")
    cfg.technical.backbone = "resnet_does_not_exist"
    with pytest.raises(ConfigError, match="timm has no model named 'resnet_does_not_exist'"):
        JointModel(cfg)


def test_multilevel_stage_statistics_head():
    from joint_core.model import stage_statistics

    cfg = get_preset("tiny-test")
    cfg.rationality.head_input = "stages"
    cfg.rationality.head_norm = "layernorm"
    m = JointModel(cfg).eval()
    channels = [f["num_chs"] for f in m.rationality.backbone.feature_info]
    assert m.rationality.feature_dim == 96 + 2 * sum(channels)
    x = torch.rand(2, 3, 64, 64)
    out = m(x, x, return_features=True)
    emb, stages = out.rationality_embedding, out.rationality_stages
    assert emb.shape == (2, m.rationality.feature_dim) and len(stages) == 5
    # the embedding is [pooled, mean_1, std_1, ..., mean_5, std_5]
    first = stages[0]
    torch.testing.assert_close(emb[:, 96:96 + 2 * channels[0]], stage_statistics(first))
    torch.testing.assert_close(stage_statistics(first)[:, channels[0]:], first.flatten(2).std(2, correction=0))
    # the head sees the normalised embedding
    expected = m.rationality.head(m.rationality.head_norm(emb)).squeeze(-1)
    torch.testing.assert_close(out.rationality, expected)


def test_token_statistics_head_of_a_vision_transformer():
    """head_input='tokens': pooled features, then per block its class token and the mean and
    (population) std of its patch tokens - recomputed here block by block."""
    from joint_core.config import BranchConfig, ConfigError
    from joint_core.model import Branch

    kw = {"img_size": 32, "embed_dim": 8, "depth": 2, "num_heads": 2}
    b = Branch(BranchConfig("vit_base_patch16_clip_quickgelu_224", head_input="tokens", backbone_kwargs=kw)).eval()
    assert b.feature_dim == 8 + 3 * 2 * 8
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        out = b(x)
        m = b.backbone
        h = m.norm_pre(m._pos_embed(m.patch_embed(x)))
        parts = []
        for blk in m.blocks:
            h = blk(h)
            parts.append(torch.cat([h[:, 0], h[:, 1:].mean(1), h[:, 1:].std(1, correction=0)], 1))
        expected = torch.cat([m.norm(h)[:, 0]] + parts, 1)
    torch.testing.assert_close(out.embedding, expected, atol=1e-5, rtol=1e-5)
    assert out.score.shape == (3,)
    with pytest.raises(ConfigError, match="class token"):
        Branch(BranchConfig("test_resnet", head_input="tokens"))


def test_rationality_head_can_read_the_technical_features_too():
    """head_extra='technical': one linear head on [rationality features, technical features];
    the rationality score then changes with the technical input, and the technical score not."""
    from joint_core.config import ConfigError

    cfg = get_preset("tiny-test")
    cfg.rationality.head_extra = "technical"
    torch.manual_seed(0)
    m = JointModel(cfg).eval()
    plain = JointModel(get_preset("tiny-test")).eval()
    assert m.rationality.head_dim == plain.rationality.feature_dim + m.technical.feature_dim
    assert m.rationality.head[0].in_features == m.rationality.head_dim
    x_t, x_r = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        a = m(x_t, x_r, return_features=True)
        b = m(x_t.flip(0), x_r)
        t_emb = m.technical(x_t).embedding
        r_own = m.rationality.backbone(x_r) if cfg.rationality.head_input == "pooled" else None
    assert a.rationality_embedding.shape[1] == m.rationality.head_dim
    torch.testing.assert_close(a.rationality_embedding[:, -t_emb.shape[1]:], t_emb)
    if r_own is not None:
        torch.testing.assert_close(a.rationality_embedding[:, :r_own.shape[1]], r_own)
    assert not torch.allclose(a.rationality, b.rationality)          # reads the technical input
    torch.testing.assert_close(a.technical, b.technical.flip(0))
    with pytest.raises(ValueError, match="give both inputs"):
        m(None, x_r)
    bad = get_preset("tiny-test")
    bad.technical.head_extra = "technical"
    with pytest.raises(ConfigError, match="technical.head_extra must be 'none'"):
        bad.validate()
    bad = get_preset("tiny-test")
    bad.rationality.head_extra = "semantic"
    with pytest.raises(ConfigError, match="'none' or 'technical'"):
        bad.validate()


def test_a_rationality_head_on_the_technical_features_alone():
    """backbone='none' + head_extra='technical': one backbone, two heads; the rationality input
    is not read at all."""
    from joint_core.config import ConfigError

    cfg = get_preset("tiny-test")
    cfg.rationality.backbone, cfg.rationality.head_extra = "none", "technical"
    torch.manual_seed(0)
    m = JointModel(cfg).eval()
    assert m.rationality.backbone is None and m.rationality.head_dim == m.technical.feature_dim
    assert not any(k.startswith("rationality.backbone") for k in m.state_dict())
    x_t = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        a = m(x_t, torch.rand(2, 3, 64, 64))
        b = m(x_t, torch.zeros(2, 3, 64, 64))
        w = m.rationality.head
        want = w(m.rationality.head_norm(m.technical(x_t).embedding)).squeeze(-1)
    torch.testing.assert_close(a.rationality, b.rationality)
    torch.testing.assert_close(a.rationality, want)
    bad = get_preset("tiny-test")
    bad.rationality.backbone = "none"
    with pytest.raises(ConfigError, match="needs head_extra 'technical'"):
        bad.validate()
