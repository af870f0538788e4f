"""Device and dtype choice, shared by the scorer, training and the ComfyUI pack, and how the CPU
cores are shared between the model's threads and the decoding workers (:func:`plan_cpu`, used by
``joint score`` and ``NaturalnessScorer.score_iter``; ``joint_core.stream.loader`` re-exports it)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional, Union

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


# A model that costs at least this many GFLOPs an image is "heavy" on a CPU: decoding an image
# (a 512 px PNG: 4-7 ms on an idle core) is then a small share of the work, so the model gets every
# core and one decoder runs beside it at low priority, in the gaps of the model's thread team.
# The v3 default (CLIP ViT-B/16) costs 33.7 GFLOPs, v1 (EfficientNet-Lite0 + MobileNetV2) 1.4;
# the rule was chosen by benchmarks/cpu_plan.py (docs/cli.md, "Cores").
HEAVY_GFLOPS = 8.0
LOW_PRIORITY = 19


@dataclass(frozen=True)
class CpuPlan:
    """How `joint score` and :meth:`~joint_core.scorer.NaturalnessScorer.score_iter` share the
    cores: ``workers`` decoding processes at ``nice`` (0: normal priority) and ``threads`` torch
    threads for the model (None: leave torch's setting)."""

    workers: int
    threads: Optional[int]
    nice: int = 0


def plan_cpu(device: Any = "cpu", gflops: Optional[float] = None, workers: Optional[int] = None,
             threads: Optional[int] = None) -> CpuPlan:
    """Decoding workers and model threads from the model's cost (``gflops`` an image, see
    :meth:`~joint_core.model.JointModel.gflops`) and the cores; ``workers``/``threads`` given by
    the user are kept as they are.

    The rule depends on nothing measured at run time (only the model and the core count), so
    a machine scores the same images with the same thread count on every run, and the scores
    are reproducible to the last bit (the thread count moves them by about 1e-6).

    - GPU: every core but one decodes (decoding is the bottleneck there); torch's threads as set.
    - CPU, one core: decode in this process (0 workers), one thread.
    - CPU, a heavy model (``gflops >= HEAVY_GFLOPS``): every core to the model and one decoder
      at low priority (niced): a decoder at normal priority beside a full thread team stalls the
      team (every parallel region waits for its descheduled thread).
    - CPU, a light model (or unknown cost): one decoder per four cores at normal priority and the
      model the cores they leave; below four cores no decoder: each batch is decoded in this
      process between batches, by one thread per core (:func:`~joint_core.preprocess.loader.iter_batches`),
      and every core goes to the model. On 2 cores that measured best (``benchmarks/cpu_plan.py``:
      the fast model and a v1-class model about 90 % of the in-memory rate, against 72-86 % when one
      thread decoded and 56-76 % with a decoding process).
    """
    cores = available_cores()
    if torch.device(device).type != "cpu":
        w = max(1, min(16, cores - 1)) if workers is None else workers
        return CpuPlan(w, threads)
    if cores <= 1:
        return CpuPlan(0 if workers is None else workers, threads or 1)
    heavy = gflops is not None and gflops >= HEAVY_GFLOPS
    if heavy:
        w = 1 if workers is None else workers
        nice = LOW_PRIORITY if w and threads is None else 0
        return CpuPlan(w, threads or cores, nice)
    w = min(8, cores // 4) if workers is None else workers
    t = threads or max(1, cores - w)
    return CpuPlan(w, t)


def default_workers(device: Any = "cpu", gflops: Optional[float] = None) -> int:
    """Decoding processes for ``--workers``'s default (:func:`plan_cpu`)."""
    return plan_cpu(device, gflops).workers


def model_threads(device: Any, workers: int, gflops: Optional[float] = None) -> Optional[int]:
    """Torch threads for the model when ``workers`` processes decode beside it (:func:`plan_cpu`).
    None: leave torch's setting (a GPU, or no workers)."""
    if torch.device(device).type != "cpu" or workers <= 0:
        return None
    return plan_cpu(device, gflops, workers=workers).threads


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
