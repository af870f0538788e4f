"""Samples -> decoded images, in worker processes or on this process's cores, in input order,
with bounded prefetch.

A :class:`Sample` is a light reference to one image - a file path, the bytes of a Parquet cell,
a member of a tar file, or an in-memory image - and its ``key`` (the id written to score files).
Sources (:mod:`joint_core.stream.sources`) yield samples lazily; :func:`iter_batches` turns them
into batches of :class:`~joint_core.preprocess.images.ImageItem`, either through a torch
``DataLoader`` whose worker processes open and decode the files (the main process only hands out
references), or, with no worker, in this process, each batch on a pool of threads between
batches. Either way the project's one per-image loader
(:func:`~joint_core.preprocess.images.load_one`) does the work, so an unreadable file is a named
per-item error and never loses the batch.

Memory does not grow with the number of images: at most ``num_workers * prefetch`` batches are in
flight, and batches come back in input order whatever the worker count.

It lives under :mod:`joint_core.preprocess` so that the scorer (``NaturalnessScorer.score_iter``)
builds on it without importing :mod:`joint_core.stream`, which imports the scorer; how many
workers and threads to use is :func:`joint_core.devices.plan_cpu`'s policy.
"""


from __future__ import annotations

import functools
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Iterator, List, NamedTuple, Optional, Tuple

import torch

from ..devices import available_cores
from ..errors import ImageInputError
from .images import load_items, load_one
from .items import ImageItem, ImageLimits, check_layout
from .paths import open_regular


class Sample(NamedTuple):
    """One input image, by reference. Exactly one of ``path``, ``data``, ``member``, ``obj`` or
    ``error`` is set:

    - ``path``: an image file;
    - ``data``: encoded image bytes (a Parquet cell, a member of a compressed tar);
    - ``member``: ``(tar file, offset of the data, size)`` in an uncompressed tar, read on load;
    - ``obj``: an in-memory image (PIL, array, tensor), as :meth:`NaturalnessScorer.score` takes;
    - ``error``: the input could not even be listed (a truncated tar, a bad table row).
    """

    key: str
    path: Optional[str] = None
    data: Optional[bytes] = None
    member: Optional[Tuple[str, int, int]] = None
    obj: Any = None
    error: Optional[str] = None


def id_is_path(sample: Sample) -> bool:
    """Whether a sample's id (its ``key``, the ``source`` column) is the local file it was read
    from. Ids of tar members, table cells with image bytes and rows named by an id column are
    not: such an id must never be opened as a local path (it may name an unrelated file)."""
    return sample.path is not None and sample.key == sample.path


def as_sample(obj: Any, position: int) -> Sample:
    """An input of :meth:`NaturalnessScorer.score_iter` -> a :class:`Sample`."""
    if isinstance(obj, Sample):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        return Sample(str(obj), path=str(obj))
    return Sample(f"input {position}", obj=obj)


def load_sample(sample: Sample, limits: Optional[ImageLimits] = None, layout: str = "auto"
                ) -> List[ImageItem]:
    """Decode one sample; never raises. In-memory batches (a ``[B,3,H,W]`` tensor) give several
    items, everything else one. ``limits`` and ``layout`` as for
    :func:`~joint_core.preprocess.images.collect_images` (the scorer passes its own)."""
    if sample.error is not None:
        return [ImageItem(sample.key, error=sample.error)]
    if sample.path is not None:
        item = load_one(sample.path, limits=limits)
        if sample.key != sample.path:  # a path made absolute for a remote worker: name it as given
            item.source = sample.key
            for field in ("error", "warning"):
                text = getattr(item, field)
                if text is not None and text.startswith(sample.path):
                    setattr(item, field, sample.key + text[len(sample.path):])
        return [item]
    if sample.data is not None:
        return [load_one(sample.data, source=sample.key, limits=limits)]
    if sample.member is not None:
        tar, offset, size = sample.member
        try:
            with open_regular(tar, what="a tar file") as f:
                f.seek(offset)
                data = f.read(size)
        except ImageInputError as e:
            return [ImageItem(sample.key, error=f"{sample.key}: {e}")]
        except OSError as e:
            return [ImageItem(sample.key, error=f"{sample.key}: cannot read {tar} ({e.strerror or e})")]
        if len(data) != size:
            return [ImageItem(sample.key, error=f"{sample.key}: {tar} is truncated")]
        return [load_one(data, source=sample.key, limits=limits)]
    return load_items(sample.obj, label=sample.key, limits=limits, layout=layout)


class _SampleDataset(torch.utils.data.Dataset):
    """Map-style dataset whose "indices" are the samples themselves: the batch sampler streams
    samples from the main process, the workers decode them."""

    def __init__(self, limits: Optional[ImageLimits] = None, layout: str = "auto"):
        self.limits, self.layout = limits, layout

    def __getitem__(self, sample: Sample) -> List[ImageItem]:
        return load_sample(sample, self.limits, self.layout)

    def __len__(self) -> int:  # pragma: no cover - never asked: the batch sampler drives the loader
        raise TypeError("streamed dataset has no length")


class _Batches:
    """Re-iterable batch sampler over an iterator of samples (iterated once)."""

    def __init__(self, samples: Iterator[Sample], batch_size: int):
        self.samples, self.batch_size = samples, batch_size

    def __iter__(self) -> Iterator[List[Sample]]:
        batch: List[Sample] = []
        for s in self.samples:
            batch.append(s)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch


def _collate(parts: List[List[ImageItem]]) -> List[ImageItem]:
    return [item for part in parts for item in part]


def _quiet_worker(worker_id: int, nice: int = 0) -> None:
    """DataLoader ``worker_init_fn``: a decoding worker leaves Ctrl-C to the main process (which
    stops the job cleanly and shuts the workers down), and stays quiet when the main process goes
    away in the middle of a transfer. Tensors reach the main process through file descriptors
    served by a thread of the worker (``multiprocessing.resource_sharer``); if the main process is
    interrupted while it fetches one, that thread's accept fails and it printed a traceback under
    the "interrupted; resume with ..." message. Other errors still print. ``nice`` > 0 lowers
    the worker's priority (:class:`~joint_core.devices.CpuPlan`)."""
    if nice > 0 and hasattr(os, "nice"):
        try:
            os.nice(nice)
        except OSError:  # pragma: no cover - not permitted here: run at normal priority
            pass

    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except (ValueError, OSError):  # pragma: no cover - not the main thread
        pass
    default = sys.excepthook

    def hook(kind, value, tb):
        if issubclass(kind, (EOFError, ConnectionError, BrokenPipeError)):
            return
        default(kind, value, tb)

    sys.excepthook = hook


def iter_batches(samples: Iterable[Any], batch_size: int = 16, num_workers: int = 0,
                 prefetch: int = 2, limits: Optional[ImageLimits] = None, layout: str = "auto",
                 worker_nice: int = 0, threads: Optional[int] = None) -> Iterator[List[ImageItem]]:
    """Decode ``samples`` (:class:`Sample` objects, paths or in-memory images) in ``num_workers``
    processes (0: in this process) and yield lists of at most ``batch_size`` items, in input order.
    At most ``num_workers * prefetch`` batches are decoded ahead. ``limits`` bound the work per
    image (the scorer's :attr:`~joint_core.scorer.NaturalnessScorer.limits`); ``layout`` reads
    in-memory arrays and tensors; ``worker_nice`` > 0 runs the workers at lower priority (beside
    a model that uses every core, :func:`~joint_core.devices.plan_cpu`).

    In this process (``num_workers=0``) each batch is decoded when it is asked for, by ``threads``
    threads (None: every available core, at most ``batch_size``; 1: this thread): Pillow and
    NumPy release the GIL while they decode and flag, and the model's threads are idle between
    batches, so decoding a batch on every core costs about a core's share of the time of decoding
    it on one (``benchmarks/cpu_plan.py``: a light model from 512 px files went from 80 % to about
    90 % of its in-memory rate on 2 cores). The items are the same whatever the thread count."""
    check_layout(layout)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be a non-negative integer, got {num_workers!r}")
    if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 1:
        raise ValueError(f"prefetch must be a positive integer, got {prefetch!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    stream = (as_sample(obj, i) for i, obj in enumerate(samples))
    if num_workers == 0:
        parts = _decode_here(stream, batch_size, limits, layout, threads)
    else:
        parts = _decode_in_workers(stream, batch_size, num_workers, prefetch, limits, layout, worker_nice)
    pending: List[ImageItem] = []
    try:
        for items in parts:
            # in-memory batches can give more items than samples: re-cut to batch_size
            pending.extend(items)
            while len(pending) >= batch_size:
                yield pending[:batch_size]
                pending = pending[batch_size:]
        if pending:
            yield pending
    finally:
        parts.close()


def _decode_here(stream: Iterator[Sample], batch_size: int, limits: Optional[ImageLimits], layout: str,
                 threads: Optional[int]) -> Iterator[List[ImageItem]]:
    """Batches decoded in this process, each by a pool of threads when asked for (lazily: the
    next batch is read and decoded only when the caller is done with this one). In-memory
    images are read in this thread: their conversion is torch's, and torch work in other threads
    starts thread teams that fight the model's."""
    n = min(available_cores() if threads is None else threads, batch_size)
    load = functools.partial(load_sample, limits=limits, layout=layout)
    pool = ThreadPoolExecutor(n, thread_name_prefix="joint-decode") if n > 1 else None
    try:
        for batch in _Batches(stream, batch_size):
            if pool is None or sum(s.obj is None for s in batch) < 2:
                yield _collate([load(s) for s in batch])
                continue
            jobs = [pool.submit(load, s) if s.obj is None else s for s in batch]
            yield _collate([load(j) if isinstance(j, Sample) else j.result() for j in jobs])
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _decode_in_workers(stream: Iterator[Sample], batch_size: int, num_workers: int, prefetch: int,
                       limits: Optional[ImageLimits], layout: str, worker_nice: int) -> Iterator[List[ImageItem]]:
    loader = torch.utils.data.DataLoader(
        _SampleDataset(limits, layout), batch_sampler=_Batches(stream, batch_size), num_workers=num_workers,
        collate_fn=_collate, prefetch_factor=prefetch,
        worker_init_fn=functools.partial(_quiet_worker, nice=worker_nice))
    it = iter(loader)
    try:
        yield from it
    finally:
        if hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
        del it
