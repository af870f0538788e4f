import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from joint_core import CheckpointError, NaturalnessScorer, NoModelError, load_model, resolve_model, save_model
from joint_core import checkpoint
from joint_core.checkpoint import WEIGHTS_NAME


def _state_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_reload_is_bit_identical(tiny_model_dir, tmp_path):
    m1 = load_model(tiny_model_dir)
    out = save_model(m1, tmp_path / "again")
    m2 = load_model(out)
    assert _state_equal(m1, m2)
    x = torch.rand(3, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(m1(x, x).naturalness, m2(x, x).naturalness)
    assert (out / "config.json").read_text() == (tiny_model_dir / "config.json").read_text()


def test_fp16_save_loads_into_fp32_model(tiny_model_dir, tmp_path):
    m1 = load_model(tiny_model_dir)
    out = save_model(m1, tmp_path / "half", dtype=torch.float16)
    assert load_file(str(out / WEIGHTS_NAME))["technical.head.0.weight"].dtype == torch.float16
    m2 = load_model(out)
    w1, w2 = m1.technical.head[0].weight, m2.technical.head[0].weight
    assert w2.dtype == torch.float32 and torch.equal(w2, w1.half().float())


def test_int8_weights_round_trip_and_dequantise_at_load(tiny_model_dir, tmp_path):
    from joint_core.checkpoint import INT8_SCALE_SUFFIX, quantize_int8

    m1 = load_model(tiny_model_dir)
    key = "technical.head.0.weight"
    # weights that already hold int8 levels times a per-row scale (a dequantised int8 export)
    # come back exactly; other weights within half a quantisation step
    w = m1.technical.head[0].weight
    levels = torch.randint(-127, 128, w.shape, generator=torch.Generator().manual_seed(0)).float()
    levels[:, 0] = 127
    with torch.no_grad():
        w.copy_(levels * torch.linspace(1e-3, 2e-3, w.shape[0])[:, None])
    out = save_model(m1, tmp_path / "int8", dtype=torch.float16, int8=[r"^technical\.head\.0\.weight$",
                                                                        r"\.bias$"])
    raw = load_file(str(out / WEIGHTS_NAME))
    assert raw[key].dtype == torch.int8 and raw[key + INT8_SCALE_SUFFIX].dtype == torch.float32
    assert raw["technical.head.0.bias"].dtype == torch.float16          # 1-D tensors are never quantised
    assert raw["rationality.head.0.weight"].dtype == torch.float16
    m2 = load_model(out)                                                 # strict: no leftover scale keys
    assert set(m2.state_dict()) == set(m1.state_dict())
    assert torch.equal(m2.technical.head[0].weight, m1.technical.head[0].weight)
    other = torch.randn(5, 7)
    q, scale = quantize_int8(other)
    assert (q.float() * scale[:, None] - other).abs().max() <= scale.max() / 2 + 1e-7
    # the checksum covers the stored int8 bytes
    data = bytearray((out / WEIGHTS_NAME).read_bytes())
    data[-3] ^= 0x01
    (out / WEIGHTS_NAME).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        load_model(out)


def test_an_int8_scale_without_its_tensor_is_an_error(tiny_model_dir, tmp_path):
    from joint_core.checkpoint import INT8_SCALE_SUFFIX

    bad = _copy(tiny_model_dir, tmp_path / "orphan")
    state = load_file(str(bad / WEIGHTS_NAME))
    state["technical.head.0.weight" + INT8_SCALE_SUFFIX] = torch.ones(3)
    save_file(state, str(bad / WEIGHTS_NAME))
    with pytest.raises(CheckpointError, match="int8 scale without a matching int8 tensor"):
        load_model(bad)


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_tampered_weights_fail_loudly(tiny_model_dir, tmp_path):
    bad = _copy(tiny_model_dir, tmp_path / "tampered")
    data = bytearray((bad / WEIGHTS_NAME).read_bytes())
    data[-10] ^= 0xFF                      # flip bits inside the last tensor's data
    (bad / WEIGHTS_NAME).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="do not match the checksum"):
        load_model(bad)


def test_save_weights_and_load_weights_check_every_module(tmp_path):
    """The one save/load pair for weights that are not a model folder (training exports, resume)."""
    from joint_core.checkpoint import load_weights, save_weights

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    path = save_weights(net.state_dict(), tmp_path / "w.safetensors", metadata={"note": "x"})
    other = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    load_weights(other, path)
    assert _state_equal(net, other)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_weights(torch.nn.Sequential(torch.nn.Linear(4, 2)), path)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="do not match the checksum"):
        load_weights(other, path)


def test_truncated_weights_fail_loudly(tiny_model_dir, tmp_path):
    bad = _copy(tiny_model_dir, tmp_path / "truncated")
    data = (bad / WEIGHTS_NAME).read_bytes()
    (bad / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_model(bad)


@pytest.mark.parametrize("edit,message", [
    (lambda s: s.pop("technical.head.0.bias"), "missing 1: \\['technical.head.0.bias'\\]"),
    (lambda s: s.__setitem__("extra.weight", torch.zeros(2)), "unexpected 1: \\['extra.weight'\\]"),
    (lambda s: s.__setitem__("technical.head.0.bias", torch.zeros(3)), "wrong shape 1"),
])
def test_strict_loading(tiny_model_dir, tmp_path, edit, message):
    bad = _copy(tiny_model_dir, tmp_path / "edited")
    state = load_file(str(bad / WEIGHTS_NAME))
    edit(state)
    save_file(state, str(bad / WEIGHTS_NAME))   # no checksum: strictness alone must catch it
    with pytest.raises(CheckpointError, match=message):
        load_model(bad)


def test_config_errors_name_the_file(tiny_model_dir, tmp_path):
    bad = _copy(tiny_model_dir, tmp_path / "badcfg")
    cfg = json.loads((bad / "config.json").read_text())
    cfg["fusion"]["weight"] = 1
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"badcfg/config.json: config.fusion: unknown key"):
        load_model(bad)


def test_resolution_order(tiny_model_dir, isolated_models, monkeypatch):
    with pytest.raises(NoModelError, match="joint convert JOINT_2024.pth"):
        resolve_model()
    shipped = _copy(tiny_model_dir, isolated_models / "shipped")
    monkeypatch.setattr(checkpoint, "SHIPPED_DEFAULT", shipped)
    assert resolve_model().origin == "shipped default"
    assert resolve_model("default").path == shipped
    cache = _copy(tiny_model_dir, checkpoint.default_model_dir())
    assert resolve_model().origin == "user cache" and resolve_model().path == cache
    other = _copy(tiny_model_dir, isolated_models / "env-model")
    monkeypatch.setenv("JOINT_MODEL", str(other))
    r = resolve_model()
    assert r.path == other and "JOINT_MODEL" in r.origin
    explicit = resolve_model(str(tiny_model_dir / "config.json"))
    assert explicit.path == tiny_model_dir and explicit.origin == "argument"
    assert resolve_model(tiny_model_dir / WEIGHTS_NAME).path == tiny_model_dir


def test_resolution_errors(tmp_path):
    (tmp_path / "x.pth").write_bytes(b"0")
    with pytest.raises(CheckpointError, match="joint convert"):
        resolve_model(tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match="holds a .pth file"):
        resolve_model(tmp_path)
    with pytest.raises(CheckpointError, match="no such model folder"):
        resolve_model(str(tmp_path / "missing"))


def _fake_hub_cache(root: Path, repo_id: str, model_dir: Path) -> Path:
    """The on-disk layout huggingface_hub uses for a downloaded snapshot."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = root / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for f in model_dir.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    return root


def test_hub_ids_load_offline_from_the_hub_cache(tiny_model_dir, tmp_path):
    cache = _fake_hub_cache(tmp_path / "hub", "someone/tiny-joint", tiny_model_dir)
    code = ("import sys; from joint_core import NaturalnessScorer as S, CheckpointError as E\n"
            "s = S.from_pretrained('someone/tiny-joint', device='cpu'); print(s.source.origin)\n"
            "try:\n    S.from_pretrained('someone/not-cached')\nexcept E as e:\n    print('ERR', e)\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HOME=str(tmp_path / "hf"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "hub"
    assert lines[1].startswith("ERR hub model 'someone/not-cached' could not be loaded")
    assert "HF_HUB_OFFLINE" in lines[1]


def test_scorer_save_pretrained_round_trip(tiny_scorer, tmp_path):
    out = tiny_scorer.save_pretrained(tmp_path / "saved")
    again = NaturalnessScorer.from_pretrained(out, device="cpu")
    x = torch.rand(2, 3, 70, 90)
    a, b = tiny_scorer.score(x), again.score(x)
    assert torch.equal(a.naturalness, b.naturalness)


def test_list_models_names_what_can_be_loaded(tiny_model_dir, tmp_path, monkeypatch, isolated_models):
    """$JOINT_MODEL, user-cache folders and the shipped default are listed; each name loads; the
    one used without a name is marked; presets are not models."""
    import shutil

    from joint_core import checkpoint, list_models

    assert list_models() == []
    shipped = tmp_path / "shipped"
    shutil.copytree(tiny_model_dir, shipped)
    monkeypatch.setattr(checkpoint, "SHIPPED_DEFAULT", shipped)
    home = tmp_path / "joint-home"
    shutil.copytree(tiny_model_dir, home / "mine")
    (home / "not-a-model").mkdir()
    models = list_models()
    assert [(m.origin, m.is_default) for m in models] == [("user cache", False), ("shipped default", True)]
    assert models[1].name == "default"
    for m in models:
        assert resolve_model(m.name).path.resolve() == m.path.resolve()
    monkeypatch.setenv("JOINT_MODEL", str(home / "mine"))   # now the user's folder is the default
    models = list_models()
    assert models[0].origin == "environment ($JOINT_MODEL)" and models[0].is_default
    assert [m.is_default for m in models].count(True) == 1 and len(models) == 2   # not listed twice


def test_list_models_includes_hub_models_in_the_local_cache(tiny_model_dir, tmp_path):
    cache = _fake_hub_cache(tmp_path / "hub", "someone/tiny-joint", tiny_model_dir)
    code = ("from joint_core import list_models, resolve_model\n"
            "for m in list_models():\n"
            "    print(m.origin, m.name, resolve_model(m.name).path == m.path)\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HOME=str(tmp_path / "hf"),
               JOINT_HOME=str(tmp_path / "home"))
    env.pop("JOINT_MODEL", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "hub cache someone/tiny-joint True" in out.stdout.splitlines()


def test_a_preset_name_is_not_a_model(isolated_models):
    with pytest.raises(CheckpointError, match="architecture preset.*from_config"):
        resolve_model("paper")


def test_cli_info_list(tiny_model_dir, isolated_models, monkeypatch, capsys):
    import json
    import shutil

    from joint_core.cli import main

    shutil.copytree(tiny_model_dir, isolated_models / "joint-home" / "default")   # as `joint convert` installs
    assert main(["info", "--list"]) == 0
    out = capsys.readouterr().out
    assert "* " + str(isolated_models / "joint-home" / "default") in out and "presets" in out and "paper" in out
    assert main(["info", "--list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [m["origin"] for m in data["models"]] == ["user cache"] and "tiny-test" in data["presets"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_saved_weights_get_the_usual_permissions(tmp_path):
    """safetensors writes through a private temporary file (0600); a model folder someone else
    must read (a group, a container, a web server) gets the permissions open() would give."""
    from joint_core.weights_io import save_weights

    old = os.umask(0o022)
    try:
        save_weights({"w": torch.zeros(3)}, tmp_path / "a.safetensors")
        os.umask(0o077)
        save_weights({"w": torch.zeros(3)}, tmp_path / "b.safetensors")
    finally:
        os.umask(old)
    assert (tmp_path / "a.safetensors").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.safetensors").stat().st_mode & 0o777 == 0o600
