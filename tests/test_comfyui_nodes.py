"""Contract tests of the ComfyUI node pack, without ComfyUI.

ComfyUI's modules (``folder_paths``, ``comfy.utils``, ``comfy.model_management``,
``comfy_execution.graph``) are replaced by small stand-ins that behave like the real ones in
what the nodes use; the model is the tiny random one from conftest, saved to disk; the images
are real photographs from scikit-image. The end-to-end test against a real ComfyUI server is
tests/test_comfyui_e2e.py.
"""

from __future__ import annotations

import gc
import inspect
import json
import math
import os
import shutil
import subprocess
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from joint_core import NaturalnessScorer, NoModelError

from conftest import REPO

comfyui_joint = pytest.importorskip("comfyui_joint")
from comfyui_joint import nodes, host  # noqa: E402

AXES = ("technical", "rationality", "naturalness")


# --------------------------------------------------------------------------------------------
# ComfyUI stand-ins
# --------------------------------------------------------------------------------------------


class InterruptProcessingException(Exception):
    pass


class ExecutionBlocker:
    def __init__(self, message):
        self.message = message


class FakeComfy:
    """Installs ``folder_paths``, ``comfy.utils``, ``comfy.model_management`` and
    ``comfy_execution.graph`` modules that record what the nodes ask of them."""

    def __init__(self, root: Path, monkeypatch):
        self.root = root
        self.models_dir = root / "models"
        self.temp = root / "temp"
        self.models_dir.mkdir(parents=True)
        self.progress = []          # (value, total) of every ProgressBar update
        self.freed = []             # (bytes, device) of every free_memory call
        self.emptied = 0
        self.interrupt_at = None    # raise InterruptProcessingException at this many updates
        self.checks = 0
        self.torch_device = torch.device("cpu")
        self.offload_device = torch.device("cpu")

        fp = types.ModuleType("folder_paths")
        fp.models_dir = str(self.models_dir)
        fp.folder_names_and_paths = {}

        def get_folder_paths(name):
            return list(fp.folder_names_and_paths[name][0])

        def get_filename_list(name):
            paths, exts = fp.folder_names_and_paths[name]
            out = set()
            for base in paths:
                for dirpath, _dirs, files in os.walk(base, followlinks=True):
                    for f in files:
                        if not exts or os.path.splitext(f)[1].lower() in exts:
                            out.add(os.path.relpath(os.path.join(dirpath, f), base))
            return sorted(out)

        def get_full_path(name, rel):
            for base in fp.folder_names_and_paths[name][0]:
                full = os.path.join(base, rel)
                if os.path.isfile(full):
                    return full
            return None

        fp.get_folder_paths = get_folder_paths
        fp.get_filename_list = get_filename_list
        fp.get_full_path = get_full_path
        fp.get_temp_directory = lambda: str(self.temp)

        comfy = types.ModuleType("comfy")
        comfy.__path__ = []
        utils = types.ModuleType("comfy.utils")
        fake = self

        class ProgressBar:
            def __init__(self, total, node_id=None):
                self.total, self.current = total, 0

            def update_absolute(self, value, total=None, preview=None):
                if total is not None:
                    self.total = total
                self.current = min(value, self.total)
                fake.progress.append((self.current, self.total))

        utils.ProgressBar = ProgressBar
        mm = types.ModuleType("comfy.model_management")
        mm.InterruptProcessingException = InterruptProcessingException
        mm.get_torch_device = lambda: self.torch_device
        mm.unet_offload_device = lambda: self.offload_device
        mm.free_memory = lambda required, device, keep_loaded=(): self.freed.append((required, device))

        def soft_empty_cache(force=False):
            self.emptied += 1

        def throw_exception_if_processing_interrupted():
            self.checks += 1
            if self.interrupt_at is not None and len(self.progress) >= self.interrupt_at:
                raise InterruptProcessingException()

        mm.soft_empty_cache = soft_empty_cache
        mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
        comfy.utils, comfy.model_management = utils, mm
        execution = types.ModuleType("comfy_execution")
        execution.__path__ = []
        graph = types.ModuleType("comfy_execution.graph")
        graph.ExecutionBlocker = ExecutionBlocker
        for name, mod in {"folder_paths": fp, "comfy": comfy, "comfy.utils": utils,
                          "comfy.model_management": mm, "comfy_execution": execution,
                          "comfy_execution.graph": graph}.items():
            monkeypatch.setitem(sys.modules, name, mod)
        self.folder_paths = fp


@pytest.fixture
def comfy(tmp_path, monkeypatch, tiny_model_dir):
    """A fake ComfyUI with the tiny model installed as models/naturalness/tiny."""
    monkeypatch.setenv("JOINT_HOME", str(tmp_path / "joint-home"))   # no user-cache model
    fake = FakeComfy(tmp_path / "comfy", monkeypatch)
    host.register_model_folder()
    shutil.copytree(tiny_model_dir, fake.models_dir / "naturalness" / "tiny")
    return fake


@pytest.fixture
def model(comfy):
    return nodes.LoadNaturalnessModel().load("tiny")[0]


def comfy_image(*arrays) -> torch.Tensor:
    """uint8 HxWx3 arrays -> a ComfyUI IMAGE batch, converted as LoadImage does."""
    return torch.from_numpy(np.stack([a.astype(np.float32) / 255.0 for a in arrays]))


def smooth_random(b: int, h: int, w: int) -> torch.Tensor:
    """Random IMAGE batch with structure (pure per-pixel noise is flagged as degenerate and
    filtered out, which is not what these tests are about)."""
    small = torch.rand(b, 3, max(2, h // 8), max(2, w // 8))
    return torch.nn.functional.interpolate(small, size=(h, w), mode="bilinear").permute(0, 2, 3, 1).contiguous()


def chw(a) -> torch.Tensor:
    return torch.from_numpy(a).permute(2, 0, 1)


def scores_of(result, axis):
    return [float(v) for v in getattr(result, axis)]


def blocked(value):
    return isinstance(value, ExecutionBlocker)


def chosen(model, images, by, **keep_args):
    """What ScoreResult.keep (the one selection rule, tested in tests/test_result.py) picks for a
    ComfyUI IMAGE batch: the node tests check that each node asks it the right question."""
    return model.scorer.score(images.permute(0, 3, 1, 2)).keep(by, **keep_args)


# --------------------------------------------------------------------------------------------
# packaging
# --------------------------------------------------------------------------------------------


_IMPORT_LIKE_COMFYUI = r"""
import importlib.util, json, os, sys
for name in ("diffusers", "transformers", "accelerate", "train", "folder_paths", "comfy", "comfy_execution"):
    sys.modules[name] = None          # absent: importing them raises ImportError
pack = sys.argv[1]
spec = importlib.util.spec_from_file_location(pack.replace(".", "_x_"), os.path.join(pack, "__init__.py"),
                                              submodule_search_locations=[pack])
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
import joint_core
print(json.dumps({"nodes": sorted(module.NODE_CLASS_MAPPINGS), "names": module.NODE_DISPLAY_NAME_MAPPINGS,
                  "web": os.path.abspath(os.path.join(pack, module.WEB_DIRECTORY)),
                  "joint_core": os.path.dirname(joint_core.__file__)}))
"""


@pytest.mark.parametrize("pack", ["root", "package"])
def test_pack_loads_the_way_comfyui_loads_custom_nodes(pack, tmp_path):
    """ComfyUI imports ``custom_nodes/<pack>/__init__.py`` under a path-derived name. A clone
    (the repository root) must bring its own joint_core; the pip-installed ``comfyui_joint``
    package linked there must work as a pack by itself. Neither needs ComfyUI, diffusers or
    the training extras to import."""
    root = REPO if pack == "root" else REPO / "comfyui_joint"
    env = dict(os.environ, PYTHONPATH=str(REPO) if pack == "package" else "")
    # a clean interpreter in another folder: joint_core is not importable from the current directory
    out = subprocess.run([sys.executable, "-c", _IMPORT_LIKE_COMFYUI, str(root)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["nodes"] == sorted(nodes.NODE_CLASS_MAPPINGS) and len(info["nodes"]) == 5
    assert set(info["names"]) == set(info["nodes"])
    assert os.path.isfile(os.path.join(info["web"], "naturalness.js"))
    if pack == "root":       # the checkout's joint_core, even where another joint is pip-installed
        assert Path(info["joint_core"]) == REPO / "joint_core"


def test_example_workflows_are_shipped_for_both_install_styles():
    pack_dir = REPO / "comfyui_joint" / "example_workflows"
    root_dir = REPO / "example_workflows"
    names = sorted(p.name for p in pack_dir.glob("*.json"))
    assert len(names) >= 2
    # each with its picture for ComfyUI's Templates dialog (made by tests/test_comfyui_browser.py)
    files = sorted(p.name for p in pack_dir.iterdir())
    assert files == sorted(names + [n.replace(".json", ".jpg") for n in names])
    # the root copy is what ComfyUI offers for a clone, the package copy for a pip install
    assert files == sorted(p.name for p in root_dir.iterdir())
    for n in files:
        assert (pack_dir / n).read_bytes() == (root_dir / n).read_bytes(), f"{n}: copies differ"


def _widget_inputs(cls):
    """Inputs the frontend shows as widgets (in order), as ComfyUI serialises them."""
    spec = cls.INPUT_TYPES()
    out = []
    for section in ("required", "optional"):
        for name, (typ, *opts) in spec.get(section, {}).items():
            if isinstance(typ, list) or typ in ("INT", "FLOAT", "STRING", "BOOLEAN"):
                out.append((name, typ, opts[0] if opts else {}))
    return out


CORE_WIDGETS = {   # core nodes used by the examples, with their widget counts in the UI format
    "CheckpointLoaderSimple": 1, "CLIPTextEncode": 1, "EmptyLatentImage": 3, "KSampler": 7,
    "VAEDecode": 0, "SaveImage": 1, "PreviewImage": 0, "LoadImage": 2, "LatentUpscaleBy": 2,
}


def test_example_workflows_are_valid_ui_workflows(comfy):
    for path in sorted((REPO / "comfyui_joint" / "example_workflows").glob("*.json")):
        wf = json.loads(path.read_text())
        by_id = {n["id"]: n for n in wf["nodes"]}
        assert len(by_id) == len(wf["nodes"]), path.name
        ours = [n for n in wf["nodes"] if n["type"] in nodes.NODE_CLASS_MAPPINGS]
        assert any(n["type"] == "LoadNaturalnessModel" for n in ours), path.name
        for n in wf["nodes"]:
            if n["type"] in nodes.NODE_CLASS_MAPPINGS:
                widgets = _widget_inputs(nodes.NODE_CLASS_MAPPINGS[n["type"]])
                assert len(n["widgets_values"]) == len(widgets), (path.name, n["type"])
                for (name, typ, opts), value in zip(widgets, n["widgets_values"]):
                    if isinstance(typ, list):
                        assert value in typ, (path.name, n["type"], name, value)
                    elif typ in ("INT", "FLOAT"):
                        assert opts.get("min", -math.inf) <= value <= opts.get("max", math.inf)
            else:
                assert n["type"] in CORE_WIDGETS, n["type"]
                assert len(n.get("widgets_values", [])) == CORE_WIDGETS[n["type"]], (path.name, n["type"])
        for link_id, src, src_slot, dst, dst_slot, typ in wf["links"]:
            out, inp = by_id[src]["outputs"][src_slot], by_id[dst]["inputs"][dst_slot]
            assert link_id in out["links"] and inp["link"] == link_id, (path.name, link_id)
            assert out["type"] == inp["type"] == typ, (path.name, link_id)
            cls = nodes.NODE_CLASS_MAPPINGS.get(by_id[src]["type"])
            if cls is not None:
                assert cls.RETURN_TYPES[src_slot] == typ and cls.RETURN_NAMES[src_slot] == out["name"]
        assert wf["last_link_id"] >= max(link[0] for link in wf["links"])
        assert wf["last_node_id"] >= max(by_id)


def test_requirements_cover_the_core_dependencies():
    try:
        import tomllib  # novermin (3.10 falls back to tomli below)
    except ImportError:  # Python < 3.11
        tomllib = pytest.importorskip("tomli")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    deps = project["project"]["dependencies"]
    reqs = [line.strip() for line in (REPO / "requirements.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert sorted(reqs) == sorted(d for d in deps if not d.startswith(("torch>=", "torchvision")))
    comfy_meta = project["tool"]["comfy"]
    assert comfy_meta["PublisherId"] and comfy_meta["DisplayName"]
    shipped = project["tool"]["setuptools"]["package-data"]["comfyui_joint"]
    assert {"web/*.js", "example_workflows/*.json", "example_workflows/*.jpg"} <= set(shipped)


# --------------------------------------------------------------------------------------------
# schemas
# --------------------------------------------------------------------------------------------


def test_every_node_declares_a_consistent_v1_schema(comfy):
    assert set(nodes.NODE_CLASS_MAPPINGS) == set(nodes.NODE_DISPLAY_NAME_MAPPINGS)
    for node_id, cls in nodes.NODE_CLASS_MAPPINGS.items():
        spec = cls.INPUT_TYPES()
        assert set(spec) <= {"required", "optional", "hidden"} and spec["required"], node_id
        n_out = len(cls.RETURN_TYPES)
        assert len(cls.RETURN_NAMES) == n_out == len(cls.OUTPUT_TOOLTIPS), node_id
        assert len(getattr(cls, "OUTPUT_IS_LIST", (False,) * n_out)) == n_out, node_id
        assert cls.CATEGORY.startswith("image/naturalness") and cls.DESCRIPTION, node_id
        params = inspect.signature(getattr(cls, cls.FUNCTION)).parameters
        for section in ("required", "optional"):
            for name, (typ, *opts) in spec.get(section, {}).items():
                assert name in params, (node_id, name)
                if section == "optional" and name != "latent":     # defaults match the widgets
                    assert params[name].default == opts[0]["default"], (node_id, name)
                if isinstance(typ, list):
                    assert typ and all(isinstance(v, str) for v in typ)
                    assert opts[0].get("default", typ[0]) in typ
                elif typ in ("INT", "FLOAT"):
                    o = opts[0]
                    assert o["min"] <= o["default"] <= o["max"], (node_id, name)
        if node_id != "LoadNaturalnessModel":
            assert spec["required"]["naturalness_model"][0] == nodes.MODEL_TYPE
            assert spec["required"]["images"][0] == "IMAGE"
    assert nodes.LoadNaturalnessModel.RETURN_TYPES == (nodes.MODEL_TYPE,)
    score = nodes.ScoreNaturalness
    assert score.RETURN_TYPES == ("FLOAT", "FLOAT", "FLOAT", "STRING")
    assert score.OUTPUT_IS_LIST == (True, True, True, False) and score.OUTPUT_NODE and score.INPUT_IS_LIST
    assert nodes.FilterByNaturalness.RETURN_TYPES == ("IMAGE", "IMAGE", "FLOAT", "FLOAT")
    assert nodes.BestOfN.RETURN_TYPES == ("IMAGE", "LATENT", "INT", "FLOAT")
    assert nodes.PreviewNaturalness.RETURN_TYPES == ("IMAGE",) and nodes.PreviewNaturalness.OUTPUT_NODE


# --------------------------------------------------------------------------------------------
# loader
# --------------------------------------------------------------------------------------------


def test_model_folder_and_choices(comfy, tmp_path, tiny_model_dir, monkeypatch):
    fp = comfy.folder_paths
    default = str(comfy.models_dir / "naturalness")
    # a folder named only in extra_model_paths.yaml (registered before the pack, no extensions)
    extra = tmp_path / "extra"
    shutil.copytree(tiny_model_dir, extra / "sub" / "v2")
    shutil.copytree(tiny_model_dir, extra / "flat")            # model files straight in the folder
    (extra / "stray").mkdir()
    (extra / "stray" / "model.safetensors").write_bytes(b"no config.json beside it")
    shutil.copy(tiny_model_dir / "model.safetensors", extra / "sub" / "custom.safetensors")
    (extra / "notes.txt").write_text("not a model")
    fp.folder_names_and_paths["naturalness"] = ([str(extra)], set())
    assert host.register_model_folder() == [default, str(extra)]
    assert fp.folder_names_and_paths["naturalness"][1] == {".safetensors"}
    assert host.register_model_folder() == [default, str(extra)]            # idempotent
    choices = nodes.LoadNaturalnessModel.INPUT_TYPES()["required"]["model_name"][0]
    assert choices == ["default (shipped)", "fast (shipped)", "flat", "sub/v2", "tiny"]
    fp.folder_names_and_paths["naturalness"] = ([default, str(extra / "flat")], {".safetensors"})
    assert host.model_choices() == ["default (shipped)", "fast (shipped)", "model.safetensors", "tiny"]
    loaded = nodes.LoadNaturalnessModel().load("model.safetensors")[0]
    assert loaded.path == extra / "flat" and loaded.name == "model.safetensors"
    # a model installed by `joint convert` into the user cache is offered second
    shutil.copytree(tiny_model_dir, tmp_path / "joint-home" / "default")
    assert host.model_choices()[:3] == ["default (shipped)", "fast (shipped)", "user default (joint convert)"]
    b = nodes.LoadNaturalnessModel().load("user default (joint convert)")[0]
    assert b.path == tmp_path / "joint-home" / "default"
    with pytest.raises(FileNotFoundError, match="no model 'sub/custom.safetensors'"):
        nodes.LoadNaturalnessModel().load("sub/custom.safetensors")


def test_loader_reuses_a_loaded_model_and_reloads_changed_files(comfy):
    loader = nodes.LoadNaturalnessModel()
    first = loader.load("tiny")[0]
    assert loader.load("tiny", "default", "default")[0] is first          # not loaded twice
    assert nodes.LoadNaturalnessModel().load("tiny", "cpu", "default")[0] is first
    other = loader.load("tiny", "default", "bf16")[0]
    assert other is not first and other.scorer.dtype == torch.bfloat16
    assert first.scorer.dtype == torch.float32 and first.load_device.type == "cpu"
    sig = nodes.LoadNaturalnessModel.IS_CHANGED("tiny")
    weights = comfy.models_dir / "naturalness" / "tiny" / "model.safetensors"
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert nodes.LoadNaturalnessModel.IS_CHANGED("tiny") != sig
    assert loader.load("tiny")[0] is not first                            # files changed: reload
    # nothing holds a model any more (ComfyUI dropped its cache): it is freed
    key_count = len(host._CACHE)
    del first, other
    gc.collect()
    assert len(host._CACHE) < key_count


def test_no_model_installed_says_where_to_put_one(comfy, isolated_models):
    with pytest.raises(NoModelError) as exc:
        nodes.LoadNaturalnessModel().load("default (shipped)")
    msg = str(exc.value)
    with pytest.raises(NoModelError, match="'fast \\(shipped\\)' is not installed"):
        nodes.LoadNaturalnessModel().load("fast (shipped)")
    assert str(comfy.models_dir / "naturalness") in msg and "extra_model_paths.yaml" in msg
    assert "python -m joint_core convert JOINT_2024.pth" in msg and "JOINT_2024.pth" in msg
    assert "joint convert" in msg and "press R" in msg
    assert "unavailable" in nodes.LoadNaturalnessModel.IS_CHANGED("default (shipped)")
    with pytest.raises(FileNotFoundError, match="no model 'gone'"):
        nodes.LoadNaturalnessModel().load("gone")
    for bad in ("../tiny", "/etc", "a/../../b", ""):
        with pytest.raises(ValueError, match="not a name"):
            nodes.LoadNaturalnessModel().load(bad)
    with pytest.raises(ValueError, match="device must be one of"):
        nodes.LoadNaturalnessModel().load("tiny", device="tpu")


def test_without_comfyui_the_loader_offers_the_shipped_models_only(monkeypatch, tmp_path):
    for name in ("folder_paths", "comfy", "comfy.utils", "comfy.model_management"):
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setenv("JOINT_HOME", str(tmp_path))
    assert host.register_model_folder() is None
    assert host.model_choices() == ["default (shipped)", "fast (shipped)"]
    assert host.placement("default")[0] == host.placement("default")[1]
    assert type(host.blocker(None)).__name__ == "ExecutionBlocker"


# --------------------------------------------------------------------------------------------
# scoring nodes
# --------------------------------------------------------------------------------------------


def test_score_a_batch_of_one_photo(comfy, model, photos, tiny_scorer):
    img = comfy_image(photos["astronaut"])
    assert img.shape == (1, 512, 512, 3) and img.dtype == torch.float32
    out = nodes.ScoreNaturalness().score([model], [img], [4])
    tech, rat, nat, report = out["result"]
    ref = tiny_scorer.score(chw(photos["astronaut"]))          # as `joint score` reads the file
    assert (tech, rat, nat) == tuple(scores_of(ref, a) for a in AXES)
    assert all(type(v) is float for v in tech + rat + nat)
    assert isinstance(report, str) and out["ui"]["text"] == [report]
    assert f"{nat[0]:8.3f}" in report and "512 x 512" in report
    rec = out["ui"]["scores"]
    assert rec == [{"index": 0, "width": 512, "height": 512, "technical": tech[0],
                    "rationality": rat[0], "naturalness": nat[0], "error": None, "warning": None}]
    assert comfy.progress[-1] == (1, 1) and comfy.checks >= 2
    assert not img.isnan().any() and img.shape == (1, 512, 512, 3)     # input untouched


def test_score_mixed_sizes_as_one_list(comfy, model, photos, tiny_scorer):
    """An image list (different sizes, as from a folder loader) is scored in one go, indices
    running over the list; a 3-pixel-high strip must not be mistaken for channels-first."""
    strip = np.ascontiguousarray(photos["coffee"][200:203])                      # 3 x 600
    arrays = [photos["coffee"], strip, photos["chelsea"], photos["astronaut"]]
    batches = [comfy_image(a) for a in arrays[:2]] + [comfy_image(arrays[2]), comfy_image(arrays[3])]
    out = nodes.ScoreNaturalness().score([model] * 4, batches, [2] * 4)          # list inputs repeat
    ref = tiny_scorer.score([chw(a) for a in arrays])
    for k, axis in enumerate(AXES):
        assert out["result"][k] == scores_of(ref, axis)
    assert [(r["index"], r["width"], r["height"]) for r in out["ui"]["scores"]] == \
        [(0, 600, 400), (1, 600, 3), (2, 451, 300), (3, 512, 512)]
    assert comfy.progress[-1] == (4, 4) and [p[0] for p in comfy.progress] == [2, 4]
    with pytest.raises(ValueError, match="2 different values"):
        nodes.ScoreNaturalness().score([model, nodes.LoadNaturalnessModel().load("tiny", dtype="bf16")[0]],
                                       batches[:2])


def test_batch_of_64_through_every_node(comfy, model):
    torch.manual_seed(0)
    base = smooth_random(8, 48, 40) * torch.linspace(0.2, 1.0, 8).view(8, 1, 1, 1)
    images = base.repeat(8, 1, 1, 1)                                      # 64 images, 8 distinct
    tech, rat, nat, report = nodes.ScoreNaturalness().score([model], [images], [16])["result"]
    assert len(nat) == len(tech) == len(rat) == 64 and report.count("\n") >= 64
    assert all(math.isfinite(v) for v in nat)
    assert nat[:8] * 8 == nat and tech[:8] * 8 == tech                  # same image, same score
    assert comfy.progress == [(8, 8)]                                     # each distinct image once
    assert len(set(nat)) == 8
    threshold = sorted(set(nat))[3]                                        # 3 distinct values below
    kept, rejected, kept_s, rej_s = nodes.FilterByNaturalness().filter(
        model, images, "naturalness", threshold, "skip downstream", 16)["result"]
    keep_idx = chosen(model, images, "naturalness", threshold=threshold)
    assert len(keep_idx) == 40 and kept.shape == (40, 48, 40, 3) and rejected.shape == (24, 48, 40, 3)
    assert torch.equal(kept, images[keep_idx]) and kept_s == [nat[i] for i in keep_idx]
    assert sorted(kept_s + rej_s) == sorted(nat)
    best, latent, idx, s = nodes.BestOfN().best_of_n(model, images, 10, "technical", batch_size=32)["result"]
    expected = chosen(model, images, "technical", k=10)
    assert idx == expected and s == [tech[i] for i in expected]
    assert torch.equal(best, images[expected]) and blocked(latent) and "latent" in latent.message
    assert comfy.progress == [(8, 8)]                                     # Filter, Best of N: cached


def test_a_graph_scores_each_image_once(comfy, model, photos, tiny_scorer, monkeypatch):
    """Score -> Filter -> Best of N -> Preview on the same images: the model runs for the first
    node only; a changed image (one pixel) is scored again, alone; another model scores anew."""
    calls = []
    real_score = model.scorer.score

    def counting_score(images, **kw):
        calls.append(len(images))
        return real_score(images, **kw)

    monkeypatch.setattr(model.scorer, "score", counting_score)
    imgs = comfy_image(*(photos[n][:96, :128] for n in ("astronaut", "coffee", "chelsea", "rocket")))
    tech, rat, nat, _ = nodes.ScoreNaturalness().score([model], [imgs])["result"]
    assert calls == [4]
    kept_s = nodes.FilterByNaturalness().filter(model, imgs, "naturalness", min(nat))["result"][2]
    best = nodes.BestOfN().best_of_n(model, imgs, 2, "technical")["result"]
    nodes.PreviewNaturalness().preview(model, imgs)
    nodes.ScoreNaturalness().score([model, model], [imgs[2:], imgs[:2]])          # a list, reordered
    assert calls == [4]                                                 # nothing reached the model
    assert kept_s == nat and best[3] == sorted(tech, reverse=True)[:2]
    changed = imgs.clone()
    changed[1, 0, 0, 0] = 1.0 - changed[1, 0, 0, 0]
    again = nodes.ScoreNaturalness().score([model], [changed])["result"]
    assert calls == [4, 1]                                              # only the changed image
    assert again[2][0] == nat[0] and again[2][2:] == nat[2:]
    assert again[2][1] == scores_of(tiny_scorer.score(changed[1:2].permute(0, 3, 1, 2)), "naturalness")[0]
    other = nodes.LoadNaturalnessModel().load("tiny", dtype="bf16")[0]
    other_calls = []
    monkeypatch.setattr(other.scorer, "score", lambda images, **kw: other_calls.append(len(images))
                        or type(other.scorer).score(other.scorer, images, **kw))
    nodes.ScoreNaturalness().score([other], [imgs])
    assert other_calls == [4] and calls == [4, 1]                       # the cache is per model


def test_filter_keeps_at_least_threshold_in_order(comfy, model, photos):
    imgs = comfy_image(*(photos[n][:300, :400] for n in ("astronaut", "coffee", "chelsea", "rocket")))
    tech, _, nat, _ = nodes.ScoreNaturalness().score([model], [imgs])["result"]
    order = sorted(range(4), key=lambda i: nat[i])
    threshold = nat[order[2]]                       # exactly the second best: it is kept (>=)
    out = nodes.FilterByNaturalness().filter(model, imgs, "naturalness", threshold)
    kept, rejected, kept_s, rej_s = out["result"]
    keep = chosen(model, imgs, "naturalness", threshold=threshold)
    assert keep == sorted(order[2:])                # input order
    assert torch.equal(kept, imgs[keep]) and kept_s == [nat[i] for i in keep]
    assert torch.equal(rejected, imgs[sorted(order[:2])]) and rej_s == [nat[i] for i in sorted(order[:2])]
    assert "kept 2 of 4" in out["ui"]["text"][0]
    # other axes compare their own score
    kept_t = nodes.FilterByNaturalness().filter(model, imgs, "technical", max(tech))["result"][2]
    assert kept_t == [max(tech)]


def test_filter_empty_result_blocks_downstream_or_raises(comfy, model, photos):
    imgs = comfy_image(photos["coffee"][:64, :64], photos["chelsea"][:64, :64])
    out = nodes.FilterByNaturalness().filter(model, imgs, "naturalness", 99.0)
    kept, rejected, kept_s, rej_s = out["result"]
    # ComfyUI skips what the empty side feeds (ExecutionBlocker(None): silent), the rest runs
    assert blocked(kept) and kept.message is None and len(kept_s) == 1 and blocked(kept_s[0])
    assert torch.equal(rejected, imgs) and len(rej_s) == 2
    everything = nodes.FilterByNaturalness().filter(model, imgs, "rationality", -99.0)["result"]
    assert torch.equal(everything[0], imgs) and blocked(everything[1]) and blocked(everything[3][0])
    with pytest.raises(ValueError, match="no image is kept"):
        nodes.FilterByNaturalness().filter(model, imgs[:1], "naturalness", 99.0, "error")
    empty = nodes.FilterByNaturalness().filter(model, imgs[:0], "naturalness", 0.0)["result"]
    assert blocked(empty[0]) and blocked(empty[1])


def test_failed_images_are_rejected_and_reported(comfy, model):
    imgs = smooth_random(3, 32, 32)
    imgs[1, 0, 0, 0] = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        score = nodes.ScoreNaturalness().score([model], [imgs])
        kept, rejected, kept_s, rej_s = nodes.FilterByNaturalness().filter(model, imgs, "naturalness", -99.0)["result"]
        best = nodes.BestOfN().best_of_n(model, imgs, 3, "naturalness")["result"]
    assert math.isnan(score["result"][2][1]) and "image 1 failed" in score["result"][3]
    assert score["ui"]["scores"][1]["naturalness"] is None and "NaN" in score["ui"]["scores"][1]["error"]
    assert kept.shape[0] == 2 and rejected.shape[0] == 1 and math.isnan(rej_s[0])
    assert sorted(best[2]) == [0, 2]                               # only what was scored
    imgs[:] = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        none = nodes.BestOfN().best_of_n(model, imgs, 1, "naturalness")["result"]
        assert all(blocked(v) for v in none[:2])
        with pytest.raises(ValueError, match="no image could be scored"):
            nodes.BestOfN().best_of_n(model, imgs, 1, "naturalness", if_empty="error")


def test_best_of_n_ranks_mixes_and_carries_latents(comfy, model, photos):
    imgs = comfy_image(*(photos[n][:96, :128] for n in ("astronaut", "coffee", "chelsea", "rocket")))
    tech, rat, nat, _ = nodes.ScoreNaturalness().score([model], [imgs])["result"]
    latent = {"samples": torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 4, 8, 8).contiguous(),
              "noise_mask": torch.arange(4, dtype=torch.float32).view(4, 1, 1).expand(4, 8, 8).contiguous()}
    node = nodes.BestOfN()
    out = node.best_of_n(model, imgs, 2, "rationality", latent=latent)["result"]
    expected = chosen(model, imgs, "rationality", k=2)
    assert out[2] == expected and out[3] == [rat[i] for i in expected]
    assert torch.equal(out[0], imgs[expected]) and out[0].shape == (2, 96, 128, 3)
    # the kept latents, their noise masks and their original positions (for the same noise)
    assert out[1]["samples"][:, 0, 0, 0].tolist() == expected and out[1]["samples"].shape == (2, 4, 8, 8)
    assert out[1]["noise_mask"][:, 0, 0].tolist() == expected and out[1]["batch_index"] == expected
    mixed = node.best_of_n(model, imgs, 4, "weighted mix", None, 1.0, 3.0, 0.0)["result"]
    mix = [(0.25 * t + 0.75 * r) for t, r in zip(tech, rat)]
    assert mixed[2] == chosen(model, imgs, {"technical": 1.0, "rationality": 3.0}, k=4)
    assert mixed[3] == pytest.approx([mix[i] for i in mixed[2]], abs=1e-6)
    # k larger than the batch: all of them, sorted; batch_index of an earlier selection is kept
    again = node.best_of_n(model, imgs[[3, 1]], 5, "naturalness",
                           latent={"samples": latent["samples"][[3, 1]], "batch_index": [7, 9]})
    order = sorted([0, 1], key=lambda i: (-nat[[3, 1][i]], i))
    assert again["result"][2] == order and again["result"][1]["batch_index"] == [[7, 9][i] for i in order]
    assert "asked for 5, only 2 scored" in again["ui"]["text"][0]
    with pytest.raises(ValueError, match="'latent' has 3 samples but 'images' has 4"):
        node.best_of_n(model, imgs, 1, "naturalness", latent={"samples": torch.zeros(3, 4, 8, 8)})
    with pytest.raises(ValueError, match="all be zero"):
        node.best_of_n(model, imgs, 1, "weighted mix", None, 0.0, 0.0, 0.0)


def test_preview_draws_scores_and_saves_previews(comfy, model, photos):
    imgs = comfy_image(photos["chelsea"], photos["chelsea"][::-1].copy())
    out = nodes.PreviewNaturalness().preview(model, imgs)
    (annotated,) = out["result"]
    assert annotated.shape == imgs.shape and annotated.dtype == torch.float32
    assert 0.0 <= float(annotated.min()) and float(annotated.max()) <= 1.0
    assert torch.equal(annotated[:, 60:], imgs[:, 60:])                 # below the caption: untouched
    darker = (annotated[:, :6] < imgs[:, :6]).all(dim=-1).float().mean()   # the band darkens the top
    assert darker > 0.9
    files = out["ui"]["images"]
    assert len(files) == 2 and all(f["type"] == "temp" and (comfy.temp / f["filename"]).is_file() for f in files)
    nat = nodes.ScoreNaturalness().score([model], [imgs])["result"][2]
    assert f"{nat[0]:.3f}" in out["ui"]["text"][0]


def test_cancel_stops_between_batches(comfy, model):
    comfy.interrupt_at = 1                          # "cancel" pressed during the first batch
    with pytest.raises(InterruptProcessingException):
        nodes.ScoreNaturalness().score([model], [torch.rand(6, 32, 32, 3)], [2])
    assert comfy.progress == [(2, 6)]                # stopped after one batch of three
    comfy.interrupt_at = 0                          # already cancelled: nothing is scored
    comfy.progress.clear()
    with pytest.raises(InterruptProcessingException):
        nodes.FilterByNaturalness().filter(model, torch.rand(2, 32, 32, 3), "naturalness", 0.0)
    assert comfy.progress == []


def test_model_runs_on_comfyuis_device_and_waits_on_its_offload_device(comfy):
    """With a GPU, ComfyUI is asked for memory, the scorer moves there for the run and back to
    the offload device after it - also when the run is cancelled."""
    moves = []

    class Scorer:
        model = torch.nn.Linear(100, 10)
        dtype = torch.float32

        def to(self, device):
            moves.append(torch.device(device))
            return self

    gpu = torch.device("meta")          # stands for a GPU here: anything that is not the CPU
    m = host.NaturalnessModel(Scorer(), "x", Path("x"), gpu, torch.device("cpu"))
    with m.on_device(batch_size=4, max_pixels=1000):
        assert moves == [gpu]
    assert moves == [gpu, torch.device("cpu")] and comfy.emptied == 1
    required, device = comfy.freed[0]
    assert device == gpu and required >= 1010 * 4 + 4 * (48 * 1000)
    with pytest.raises(InterruptProcessingException):
        with m.on_device():
            raise InterruptProcessingException()
    assert moves[-1] == torch.device("cpu") and comfy.emptied == 2
    comfy.torch_device, comfy.offload_device = gpu, torch.device("cpu")
    assert host.placement("default") == (gpu, torch.device("cpu"))
    assert host.placement("cpu") == (torch.device("cpu"), torch.device("cpu"))


def test_inputs_are_checked_with_clear_messages(comfy, model):
    with pytest.raises(ValueError, match=r"input 'images' must be an IMAGE \[batch, height, width, channels\]"):
        nodes.FilterByNaturalness().filter(model, torch.rand(2, 3, 32, 32, 1), "naturalness", 1.0)
    with pytest.raises(ValueError, match="'images' must be an IMAGE"):
        nodes.BestOfN().best_of_n(model, torch.rand(2, 32, 32, 5), 1, "naturalness")
    with pytest.raises(TypeError, match="'naturalness_model' must come from 'Load Naturalness Model'"):
        nodes.PreviewNaturalness().preview(NaturalnessScorer, torch.rand(1, 8, 8, 3))
    with pytest.raises(ValueError, match="Filter by Naturalness: unknown score axis"):
        nodes.FilterByNaturalness().filter(model, torch.rand(1, 8, 8, 3), "beauty", 1.0)
    with pytest.raises(ValueError, match="if_empty must be one of"):
        nodes.FilterByNaturalness().filter(model, torch.rand(1, 8, 8, 3), "naturalness", 1.0, "ignore")
    with pytest.raises(ValueError, match="rank_by must be one of"):
        nodes.BestOfN().best_of_n(model, torch.rand(1, 8, 8, 3), 1, "beauty")
    empty = nodes.ScoreNaturalness().score([model], [torch.rand(0, 8, 8, 3)])
    assert all(blocked(v[0]) for v in empty["result"][:3]) and empty["ui"]["text"] == ["no images to score"]


def test_cached_failures_name_the_image_where_it_is_now(comfy, model):
    imgs = torch.rand(3, 32, 32, 3)
    imgs[1, 0, 0, 0] = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = nodes.ScoreNaturalness().score([model], [imgs])["ui"]["scores"]
        moved = nodes.ScoreNaturalness().score([model, model], [imgs[2:], imgs[:2]])["ui"]["scores"]
    assert first[1]["error"].startswith("input 0[1]: ") and "NaN" in first[1]["error"]
    # now the third image of the list: input 1 (the second tensor), position 1
    assert moved[2]["error"] == "input 1[1]: " + first[1]["error"][len("input 0[1]: "):]
    assert [r["error"] for r in moved].count(None) == 2


def test_flags_survive_the_cache(comfy, model):
    """A black frame scored by one node is flagged (and ranks last) in the next node too, where
    its scores come from the cache, under the name it has there."""
    torch.manual_seed(3)
    smooth = torch.nn.functional.interpolate(torch.rand(2, 3, 8, 8), size=(64, 64), mode="bilinear").permute(0, 2, 3, 1)
    imgs = torch.cat([torch.zeros(1, 64, 64, 3), smooth])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = nodes.ScoreNaturalness().score([model], [imgs])["ui"]["scores"]
        calls = model.scorer.score
        model.scorer.score = lambda *a, **k: pytest.fail("the model ran again")
        try:
            best = nodes.BestOfN().best_of_n(model, imgs[[1, 0, 2]], 3, "naturalness")["result"]
            again = model.score([imgs[[1, 0]].permute(0, 3, 1, 2)])
        finally:
            model.scorer.score = calls
    assert first[0]["warning"].startswith("input 0[0]: flagged: nearly uniform")
    assert best[2][-1] == 1                                       # the black frame, now at position 1, last
    assert again.warnings == {1: "input 0[1]: " + first[0]["warning"].split(": ", 1)[1]}


def test_score_cache_is_bounded_in_entries_and_bytes():
    value = host.CachedScore(1.0, 2.0, 3.0)
    cache = host.ScoreCache(max_entries=3, max_bytes=1 << 20)
    for i in range(5):
        cache.put(("m", bytes([i])), value)
    assert len(cache) == 3 and cache.get(("m", bytes([0]))) is None         # oldest out first
    assert cache.get(("m", bytes([2]))) == value                            # used: now the newest
    cache.put(("m", bytes([5])), value)
    assert cache.get(("m", bytes([3]))) is None and cache.get(("m", bytes([2]))) == value
    assert cache.nbytes == 3 * host.ScoreCache.ENTRY_BYTES
    small = host.ScoreCache(max_entries=100, max_bytes=2 * host.ScoreCache.ENTRY_BYTES + 10)
    small.put(("m", b"a"), value)
    small.put(("m", b"b"), value)
    small.put(("m", b"c"), host.CachedScore(math.nan, math.nan, math.nan, "x" * 20))    # 340 bytes
    assert len(small) == 1 and small.get(("m", b"c")) is not None and small.nbytes <= small.max_bytes
    small.put(("m", b"d"), host.CachedScore(math.nan, math.nan, math.nan, "x" * 10_000))  # too big alone
    assert small.get(("m", b"d")) is None and small.nbytes <= small.max_bytes
    small.clear()
    assert len(small) == 0 and small.nbytes == 0
    with pytest.raises(ValueError, match="cache bounds"):
        host.ScoreCache(max_entries=-1)


def test_fingerprint_sees_every_pixel_dtype_and_shape():
    a = torch.rand(2, 64, 48, 3)
    fp = host.fingerprint(a)
    assert host.fingerprint(a.clone()) == fp and len(fp) == 32
    b = a.clone()
    b[1, 63, 47, 2] = torch.nextafter(b[1, 63, 47, 2], torch.tensor(2.0))     # the last value, one ulp
    assert host.fingerprint(b) != fp
    assert host.fingerprint(a.reshape(2, 48, 64, 3)) != fp                   # same bytes, other shape
    assert host.fingerprint(a.double()) != fp
    assert host.fingerprint(a.to(torch.bfloat16)) != host.fingerprint(a.to(torch.float16))
    # the nodes' channels-first view of ComfyUI's images: read without a copy, every pixel seen
    view = a.permute(0, 3, 1, 2)
    assert host.fingerprint(view[1:2]) == host.fingerprint(a.clone().permute(0, 3, 1, 2)[1:2])
    assert host.fingerprint(view[1:2]) != host.fingerprint(b.permute(0, 3, 1, 2)[1:2])
    assert host.fingerprint(view[1:2]) != host.fingerprint(view[0:1])
    assert host.fingerprint(view) != host.fingerprint(view.contiguous())       # same values, other layout


def test_int_inputs_are_whole_numbers_named_by_the_node(model):
    """Issue 23 item 9: k=1.5 or a batch size of "8" is an error naming the node and the input."""
    images = smooth_random(3, 40, 48)
    with pytest.raises(ValueError, match=r"Best of N.*'k'.*whole number.*1\.5"):
        nodes.BestOfN().best_of_n(model, images, 1.5, "technical")
    with pytest.raises(ValueError, match=r"Best of N.*'batch_size'.*whole number"):
        nodes.BestOfN().best_of_n(model, images, 1, "technical", batch_size="8")
    assert nodes.BestOfN().best_of_n(model, images, 2.0, "technical")["result"][0].shape[0] == 2
    with pytest.raises(ValueError, match=r"'batch_size' must be >= 1"):
        nodes.ScoreNaturalness().score(model, [images], batch_size=[0])
    with pytest.raises(ValueError, match=r"Filter by Naturalness.*'batch_size'"):
        nodes.FilterByNaturalness().filter(model, images, "technical", 3.0, batch_size=2.5)
    for batch in (images, images[:0]):   # found by the fuzz suite: a raw format error on None
        with pytest.raises(ValueError, match=r"Filter by Naturalness: input 'threshold' must be a number"):
            nodes.FilterByNaturalness().filter(model, batch, "technical", None)
