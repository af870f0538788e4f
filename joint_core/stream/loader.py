"""How many processes decode and how many threads the model gets, for ``joint score`` and
:class:`~joint_core.stream.ScoreJob`: :func:`default_workers`, :func:`model_threads`.

The decoding loader itself (:class:`Sample`, :func:`iter_batches`, :func:`load_sample`) lives in
:mod:`joint_core.preprocess.loader`, so that the scorer does not import this package; its names
are importable from here too, as before.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import torch

from ..preprocess.loader import Sample, _quiet_worker, as_sample, id_is_path, iter_batches, load_sample

__all__ = ["Sample", "_quiet_worker", "as_sample", "available_cores", "default_workers", "id_is_path", "iter_batches",
           "load_sample", "model_threads"]


def default_workers(device: Any = "cpu") -> int:
    """Decoding processes for ``--workers``'s default: on a GPU, every core but one (decoding is
    the bottleneck there); on CPU, where the model needs the cores too, one per four cores
    (at least one) - decoding a 512 px PNG costs about a fifth of scoring it."""
    cores = available_cores()
    if torch.device(device).type == "cpu":
        return max(1, min(8, cores // 4))
    return max(1, min(16, cores - 1))


def model_threads(device: Any, workers: int) -> Optional[int]:
    """Torch threads for the model when ``workers`` processes decode beside it on CPU: the cores
    the decoders leave (at least one). More threads than free cores make the model's thread team
    wait on descheduled threads - several times slower than one thread on a busy machine. None:
    leave torch's setting (a GPU, or no workers)."""
    if torch.device(device).type != "cpu" or workers <= 0:
        return None
    return max(1, available_cores() - workers)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
