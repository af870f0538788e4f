"""End to end: the node pack inside a real ComfyUI server, on CPU, through its HTTP API.

The server is conftest's ``comfyui`` fixture (tests/comfyui_server.py): ``COMFYUI_PATH`` names your
own ComfyUI checkout (``COMFYUI_PYTHON`` its interpreter); without it, the ComfyUI 0.8.0 vendored in
``../shared/vendor/comfyui`` is copied to a temporary folder and run with this interpreter (which
then needs ComfyUI's requirements). Without either, the tests are skipped - except in CI, which
runs them. One server serves the whole session (about 40 s to start on two idle cores).

The server's ``custom_nodes/joint`` is a symlink to this checkout (the clone-install path),
``input/`` holds scikit-image photographs, and the tiny test model sits in a naturalness folder
registered through ``--extra-model-paths-config``. The scores the server reports must equal
``NaturalnessScorer.score`` on the same files with the same model in this process. The browser
tests of the same server are in tests/test_comfyui_browser.py.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from joint_core import NaturalnessScorer

from conftest import REPO, photo

pytestmark = pytest.mark.slow

NODES = ["LoadNaturalnessModel", "ScoreNaturalness", "FilterByNaturalness", "NaturalnessBestOfN",
         "PreviewNaturalness"]
PHOTOS = ("astronaut", "coffee", "chelsea")           # 512x512, 600x400, 451x300: sizes tell them apart
AXES = ("technical", "rationality", "naturalness")
# ComfyUI stores PNGs from float images by truncating 255 * x, which can land one level lower
PIXEL_TOLERANCE = 1


@pytest.fixture(scope="module")
def server(comfyui):
    return comfyui


@pytest.fixture(scope="module")
def files(comfyui, tmp_path_factory):
    """Model, photographs and a latent batch, laid out in the server's folders."""
    base = comfyui.base
    root = tmp_path_factory.mktemp("comfyui_e2e")
    photos = base / "input" / "photos"
    photos.mkdir(parents=True)
    for name in PHOTOS:
        Image.fromarray(photo(name)).save(photos / f"{name}.png")
    # a same-size batch for Best of N: 128x160 crops of each photo as one 3-page TIFF
    crops_dir = root / "crops"
    crops_dir.mkdir()
    crops = [np.ascontiguousarray(photo(n)[40:168, 60:220]) for n in PHOTOS]
    for name, c in zip(PHOTOS, crops):
        Image.fromarray(c).save(crops_dir / f"{name}.png")
    # (fresh PIL images: Pillow 13 reuses a PNG save's encoder settings for a later TIFF save)
    pages = [Image.fromarray(c) for c in crops]
    pages[0].save(base / "input" / "crops.tiff", save_all=True, append_images=pages[1:], compression="tiff_lzw")
    # latents whose sample i is filled with i + 1, to see which ones Best of N keeps
    from safetensors.torch import save_file

    save_file({"latent_tensor": (torch.arange(3, dtype=torch.float32) + 1).view(3, 1, 1, 1).repeat(1, 4, 16, 20),
               "latent_format_version_0": torch.tensor([])}, str(base / "input" / "crops.latent"))
    torch.manual_seed(0)
    model_dir = comfyui.models / "naturalness" / "tiny-test"
    NaturalnessScorer.from_config("tiny-test", device="cpu").save_pretrained(model_dir)
    return {"root": root, "base": base, "photos": photos, "crops": crops_dir, "model": model_dir}


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def _assert_same_scores(server_records, reference, label, exact):
    """Bit-identical when the server runs the same torch build (scoring on CPU is deterministic
    and batch-invariant); otherwise within 1e-6 (kernels may round differently)."""
    assert len(server_records) == len(reference), label
    for rec, ref in zip(server_records, reference):
        for ax in AXES:
            assert rec[ax] is not None, (label, rec)
            if exact:
                assert rec[ax] == ref[ax], (label, ax, rec[ax], ref[ax])
            else:
                assert math.isclose(rec[ax], ref[ax], rel_tol=0, abs_tol=1e-6), (label, ax, rec[ax], ref[ax])


def test_comfyui_lists_the_pack(server, files):
    info = server.get("/object_info")
    missing = [n for n in NODES if n not in info]
    assert not missing, f"nodes missing from /object_info: {missing}\n" + server.tail()
    choices = info["LoadNaturalnessModel"]["input"]["required"]["model_name"][0]
    assert choices[0] == "default (shipped)" and "tiny-test" in choices
    score = info["ScoreNaturalness"]
    assert score["output"] == ["FLOAT", "FLOAT", "FLOAT", "STRING"] and score["output_node"] is True
    assert score["output_is_list"] == [True, True, True, False]
    assert info["NaturalnessBestOfN"]["output"] == ["IMAGE", "LATENT", "INT", "FLOAT"]
    assert info["FilterByNaturalness"]["category"] == "image/naturalness"
    assert "/extensions/joint/naturalness.js" in server.get("/extensions")
    assert "registerExtension" in server.get("/extensions/joint/naturalness.js")
    templates = server.get("/workflow_templates")
    assert sorted(templates.get("joint", [])) == sorted(
        p.stem for p in (REPO / "example_workflows").glob("*.json"))
    name = templates["joint"][0]
    assert server.get(f"/api/workflow_templates/joint/{name}.json")["nodes"]


def test_workflow_scores_filters_and_keeps_the_best_as_joint_does(server, files):
    if "LoadImageDataSetFromFolder" not in server.get("/object_info/LoadImageDataSetFromFolder"):
        pytest.skip("this ComfyUI has no LoadImageDataSetFromFolder node (needed to load an image list)")
    scorer = NaturalnessScorer.from_pretrained(files["model"], device="cpu")
    photo_paths = {n: files["photos"] / f"{n}.png" for n in PHOTOS}
    ref = {n: r for n, r in zip(PHOTOS, scorer.score([str(photo_paths[n]) for n in PHOTOS]).to_records())}
    size_to_name = {Image.open(p).size: n for n, p in photo_paths.items()}
    by_nat = sorted(PHOTOS, key=lambda n: ref[n]["naturalness"], reverse=True)
    threshold = (ref[by_nat[0]]["naturalness"] + ref[by_nat[1]]["naturalness"]) / 2   # keeps the best one
    crop_ref = scorer.score([str(files["crops"] / f"{n}.png") for n in PHOTOS]).to_records()
    best_two = sorted(range(3), key=lambda i: (-crop_ref[i]["naturalness"], i))[:2]

    model = ["2", 0]
    prompt = {
        "1": {"class_type": "LoadImageDataSetFromFolder", "inputs": {"folder": "photos"}},
        "2": {"class_type": "LoadNaturalnessModel",
              "inputs": {"model_name": "tiny-test", "device": "default", "dtype": "default"}},
        "3": {"class_type": "ScoreNaturalness", "inputs": {"naturalness_model": model, "images": ["1", 0],
                                                           "batch_size": 2}},
        "4": {"class_type": "FilterByNaturalness",
              "inputs": {"naturalness_model": model, "images": ["1", 0], "axis": "naturalness",
                         "threshold": threshold, "if_empty": "skip downstream", "batch_size": 8}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "kept"}},
        "6": {"class_type": "SaveImage", "inputs": {"images": ["4", 1], "filename_prefix": "rejected"}},
        # nothing passes: what the empty side feeds is skipped, the rest still runs
        "7": {"class_type": "FilterByNaturalness",
              "inputs": {"naturalness_model": model, "images": ["1", 0], "axis": "naturalness",
                         "threshold": 99.0}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "never"}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["7", 1]}},
        # LoadImage of a 3-page TIFF gives one batch of 3 -> best 2 of 3, with their latents
        "10": {"class_type": "LoadImage", "inputs": {"image": "crops.tiff"}},
        "11": {"class_type": "LoadLatent", "inputs": {"latent": "crops.latent"}},
        "12": {"class_type": "NaturalnessBestOfN",
               "inputs": {"naturalness_model": model, "images": ["10", 0], "k": 2, "rank_by": "naturalness",
                          "latent": ["11", 0]}},
        "13": {"class_type": "SaveImage", "inputs": {"images": ["12", 0], "filename_prefix": "best"}},
        "14": {"class_type": "SaveLatent", "inputs": {"samples": ["12", 1], "filename_prefix": "best"}},
        "15": {"class_type": "ScoreNaturalness", "inputs": {"naturalness_model": model, "images": ["10", 0]}},
        "16": {"class_type": "PreviewNaturalness", "inputs": {"naturalness_model": model, "images": ["1", 0]}},
    }
    exact = server.get("/system_stats")["system"].get("pytorch_version") == torch.__version__
    scored_before = server.scored_images()
    entry = server.run(prompt)
    status, outputs = entry["status"], entry["outputs"]
    assert status["status_str"] == "success", json.dumps(status["messages"])[-3000:] + "\n" + server.tail()

    # Score: the image list (three sizes) scored as joint scores the files
    records = outputs["3"]["scores"]
    assert len(records) == 3 and [r["index"] for r in records] == [0, 1, 2]
    names = [size_to_name[(r["width"], r["height"])] for r in records]
    assert sorted(names) == sorted(PHOTOS)
    _assert_same_scores(records, [ref[n] for n in names], "photos", exact)
    assert "3/3 images scored" in outputs["3"]["text"][0]

    # Filter: the best photo kept, the other two rejected; saved pixels are the photos'
    out_dir = server.base / "output"
    kept = [out_dir / f["subfolder"] / f["filename"] for f in outputs["5"]["images"]]
    rejected = [out_dir / f["subfolder"] / f["filename"] for f in outputs["6"]["images"]]
    assert [size_to_name[Image.open(p).size] for p in kept] == [by_nat[0]]
    assert sorted(size_to_name[Image.open(p).size] for p in rejected) == sorted(by_nat[1:])
    for p in kept + rejected:
        name = size_to_name[Image.open(p).size]
        assert np.abs(_pixels(p) - _pixels(photo_paths[name])).max() <= PIXEL_TOLERANCE
    assert "8" not in outputs and len(outputs["9"]["images"]) == 3       # empty side skipped, no error

    # Best of N on a LoadImage batch: the two best crops, best first, and their latents
    best = [out_dir / f["subfolder"] / f["filename"] for f in outputs["13"]["images"]]
    assert len(best) == 2
    for p, i in zip(best, best_two):
        assert np.abs(_pixels(p) - _pixels(files["crops"] / f"{PHOTOS[i]}.png")).max() <= PIXEL_TOLERANCE
    from safetensors.torch import load_file

    saved = outputs["14"]["latents"][0]
    latent = load_file(str(out_dir / saved["subfolder"] / saved["filename"]))["latent_tensor"]
    assert latent.shape == (2, 4, 16, 20) and latent[:, 0, 0, 0].tolist() == [i + 1.0 for i in best_two]
    _assert_same_scores(outputs["15"]["scores"], crop_ref, "crops", exact)
    assert "kept 2 of 3 by naturalness" in outputs["12"]["text"][0]

    # one scoring pass per graph: Score, two Filters and Preview share the 3 photos, Best of N and
    # Score the 3 crops - the model ran on 6 images, not on 3 * 4 + 3 * 2
    assert server.scored_images() - scored_before == 6, server.tail()

    # Preview: called once per list item by ComfyUI, one annotated preview each
    assert len(outputs["16"]["images"]) == 3 and all(f["type"] == "temp" for f in outputs["16"]["images"])
    assert all((server.base / "temp" / f["filename"]).is_file() for f in outputs["16"]["images"])


def test_missing_default_model_fails_with_instructions(server):
    entry = server.run({
        "1": {"class_type": "LoadNaturalnessModel",
              "inputs": {"model_name": "default (shipped)", "device": "default", "dtype": "default"}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "3": {"class_type": "ScoreNaturalness", "inputs": {"naturalness_model": ["1", 0], "images": ["2", 0]}},
    })
    if (REPO / "joint_core" / "weights" / "default" / "model.safetensors").is_file():
        assert entry["status"]["status_str"] == "success"
        return
    assert entry["status"]["status_str"] == "error"
    errors = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert errors and errors[0]["node_id"] == "1"
    msg = errors[0]["exception_message"]
    assert "models" in msg and "naturalness" in msg and "joint_core convert JOINT_2024.pth" in msg, msg
