"""The Ray Data engine: the same sources and the same scorer, in ``map_batches`` actors on a cluster.

    pip install 'joint-naturalness[ray]'
    joint score shards/*.tar --engine ray --address ray://head:10001 --out scores.parquet

The driver lists the job's remaining inputs with the readers of :mod:`joint_core.stream.sources`
(the same stream, resume included, as a local run) and puts them into Ray's object store as one
small Arrow block per batch - references to files and tar members, or the bytes of Parquet
cells. One actor per GPU (or per 2 CPUs) holds one model, decodes its batches in threads and
scores them with :meth:`NaturalnessScorer.score_items`. The driver streams the scores back and
writes them with the same sinks as a local run, so resume, ``joint merge`` and ``joint filter``
work the same. The model's config and weights travel through the object store, so workers need
no copy of the model - but they must reach the images (a shared file system). Tables of image
bytes are read by the driver; for data already in a ``ray.data.Dataset`` (``read_parquet`` from
object storage), :func:`score_dataset` scores it where it lies.

Ray retries a task whose actor died (Ray Data restarts its actors), and the driver receives each
batch's output once, so an actor killed mid-run costs time, not rows.

For a ``ray.data.Dataset`` you already hold, :func:`score_dataset` adds the score columns.

Ray is imported only here; ``joint_core`` imports without it.
"""

from __future__ import annotations

import logging
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import torch

from ..checkpoint import WEIGHTS_NAME, read_weights
from ..config import JointConfig
from ..extras import require
from ..model import JointModel
from ..preprocess.loader import Sample, load_sample
from ..ranking import AXES
from ..scorer import NaturalnessScorer
from .job import model_description


def _import_ray():
    """``ray`` with Ray Data, or an ImportError naming the ``ray`` extra."""
    require("ray.data", "--engine ray")
    return require("ray", "--engine ray")


def _pyarrow():
    return require("pyarrow", "--engine ray")


# --------------------------------------------------------------------------------------------
# samples -> Arrow blocks (names as bytes, so names that are not UTF-8 travel)
# --------------------------------------------------------------------------------------------


def _enc(s: Optional[str]) -> Optional[bytes]:
    return None if s is None else s.encode("utf-8", "surrogatepass")


def _dec(b: Any) -> Optional[str]:
    return None if b is None else bytes(b).decode("utf-8", "surrogatepass")


def _block(samples: List[Sample]):
    """A batch of samples as one Arrow block. Paths and tar members become absolute (workers do
    not share the driver's folder); ids stay as given."""
    pa = _pyarrow()

    def absolute(p: Optional[str]) -> Optional[str]:
        return None if p is None else os.path.abspath(p)

    return pa.table({
        "key": pa.array([_enc(s.key) for s in samples], pa.binary()),
        "path": pa.array([_enc(absolute(s.path)) for s in samples], pa.binary()),
        "data": pa.array([s.data for s in samples], pa.binary()),
        "tar": pa.array([_enc(absolute(s.member[0])) if s.member else None for s in samples], pa.binary()),
        "offset": pa.array([s.member[1] if s.member else -1 for s in samples], pa.int64()),
        "size": pa.array([s.member[2] if s.member else -1 for s in samples], pa.int64()),
        "error": pa.array([s.error for s in samples], pa.string()),
    })


def _row_sample(row: Dict[str, Any]) -> Sample:
    tar = _dec(row.get("tar"))
    member = (tar, int(row["offset"]), int(row["size"])) if tar is not None else None
    return Sample(_dec(row["key"]), path=_dec(row.get("path")), data=row.get("data"), member=member,
                  error=row.get("error"))


# --------------------------------------------------------------------------------------------
# the scoring actor
# --------------------------------------------------------------------------------------------


class ScoreActor:
    """One model per actor; decodes its batch in threads, scores it with ``score_items``.

    ``model``: what :func:`actor_model` gives - a model folder or hub id each worker loads itself
    (checked against ``sha256``, the driver's model), or a one-item list holding an object-store
    reference to an in-memory model's config and weights."""

    def __init__(self, model: Any, sha256: Optional[str] = None, device: str = "auto", dtype: str = "auto",
                 localizer: Optional[str] = None, decode_threads: int = 1, torch_threads: Optional[int] = None):
        if torch_threads:
            torch.set_num_threads(torch_threads)
        if isinstance(model, list):
            blob = _import_ray().get(model[0])
            net = JointModel(JointConfig.from_json(blob["config"]))
            net.load_state_dict(blob["state"], strict=True)
            self.scorer = NaturalnessScorer(net, device=device, dtype=dtype, localizer=localizer)
        else:
            self.scorer = NaturalnessScorer.from_pretrained(model, device=device, dtype=dtype, localizer=localizer)
        if sha256 is not None and model_description(self.scorer)["sha256"] != sha256:
            raise RuntimeError(f"{socket.gethostname()}: the model {model!r} here is not the driver's model; "
                               "install the same model folder on every node (or use a hub id)")
        self.pool = None
        if decode_threads > 1:
            self.pool = ThreadPoolExecutor(decode_threads)

    def __call__(self, batch: Any) -> Any:
        pa = _pyarrow()
        samples = [_row_sample(row) for row in batch.to_pylist()]
        limits = self.scorer.limits   # the same per-image bounds as a local run

        def load(s: Sample):
            return load_sample(s, limits)

        loaded = list(self.pool.map(load, samples)) if self.pool else [load(s) for s in samples]
        res = self.scorer.score_items([parts[0] for parts in loaded])
        return pa.table({
            "key": pa.array([_enc(s.key) for s in samples], pa.binary()),
            "technical": pa.array(res.technical.double().numpy(), pa.float64()),
            "rationality": pa.array(res.rationality.double().numpy(), pa.float64()),
            "naturalness": pa.array(res.naturalness.double().numpy(), pa.float64()),
            "error": pa.array([res.errors.get(i) for i in range(len(samples))], pa.string()),
            "warning": pa.array(_warnings(res, len(samples)), pa.string()),
        })


def _warnings(res: Any, n: int) -> List[Optional[str]]:
    return [None if i in res.errors else res.warnings.get(i) for i in range(n)]


def actor_model(scorer: Any, ray: Any) -> Any:
    """How actors get the driver's model: a shipped model by name, a hub model by its id, a
    model folder by its path (workers must see it: a shared file system); a model that lives only
    in memory through the object store. An int8 scorer is refused: its actors would load the
    float model and the rows would not be what the driver's record says."""
    if getattr(scorer, "int8", False):
        raise ValueError("an int8 scorer cannot run on Ray actors (they would score in float32): load the model "
                         "without int8 for Ray")
    src = scorer.source
    if src is None:
        return [ray.put(model_blob(scorer))]
    if src.origin.startswith("shipped "):
        return src.origin[len("shipped "):]
    if src.origin == "hub":
        return src.spec
    return str(Path(src.path).resolve())


def model_blob(scorer: Any) -> Dict[str, Any]:
    """The model's config and weights as stored (fp32 from the checkpoint file when there is one,
    so actors hold exactly what a local scorer loads)."""
    state = None
    if scorer.source is not None:
        f = Path(scorer.source.path) / WEIGHTS_NAME
        if f.is_file():
            state = read_weights(f)
    if state is None:
        state = {k: v.detach().float().cpu() if v.is_floating_point() else v.detach().cpu()
                 for k, v in scorer.model.state_dict().items()}
    return {"config": scorer.config.to_json(), "state": state}


# --------------------------------------------------------------------------------------------
# the engine
# --------------------------------------------------------------------------------------------


class RayEngine:
    """``engine(samples)`` for :meth:`ScoreJob.run`: scores the job's remaining inputs on Ray.

    Args:
        scorer: the driver's scorer: its model is shipped to the actors.
        address: a cluster (``ray://host:10001``, ``auto``); None: ``$RAY_ADDRESS``, else a
            local Ray started for this run and stopped after it.
        actors: scoring actors (default: one per GPU, else one per 2 CPUs).
        device, dtype: for the actors (default: cuda when they get a GPU, else cpu).
    """

    def __init__(self, scorer: Any, batch_size: int = 16, address: Optional[str] = None,
                 actors: Optional[int] = None, model: Optional[str] = None, localizer: Optional[str] = None,
                 dtype: str = "auto", cpus_per_actor: Optional[float] = None, num_cpus: Optional[int] = None):
        self.scorer, self.batch_size, self.address = scorer, batch_size, address
        self.actors, self.localizer, self.dtype = actors, localizer, dtype
        self.cpus_per_actor, self.num_cpus = cpus_per_actor, num_cpus
        self._started = False
        self.blocks = 0
        _import_ray()  # a clear error naming the extra, before any work

    def start(self):
        ray = _import_ray()
        if not ray.is_initialized():
            address = self.address or os.environ.get("RAY_ADDRESS")
            kwargs: Dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "logging_level": logging.ERROR}
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=self.num_cpus, **kwargs)
                self._started = True
        logging.getLogger("ray.data").setLevel(logging.ERROR)   # our own progress bar and messages
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        return ray

    def plan_actors(self, ray) -> Dict[str, Any]:
        res = ray.cluster_resources()
        gpus, cpus = int(res.get("GPU", 0)), max(1, int(res.get("CPU", 1)))
        if gpus:
            n = self.actors or gpus
            cpus_each = self.cpus_per_actor or max(1.0, (cpus - 1) // max(n, 1))
            return {"concurrency": n, "num_gpus": 1, "num_cpus": cpus_each, "device": "cuda"}
        cpus_each = self.cpus_per_actor or (1.0 if self.actors and self.actors >= cpus else 2.0)
        n = self.actors or max(1, int(cpus // cpus_each))
        return {"concurrency": n, "num_gpus": 0, "num_cpus": min(cpus_each, cpus), "device": "cpu"}

    def dataset(self, ray, samples: Iterator[Sample]):
        """The pipeline: the job's samples, one Arrow block per batch in Ray's object store (so
        every actor gets work and a lost actor costs one batch, retried) -> scores (actors)."""
        plan = self.plan_actors(ray)
        refs, batch = [], []
        for s in samples:
            batch.append(s)
            if len(batch) == self.batch_size:
                refs.append(ray.put(_block(batch)))
                batch = []
        if batch:
            refs.append(ray.put(_block(batch)))
        if not refs:
            return None
        self.blocks = len(refs)
        threads = max(1, int(plan["num_cpus"]))
        return ray.data.from_arrow_refs(refs).map_batches(
            ScoreActor, batch_size=self.batch_size, batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=plan["concurrency"]),
            num_cpus=plan["num_cpus"], num_gpus=plan["num_gpus"] or None,
            fn_constructor_kwargs={"model": actor_model(self.scorer, ray),
                                   "sha256": model_description(self.scorer)["sha256"],
                                   "device": plan["device"], "dtype": self.dtype,
                                   "localizer": self.localizer, "decode_threads": threads,
                                   "torch_threads": threads})

    def __call__(self, samples: Iterator[Sample]) -> Iterator[List[Dict[str, Any]]]:
        """Score ``samples`` (the job's remaining inputs, read on the driver with the same
        readers as a local run) on Ray; yields each batch's records as Ray finishes it."""
        ray = self.start()
        try:
            ds = self.dataset(ray, samples)
            if ds is None:
                return
            for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                yield _records(batch)
        finally:
            if self._started:
                ray.shutdown()


def _records(batch: Any) -> List[Dict[str, Any]]:
    """An Arrow batch of scores -> score-file records (NaN as None, names decoded)."""
    out = []
    for row in batch.to_pylist():
        rec: Dict[str, Any] = {"source": _dec(row["key"])}
        for ax in AXES:
            v = row[ax]
            rec[ax] = None if v is None or v != v else v
        rec["error"] = row["error"]
        rec["warning"] = row.get("warning")
        out.append(rec)
    return out


def score_dataset(ds: Any, scorer: Any, column: str = "image", id_column: Optional[str] = None,
                  batch_size: int = 16, actors: Optional[int] = None, num_gpus: Optional[float] = None,
                  num_cpus: float = 1.0, dtype: str = "auto") -> Any:
    """Add ``technical``, ``rationality``, ``naturalness``, ``error`` and ``warning`` columns to a
    ``ray.data.Dataset`` whose ``column`` holds image paths or encoded image bytes (or Hugging
    Face ``{bytes, path}`` structs). Lazy, like any Ray Data transform; ``id_column`` (default:
    the path, else the row's position in its batch) names rows in errors.

        >>> scored = score_dataset(ray.data.read_parquet("s3://bucket/images/"), scorer, column="jpg")
        >>> scored.filter(lambda r: r["naturalness"] >= 3.5).write_parquet("s3://bucket/kept/")
    """
    ray = _import_ray()
    model = actor_model(scorer, ray)
    sha = model_description(scorer)["sha256"]
    device = "cuda" if num_gpus else "cpu"
    return ds.map_batches(
        _DatasetScorer, batch_size=batch_size, batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(size=actors or 1),
        num_cpus=num_cpus, num_gpus=num_gpus,
        fn_constructor_kwargs={"model": model, "sha256": sha, "column": column, "id_column": id_column,
                               "device": device, "dtype": dtype, "threads": max(1, int(num_cpus))})


class _DatasetScorer:
    def __init__(self, model: Any, sha256: str, column: str, id_column: Optional[str], device: str, dtype: str,
                 threads: int):
        self.actor = ScoreActor(model, sha256, device=device, dtype=dtype, decode_threads=threads,
                                torch_threads=threads)
        self.column, self.id_column = column, id_column

    def __call__(self, df):
        samples = []
        for i, value in enumerate(df[self.column].tolist()):
            key = str(df[self.id_column].iloc[i]) if self.id_column else None
            samples.append(_value_sample(value, key, i))
        loaded = [load_sample(s, self.actor.scorer.limits)[0] for s in samples]
        res = self.actor.scorer.score_items(loaded)
        out = df.copy()
        for ax in AXES:
            out[ax] = getattr(res, ax).double().numpy()
        out["error"] = [res.errors.get(i) for i in range(len(samples))]
        out["warning"] = _warnings(res, len(samples))
        return out


def _value_sample(value: Any, key: Optional[str], row: int) -> Sample:
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if data:
            return Sample(key or path or f"row {row}", data=bytes(data))
        value = path
    if isinstance(value, (bytes, bytearray)):
        return Sample(key or f"row {row}", data=bytes(value))
    if isinstance(value, str) and value:
        return Sample(key or value, path=value)
    return Sample(key or f"row {row}", error=f"row {row}: no image path or bytes ({value!r})")
