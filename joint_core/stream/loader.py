"""How many processes decode and how many threads the model gets, for ``joint score`` and
:class:`~joint_core.stream.ScoreJob`: the CPU plan (:func:`plan_cpu`, :class:`CpuPlan`,
:func:`default_workers`, :func:`model_threads`) lives in :mod:`joint_core.devices`, beside the
device and dtype choice, so that the scorer (``score_iter(num_workers=None)``) plans the same way
without importing this package.

The decoding loader itself (:class:`Sample`, :func:`iter_batches`, :func:`load_sample`) lives in
:mod:`joint_core.preprocess.loader`, for the same reason. Both are importable from here, as before.
"""

from __future__ import annotations

from ..devices import HEAVY_GFLOPS, LOW_PRIORITY, CpuPlan, available_cores, default_workers, model_threads, plan_cpu
from ..preprocess.loader import Sample, _quiet_worker, as_sample, id_is_path, iter_batches, load_sample

__all__ = ["HEAVY_GFLOPS", "LOW_PRIORITY", "CpuPlan", "Sample", "_quiet_worker", "as_sample", "available_cores",
           "default_workers", "id_is_path", "iter_batches", "load_sample", "model_threads", "plan_cpu"]
