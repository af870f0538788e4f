import math
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from joint_core import NaturalnessScorer, ScoringError


def _first(result):
    return tuple(float(getattr(result, a)[0]) for a in ("technical", "rationality", "naturalness"))


def test_same_image_scores_identically_every_way(tiny_scorer, photos, tmp_path):
    img = photos["coffee"]                                  # 400x600 real photo
    path = tmp_path / "coffee.png"
    Image.fromarray(img).save(path)
    chw = torch.from_numpy(img).permute(2, 0, 1).float() / 255
    others = [torch.from_numpy(photos[n]).permute(2, 0, 1).float() / 255
              for n in ("astronaut", "chelsea", "rocket")]
    alone = _first(tiny_scorer.score([chw]))                # a list of one CHW float tensor
    variants = {
        "path": tiny_scorer.score(str(path)),
        "PIL": tiny_scorer.score(Image.fromarray(img)),
        "numpy": tiny_scorer.score(img),
        "BCHW": tiny_scorer.score(chw[None]),
        "BHWC": tiny_scorer.score(chw.permute(1, 2, 0)[None]),
        "uint8 tensor": tiny_scorer.score(torch.from_numpy(img)),
    }
    for name, res in variants.items():
        assert _first(res) == alone, name
    batch = [others[0], chw, others[1], others[2], chw.flip(-1), others[0], chw * 0.5, others[1]]
    res8 = tiny_scorer.score(batch, batch_size=8)
    assert len(res8) == 8
    assert tuple(float(getattr(res8, a)[1]) for a in ("technical", "rationality", "naturalness")) == alone
    same_size = torch.stack([chw] * 8)
    res_same = tiny_scorer.score(same_size, batch_size=3)
    assert torch.equal(res_same.naturalness, torch.full((8,), alone[2]))


def test_scores_are_stable_across_runs_and_loads(tiny_model_dir, photos):
    a = NaturalnessScorer.from_pretrained(tiny_model_dir, device="cpu").score(photos["astronaut"])
    b = NaturalnessScorer.from_pretrained(tiny_model_dir, device="cpu").score(photos["astronaut"])
    assert torch.equal(a.naturalness, b.naturalness) and torch.equal(a.technical, b.technical)


def _odd_inputs(tmp_path, photos):
    """30 corrupt, odd or extreme inputs; each must give a score or a clear error."""
    good = photos["chelsea"]
    p = lambda name: tmp_path / name  # noqa: E731
    Image.fromarray(good).save(p("ok.png"))
    data = p("ok.png").read_bytes()
    p("truncated.png").write_bytes(data[: len(data) // 3])
    p("empty.png").write_bytes(b"")
    p("text.png").write_text("hello")
    Image.fromarray(good[:1, :1]).save(p("one_pixel.png"))
    Image.fromarray(np.full((8000, 8000, 3), 128, np.uint8)).save(p("huge.png"), compress_level=1)
    Image.fromarray((good[..., 0].astype(np.uint16) * 257)).save(p("gray16.png"))
    Image.fromarray(good).convert("CMYK").save(p("cmyk.jpg"))
    Image.fromarray(np.dstack([good, np.full(good.shape[:2], 128, np.uint8)])).save(p("rgba.png"))
    Image.fromarray(good[..., 1]).save(p("gray.png"))
    Image.fromarray(good).convert("P").save(p("palette.gif"))
    Image.fromarray(good).save(p("photo.webp"))
    Image.fromarray(good).save(p("photo.tiff"))
    Image.fromarray(good).save(p("q5.jpg"), quality=5)
    Image.fromarray(good[:, :3]).save(p("thin.png"))
    nan = torch.rand(3, 32, 32)
    nan[0, 0, 0] = float("nan")
    return [
        str(p("ok.png")), str(p("truncated.png")), str(p("empty.png")), str(p("text.png")),
        str(p("one_pixel.png")), str(p("huge.png")), str(p("gray16.png")), str(p("cmyk.jpg")),
        str(p("rgba.png")), str(p("gray.png")), str(p("palette.gif")), str(p("photo.webp")),
        str(p("photo.tiff")), str(p("q5.jpg")), str(p("thin.png")), str(tmp_path / "missing.png"),
        str(tmp_path),                                   # a folder
        nan,                                             # NaN tensor
        torch.full((3, 16, 16), float("inf")),           # inf tensor
        torch.rand(3, 16, 16) * 255,                     # 0..255 floats
        torch.rand(16, 16),                              # 2-D grayscale tensor
        torch.rand(1, 16, 16),                           # 1-channel
        torch.rand(4, 16, 16),                           # RGBA tensor
        torch.rand(3, 1, 1),                             # 1x1 tensor
        torch.rand(3, 0, 5),                             # empty tensor
        np.zeros((5, 5, 5, 5, 5)),                       # 5-D array
        np.random.default_rng(0).integers(0, 65535, (20, 20, 3), dtype=np.uint16),
        Image.new("I;16", (10, 10), 1000),               # 16-bit PIL image
        Image.new("RGB", (2, 300), (255, 0, 0)),         # extreme aspect ratio
        "not/a/real/file.png",
    ]


def test_thirty_odd_inputs_never_crash_the_batch(tiny_scorer, photos, tmp_path):
    inputs = _odd_inputs(tmp_path, photos)
    assert len(inputs) == 30
    with pytest.warns(UserWarning, match="could not be scored"):
        res = tiny_scorer.score(inputs, batch_size=7)
    assert len(res) == 30
    expected_errors = {1, 2, 3, 15, 16, 17, 18, 19, 24, 25, 29}
    assert set(res.errors) == expected_errors, res.errors
    for i in range(30):
        vals = [float(getattr(res, a)[i]) for a in ("technical", "rationality", "naturalness")]
        if i in expected_errors:
            assert all(math.isnan(v) for v in vals)
            assert res.errors[i]                                   # a message...
        else:
            assert all(math.isfinite(v) for v in vals), (i, res.sources[i])
    assert "truncated.png" in res.errors[1] and "NaN" in res.errors[17]
    assert "divide by 255" in res.errors[19]
    # the good image scores as it does alone
    alone = tiny_scorer.score(inputs[0])
    assert float(res.naturalness[0]) == float(alone.naturalness[0])


def test_on_error_raise_keeps_partial_result(tiny_scorer, tmp_path):
    with pytest.raises(ScoringError, match="1 of 2 image") as exc:
        tiny_scorer.score([torch.rand(3, 20, 20), str(tmp_path / "nope.png")], on_error="raise")
    assert math.isfinite(float(exc.value.result.naturalness[0]))


def test_result_object(tiny_scorer):
    torch.manual_seed(0)
    imgs = [torch.rand(3, 40, 40) * s for s in (0.2, 1.0, 0.6)] + [torch.full((3, 4, 4), float("nan"))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = tiny_scorer.score(imgs)
    recs = res.to_records()
    assert [r["index"] for r in recs] == [0, 1, 2, 3]
    assert set(recs[0]) == {"index", "source", "technical", "rationality", "naturalness", "error", "warning"}
    assert recs[3]["naturalness"] is None and "NaN" in recs[3]["error"]
    for axis in ("technical", "rationality", "naturalness"):
        order = res.ranking(by=axis)
        vals = [float(getattr(res, axis)[i]) for i in order[:3]]
        assert vals == sorted(vals, reverse=True) and order[-1] == 3
        assert res.ranking(by=axis, descending=False)[:3] == order[:3][::-1]
    top = res.top(2, by="technical")
    assert len(top) == 2 and top.sources == [res.sources[i] for i in res.ranking("technical")[:2]]
    assert res.ok.tolist() == [True, True, True, False]
    assert res.best_indices(by="technical") == res.ranking("technical")[:3]     # the failed one left out
    assert res.best_indices(10, by="rationality", descending=False) == res.ranking("rationality", False)[:3]
    assert res.best_indices(1) == res.ranking()[:1] and res.best_indices(0) == []
    with pytest.raises(ValueError, match="unknown score axis"):
        res.ranking(by="beauty")
    assert "3/4 images scored" in res.summary()


def test_empty_input_gives_an_empty_result(tiny_scorer):
    res = tiny_scorer.score([])
    assert len(res) == 0 and res.ranking() == [] and res.to_records() == []


def test_callback_reports_progress_and_can_stop(tiny_scorer):
    calls = []
    tiny_scorer.score(torch.rand(5, 3, 32, 32), batch_size=2, callback=lambda d, t: calls.append((d, t)))
    assert calls == [(2, 5), (4, 5), (5, 5)]

    class Stop(Exception):
        pass

    def stop(done, total):
        raise Stop

    with pytest.raises(Stop):
        tiny_scorer.score(torch.rand(5, 3, 32, 32), batch_size=2, callback=stop)


def test_argument_errors(tiny_scorer):
    with pytest.raises(ValueError, match="batch_size"):
        tiny_scorer.score(torch.rand(1, 3, 8, 8), batch_size=0)
    with pytest.raises(TypeError, match="images must be"):
        tiny_scorer.score(42)
    with pytest.raises(ValueError, match="unknown dtype"):
        NaturalnessScorer.from_config("tiny-test", dtype="int3")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            NaturalnessScorer.from_config("tiny-test", device="cuda")


def test_non_finite_model_output_is_an_error_not_a_score(tiny_scorer, monkeypatch):
    real = tiny_scorer._branches

    def overflow_on_dark(x_t, x_r):  # an image that overflows (as fp16 can) gets inf
        t, r = real(x_t, x_r)
        dark = x_r.flatten(1).mean(1) < -1.5
        return torch.where(dark, torch.full_like(t, float("inf")), t), r

    monkeypatch.setattr(tiny_scorer, "_branches", overflow_on_dark)
    imgs = torch.rand(3, 3, 32, 32)
    imgs[1] = 0.0
    with pytest.warns(UserWarning, match="non-finite"):
        res = tiny_scorer.score(imgs)
    assert list(res.errors) == [1] and "non-finite" in res.errors[1]
    assert math.isnan(float(res.naturalness[1]))
    assert torch.isfinite(res.naturalness[[0, 2]]).all()
    assert res.ranking()[-1] == 1


def test_any_decoder_exception_becomes_a_named_error(tiny_scorer, tmp_path, monkeypatch):
    import PIL.ImageOps

    bad, good = tmp_path / "exif-bomb.png", tmp_path / "good.png"
    Image.new("RGB", (17, 16), (40, 90, 200)).save(bad)    # files are read through a checked descriptor,
    Image.new("RGB", (16, 16), (40, 90, 200)).save(good)   # so the PIL image has no filename: tell by size
    real = PIL.ImageOps.exif_transpose

    def broken(img, **kw):
        if img.size == (17, 16):
            import struct
            raise struct.error("unpack requires a buffer of 4 bytes")
        return real(img, **kw)

    monkeypatch.setattr(PIL.ImageOps, "exif_transpose", broken)
    with pytest.warns(UserWarning):
        res = tiny_scorer.score([str(bad), str(good)])
    assert list(res.errors) == [0] and "exif-bomb.png" in res.errors[0] and "unpack requires" in res.errors[0]
    assert torch.isfinite(res.naturalness[1])


def test_info(tiny_scorer):
    info = tiny_scorer.info()
    assert info["technical_backbone"] == "test_efficientnet"
    assert info["parameters"] == sum(p.numel() for p in tiny_scorer.model.parameters())
    assert "N = 0.145*T + 0.769*R" == info["fusion"]
    assert info["device"] == "cpu" and info["dtype"] == "float32"
    assert info["ranking"] == "naturalness"          # the default ranking key (JointConfig.ranking)


def test_bfloat16_scoring_is_close_to_float32(tiny_model_dir, photos):
    a = NaturalnessScorer.from_pretrained(tiny_model_dir, device="cpu").score(photos["rocket"])
    b = NaturalnessScorer.from_pretrained(tiny_model_dir, device="cpu", dtype="bf16").score(photos["rocket"])
    assert b.naturalness.dtype == torch.float32
    assert abs(float(a.naturalness[0]) - float(b.naturalness[0])) < 0.05


def test_weighted_mix_ranks_by_the_weighted_mean(tiny_scorer):
    torch.manual_seed(1)
    imgs = [torch.rand(3, 40, 40) * s for s in (0.3, 1.0, 0.6, 0.8)] + [torch.full((3, 4, 4), float("nan"))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = tiny_scorer.score(imgs)
    mix = res.scores({"technical": 1.0, "rationality": 3.0})
    expected = (0.25 * res.technical.double() + 0.75 * res.rationality.double()).float()
    assert torch.equal(mix[:4], expected[:4]) and math.isnan(float(mix[4]))
    order = res.ranking(by={"technical": 1.0, "rationality": 3.0})
    assert order[:4] == sorted(range(4), key=lambda i: -float(expected[i])) and order[-1] == 4
    # a mix with one axis is that axis; weights need not sum to 1
    assert torch.equal(res.scores({"technical": 2.5}).nan_to_num(), res.technical.nan_to_num())
    assert res.top(2, by={"naturalness": 1.0}).sources == res.top(2, by="naturalness").sources
    for bad, msg in (({"beauty": 1.0}, "unknown score axis"), ({"technical": -1.0}, ">= 0"),
                     ({"technical": 0.0}, "all be zero"), ({}, "all be zero"),
                     ({"technical": float("nan")}, "finite")):
        with pytest.raises(ValueError, match=msg):
            res.scores(bad)


def test_to_moves_and_casts_in_place(tiny_model_dir, photos):
    scorer = NaturalnessScorer.from_pretrained(tiny_model_dir, device="cpu")
    ref = scorer.score(photos["chelsea"]).naturalness
    assert scorer.to("cpu") is scorer and scorer.dtype == torch.float32
    assert torch.equal(scorer.score(photos["chelsea"]).naturalness, ref)
    # casting in place gives what loading in that dtype gives
    bf16 = NaturalnessScorer.from_pretrained(tiny_model_dir, device="cpu", dtype="bf16")
    scorer.to(dtype="bf16")
    assert scorer.dtype == torch.bfloat16 and scorer.device.type == "cpu"
    assert all(p.dtype == torch.bfloat16 for p in scorer.model.parameters())
    assert torch.equal(scorer.score(photos["chelsea"]).naturalness, bf16.score(photos["chelsea"]).naturalness)
    scorer.to(dtype=torch.float32)        # bf16 rounding of the weights stays
    assert scorer.dtype == torch.float32
    assert abs(float(scorer.score(photos["chelsea"]).naturalness[0]) - float(ref[0])) < 0.05
    if torch.cuda.is_available():
        fresh = NaturalnessScorer.from_pretrained(tiny_model_dir, device="cpu").to("cuda")
        assert fresh.device.type == "cuda" and fresh.preprocessor.device.type == "cuda"
        assert next(fresh.model.parameters()).is_cuda and not fresh.batch_invariant
        fresh.to("cpu")
        assert fresh.batch_invariant and torch.equal(fresh.score(photos["chelsea"]).naturalness, ref)
    else:
        with pytest.raises(ValueError, match="CUDA is not available"):
            scorer.to("cuda")


def test_cpu_graph_optimisation_matches_eager(tiny_model_dir, photos):
    fast = NaturalnessScorer.from_pretrained(tiny_model_dir, device="cpu")
    eager = NaturalnessScorer.from_pretrained(tiny_model_dir, device="cpu", optimize=False)
    assert fast._frozen is not None and eager._frozen is None
    imgs = [photos[n] for n in ("astronaut", "coffee", "chelsea")]
    a, b = fast.score(imgs), eager.score(imgs)
    assert not fast._frozen.failed and len(fast._frozen.graphs) == 1   # one input shape, one graph
    for axis in ("technical", "rationality", "naturalness"):
        torch.testing.assert_close(getattr(a, axis), getattr(b, axis), atol=1e-5, rtol=0)
    assert fast.info()["cpu_graphs"] == "TorchScript (frozen)" and eager.info()["cpu_graphs"] == "eager"
    # new weights loaded in place must not be scored with the old ones baked into the graphs
    with torch.no_grad():
        for m in (fast.model, eager.model):
            m.technical.head[-1].bias.add_(1.0)
    a2, b2 = fast.score(imgs), eager.score(imgs)
    torch.testing.assert_close(a2.technical, b2.technical, atol=1e-5, rtol=0)
    torch.testing.assert_close(a2.technical, a.technical + 1.0, atol=1e-4, rtol=0)
    # moving the scorer rebuilds (or drops) the graphs
    fast.to(dtype="bf16")
    assert fast._frozen is None


def test_model_loaded_under_inference_mode_scores(tiny_model_dir, photos):
    # ComfyUI runs nodes under torch.inference_mode, so the loaded weights are inference tensors
    with torch.inference_mode():
        scorer = NaturalnessScorer.from_pretrained(tiny_model_dir, device="cpu")
        res = scorer.score([photos["coffee"], photos["astronaut"]])
    ref = NaturalnessScorer.from_pretrained(tiny_model_dir, device="cpu").score([photos["coffee"], photos["astronaut"]])
    assert not res.errors and torch.equal(res.naturalness, ref.naturalness)
