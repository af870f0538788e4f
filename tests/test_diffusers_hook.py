"""diffusers_hook on tiny Stable Diffusion and Flux pipelines built from configs (CPU, no hub)."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback  # noqa: E402
from diffusers.pipelines.stable_diffusion import StableDiffusionPipelineOutput  # noqa: E402
from PIL import Image  # noqa: E402

from diffusers_hook import best_of_n, decode_latents, naturalness_filter, testing  # noqa: E402
from joint_core import NoModelError  # noqa: E402

STEPS = 2
SIZE = 32
PROMPTS = ["a red fox in the snow", "a lighthouse at dusk"]


# --------------------------------------------------------------------------------------------
# tiny pipelines
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny models gain nothing from threads, and on a shared CPU the thread pool's spinning
    makes each small conv many times slower: run this module single-threaded."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def sd_pipe():
    return testing.sd_pipeline("tiny")       # UNet, VAE, CLIP text model and tokenizer from configs


@pytest.fixture(scope="session")
def flux_pipe():
    return testing.flux_pipeline()           # no text encoders: driven by prompt_embeds


@pytest.fixture(scope="session")
def flux_embeds():
    g = torch.Generator().manual_seed(3)
    return torch.randn(2, 6, 16, generator=g), torch.randn(2, 16, generator=g)


def gens(seeds):
    return [torch.Generator("cpu").manual_seed(s) for s in seeds]


def run_sd(pipe, prompts, n, seeds, **kw):
    kw.setdefault("num_inference_steps", STEPS)
    return pipe(prompts, num_images_per_prompt=n, generator=gens(seeds), height=SIZE, width=SIZE, **kw)


def sd_kwargs(**kw):
    return dict(num_inference_steps=STEPS, height=SIZE, width=SIZE, **kw)


class Spy(PipelineCallback):
    """Records the batch sizes of the latents and the prompt embeddings at every step."""

    tensor_inputs = ["latents", "prompt_embeds"]

    def __init__(self):
        super().__init__()
        self.shapes = {}

    def callback_fn(self, pipeline, step_index, timestep, callback_kwargs):
        self.shapes[step_index] = (len(callback_kwargs["latents"]), len(callback_kwargs["prompt_embeds"]))
        return callback_kwargs


# Which images are kept is ScoreResult.keep's job, tested in tests/test_result.py; these tests
# check that the hook passes it the right arguments and returns what it chose.


# --------------------------------------------------------------------------------------------
# the callback
# --------------------------------------------------------------------------------------------


def test_callback_keeps_top_k_per_prompt_best_first(sd_pipe, tiny_scorer):
    cb = naturalness_filter(tiny_scorer, k=2, num_images_per_prompt=3)
    out = run_sd(sd_pipe, PROMPTS, 3, range(6), callback_on_step_end=cb)
    nat = cb.scores.naturalness
    assert len(cb.scores) == 6 and len(out.images) == 4
    assert all(im.size == (SIZE, SIZE) for im in out.images)
    expected = cb.scores.keep("naturalness", k=2, group_size=3)
    assert cb.kept_indices == expected == cb.passed_indices
    assert torch.equal(cb.kept_scores.naturalness, nat[expected])
    # the images the pipeline returned are the kept ones; their scores are the reported ones
    # (decoded in a batch of 4 instead of 6, so equal up to float rounding before 8-bit)
    again = tiny_scorer.score(out.images)
    for axis in ("technical", "rationality", "naturalness"):
        torch.testing.assert_close(getattr(again, axis), getattr(cb.kept_scores, axis), atol=1e-5, rtol=0)


def test_callback_ranks_by_a_weighted_mix(sd_pipe, tiny_scorer):
    cb = naturalness_filter(tiny_scorer, k=1, num_images_per_prompt=3, by={"rationality": 1, "technical": 2})
    run_sd(sd_pipe, PROMPTS, 3, range(6), callback_on_step_end=cb)
    assert cb.kept_indices == cb.scores.keep({"rationality": 1, "technical": 2}, k=1, group_size=3)


@pytest.mark.parametrize("output_type", ["pil", "np", "pt"])
def test_callback_scores_equal_scorer_on_returned_images(sd_pipe, tiny_scorer, output_type):
    cb = naturalness_filter(tiny_scorer, sort=True, output_type=output_type)
    out = run_sd(sd_pipe, PROMPTS[0], 4, range(10, 14), output_type=output_type, callback_on_step_end=cb)
    assert sorted(cb.kept_indices) == [0, 1, 2, 3]
    assert cb.kept_indices == cb.scores.keep(sort=True)
    again = tiny_scorer.score(out.images)
    for axis in ("technical", "rationality", "naturalness"):
        assert torch.equal(getattr(again, axis), getattr(cb.kept_scores, axis)), axis


def test_callback_prunes_only_at_last_step_with_cfg_and_composes(sd_pipe, tiny_scorer):
    before, after = Spy(), Spy()
    cb = naturalness_filter(tiny_scorer, k=1)
    out = run_sd(sd_pipe, PROMPTS[1], 3, range(3), guidance_scale=6.0, num_inference_steps=3,
                 callback_on_step_end=MultiPipelineCallbacks([before, cb, after]))
    # with classifier-free guidance the prompt embeddings are doubled, the latents are not
    assert before.shapes == {0: (3, 6), 1: (3, 6), 2: (3, 6)}
    # pruned at the last step only; the embeddings are left alone (unused after the loop)
    assert after.shapes == {0: (3, 6), 1: (3, 6), 2: (1, 6)}
    assert len(out.images) == 1 and cb.kept_indices == cb.scores.keep(k=1)


def test_callback_threshold_and_reset(sd_pipe, tiny_scorer):
    probe = naturalness_filter(tiny_scorer, output_type="np")
    run_sd(sd_pipe, PROMPTS[0], 4, range(20, 24), output_type="np", callback_on_step_end=probe)
    assert probe.kept_indices == [0, 1, 2, 3]
    values = probe.scores.naturalness
    cut = float(values.median())
    cb = naturalness_filter(tiny_scorer, threshold=cut, output_type="np")
    out = run_sd(sd_pipe, PROMPTS[0], 4, range(20, 24), output_type="np", callback_on_step_end=cb)
    expected = probe.scores.keep(threshold=cut)                   # generation order kept
    assert cb.kept_indices == expected and out.images.shape == (len(expected), SIZE, SIZE, 3)
    assert torch.equal(cb.scores.naturalness, values)

    # nothing passes: the pipeline cannot return an empty batch, so the best one stays, with a warning
    with pytest.warns(UserWarning, match="no image scored naturalness"):
        out = run_sd(sd_pipe, PROMPTS[0], 4, range(20, 24), output_type="np",
                     callback_on_step_end=naturalness_filter(tiny_scorer, threshold=1e6, output_type="np"))
    assert out.images.shape[0] == 1

    # the same callback object used again reports the new run only
    run_sd(sd_pipe, PROMPTS[0], 2, [5, 6], output_type="np", callback_on_step_end=cb)
    assert len(cb.scores) == 2


def test_callback_matches_best_of_n_on_same_seeds(sd_pipe, tiny_scorer):
    cb = naturalness_filter(tiny_scorer, k=2, num_images_per_prompt=3, output_type="pt")
    via_cb = run_sd(sd_pipe, PROMPTS, 3, range(6), output_type="pt", callback_on_step_end=cb)
    via_bon = best_of_n(sd_pipe, PROMPTS, n=3, k=2, seed=0, scorer=tiny_scorer, output_type="pt", **sd_kwargs())
    assert via_bon.indices == cb.kept_indices
    assert via_bon.all_seeds == list(range(6))
    torch.testing.assert_close(via_bon.images, via_cb.images, atol=1e-5, rtol=0)
    torch.testing.assert_close(via_bon.all_scores.naturalness, cb.scores.naturalness, atol=1e-5, rtol=0)


def test_flux_callback_and_best_of_n(flux_pipe, flux_embeds, tiny_scorer):
    pe, pooled = flux_embeds
    h, w = 32, 24
    cb = naturalness_filter(tiny_scorer, k=1, num_images_per_prompt=2, output_type="pt", height=h, width=w)
    # Flux does not expand precomputed embeddings by num_images_per_prompt: one row per image
    via_cb = flux_pipe(prompt_embeds=pe.repeat_interleave(2, 0), pooled_prompt_embeds=pooled.repeat_interleave(2, 0),
                       generator=gens(range(4)), num_inference_steps=STEPS, height=h, width=w,
                       output_type="pt", callback_on_step_end=cb)
    assert via_cb.images.shape == (2, 3, h, w)
    assert cb.kept_indices == cb.scores.keep(k=1, group_size=2)
    torch.testing.assert_close(tiny_scorer.score(via_cb.images).naturalness, cb.kept_scores.naturalness,
                               atol=1e-5, rtol=0)

    bon = best_of_n(flux_pipe, n=2, k=1, seed=0, scorer=tiny_scorer, output_type="pt", prompt_embeds=pe,
                    pooled_prompt_embeds=pooled, num_inference_steps=STEPS, height=h, width=w)
    assert bon.indices == cb.kept_indices and bon.prompt_indices == [0, 1]
    torch.testing.assert_close(bon.images, via_cb.images, atol=1e-5, rtol=0)

    lat = best_of_n(flux_pipe, n=2, k=1, seed=0, scorer=tiny_scorer, output_type="latent", prompt_embeds=pe,
                    pooled_prompt_embeds=pooled, num_inference_steps=STEPS, height=h, width=w)
    assert lat.images.shape == (2, (h // 2) * (w // 2), 4)    # packed latents, as Flux returns them
    assert lat.indices == bon.indices
    torch.testing.assert_close(decode_latents(flux_pipe, lat.images, h, w), bon.images, atol=1e-5, rtol=0)

    with pytest.raises(ValueError, match="height= and width="):
        decode_latents(flux_pipe, lat.images)
    with pytest.raises(ValueError, match="height= and width="):   # the callback says so at step 0
        naturalness_filter(tiny_scorer)(flux_pipe, 0, 0, {"latents": lat.images})
    with pytest.raises(ValueError, match="do not match the packed latents"):
        decode_latents(flux_pipe, lat.images, 32, 32)


def _embeds(rows):
    g = torch.Generator().manual_seed(5)
    return {"prompt_embeds": torch.randn(rows, 6, 16, generator=g),
            "pooled_prompt_embeds": torch.randn(rows, 16, generator=g)}


FAMILIES = {
    "sd": lambda: (testing.sd_pipeline("tiny"), {"prompt": PROMPTS[0]}),
    "sdxl": lambda: (testing.sdxl_pipeline(), {"prompt": PROMPTS[0]}),
    "sdxl-fp16-vae": lambda: (testing.sdxl_pipeline(vae_fp16=True), {"prompt": PROMPTS[0]}),
    "sd3": lambda: (testing.sd3_pipeline(), {"guidance_scale": 1.0, **_embeds(3)}),
    "flux": lambda: (testing.flux_pipeline(), _embeds(3)),
}


@pytest.mark.filterwarnings("ignore:`upcast_vae` is deprecated:FutureWarning")
@pytest.mark.parametrize("family", list(FAMILIES))
def test_decode_mirrors_each_family(family, tiny_scorer):
    """The callback's decode gives the pipeline's own output images, bit for bit, so its scores
    are those of the returned images."""
    pipe, kw = FAMILIES[family]()
    n = 1 if "prompt_embeds" in kw else 3     # embeddings hold one row per image already
    common = dict(num_images_per_prompt=n, num_inference_steps=STEPS, height=SIZE, width=SIZE, **kw)
    latents = pipe(generator=gens(range(3)), output_type="latent", **common).images
    images = pipe(generator=gens(range(3)), output_type="pt", **common).images
    assert torch.equal(decode_latents(pipe, latents, SIZE, SIZE), images)
    if family == "sdxl-fp16-vae":
        assert pipe.vae.dtype == torch.float16          # upcast for the decode only, as SDXL does

    cb = naturalness_filter(tiny_scorer, sort=True, output_type="pt", height=SIZE, width=SIZE)
    out = pipe(generator=gens(range(3)), output_type="pt", callback_on_step_end=cb, **common).images
    assert torch.equal(out, images[cb.kept_indices])
    assert torch.equal(tiny_scorer.score(out).naturalness, cb.kept_scores.naturalness)


def test_unsupported_family_and_missing_step_count(tiny_scorer):
    class KandinskyLikePipeline:
        vae = torch.nn.Identity()
        num_timesteps = 2

    with pytest.raises(NotImplementedError, match="KandinskyLikePipeline.*best_of_n"):
        decode_latents(KandinskyLikePipeline(), torch.zeros(1, 4, 8, 8))
    cb = naturalness_filter(tiny_scorer)
    with pytest.raises(NotImplementedError, match="KandinskyLikePipeline"):   # at the first step
        cb(KandinskyLikePipeline(), 0, 0, {"latents": torch.zeros(1, 4, 8, 8)})
    with pytest.raises(KeyError, match="callback_on_step_end_tensor_inputs"):
        cb(KandinskyLikePipeline(), 0, 0, {"prompt_embeds": torch.zeros(1)})

    class NoCount:
        pass

    with pytest.raises(RuntimeError, match="num_timesteps"):
        naturalness_filter(tiny_scorer, decode=lambda p, lat: lat)(NoCount(), 0, 0, {"latents": torch.zeros(1)})
    # a custom decoder makes any pipeline work
    custom = naturalness_filter(tiny_scorer, k=1, decode=lambda pipe, lat: lat[:, :3].clamp(0, 1))
    lat = torch.rand(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    out = custom(KandinskyLikePipeline(), 1, 0, {"latents": lat})
    assert out["latents"].shape == (1, 4, 8, 8)
    assert torch.equal(out["latents"][0], lat[custom.kept_indices[0]])


# --------------------------------------------------------------------------------------------
# best_of_n
# --------------------------------------------------------------------------------------------


def test_best_of_n_shapes_order_indices_seeds(sd_pipe, tiny_scorer):
    out = best_of_n(sd_pipe, PROMPTS, n=3, k=2, seed=7, scorer=tiny_scorer, **sd_kwargs())
    assert len(out.images) == 4 and all(isinstance(i, Image.Image) and i.size == (SIZE, SIZE) for i in out.images)
    assert out.all_seeds == list(range(7, 13)) and len(out.all_scores) == 6
    assert out.prompt_indices == [0, 0, 1, 1]
    nat = out.all_scores.naturalness
    assert out.indices == out.all_scores.keep(k=2, group_size=3, sort=True)
    assert out.seeds == [out.all_seeds[i] for i in out.indices]
    assert torch.equal(out.scores.naturalness, nat[out.indices])
    assert out.nsfw_content_detected is None     # no safety checker in the tiny pipeline
    assert out[0] is out.images                  # a diffusers BaseOutput
    # the reported scores are those of the returned images
    again = tiny_scorer.score(out.images)
    for axis in ("technical", "rationality", "naturalness"):
        assert torch.equal(getattr(again, axis), getattr(out.scores, axis)), axis


def test_best_of_n_winner_regenerates_from_its_seed(sd_pipe, tiny_scorer):
    out = best_of_n(sd_pipe, PROMPTS[1], n=3, k=1, seed=40, scorer=tiny_scorer, output_type="pt", **sd_kwargs())
    assert out.seeds[0] == 40 + out.indices[0]
    again = sd_pipe(PROMPTS[1], generator=torch.Generator("cpu").manual_seed(out.seeds[0]), output_type="pt",
                    **sd_kwargs()).images
    torch.testing.assert_close(again, out.images, atol=1e-5, rtol=0)


def test_best_of_n_chunks_give_the_same_result(sd_pipe, tiny_scorer):
    whole = best_of_n(sd_pipe, PROMPTS, n=3, k=2, seed=0, scorer=tiny_scorer, output_type="pt", **sd_kwargs())
    chunked = best_of_n(sd_pipe, PROMPTS, n=3, k=2, seed=0, scorer=tiny_scorer, output_type="pt", batch_size=2,
                        **sd_kwargs())
    assert chunked.indices == whole.indices and chunked.seeds == whole.seeds
    torch.testing.assert_close(chunked.all_scores.naturalness, whole.all_scores.naturalness, atol=1e-5, rtol=0)
    torch.testing.assert_close(chunked.images, whole.images, atol=1e-5, rtol=0)


def test_best_of_n_k_above_n_and_n_one(sd_pipe, tiny_scorer):
    out = best_of_n(sd_pipe, PROMPTS[0], n=2, k=5, seed=3, scorer=tiny_scorer, output_type="np", **sd_kwargs())
    assert out.images.shape == (2, SIZE, SIZE, 3) and out.images.dtype == np.float32
    assert sorted(out.indices) == [0, 1] and out.indices == out.all_scores.keep(sort=True)
    one = best_of_n(sd_pipe, PROMPTS[0], n=1, seed=3, scorer=tiny_scorer, output_type="np", **sd_kwargs())
    assert one.indices == [0] and one.seeds == [3] and one.images.shape == (1, SIZE, SIZE, 3)
    np.testing.assert_allclose(one.images[0], out.images[out.indices.index(0)], atol=1e-5)


@pytest.mark.parametrize("output_type", ["pil", "np", "pt", "latent"])
def test_best_of_n_output_types_and_threshold_dropping_all(sd_pipe, tiny_scorer, output_type):
    out = best_of_n(sd_pipe, PROMPTS[0], n=2, k=1, seed=0, scorer=tiny_scorer, output_type=output_type,
                    **sd_kwargs())
    if output_type == "pil":
        assert isinstance(out.images, list) and out.images[0].size == (SIZE, SIZE)
    elif output_type == "np":
        assert out.images.shape == (1, SIZE, SIZE, 3)
    elif output_type == "pt":
        assert out.images.shape == (1, 3, SIZE, SIZE) and float(out.images.min()) >= 0
    else:
        assert out.images.shape == (1, 4, SIZE // 2, SIZE // 2)
        ref = best_of_n(sd_pipe, PROMPTS[0], n=2, k=1, seed=0, scorer=tiny_scorer, output_type="pt", **sd_kwargs())
        assert ref.indices == out.indices
        torch.testing.assert_close(decode_latents(sd_pipe, out.images), ref.images, atol=1e-5, rtol=0)

    with pytest.warns(UserWarning, match=r"no candidate of prompt\(s\) \[0\]"):
        empty = best_of_n(sd_pipe, PROMPTS[0], n=2, k=1, seed=0, threshold=1e6, scorer=tiny_scorer,
                          output_type=output_type, **sd_kwargs())
    assert empty.indices == [] and empty.seeds == [] and len(empty.scores) == 0 and len(empty.all_scores) == 2
    assert len(empty.images) == 0
    if output_type != "pil":
        assert tuple(empty.images.shape[1:]) == tuple(out.images.shape[1:])


class FakePipeline:
    """Any pipeline that returns images: noise drawn from each generator, an NSFW flag per image
    (odd seeds), chunk sizes recorded."""

    def __init__(self):
        self.calls = []

    def __call__(self, prompt=None, num_images_per_prompt=1, generator=None, output_type="pil", return_dict=True,
                 size=8):
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        assert len(generator) == len(prompts) * num_images_per_prompt
        self.calls.append(len(generator))
        seeds = [g.initial_seed() for g in generator]
        images = torch.stack([torch.rand(3, size, size, generator=g) ** (1 + s % 3) for g, s in zip(generator, seeds)])
        assert output_type == "pt"
        return StableDiffusionPipelineOutput(images=images, nsfw_content_detected=[s % 2 == 1 for s in seeds])


def test_best_of_n_any_pipeline_reorders_nsfw_flags(tiny_scorer):
    pipe = FakePipeline()
    out = best_of_n(pipe, ["x", "y"], n=5, k=3, seed=100, batch_size=2, scorer=tiny_scorer, output_type="pt")
    assert pipe.calls == [4, 4, 2]       # 2 prompts x chunks of 2, 2, 1 candidates
    assert out.all_seeds == list(range(100, 110))
    assert out.nsfw_content_detected == [s % 2 == 1 for s in out.seeds]
    assert out.indices == out.all_scores.keep(k=3, group_size=5)
    assert out.prompt_indices == [i // 5 for i in out.indices]
    # each kept image is the one its seed produces
    for img, s in zip(out.images, out.seeds):
        expect = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(s)) ** (1 + s % 3)
        assert torch.equal(img, expect)


def test_best_of_n_ranks_by_a_weighted_mix(tiny_scorer):
    mix = {"naturalness": 1.0, "technical": 3.0}
    out = best_of_n(FakePipeline(), ["x", "y"], n=5, k=2, seed=3, by=mix, scorer=tiny_scorer, output_type="pt")
    assert out.indices == out.all_scores.keep(mix, k=2, group_size=5)
    plain = best_of_n(FakePipeline(), ["x", "y"], n=5, k=2, seed=3, scorer=tiny_scorer, output_type="pt")
    assert plain.indices != out.indices  # the mix really changes the choice on these candidates


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(by={"beauty": 1.0}), ValueError, "unknown score axis"),
    (dict(by={"technical": -1.0}), ValueError, "by: mix weights"),
    (dict(by=3), TypeError, "by must be"),
    (dict(n=0), ValueError, "n must be"),
    (dict(k=0), ValueError, "k must be"),
    (dict(by="beauty"), ValueError, "unknown score axis"),
    (dict(output_type="jpeg"), ValueError, "output_type must be"),
    (dict(generator=torch.Generator()), ValueError, "seed="),
    (dict(num_images_per_prompt=2), ValueError, "n="),
    (dict(seed=[1, 2, 3]), ValueError, "one seed per candidate"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(threshold="high"), ValueError, "threshold"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(scorer=3.5), TypeError, "scorer must be"),
])
def test_best_of_n_argument_errors(tiny_scorer, kwargs, error, match):
    kwargs = {"scorer": tiny_scorer, "n": 2, **kwargs}
    with pytest.raises(error, match=match):
        best_of_n(FakePipeline(), "x", **kwargs)


def test_callback_argument_errors():
    with pytest.raises(ValueError, match="k must be"):
        naturalness_filter(k=0)
    with pytest.raises(ValueError, match="output_type must be"):
        naturalness_filter(output_type="jpg")
    with pytest.raises(ValueError, match="unknown score axis"):
        naturalness_filter(by="beauty")
    with pytest.raises(ValueError, match="must not all be zero"):
        naturalness_filter(by={"technical": 0.0})
    assert naturalness_filter(by={"naturalness": 1, "technical": 0.25}).config.by == \
        {"naturalness": 1.0, "technical": 0.25}
    cb = naturalness_filter(num_images_per_prompt=2, decode=lambda p, lat: lat[:, :3].clamp(0, 1))

    class P:
        num_timesteps = 10      # the batch is checked at the first step, before any model is loaded

    with pytest.raises(ValueError, match="num_images_per_prompt=2 does not divide"):
        cb(P(), 0, 0, {"latents": torch.zeros(3, 4, 2, 2)})


def test_no_model_fails_before_generating(isolated_models):
    class MustNotRun(FakePipeline):
        def __call__(self, *a, **kw):
            raise AssertionError("the pipeline ran although no model exists")

    with pytest.raises(NoModelError, match="joint convert"):
        best_of_n(MustNotRun(), "x", n=2)

    class P:
        num_timesteps = 10

    with pytest.raises(NoModelError, match="joint convert"):
        naturalness_filter(decode=lambda p, lat: lat)(P(), 0, 0, {"latents": torch.zeros(1, 3, 8, 8)})  # step 0


def test_import_without_diffusers_names_the_extra(monkeypatch):
    for name in [m for m in sys.modules if m == "diffusers_hook" or m.startswith("diffusers_hook.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "diffusers", None)     # import diffusers -> ImportError
    hook = importlib.import_module("diffusers_hook")          # the package itself imports fine
    for name in ("best_of_n", "naturalness_filter"):
        with pytest.raises(ImportError, match=r"pip install 'joint-naturalness\[diffusers\]'"):
            getattr(hook, name)
    with pytest.raises(AttributeError):
        hook.does_not_exist  # noqa: B018


def test_example_script_runs_offline(isolated_models, tmp_path, capsys):
    import importlib.util

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("best_of_n_example",
                                                  REPO / "examples" / "best_of_n_stable_diffusion.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    example.main(["a red fox", "a boat", "--offline-demo", "--n", "2", "--k", "1", "--device", "cpu",
                  "--out", str(tmp_path)])
    saved = sorted(p.name for p in tmp_path.glob("*.png"))
    assert len(saved) == 2 and saved[0].startswith("p0_seed") and saved[1].startswith("p1_seed")
    assert "2 of 4 candidates kept" in capsys.readouterr().out


def test_best_of_n_latent_output_needs_a_known_family(tiny_scorer):
    pipe = FakePipeline()
    with pytest.raises(NotImplementedError, match="FakePipeline"):
        best_of_n(pipe, "x", n=2, scorer=tiny_scorer, output_type="latent")
    assert pipe.calls == []      # refused before generating
