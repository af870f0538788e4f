"""Write a random-weight checkpoint that ComfyUI loads as Stable Diffusion 1.5, for tests on a CPU.

Run with ComfyUI's interpreter, in the ComfyUI folder: ``python comfyui_sd15.py OUT.safetensors``
(tests/comfyui_server.py: ``build_sd15_checkpoint``). The model classes are ComfyUI's own, so
ComfyUI's detection takes the file for SD 1.5: a UNet with SD 1.5's width (320 channels, 768-d
cross-attention) but one level and one transformer, CLIP-L (its size is fixed by ComfyUI's
config), and TAESD as the VAE. Weights are seeded random numbers: the images are not pictures,
but every node of a text-to-image workflow runs for real, in seconds.
"""

import os
import sys

out_path = sys.argv[1]
sys.path.insert(0, os.getcwd())
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
sys.argv = [sys.argv[0], "--cpu"]           # ComfyUI's device choice reads the command line

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import comfy.model_detection as detection  # noqa: E402
import comfy.sd1_clip  # noqa: E402
import comfy.supported_models as supported  # noqa: E402
import comfy.taesd.taesd  # noqa: E402

UNET = {"use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False,
        "adm_in_channels": None, "in_channels": 4, "out_channels": 4, "model_channels": 320,
        "num_res_blocks": [1], "channel_mult": [1], "transformer_depth": [1], "transformer_depth_output": [0, 1],
        "transformer_depth_middle": -2, "use_linear_in_transformer": False, "context_dim": 768,
        "use_temporal_resblock": False, "use_temporal_attention": False}

shapes = {"model." + k: v for k, v in supported.SD15(dict(UNET)).get_model({}).state_dict().items()}
detected = detection.detect_unet_config(shapes, "model.diffusion_model.")
assert {k: UNET.get(k) for k in detected} == detected, f"ComfyUI would read another UNet: {detected}"
assert isinstance(detection.model_config_from_unet_config(detected, shapes), supported.SD15)
for k, v in comfy.sd1_clip.SD1ClipModel().state_dict().items():      # clip_l.transformer... -> cond_stage_model...
    shapes["cond_stage_model." + k[len("clip_l."):]] = v
for k, v in comfy.taesd.taesd.TAESD(latent_channels=4).state_dict().items():
    shapes["first_stage_model." + k] = v

g = torch.Generator().manual_seed(0)
weights = {}
for k, v in shapes.items():
    if not v.is_floating_point() or v.dim() == 0:                     # ids; TAESD's latent scale and shift
        weights[k] = v.clone()
    elif k.endswith("weight") and ("norm" in k or v.dim() == 1):      # normalisation scales
        weights[k] = torch.ones(v.shape, dtype=torch.float16)
    elif v.dim() >= 2:                                                 # 1/sqrt(fan-in) keeps activations O(1)
        weights[k] = (torch.randn(v.shape, generator=g) / v[0].numel() ** 0.5).to(torch.float16)
    else:
        weights[k] = torch.zeros(v.shape, dtype=torch.float16)
save_file(weights, out_path)
print(f"wrote {out_path}: {sum(w.numel() for w in weights.values()) / 1e6:.0f} M parameters")
