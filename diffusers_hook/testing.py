"""Random-weight diffusers pipelines built from configs, with no download: for the tests, the
overhead benchmark and trying the hook offline. Their images are noise; only shapes and costs
are meaningful.

- :func:`sd_pipeline` ``("tiny")``: a Stable Diffusion pipeline of a few thousand parameters
  (the sizes diffusers' own tests use), 2x VAE downsampling; ``("sd15")``: the layer sizes of
  Stable Diffusion 1.5 (UNet 860M, VAE 84M, CLIP-L text encoder 123M parameters).
- :func:`sdxl_pipeline`, :func:`sd3_pipeline`: tiny SDXL (optionally with an fp16 VAE that the
  pipeline upcasts) and SD3 (no text encoders) pipelines.
- :func:`flux_pipeline`: a tiny Flux.1 pipeline without text encoders (pass ``prompt_embeds``
  ``[B, tokens, 16]`` and ``pooled_prompt_embeds`` ``[B, 16]``).
- :func:`clip_tokenizer`: a character-level CLIP tokenizer made in memory.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import torch

from ._common import require_diffusers


def _byte_symbols():
    """The 256 printable stand-ins that CLIP's byte-level BPE uses for bytes."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    extra = [b for b in range(256) if b not in keep]
    return [chr(b) for b in keep] + [chr(256 + i) for i in range(len(extra))]


def clip_tokenizer(max_length: int = 77):
    """A CLIP tokenizer whose vocabulary is the 256 byte symbols (with and without the end-of-word
    mark) and no merges: every character is a token. Enough to encode prompts offline."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for s in _byte_symbols():
            vocab[s + suffix] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def sd_pipeline(scale: str = "tiny", seed: int = 0, device: Union[str, torch.device, None] = None,
                dtype: Optional[torch.dtype] = None) -> Any:
    """A StableDiffusionPipeline with random weights: ``scale="tiny"`` (generate at 32x32) or
    ``"sd15"`` (SD 1.5 layer sizes; generate at 512x512)."""
    require_diffusers("testing")
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = clip_tokenizer()
    if scale == "tiny":
        unet_kw = dict(block_out_channels=(4, 8), layers_per_block=1, sample_size=16, cross_attention_dim=16,
                       norm_num_groups=2, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                       up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))
        vae_kw = dict(block_out_channels=(4, 8), norm_num_groups=2, down_block_types=("DownEncoderBlock2D",) * 2,
                      up_block_types=("UpDecoderBlock2D",) * 2)
        text_kw = dict(hidden_size=16, intermediate_size=24, num_hidden_layers=1, num_attention_heads=2)
    elif scale == "sd15":
        unet_kw = dict(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
        vae_kw = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=512,
                      scaling_factor=0.18215, down_block_types=("DownEncoderBlock2D",) * 4,
                      up_block_types=("UpDecoderBlock2D",) * 4)
        text_kw = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
    else:
        raise ValueError(f"scale must be 'tiny' or 'sd15', got {scale!r}")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(in_channels=4, out_channels=4, **unet_kw)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, **vae_kw)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), bos_token_id=0, eos_token_id=1,
                                                pad_token_id=1, max_position_embeddings=77, **text_kw))
    scheduler = _ddim()
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    if device is not None:
        pipe.to(device)
    if dtype is not None and dtype != torch.float32:
        pipe.to(dtype=dtype)
    return pipe


def _ddim() -> Any:
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1)


def _tiny_vae(**kw: Any) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=(4, 8), in_channels=3, out_channels=3, latent_channels=4,
                         norm_num_groups=2, down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, **kw)


def sdxl_pipeline(seed: int = 0, vae_fp16: bool = False) -> Any:
    """A tiny StableDiffusionXLPipeline (two CLIP text encoders, micro-conditioning) whose VAE has
    SDXL-style ``latents_mean``/``latents_std``; ``vae_fp16`` makes the VAE half precision with
    ``force_upcast``, so the pipeline decodes in fp32 as real SDXL does. Generate at 32x32."""
    require_diffusers("testing")
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = clip_tokenizer()
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + 16, cross_attention_dim=32,
        norm_num_groups=2)
    torch.manual_seed(seed + 1)
    vae = _tiny_vae(force_upcast=True, latents_mean=[0.1, -0.2, 0.05, 0.0], latents_std=[1.1, 0.9, 1.0, 1.2])
    text = dict(vocab_size=len(tokenizer), bos_token_id=0, eos_token_id=1, pad_token_id=1, max_position_embeddings=77,
                hidden_size=16, intermediate_size=24, num_hidden_layers=1, num_attention_heads=2)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(**text))
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(projection_dim=16, **text))
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                     tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet,
                                     scheduler=_ddim(), add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    if vae_fp16:
        pipe.vae.to(torch.float16)
    return pipe


def sd3_pipeline(seed: int = 0) -> Any:
    """A tiny StableDiffusion3Pipeline without text encoders (pass ``prompt_embeds`` ``[B, tokens, 16]``
    and ``pooled_prompt_embeds`` ``[B, 16]``; ``guidance_scale=1`` unless you pass negative ones too)."""
    require_diffusers("testing")
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=16, patch_size=1, in_channels=4, out_channels=4, num_layers=1, attention_head_dim=8,
        num_attention_heads=2, caption_projection_dim=16, joint_attention_dim=16, pooled_projection_dim=16)
    torch.manual_seed(seed + 1)
    vae = _tiny_vae(shift_factor=0.0609, scaling_factor=1.5035, use_quant_conv=False, use_post_quant_conv=False)
    pipe = StableDiffusion3Pipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae,
                                    text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
                                    text_encoder_3=None, tokenizer_3=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def flux_pipeline(seed: int = 0, device: Union[str, torch.device, None] = None) -> Any:
    """A tiny FluxPipeline with random weights and no text encoders (VAE scale factor 1, so
    height and width must be even)."""
    require_diffusers("testing")
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=16, pooled_projection_dim=16, axes_dims_rope=[2, 2, 4])
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(4,), layers_per_block=1, latent_channels=1,
        norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609,
        scaling_factor=1.5035)
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, transformer=transformer,
                        text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None)
    pipe.set_progress_bar_config(disable=True)
    if device is not None:
        pipe.to(device)
    return pipe
