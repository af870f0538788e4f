import json

import pytest

from joint_core import ConfigError, JointConfig, get_preset, list_presets


def test_presets_are_registered_and_valid():
    assert {"paper", "official", "tiny-test"} <= set(list_presets())
    paper = get_preset("paper")
    assert paper.technical.backbone == "swin_tiny_patch4_window7_224"
    assert paper.rationality.backbone == "resnet50"
    assert (paper.fusion.technical_weight, paper.fusion.rationality_weight) == (0.145, 0.769)
    official = get_preset("official")
    assert official.rationality.head_input == "logits"
    assert official.preprocess.rationality.low_frequency is True
    assert official.preprocess.technical.grid == 7 and official.preprocess.technical.size == 224


def test_presets_are_fresh_objects():
    a = get_preset("paper")
    a.fusion.bias = 3.0
    assert get_preset("paper").fusion.bias == 0.0


def test_json_round_trip_is_exact():
    from joint_core import CalibrationConfig

    cfg = get_preset("official")
    cfg.calibration = CalibrationConfig(params=(8.1866, 1.0193, 4.3916, 1.3753), input="sum")
    again = JointConfig.from_json(cfg.to_json())
    assert again == cfg
    assert isinstance(again.calibration.params, tuple)
    assert isinstance(again.preprocess.mean, tuple)


def test_unknown_key_is_named():
    d = get_preset("paper").to_dict()
    d["technical"]["head_hiden"] = 64
    with pytest.raises(ConfigError, match=r"config\.technical: unknown key\(s\) \['head_hiden'\]"):
        JointConfig.from_dict(d)


@pytest.mark.parametrize("path,value,message", [
    (("technical", "head_hidden"), "128", r"config\.technical\.head_hidden must be an integer"),
    (("fusion", "bias"), "x", r"config\.fusion\.bias must be a number"),
    (("technical", "head_input"), "avg", r"must be one of \['pooled', 'logits', 'stages', 'tokens'\]"),
    (("preprocess", "mean"), [0.5, 0.5], r"config\.preprocess\.mean must have 3 items"),
])
def test_wrong_types_are_named(path, value, message):
    d = get_preset("paper").to_dict()
    d[path[0]][path[1]] = value
    with pytest.raises(ConfigError, match=message):
        JointConfig.from_dict(d)


def test_validation_catches_inconsistent_grid():
    d = get_preset("paper").to_dict()
    d["preprocess"]["technical"]["size"] = 500  # not a multiple of grid 8
    with pytest.raises(ConfigError, match="multiple of grid"):
        JointConfig.from_dict(d)


def test_future_format_version_is_refused():
    d = get_preset("paper").to_dict()
    d["format_version"] = 99
    with pytest.raises(ConfigError, match="format_version 99"):
        JointConfig.from_dict(d)


def test_bad_json_names_the_source():
    with pytest.raises(ConfigError, match="my.json: not valid JSON"):
        JointConfig.from_json("{nope", source="my.json")


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        get_preset("nope")


def test_save_and_load(tmp_path):
    cfg = get_preset("tiny-test")
    path = cfg.save(tmp_path)
    assert path.name == "config.json"
    assert json.loads(path.read_text())["technical"]["backbone"] == "test_efficientnet"
    assert JointConfig.load(tmp_path) == cfg
