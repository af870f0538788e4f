"""Decode a pipeline's final latents the way that pipeline family does after its denoising loop.

Supported families (checked by class name along the pipeline's MRO, then by latent layout):

- ``sd``: Stable Diffusion 1.x/2.x and SDXL pipelines (``StableDiffusion*``, ``StableDiffusionXL*``,
  ControlNet/adapter variants) - ``vae.decode(latents / scaling_factor)``, or with SDXL-style
  ``latents_mean``/``latents_std`` when the VAE config has them; an fp16 SDXL VAE with
  ``force_upcast`` decodes in fp32, and the SDXL watermark is applied when the pipeline has one.
- ``sd3``: Stable Diffusion 3 - ``vae.decode(latents / scaling_factor + shift_factor)``.
- ``flux``: Flux.1 pipelines (packed latents ``[B, patches, 4*C]``) - ``_unpack_latents`` with the
  generated height and width, then ``latents / scaling_factor + shift_factor``.

Anything else raises :class:`NotImplementedError`. The decoded images are mapped from [-1, 1] to
[0, 1] by the pipeline's own ``image_processor.postprocess(..., output_type="pt")``, so they are
the images the pipeline returns for ``output_type="pt"`` (SD's safety checker, which blacks out
flagged images after decoding, is not run here).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
from torch import Tensor

FAMILIES = ("sd", "sd3", "flux")


def _class_names(pipe: Any):
    return [c.__name__ for c in type(pipe).__mro__]


def pipeline_family(pipe: Any) -> str:
    """``"sd"``, ``"sd3"`` or ``"flux"`` from the pipeline's classes; NotImplementedError otherwise."""
    names = _class_names(pipe)
    vae = getattr(pipe, "vae", None)
    family = None
    if vae is not None and hasattr(vae, "decode"):
        if any(n.startswith("Flux") and not n.startswith("Flux2") for n in names) \
                and callable(getattr(pipe, "_unpack_latents", None)):
            family = "flux"
        elif any(n.startswith("StableDiffusion3") for n in names):
            family = "sd3"
        elif any(n.startswith("StableDiffusion") for n in names) and hasattr(pipe, "unet"):
            family = "sd"
    if family is None:
        raise NotImplementedError(_unsupported(pipe, "its latents"))
    return family


def latent_family(pipe: Any, latents: Tensor) -> str:
    """:func:`pipeline_family`, checked against the latents' layout (3-D packed for Flux, 4-D
    otherwise)."""
    family = pipeline_family(pipe)
    if latents.ndim != (3 if family == "flux" else 4):
        raise NotImplementedError(_unsupported(pipe, f"latents of shape {tuple(latents.shape)}"))
    return family


def _unsupported(pipe: Any, what: str) -> str:
    return (f"{type(pipe).__name__}: decoding {what} is implemented for Stable Diffusion 1.x/2.x/XL, "
            "Stable Diffusion 3 and Flux.1 pipelines only. Use diffusers_hook.best_of_n, which scores "
            "the pipeline's own output and works with any pipeline that returns images, or pass "
            "decode=fn(pipe, latents) -> images in [0, 1]")


def flux_size(pipe: Any, latents: Tensor, height: Optional[int], width: Optional[int]) -> Tuple[int, int]:
    """The image height and width that Flux's packed ``latents`` were generated at."""
    vsf = int(pipe.vae_scale_factor)
    patches = int(latents.shape[1])

    def fits(h: int, w: int) -> bool:
        return (int(h) // (vsf * 2)) * (int(w) // (vsf * 2)) == patches

    if height is None and width is None:
        d = getattr(pipe, "default_sample_size", None)
        if d is not None and fits(d * vsf, d * vsf):
            return d * vsf, d * vsf
        raise ValueError(
            f"{type(pipe).__name__} packs its latents ({patches} patches), and they cannot be unpacked "
            "without the image size: pass height= and width= (the values given to the pipeline)")
    if height is None or width is None:
        raise ValueError("pass both height= and width= (the values given to the pipeline), not only one")
    if not fits(height, width):
        raise ValueError(
            f"height={height}, width={width} do not match the packed latents ({patches} patches of "
            f"{2 * vsf}x{2 * vsf} px); pass the height and width the pipeline generated at")
    return int(height), int(width)


def check_decodable(pipe: Any, latents: Tensor, height: Optional[int] = None, width: Optional[int] = None) -> str:
    """Raise now (NotImplementedError / ValueError) if :func:`decode_latents` would fail on these
    latents; returns the family. Cheap: nothing is decoded."""
    family = latent_family(pipe, latents)
    if family == "flux":
        flux_size(pipe, latents, height, width)
    return family


def _vae_device(vae: Any, fallback: torch.device) -> torch.device:
    try:
        from diffusers.utils.torch_utils import get_module_execution_device
    except ImportError:  # older diffusers
        return fallback
    return get_module_execution_device(vae)


@torch.no_grad()
def decode_latents(pipe: Any, latents: Tensor, height: Optional[int] = None,
                   width: Optional[int] = None) -> Tensor:
    """Final ``latents`` of ``pipe`` -> images ``[B, 3, H, W]`` in [0, 1], as the pipeline returns
    them for ``output_type="pt"``. ``height``/``width`` are needed for Flux's packed latents
    (they default to the pipeline's default size when that matches)."""
    family = latent_family(pipe, latents)
    vae = pipe.vae
    cfg = vae.config
    upcast = False
    if family == "flux":
        h, w = flux_size(pipe, latents, height, width)
        z = pipe._unpack_latents(latents, h, w, pipe.vae_scale_factor)
        z = z / cfg.scaling_factor + cfg.shift_factor
        z = z.to(_vae_device(vae, z.device))
    elif family == "sd3":
        z = latents / cfg.scaling_factor + cfg.shift_factor
    else:
        is_xl = any("XL" in n for n in _class_names(pipe))
        upcast = is_xl and vae.dtype == torch.float16 and bool(getattr(cfg, "force_upcast", False))
        if upcast:
            vae.to(dtype=torch.float32)
            latents = latents.to(torch.float32)
        mean, std = getattr(cfg, "latents_mean", None), getattr(cfg, "latents_std", None)
        if mean is not None and std is not None:
            c = latents.shape[1]
            mean = torch.tensor(mean).view(1, c, 1, 1).to(latents.device, latents.dtype)
            std = torch.tensor(std).view(1, c, 1, 1).to(latents.device, latents.dtype)
            z = latents * std / cfg.scaling_factor + mean
        else:
            z = latents / cfg.scaling_factor
    try:
        image = vae.decode(z, return_dict=False)[0]
    finally:
        if upcast:
            vae.to(dtype=torch.float16)
    if family == "sd" and getattr(pipe, "watermark", None) is not None:
        image = pipe.watermark.apply_watermark(image)
    return pipe.image_processor.postprocess(image, output_type="pt")
