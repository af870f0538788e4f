"""Device and dtype choice, shared by the scorer, training and the ComfyUI pack."""

from __future__ import annotations

from typing import Union

import torch


def pick_device(device: Union[str, torch.device, None] = None) -> torch.device:
    """``None``/``"auto"``: cuda, then mps, then cpu; otherwise the given device, checked."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps ({e})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    if dev.type == "mps" and not _mps_available():
        raise ValueError(f"device {device!r} requested but MPS is not available")
    return dev


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
          "fp16": torch.float16, "half": torch.float16, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16}


def pick_dtype(dtype: Union[str, torch.dtype, None], device: torch.device) -> torch.dtype:
    """``None``/``"auto"``: bf16 on CUDA GPUs that support it (else fp16), fp32 elsewhere."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    try:
        return DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {sorted(DTYPES)} or 'auto'") from None
