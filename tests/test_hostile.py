"""Hostile inputs (issue 17): the corpus that keeps growing.

Every bad input found later goes here, with the behaviour it must get: a score, or a named
per-item error, never a hang, a traceback, a lost batch or a silently wrong score. Every file is
made by the test itself (in ``tmp_path``); nothing is downloaded. Sections follow the issue's
items: memory (1), non-regular files (2), long names (5), per-item failures (6), silently wrong
scores (7), degenerate images (8), smaller things (9), and the DataLoader contract.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import struct
import subprocess
import sys
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from joint_core import NaturalnessScorer, ScoreResult
from joint_core.checkpoint import CheckpointError
from joint_core.cli import main
from joint_core.preprocess.images import (MAX_ASPECT, AmbiguousLayoutWarning, FlaggedImageWarning, ImageLimits,
                                          UnreadablePath, collect_images, degenerate_reason, expand_paths,
                                          load_image, load_items, os_error_message)

from conftest import REPO, photo

sys.path.insert(0, str(REPO / "benchmarks"))
import input_memory  # noqa: E402

AXES = ("technical", "rationality", "naturalness")


def scores(result, i=0):
    return tuple(float(getattr(result, a)[i]) for a in AXES)


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def png_header_bytes(width, height, bit_depth=8, color_type=2):
    """A PNG that declares ``width`` x ``height`` but holds almost no data (a decompression bomb's
    header): anything that decodes it before checking the size allocates the declared raster."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def run_python(code: str, timeout: float, *args: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter, killed after ``timeout`` seconds (a hang fails the test)."""
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=str(REPO))


@pytest.fixture(scope="module")
def corpus():
    """Real photographs and the degenerate frames of the issue, 256 x 256 uint8."""
    def square(a):
        return np.array(Image.fromarray(a).convert("RGB").resize((256, 256), Image.BILINEAR))

    rng = np.random.default_rng(0)
    return {
        "astronaut": square(photo("astronaut")), "coffee": square(photo("coffee")),
        "chelsea": square(photo("chelsea")),
        "grey": np.full((256, 256, 3), 128, np.uint8), "black": np.zeros((256, 256, 3), np.uint8),
        "noise": rng.integers(0, 256, (256, 256, 3), dtype=np.uint8),
    }


PHOTOS = ("astronaut", "coffee", "chelsea")
DEGENERATE = ("grey", "black", "noise")


# ============================================================================================
# 1. tiny files that allocate gigabytes: work per image is bounded
# ============================================================================================


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.parametrize("case,ceiling_mb", [
    ("thin", 150),       # 1x5000 PNG: 3.2 GB before the fix
    ("thin-x3", 250),    # three of them in one batch: 9.7 GB before
    ("bilevel", 350),    # 12000x7400 1-bit PNG of 10 KB: 2.3 GB before
])
def test_tiny_files_stay_under_a_memory_ceiling(case, ceiling_mb):
    r = input_memory.run_in_subprocess(case, timeout=300)
    assert r["scored"] == input_memory.CASES[case][1], r["errors"]
    assert r["peak_rise_mb"] < ceiling_mb, r


def test_extreme_aspect_ratio_is_cropped_to_the_limit_with_a_warning(tmp_path):
    thin = np.linspace(0, 255, 5000).astype(np.uint8)[:, None, None].repeat(3, 2)   # 1 wide, 5000 tall
    Image.fromarray(thin).save(tmp_path / "thin.png")
    path_item, array_item = collect_images([tmp_path / "thin.png", thin])
    (tensor_item,) = collect_images(torch.from_numpy(thin).permute(2, 0, 1), layout="channels_first")
    for it in (path_item, array_item, tensor_item):
        assert it.ok and it.tensor.shape == (3, MAX_ASPECT, 1)          # the central 16:1 part
        assert "more elongated than 16:1" in it.warning and "1x16" in it.warning
    assert torch.equal(path_item.tensor, array_item.tensor) and torch.equal(path_item.tensor, tensor_item.tensor)
    assert torch.equal(path_item.tensor[:, :, 0], torch.from_numpy(thin[2492:2508, 0]).T)
    wide = np.zeros((100, 1700, 3), np.uint8)                           # 17:1 -> 1600 wide
    (item,) = collect_images(wide)
    assert item.tensor.shape == (3, 100, 1600) and "1700x100" in item.warning
    (ok,) = collect_images(np.zeros((100, 1600, 3), np.uint8))          # exactly 16:1: untouched
    assert ok.tensor.shape == (3, 100, 1600) and "elongated" not in (ok.warning or "")


def test_big_images_shrink_while_read_the_same_way_for_every_input_kind(tmp_path, tiny_scorer):
    big = np.array(Image.fromarray(photo("coffee")).resize((3000, 1100), Image.BILINEAR))
    Image.fromarray(big).save(tmp_path / "big.png")
    limits = ImageLimits(max_side=512)                                   # 3000 // 512 = 5: shrink by 5
    items = collect_images([tmp_path / "big.png", Image.fromarray(big), big, torch.from_numpy(big)], limits)
    ref = items[0].tensor
    assert ref.shape == (3, 220, 600) and ref.dtype == torch.uint8
    for it in items[1:]:
        assert torch.equal(it.tensor, ref), it.source
    (flt,) = collect_images(torch.from_numpy(big).permute(2, 0, 1).float() / 255, limits)
    assert flt.tensor.shape == ref.shape and (flt.tensor - ref.float() / 255).abs().max() <= 1 / 255
    assert load_image(tmp_path / "big.png").shape == (3, 1100, 3000)     # no max_side: full size
    # the scorer reads with its model's max_side (512 for tiny-test), so kinds still agree
    res = quiet(tiny_scorer.score, [str(tmp_path / "big.png"), big, Image.fromarray(big)])
    assert scores(res, 0) == scores(res, 1) == scores(res, 2)


def test_large_jpegs_are_decoded_at_a_reduced_scale(tmp_path):
    Image.fromarray(photo("astronaut")).resize((4000, 3000)).save(tmp_path / "big.jpg", quality=90)
    t = load_image(tmp_path / "big.jpg", ImageLimits(max_side=512))
    assert t.shape == (3, 750, 1000)   # DCT scaling by 4 (the decoder never held 4000x3000), long side >= 512


def test_declared_size_is_refused_before_decoding(tmp_path):
    (tmp_path / "bomb.png").write_bytes(png_header_bytes(30000, 30000))  # 900 megapixels, 100 bytes
    t0 = time.perf_counter()
    (item,) = collect_images(tmp_path / "bomb.png")
    assert not item.ok and "over the limit of 89.5 megapixels" in item.error
    assert time.perf_counter() - t0 < 5
    (tmp_path / "bomb2.png").write_bytes(png_header_bytes(10000, 10000))  # 100 MP: under Pillow's hard limit
    (ours,) = collect_images(tmp_path / "bomb2.png")
    assert not ours.ok and "10000x10000 is 100.0 megapixels, over the limit of 89.5" in ours.error
    (lazy,) = collect_images(Image.open(tmp_path / "bomb2.png"))         # a PIL image not yet decoded
    assert not lazy.ok and "over the limit" in lazy.error
    Image.new("RGB", (20, 20)).save(tmp_path / "small.png")
    with pytest.raises(ValueError, match="over the limit"):
        load_image(tmp_path / "small.png", ImageLimits(max_pixels=399))


# ============================================================================================
# 2. FIFOs and other non-regular files: refused by name, never read
# ============================================================================================

_FIFO_PROBE = """
import json, sys
from joint_core.preprocess.images import collect_images, expand_paths
paths = expand_paths(sys.argv[1:])
print(json.dumps([[it.source, it.ok, it.error] for it in collect_images(paths)]))
"""


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_fifo_and_devices_are_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    Image.fromarray(photo("coffee")).save(tmp_path / "good.png")
    folder = tmp_path / "folder"
    folder.mkdir()
    os.mkfifo(folder / "also-a-pipe.png")
    t0 = time.perf_counter()
    proc = run_python(_FIFO_PROBE, 60, str(tmp_path / "pipe.png"), str(tmp_path / "good.png"), "/dev/zero",
                      str(folder))
    assert time.perf_counter() - t0 < 60 and proc.returncode == 0, proc.stderr
    out = {Path(src).name: (ok, err) for src, ok, err in json.loads(proc.stdout)}
    assert out["good.png"] == (True, None)
    assert "pipe.png: is a FIFO (named pipe), not an image file" in out["pipe.png"][1]
    assert "is a character device" in out["zero"][1]
    assert "also-a-pipe.png: is a FIFO" in out["also-a-pipe.png"][1]    # folder mode reports it too


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_cli_refuses_a_fifo_and_scores_the_rest(tmp_path, tiny_model_dir):
    os.mkfifo(tmp_path / "pipe.png")
    Image.fromarray(photo("coffee")).save(tmp_path / "good.png")
    proc = subprocess.run([sys.executable, "-m", "joint_core", "score", str(tmp_path / "pipe.png"),
                           str(tmp_path / "good.png"), "-m", str(tiny_model_dir), "--no-progress"],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 1, proc.stderr
    assert "pipe.png: is a FIFO" in proc.stderr and "good.png" in proc.stdout and "1/2 images scored" in proc.stdout


# ============================================================================================
# 5. a path component longer than the file system allows: one more per-file error
# ============================================================================================


def test_name_too_long_is_a_per_file_error(tmp_path, tiny_model_dir, capsys):
    long = str(tmp_path / ("x" * 300 + ".png"))
    Image.fromarray(photo("coffee")).save(tmp_path / "good.png")
    assert expand_paths([long, str(tmp_path / ("y" * 300 + "*.png"))])[0] == long   # no exception
    (item,) = collect_images(long)
    assert not item.ok and "file name too long" in item.error
    assert main(["score", long, str(tmp_path / "good.png"), "-m", str(tiny_model_dir), "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "file name too long" in captured.err and "good.png" in captured.out


# ============================================================================================
# 6. inputs that used to take the whole call down: now named per-item errors
# ============================================================================================


def test_broken_python_objects_fail_alone(tmp_path, tiny_scorer):
    good = photo("chelsea")
    Image.fromarray(np.tile(good, (2, 2, 1))).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    lazy_truncated = Image.open(tmp_path / "truncated.png")             # opened, not decoded
    closed = Image.fromarray(good)
    closed.close()
    dense = torch.from_numpy(good).permute(2, 0, 1).float() / 255
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)                    # quantized tensors are deprecated
        quant = torch.quantize_per_tensor(dense, 1 / 255, 0, torch.quint8)
    bad = {
        "lazily opened truncated PIL image": (lazy_truncated, "truncated.png"),
        "closed PIL image": (closed, "closed"),
        "meta tensor": (torch.empty(3, 64, 64, device="meta"), "meta device"),
        "sparse COO tensor": (dense.to_sparse(), "sparse_coo tensors are not supported"),
        "sparse CSR tensor": (dense[0].to_sparse_csr(), "sparse_csr tensors are not supported"),
        "quantized tensor": (quant, "quantized tensors"),
        "nested tensor": (torch.nested.nested_tensor([dense, dense[:, :10]]), "nested tensors"),
    }
    inputs = [good] + [v for v, _ in bad.values()] + [good]
    res = quiet(tiny_scorer.score, inputs, batch_size=3)
    assert sorted(res.errors) == list(range(1, len(bad) + 1))
    for i, (what, (_, message)) in enumerate(bad.items(), start=1):
        assert message in res.errors[i], (what, res.errors[i])
        assert res.errors[i].startswith(res.sources[i].split(" (")[0]), res.errors[i]   # names the input
    alone = scores(tiny_scorer.score(good))
    assert scores(res, 0) == alone and scores(res, len(inputs) - 1) == alone


def test_comfyui_nodes_refuse_meta_and_sparse_images_by_name(tiny_model_dir):
    from comfyui_joint import nodes, host

    scorer = NaturalnessScorer.from_pretrained(tiny_model_dir, device="cpu")
    model = host.NaturalnessModel(scorer, "tiny", tiny_model_dir, torch.device("cpu"), torch.device("cpu"))
    for images in (torch.empty(2, 32, 32, 3, device="meta"), torch.rand(2, 32, 32, 3).to_sparse()):
        calls = {
            "Score Naturalness": lambda im: nodes.ScoreNaturalness().score([model], [im]),
            "Filter by Naturalness": lambda im: nodes.FilterByNaturalness().filter(model, im, "naturalness", 3.0),
            "Best of N": lambda im: nodes.BestOfN().best_of_n(model, im, 1, "naturalness"),
            "Preview Naturalness": lambda im: nodes.PreviewNaturalness().preview(model, im),
        }
        for node, call in calls.items():
            with pytest.raises(ValueError, match=f"^{node}: input 'images' is (on the meta device|a sparse)"):
                call(images)


# ============================================================================================
# 7. silently wrong scores: layouts and EXIF orientation
# ============================================================================================


def test_ambiguous_layout_warns_and_layout_decides(tiny_scorer):
    rows = np.ascontiguousarray(photo("coffee")[200:203, :64])          # an image 3 pixels high (HWC)
    bhwc = torch.from_numpy(rows)[None]                                 # [1, 3, 64, 3]: H = C = 3
    truth = collect_images(Image.fromarray(rows))[0].tensor
    with pytest.warns(AmbiguousLayoutWarning, match=r"input 0: shape \(1, 3, 64, 3\).*layout='channels_last'"):
        (guessed,) = collect_images(bhwc)
    assert guessed.tensor.shape[-1] == 3                                # the documented rule: torch -> CHW
    with warnings.catch_warnings():
        warnings.simplefilter("error", AmbiguousLayoutWarning)
        (told,) = collect_images(bhwc, layout="channels_last")
        assert torch.equal(told.tensor, truth)
        told_res = quiet(tiny_scorer.score, bhwc, layout="channels_last")
        for unambiguous in (torch.rand(2, 40, 64, 3), torch.rand(2, 3, 40, 64), torch.rand(3, 40, 64),
                            np.zeros((40, 64, 3), np.uint8), torch.rand(40, 64)):
            assert all(it.ok for it in collect_images(unambiguous))
    assert scores(told_res) == scores(quiet(tiny_scorer.score, Image.fromarray(rows)))
    with pytest.warns(AmbiguousLayoutWarning, match="numpy array"):
        (arr,) = collect_images(rows)                                   # numpy's convention: HWC
    assert torch.equal(arr.tensor, truth)
    (wrong,) = collect_images(torch.rand(3, 40, 64), layout="channels_last")
    assert not wrong.ok and "layout='channels_last' but shape (3, 40, 64) has 64 channels" in wrong.error
    with pytest.raises(ValueError, match="layout must be one of"):
        tiny_scorer.score(torch.rand(3, 40, 64), layout="hwc")


def test_comfyui_image_three_pixels_high_is_read_right(tiny_model_dir):
    from comfyui_joint import nodes, host

    scorer = NaturalnessScorer.from_pretrained(tiny_model_dir, device="cpu")
    model = host.NaturalnessModel(scorer, "tiny", tiny_model_dir, torch.device("cpu"), torch.device("cpu"))
    rows = np.ascontiguousarray(photo("coffee")[200:204, :64])          # 4 pixels high: H = 4 = RGBA?
    image = torch.from_numpy(rows.astype(np.float32) / 255)[None]       # ComfyUI IMAGE [1, 4, 64, 3]
    with warnings.catch_warnings():
        warnings.simplefilter("error", AmbiguousLayoutWarning)
        warnings.simplefilter("ignore", FlaggedImageWarning)
        tech, rat, nat, _ = nodes.ScoreNaturalness().score([model], [image])["result"]
        ref = scorer.score(torch.from_numpy(rows.astype(np.float32) / 255).permute(2, 0, 1))
    assert (tech[0], rat[0], nat[0]) == scores(ref)


def test_exif_orientation_is_applied_to_pil_images_as_to_paths(tmp_path, tiny_scorer):
    upright = photo("chelsea")                                          # 300 x 451
    stored = np.ascontiguousarray(np.rot90(upright, k=1))               # as a camera held sideways stores it
    exif = Image.Exif()
    exif[0x0112] = 6                                                    # "rotate 90 clockwise to view"
    Image.fromarray(stored).save(tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    viewed = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "rotated.jpg")))
    assert viewed.shape == upright.shape
    by_path = scores(tiny_scorer.score(str(tmp_path / "rotated.jpg")))
    lazy = Image.open(tmp_path / "rotated.jpg")
    assert scores(tiny_scorer.score(lazy)) == by_path                   # a lazily opened PIL image
    loaded = Image.open(tmp_path / "rotated.jpg")
    loaded.load()
    assert scores(tiny_scorer.score(loaded)) == by_path                 # a decoded one
    assert loaded.size == (300, 451)                                    # the caller's image untouched
    assert scores(tiny_scorer.score(viewed)) == by_path                 # the upright pixels
    raw = np.asarray(Image.open(tmp_path / "rotated.jpg"))
    assert scores(tiny_scorer.score(raw)) != by_path                    # sanity: orientation matters


# ============================================================================================
# 8. degenerate images: flagged, and last in every selection
# ============================================================================================


def test_degenerate_frames_are_flagged():
    rng = np.random.default_rng(1)
    logo = np.zeros((512, 512, 3), np.uint8)
    logo[240:260, 200:300] = 255                                        # a black frame with a small mark
    dark = np.kron(rng.integers(0, 2, (16, 16, 1)) * 8, np.ones((16, 16, 3))).astype(np.uint8)  # 0 or 8
    cases = {
        "flat grey": (np.full((256, 256, 3), 128, np.uint8), "nearly uniform"),
        "black": (np.zeros((256, 256, 3), np.uint8), "nearly uniform"),
        "white float": (torch.ones(3, 256, 256), "nearly uniform"),
        "black with a mark": (logo, "nearly uniform"),
        "nearly black": (dark, "nearly black"),
        "noise": (rng.integers(0, 256, (256, 256, 3), dtype=np.uint8), "pure noise"),
        "gaussian noise": ((0.5 + 0.2 * torch.randn(3, 300, 200, generator=torch.Generator().manual_seed(0)))
                           .clamp(0, 1), "pure noise"),
        "4096 px noise": (rng.integers(0, 256, (4096, 4096, 3), dtype=np.uint8), "pure noise"),
        "1x1": (np.array([[[10, 200, 30]]], np.uint8), "too small"),
        "20x400": (np.asarray(Image.fromarray(photo("coffee")).resize((400, 20))), "too small"),
    }
    for name, (img, kind) in cases.items():
        (item,) = collect_images(img)
        assert item.ok and item.warning and kind in item.warning, (name, item.warning)
        assert "ranks last" in item.warning and item.warning.startswith("input 0")
    x = torch.from_numpy(cases["noise"][0]).permute(2, 0, 1)
    assert degenerate_reason(x) == degenerate_reason(x.clone())         # deterministic
    assert collect_images(np.zeros((64, 64, 3), np.uint8), ImageLimits(flag_degenerate=False))[0].warning is None



def test_flags_read_any_dtype_alike_and_select_like_torch():
    """The flags are computed in NumPy (no torch thread team beside the model): the order
    statistics must be torch's (lower median, linear quantile), and an image gives the same
    verdict as uint8, float32, float16 or bfloat16."""
    from joint_core.preprocess.flags import _quantile

    gen = torch.Generator().manual_seed(3)
    for n in (1, 2, 3, 10, 101, 65536):
        v = torch.rand(n, generator=gen)
        for q in (0.0, 0.5, 0.99, 1.0):
            assert _quantile(v.numpy(), q) == pytest.approx(float(torch.quantile(v, q)), abs=1e-7), (n, q)
    noise = torch.randint(0, 256, (3, 300, 200), generator=gen, dtype=torch.uint8)
    grey = torch.full((3, 300, 200), 77, dtype=torch.uint8)
    for img, kind in ((torch.from_numpy(photo("coffee")).permute(2, 0, 1), None), (noise, "pure noise"),
                      (grey, "nearly uniform")):
        verdicts = {dt: degenerate_reason(img if dt == torch.uint8 else (img.float() / 255).to(dt))
                    for dt in (torch.uint8, torch.float32, torch.float16, torch.bfloat16)}
        assert all((v is None) == (kind is None) and (kind is None or kind in v) for v in verdicts.values()), verdicts
    assert "rgb(77, 77, 77)" in degenerate_reason(grey)

PHOTO_NAMES = ("astronaut", "coffee", "chelsea", "camera", "rocket", "moon", "page", "text", "horse", "clock",
               "coins", "hubble_deep_field", "grass", "gravel", "brick", "retina", "immunohistochemistry",
               "colorwheel", "logo", "cell", "checkerboard", "microaneurysms")


@pytest.mark.parametrize("name", PHOTO_NAMES)
def test_real_photos_are_not_flagged(name):
    a = np.asarray(photo(name))
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    img = Image.fromarray(a).convert("RGB")
    for size in (None, 64):                                             # as is, and as a thumbnail
        im = img if size is None else img.resize((size, size), Image.BILINEAR)
        (item,) = collect_images(im)
        assert item.ok and item.warning is None, (name, size, item.warning)


def test_flagged_images_rank_last_in_every_selection():
    nat = torch.tensor([3.0, 4.9, 2.0, 5.0, float("nan"), 3.5])
    res = ScoreResult(nat.clone(), nat.clone(), nat, [f"s{i}" for i in range(6)], errors={4: "s4: failed"},
                      warnings={1: "s1: flagged: nearly uniform", 3: "s3: flagged: pure noise"})
    assert res.ranking() == [5, 0, 2, 3, 1, 4]                          # flagged after the rest, failed last
    assert res.ranking(descending=False) == [2, 0, 5, 1, 3, 4]          # last whatever the direction
    assert res.keep(k=2) == [5, 0] and res.keep(k=4) == [5, 0, 2, 3] and res.best_indices(10) == [5, 0, 2, 3, 1]
    assert res.keep(threshold=1.0) == [0, 2, 5]                         # a threshold never lets them through
    assert res.keep(k=1, group_size=2) == [0, 2, 5]                     # per group: [0,1] [2,3] [4,5]
    assert res.flagged.tolist() == [False, True, False, True, False, False]
    recs = res.to_records()
    assert recs[1]["warning"] == "s1: flagged: nearly uniform" and recs[0]["warning"] is None
    top = res.top(5)
    assert top.sources == ["s5", "s0", "s2", "s3", "s1"] and top.warnings == {3: "s3: flagged: pure noise",
                                                                               4: "s1: flagged: nearly uniform"}
    assert "2 flagged (ranked last)" in res.summary()


def test_scorer_flags_degenerate_images_and_ranks_them_last(default_scorer, corpus):
    names = PHOTOS + DEGENERATE
    with pytest.warns(FlaggedImageWarning, match="3 of 6 image"):
        res = default_scorer.score([corpus[n] for n in names])
    assert sorted(res.warnings) == [3, 4, 5] and not res.errors
    raw = res.naturalness.tolist()
    # v1 and v2 scored such frames above the photos on raw naturalness (the flag alone kept them
    # out); since v3 the score itself puts them below
    assert max(raw[3:]) < min(raw[:3])
    key = res.scores(None).tolist()                                     # the model's default ranking key
    assert set(res.keep(k=2)) <= {0, 1, 2} and res.ranking()[3:] == sorted(
        [3, 4, 5], key=lambda i: -key[i])


def test_best_of_n_node_and_filter_node_pass_photos_not_frames(default_scorer, corpus):
    from comfyui_joint import nodes, host

    model = host.NaturalnessModel(default_scorer, "default", Path("."), torch.device("cpu"),
                                     torch.device("cpu"))
    names = PHOTOS + DEGENERATE
    batch = torch.from_numpy(np.stack([corpus[n] for n in names]).astype(np.float32) / 255)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FlaggedImageWarning)
        out = nodes.BestOfN().best_of_n(model, batch, 2, "naturalness")
        filtered = nodes.FilterByNaturalness().filter(model, batch, "naturalness", 1.0)
        score = nodes.ScoreNaturalness().score([model], [batch])
        preview = nodes.PreviewNaturalness().preview(model, batch)
    assert set(out["result"][2]) <= {0, 1, 2} and "(flagged)" in out["ui"]["text"][0]
    kept, rejected = filtered["result"][:2]
    assert kept.shape[0] == 3 and rejected.shape[0] == 3                # every frame rejected, whatever its score
    assert torch.equal(kept, batch[:3]) and filtered["ui"]["text"][0].count("rejected (flagged)") == 3
    records = score["ui"]["scores"]
    assert [r["warning"] is not None for r in records] == [False] * 3 + [True] * 3
    assert "image 4: flagged: nearly uniform" in score["result"][3]
    assert "flagged" in preview["ui"]["text"][0]



def test_cli_marks_flagged_images_and_ranks_them_last(tmp_path, corpus, capsys):
    for n in PHOTOS + DEGENERATE:
        Image.fromarray(corpus[n]).save(tmp_path / f"{n}.png")
    out = tmp_path / "scores.csv"
    assert main(["score", str(tmp_path), "-m", "default", "--top", "2", "--no-progress", "-o", str(out)]) == 0
    captured = capsys.readouterr()
    rows = list(csv.DictReader(out.open()))
    assert {Path(r["source"]).stem for r in rows} <= set(PHOTOS) and all(r["warning"] == "" for r in rows)
    assert main(["score", str(tmp_path), "-m", "default", "--sort", "naturalness", "--no-progress",
                 "-o", str(out), "--overwrite"]) == 0
    captured = capsys.readouterr()
    rows = list(csv.DictReader(out.open()))
    assert [Path(r["source"]).stem in DEGENERATE for r in rows] == [False] * 3 + [True] * 3
    assert all("flagged" in r["warning"] for r in rows[3:])
    assert captured.out.count("(flagged)") == 3 and "joint: warning:" in captured.err
    assert "3 flagged (ranked last)" in captured.out


def test_best_of_n_never_picks_a_safety_checker_black_frame(default_scorer, corpus):
    pytest.importorskip("diffusers")
    from diffusers_hook import best_of_n, testing

    pipe = testing.sd_pipeline("tiny")
    stand_ins = {0: corpus["black"], 1: corpus["astronaut"], 2: corpus["grey"]}

    def safety_checker(image, device, dtype):
        """Like SD's checker: flagged images come back black and are not denormalised; candidate
        1 becomes a photograph and 2 a flat frame."""
        image = image.clone()
        for i, a in stand_ins.items():
            if i < image.shape[0]:
                x = torch.from_numpy(a).permute(2, 0, 1).float() / 255
                image[i] = 0 if i == 0 else x * 2 - 1
        return image, [i == 0 for i in range(image.shape[0])]

    pipe.run_safety_checker = safety_checker
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FlaggedImageWarning)
        out = best_of_n(pipe, "a photograph", n=3, k=1, seed=0, scorer=default_scorer, output_type="pt",
                        num_inference_steps=2, height=256, width=256)
    all_nat = out.all_scores.naturalness.tolist()
    # flagged whatever their score; since v3 the naturalness itself also puts both below the photo
    assert sorted(out.all_scores.warnings) == [0, 2] and max(all_nat[0], all_nat[2]) < all_nat[1]
    assert out.indices == [1] and out.nsfw_content_detected == [False]
    assert out.scores.warnings == {}


# ============================================================================================
# 9. smaller things
# ============================================================================================


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_folder_mode_reports_what_it_skips_and_why(tmp_path, tiny_model_dir, capsys):
    d = tmp_path / "imgs"
    d.mkdir()
    Image.fromarray(photo("coffee")).save(d / "good.png")
    os.symlink("nowhere.png", d / "dangling.png")
    os.symlink("loop.png", d / "loop.png")
    os.mkfifo(d / "pipe.jpg")
    (d / "vector.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    Image.new("RGB", (32, 32)).save(d / "icon.ico")
    (d / "notes.txt").write_text("not an image: ignored")
    assert main(["score", str(d), "-m", str(tiny_model_dir), "--no-progress"]) == 1
    err = capsys.readouterr().err
    for name, why in (("dangling.png", "broken symbolic link"), ("loop.png", "symbolic link loop"),
                      ("pipe.jpg", "is a FIFO"), ("vector.svg", ".svg files are not read from folders"),
                      ("icon.ico", ".ico files are not read from folders")):
        assert any(name in line and why in line for line in err.splitlines()), (name, err)
    assert "notes.txt" not in err


def test_empty_folder_and_empty_path_are_errors_not_silence(tmp_path, tiny_model_dir, capsys, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    Image.fromarray(photo("coffee")).save(tmp_path / "good.png")
    assert main(["score", str(empty), "-m", str(tiny_model_dir)]) == 2
    assert "empty: folder holds no images" in capsys.readouterr().err
    assert main(["score", str(empty), str(tmp_path / "good.png"), "-m", str(tiny_model_dir)]) == 1
    assert "1 other file(s) ignored" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)                                         # "" must not mean "."
    assert main(["score", "", "-m", str(tiny_model_dir)]) == 2
    captured = capsys.readouterr()
    assert "empty path" in captured.err and "good.png" not in captured.out
    (item,) = collect_images("")
    assert not item.ok and "empty path" in item.error


def test_messages_say_what_is_wrong(tmp_path, tiny_model_dir, tiny_scorer, monkeypatch):
    os.symlink("loop.png", tmp_path / "loop.png")
    (item,) = collect_images(tmp_path / "loop.png")
    assert "symbolic link loop" in item.error and "no such file" not in item.error
    assert "permission denied" in os_error_message("x.png", PermissionError(errno.EACCES, "Permission denied"))
    # weights that cannot be read are not "No such file"
    for how, expected in (("folder", "model.safetensors: is a folder, not a file"),
                          ("dangling", "model.safetensors: broken symbolic link")):
        m = tmp_path / f"model-{how}"
        m.mkdir()
        (m / "config.json").write_bytes((tiny_model_dir / "config.json").read_bytes())
        if how == "folder":
            (m / "model.safetensors").mkdir()
        else:
            os.symlink("gone.safetensors", m / "model.safetensors")
        with pytest.raises(CheckpointError, match=expected):
            NaturalnessScorer.from_pretrained(m, device="cpu")
    real_open = os.open

    def no_permission(path, *args, **kwargs):
        if str(path).endswith("model.safetensors"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_permission)
    with pytest.raises(CheckpointError, match="model.safetensors: permission denied"):
        NaturalnessScorer.from_pretrained(tiny_model_dir, device="cpu")
    monkeypatch.setattr(os, "open", real_open)
    # float TIFFs: no "divide by 255" advice for a file; 0..255 floats read like 8-bit
    ramp = np.asarray(Image.fromarray(photo("coffee")).convert("L"), dtype=np.float32)
    Image.fromarray(ramp * 4).save(tmp_path / "hdr.tif")
    (hdr,) = collect_images(tmp_path / "hdr.tif")
    assert "32-bit float image with values in [0, 1020]" in hdr.error and "divide" not in hdr.error
    Image.fromarray(ramp).save(tmp_path / "f255.tif")
    Image.fromarray(ramp.astype(np.uint8)).save(tmp_path / "u8.png")
    assert scores(tiny_scorer.score(str(tmp_path / "f255.tif"))) == scores(tiny_scorer.score(str(tmp_path / "u8.png")))
    # a non-finite score under fp32 is not blamed on fp16
    monkeypatch.setattr(tiny_scorer, "_branches", lambda x_t, x_r: (torch.full((x_t.shape[0],), float("nan")),) * 2)
    res = quiet(tiny_scorer.score, photo("coffee"))
    assert "non-finite" in res.errors[0] and "fp16" not in res.errors[0] and "float32" in res.errors[0]


def test_api_argument_types_are_named(tiny_scorer):
    for bad in (2.5, "8", True, None):
        with pytest.raises(TypeError, match="batch_size must be a positive integer"):
            tiny_scorer.score(photo("coffee"), batch_size=bad)
    assert len(tiny_scorer.score(photo("coffee"), batch_size=np.int64(2))) == 1


def test_comfyui_filter_and_preview_refuse_empty_images_and_nan_thresholds(tiny_model_dir):
    from comfyui_joint import nodes, host

    scorer = NaturalnessScorer.from_pretrained(tiny_model_dir, device="cpu")
    model = host.NaturalnessModel(scorer, "tiny", tiny_model_dir, torch.device("cpu"), torch.device("cpu"))
    for shape in ((1, 0, 64, 3), (2, 64, 0, 3)):
        with pytest.raises(ValueError, match=r"Filter by Naturalness: input 'images' has images without pixels"):
            nodes.FilterByNaturalness().filter(model, torch.rand(*shape), "naturalness", 3.0)
        with pytest.raises(ValueError, match=r"Preview Naturalness: input 'images' has images without pixels"):
            nodes.PreviewNaturalness().preview(model, torch.rand(*shape))
    image = torch.rand(1, 64, 64, 3)
    for nan in (float("nan"), np.float32("nan"), np.float64("nan")):
        with pytest.raises(ValueError, match="Filter by Naturalness: threshold must be a number"):
            nodes.FilterByNaturalness().filter(model, image, "naturalness", nan)


# ============================================================================================
# the streaming contract: per-image loading is a pure function, usable in DataLoader workers
# ============================================================================================


class _Paths(torch.utils.data.Dataset):
    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return load_items(self.paths[i], label=f"input {i}", limits=ImageLimits(max_side=512))


def test_load_items_runs_in_dataloader_workers(tmp_path):
    Image.fromarray(photo("coffee")).save(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    paths = expand_paths([tmp_path / "good.png", tmp_path / "bad.png", tmp_path / "none*.png"])
    assert isinstance(paths[2], UnreadablePath)
    loader = torch.utils.data.DataLoader(_Paths(paths), batch_size=None, num_workers=2, collate_fn=lambda x: x)
    got = [items[0] for items in loader]
    here = [load_items(p, limits=ImageLimits(max_side=512))[0] for p in paths]
    assert [g.ok for g in got] == [True, False, False]
    assert torch.equal(got[0].tensor, here[0].tensor)
    assert got[1].error == here[1].error and got[2].error == "%s: no file matches this pattern" % paths[2]


def test_unreadable_path_pickles_with_its_reason():
    import pickle

    p = pickle.loads(pickle.dumps(UnreadablePath("/x/y", "/x/y: why")))
    assert isinstance(p, UnreadablePath) and p == "/x/y" and p.reason == "/x/y: why"


def test_a_png_bomb_in_memory_is_as_safe_as_on_disk():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)   # Pillow's warning when opening
        bomb = Image.open(io.BytesIO(png_header_bytes(10000, 10000)))
    (item,) = collect_images(bomb)
    assert not item.ok and "over the limit" in item.error
