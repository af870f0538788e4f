"""A scoring job: a source, an optional shard of it, a score file that is appended to and can be
resumed, and an engine that turns samples into scored records (this process with DataLoader
workers, or Ray). The CLI only wires these together.

Next to each score file the job keeps a small description, ``OUT.joint.json`` (for a Parquet
folder, ``OUT/_joint.json``): the inputs (count and an ordered SHA-256 of their ids), the shard,
how many inputs the shard holds and an order-free fingerprint of their ids, and the model (a hash
of its config and weights, its dtype). Resuming checks it - a file started with another model,
dtype or shard is never continued - and ``joint merge`` uses it to check that the shards of a
split job are all there, each with every one of its inputs exactly once.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import torch
from safetensors import safe_open

from .._version import __version__
from ..checkpoint import HASH_KEY, WEIGHTS_NAME, state_hash
from ..ranking import AXES, DEFAULT_BY, check_by
from ..result import ScoreResult
from ..scorer import NaturalnessScorer
from ..preprocess.loader import Sample, id_is_path
from .sinks import OutputError, Sink, has_rows, lock_path, meta_path, read_rows, remove_output, write_rows
from .sources import KeySetHash, Source, _encode_key, shard

META_FORMAT = 1
SORT_LIMIT = int(os.environ.get("JOINT_SORT_LIMIT", "2000000"))

FAILED, FLAGGED = 1, 2   # states of rows already in a score file (0: scored)

Engine = Callable[[Iterator[Sample]], Iterable[List[Dict[str, Any]]]]


def model_description(scorer: Any) -> Dict[str, Any]:
    """What decides a model's scores: a hash of its config and weights, and the dtype."""
    cfg = scorer.config
    weights = None
    if scorer.source is not None:
        try:
            with safe_open(str(Path(scorer.source.path) / WEIGHTS_NAME), framework="pt") as f:
                weights = (f.metadata() or {}).get(HASH_KEY)
        except Exception:  # noqa: BLE001 - fall back to hashing the loaded weights
            weights = None
    if weights is None:   # an int8 scorer's layers are packed: it kept the hash of its float weights
        weights = getattr(scorer, "float_weights_hash", None) or state_hash(scorer.model.state_dict())
    digest = hashlib.sha256((cfg.to_json() + weights).encode()).hexdigest()
    return {"name": cfg.name, "source": scorer.source.describe() if scorer.source else "in memory",
            "sha256": digest, "dtype": getattr(scorer, "dtype_name", str(scorer.dtype).replace("torch.", "")),
            "localizer": repr(scorer.localizer), "ranking": cfg.ranking,
            "score_range": list(cfg.score_range)}


META_LIMIT = 1 << 20   # a job record is a few hundred bytes; a larger file is not one


def read_meta(out: str) -> Optional[Dict[str, Any]]:
    """The job record of score file ``out`` (None when there is none), checked against
    :func:`check_meta`: a damaged or edited record is one :class:`OutputError` naming the file
    and the key, never a traceback later."""
    p = meta_path(out)
    if not p.exists() and not p.is_symlink():
        return None
    how = (f"the rows in {out} are not affected: restore the record, or remove it to continue without "
           "its checks (--resume then only skips the inputs the file holds)")
    if not p.is_file():
        raise OutputError(f"{p}: the job record is not a regular file; {how}")
    try:
        with open(p, "rb") as f:
            raw = f.read(META_LIMIT + 1)
        if len(raw) > META_LIMIT:
            raise ValueError(f"larger than {META_LIMIT:,} bytes")
        meta = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError) as e:   # UnicodeDecodeError and JSONDecodeError are ValueErrors
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise OutputError(f"{p}: unreadable job record ({reason}); {how}") from None
    except RecursionError:
        raise OutputError(f"{p}: unreadable job record (nested too deeply); {how}") from None
    problem = check_meta(meta)
    if problem:
        raise OutputError(f"{p}: damaged job record: {problem}; {how}")
    return meta


def id_kinds(meta: Optional[Dict[str, Any]]) -> str:
    """What the ids (``source`` column) of a score file are, by its job record: ``"paths"``
    (local files: filter may copy them, the report may show them), ``"keys"`` (names of tar
    members or table rows: never looked up on the local disk), ``"mixed"`` (both: no row is
    looked up, since a key may name an unrelated local file), or ``"unknown"`` (no record, or
    one written before records said so: taken as paths, as a hand-made list of paths is)."""
    ids = ((meta or {}).get("inputs") or {}).get("ids")
    if not ids:
        return "unknown"
    paths, keys = ids.get("paths") or 0, ids.get("keys") or 0
    if keys and paths:
        return "mixed"
    return "keys" if keys else "paths"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _kind(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null",
            int: "a number", float: "a number"}.get(type(v), type(v).__name__)


def check_meta(meta: Any) -> Optional[str]:
    """What is wrong with a job record (the schema of :meth:`ScoreJob.describe`), else None.
    Keys may be missing (records of older versions lack some); present ones must have their
    type. Unknown keys are allowed (records of newer versions)."""
    if not isinstance(meta, dict):
        return f"expected a JSON object, found {_kind(meta)}"

    def wrong(key: str, want: str, v: Any) -> str:
        return f"key {key!r} should be {want}, found {_kind(v)} {json.dumps(v)[:60]}"

    def count(key: str, v: Any, optional: bool = True) -> Optional[str]:
        if v is None and optional:
            return None
        return None if _is_int(v) and v >= 0 else wrong(key, "a whole number >= 0", v)

    def text(key: str, v: Any, optional: bool = True) -> Optional[str]:
        if v is None and optional:
            return None
        return None if isinstance(v, str) else wrong(key, "a string", v)

    checks = [count("format", meta.get("format")), text("joint", meta.get("joint")),
              count("rows", meta.get("rows")), count("expected", meta.get("expected")),
              text("expected_keys", meta.get("expected_keys")), text("updated", meta.get("updated"))]
    if "finished" in meta and not isinstance(meta["finished"], bool):
        checks.append(wrong("finished", "true or false", meta["finished"]))
    inputs = meta.get("inputs")
    if inputs is not None:
        if not isinstance(inputs, dict):
            checks.append(wrong("inputs", "an object", inputs))
        else:
            checks += [count("inputs.count", inputs.get("count")), text("inputs.sha256", inputs.get("sha256"))]
            ids = inputs.get("ids")
            if ids is not None and not isinstance(ids, dict):
                checks.append(wrong("inputs.ids", "an object", ids))
            elif ids is not None:
                checks += [count(f"inputs.ids.{k}", ids.get(k)) for k in ("paths", "keys")]
    shard_ = meta.get("shard")
    if shard_ is not None and not (isinstance(shard_, list) and len(shard_) == 2 and all(map(_is_int, shard_))
                                   and 0 <= shard_[0] < shard_[1]):
        checks.append(wrong("shard", "null or [I, N] with 0 <= I < N", shard_))
    model = meta.get("model")
    if model is not None and not isinstance(model, dict):
        checks.append(wrong("model", "an object", model))
    elif model is not None:
        checks += [text(f"model.{k}", model.get(k)) for k in ("name", "source", "sha256", "dtype", "localizer")]
        if model.get("ranking") is not None:
            try:
                check_by(model["ranking"], "model.ranking")
            except (TypeError, ValueError) as e:
                checks.append(f"key 'model.ranking': {e}")
        rng = model.get("score_range")
        if rng is not None and not (isinstance(rng, list) and len(rng) == 2
                                    and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rng)):
            checks.append(wrong("model.score_range", "[low, high]", rng))
    sel = meta.get("selection")
    if sel is not None and not isinstance(sel, dict):
        checks.append(wrong("selection", "an object", sel))
    merged = meta.get("merged_from")
    if merged is not None and not (isinstance(merged, list) and all(isinstance(m, str) for m in merged)):
        checks.append(wrong("merged_from", "a list of file names", merged))
    return next((c for c in checks if c), None)


def write_meta(out: str, meta: Dict[str, Any]) -> None:
    p = meta_path(out)
    tmp = p.with_name(p.name + ".tmp")
    try:
        tmp.write_text(json.dumps(meta, indent=2, ensure_ascii=True) + "\n", encoding="utf-8")
        os.replace(tmp, p)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{p}: cannot write ({e.strerror or e})") from None


@dataclass
class Plan:
    """What a pass over the inputs found (before scoring)."""

    inputs: int = 0                  # all inputs, every shard
    inputs_sha256: str = ""          # ordered fingerprint of their ids
    expected: int = 0                # inputs of this shard
    expected_keys: str = ""          # order-free fingerprint of this shard's ids
    done: int = 0                    # of these, already in the score file
    done_failed: int = 0
    done_flagged: int = 0
    skipped: Dict[str, int] = field(default_factory=dict)
    path_ids: int = 0                # inputs whose id is a local file path (files, lists, path columns)
    key_ids: int = 0                 # inputs whose id only names them (tar members, table rows)

    @property
    def todo(self) -> int:
        return self.expected - self.done


@dataclass
class Outcome:
    scored: int = 0          # this run
    failed: int = 0          # this run
    flagged: int = 0         # this run: scored with a warning (ranked last)
    total: int = 0           # rows of this shard's inputs in the file (or printed), all runs
    total_failed: int = 0
    total_flagged: int = 0
    seconds: float = 0.0
    interrupted: bool = False


class ScoreJob:
    """Wires a source, a shard, a score file and an engine.

    >>> job = ScoreJob(open_inputs(["images/"]), out="scores.csv", mode="resume")
    >>> job.check_model(model_description(scorer)); plan = job.plan()
    >>> outcome = job.run(lambda samples: scorer.score_iter(samples, num_workers=2))
    """

    def __init__(self, source: Source, out: Optional[str] = None, shard_spec: Optional[Tuple[int, int]] = None,
                 mode: str = "new"):
        self.source, self.out, self.shard_spec, self.mode = source, out, shard_spec, mode
        self.sink: Optional[Sink] = None
        self._created = False
        self.done: Dict[str, int] = {}   # id -> FAILED, FLAGGED or 0, for the rows already in the file
        self.meta: Optional[Dict[str, Any]] = None
        self.model: Optional[Dict[str, Any]] = None
        self._plan: Optional[Plan] = None
        if out is not None:
            self._created = not has_rows(out) and not Path(out).exists()
            self.meta = read_meta(out) if mode == "resume" else None
            self.sink = Sink(out, mode)   # creates the file: cannot write -> error before any work
            if mode == "resume":
                for rec in read_rows(out):
                    self.done[rec["source"]] = (FAILED if rec["error"] is not None
                                                else FLAGGED if rec.get("warning") else 0)

    def discard_if_unused(self) -> None:
        """Remove the score file this job created if nothing was written (a failure before the
        first batch), so the same command can simply be run again."""
        if self.sink is None:
            return
        self.sink.close(finish=False)
        if self._created and self.sink.rows == 0:
            try:
                remove_output(self.out)
                lock_path(self.out).unlink(missing_ok=True)
                if Path(self.out).is_dir():
                    Path(self.out).rmdir()
            except (OSError, OutputError):
                pass

    # -- checks --------------------------------------------------------------------------

    def check_model(self, model: Dict[str, Any]) -> None:
        """Refuse to continue a file that another model, dtype or shard started."""
        self.model = model
        old = self.meta
        if old is None:
            return
        om = old.get("model") or {}
        if om.get("sha256") and om.get("sha256") != model["sha256"]:
            raise OutputError(f"{self.out} was scored with another model ({om.get('source', '?')}); its scores "
                              "cannot be mixed with this one's: use another --out, or --overwrite")
        if om.get("dtype") and om.get("dtype") != model["dtype"]:
            raise OutputError(f"{self.out} was scored in {om['dtype']}, this run uses {model['dtype']}: "
                              "pass the same --dtype (and --int8 or not), use another --out, or --overwrite")
        shard_old = tuple(old["shard"]) if old.get("shard") else None
        if shard_old != self.shard_spec:
            def show(s):
                return f"--shard {s[0]}/{s[1]}" if s else "no --shard"
            raise OutputError(f"{self.out} holds {show(shard_old)}, this run asks for {show(self.shard_spec)}")

    # -- the pass over the inputs ----------------------------------------------------------

    def plan(self) -> Plan:
        """Count the inputs (and this shard's), fingerprint them, and see how many are done."""
        p = Plan()
        ordered = hashlib.sha256()
        keys = KeySetHash()
        i, n = self.shard_spec or (0, 1)
        for k, s in enumerate(self.source.samples()):
            p.inputs += 1
            ordered.update(_encode_key(s.key) + b"\0")
            if s.error is None:
                if id_is_path(s):
                    p.path_ids += 1
                else:
                    p.key_ids += 1
            if k % n != i:
                continue
            keys.add(s.key)
            if s.key in self.done:
                p.done += 1
                p.done_failed += self.done[s.key] == FAILED
                p.done_flagged += self.done[s.key] == FLAGGED
        p.inputs_sha256 = ordered.hexdigest()
        p.expected, p.expected_keys = keys.count, keys.hexdigest()
        p.skipped = dict(self.source.skipped)
        self._plan = p
        if self.meta is not None and self.shard_spec is not None \
                and (self.meta.get("inputs") or {}).get("sha256") not in (None, p.inputs_sha256):
            raise OutputError(f"the inputs differ from those {self.out} was started with (another list, "
                              "or files added or removed): every shard of a split job must see the same "
                              "inputs in the same order")
        return p

    def samples(self) -> Iterator[Sample]:
        """This shard's inputs that the score file does not hold yet."""
        stream = self.source.samples()
        if self.shard_spec is not None:
            stream = shard(stream, *self.shard_spec)
        for s in stream:
            if s.key not in self.done:
                yield s

    # -- running ---------------------------------------------------------------------------

    def describe(self, finished: bool, rows: int) -> Dict[str, Any]:
        p = self._plan or Plan()
        return {"format": META_FORMAT, "joint": __version__, "finished": finished, "rows": rows,
                "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "inputs": {"count": p.inputs, "sha256": p.inputs_sha256,
                           "ids": {"paths": p.path_ids, "keys": p.key_ids}},
                "shard": list(self.shard_spec) if self.shard_spec else None,
                "expected": p.expected, "expected_keys": p.expected_keys,
                "model": self.model}

    def run(self, engine: Engine, on_batch: Optional[Callable[[List[Dict[str, Any]]], None]] = None,
            progress: Optional[bool] = None) -> Outcome:
        """Score what is left, append each batch to the score file, call ``on_batch``. A
        ``KeyboardInterrupt`` (SIGINT) stops after the batches written so far: the file is valid and
        ``--resume`` continues it; it is re-raised after the file is closed."""
        plan = self._plan or self.plan()
        out = Outcome(total=plan.done, total_failed=plan.done_failed, total_flagged=plan.done_flagged)
        if self.out is not None:
            write_meta(self.out, self.describe(False, self.sink.rows))
        bar = NaturalnessScorer._progress_bar(plan.expected, 0, progress, initial=plan.done)
        t0 = time.perf_counter()
        try:
            for records in engine(self.samples()):
                if self.sink is not None:
                    self.sink.write(records)
                bad = sum(1 for r in records if r.get("error"))
                flagged = sum(1 for r in records if r.get("warning") and not r.get("error"))
                out.scored += len(records)
                out.failed += bad
                out.flagged += flagged
                out.total += len(records)
                out.total_failed += bad
                out.total_flagged += flagged
                if bar is not None:
                    bar.update(len(records))
                if on_batch is not None:
                    on_batch(records)
        except KeyboardInterrupt:
            out.interrupted = True
            self._close(finish=False)
            raise
        except BaseException:
            self._close(finish=False)
            raise
        finally:
            out.seconds = time.perf_counter() - t0
            if bar is not None:
                bar.close()
        self._close(finish=True)
        return out

    def _close(self, finish: bool) -> None:
        if self.sink is None:
            return
        self.sink.close(finish=finish)   # a failed finish raises: the description stays unfinished
        if self.out is not None and finish:
            write_meta(self.out, self.describe(True, self.sink.rows))


# --------------------------------------------------------------------------------------------
# reading scores back: one ScoreResult for the selection rule
# --------------------------------------------------------------------------------------------


def result_from_rows(rows: List[Dict[str, Any]], default_by: Any = DEFAULT_BY, score_range=(1.0, 5.0)):
    """Score-file records -> a :class:`~joint_core.result.ScoreResult` (for ``keep``)."""
    nan = float("nan")
    cols = {ax: torch.tensor([nan if r[ax] is None else r[ax] for r in rows], dtype=torch.float64)
            for ax in AXES}
    errors = {i: r["error"] for i, r in enumerate(rows) if r["error"] is not None or r["naturalness"] is None}
    errors = {i: (m if m is not None else f"{rows[i]['source']}: no score") for i, m in errors.items()}
    flagged = {i: r["warning"] for i, r in enumerate(rows) if r.get("warning") and i not in errors}
    return ScoreResult(cols["technical"], cols["rationality"], cols["naturalness"],
                       [r["source"] for r in rows], errors, tuple(score_range), default_by=default_by,
                       warnings=flagged)


def sort_output(out: str, by: Any, k: Optional[int], descending: bool, default_by: Any = DEFAULT_BY,
                limit: Optional[int] = None) -> Tuple[List[Dict[str, Any]], int]:
    """Rewrite ``out`` best first (only the ``k`` best with ``k``) with ``ScoreResult.keep``,
    atomically. Returns the rows kept and how many the file held. Refuses (OutputError, file
    untouched) when the file holds more than ``limit`` rows: sorting happens in memory."""
    limit = SORT_LIMIT if limit is None else limit
    rows: List[Dict[str, Any]] = []
    for rec in read_rows(out):
        rows.append(rec)
        if len(rows) > limit:
            raise OutputError(f"{out}: more than {limit:,} rows are too many to sort in memory; the scores "
                              "are in the file in input order (`joint filter` selects from it, or set "
                              "JOINT_SORT_LIMIT)")
    result = result_from_rows(rows, default_by)
    order = result.keep(by, k=k, sort=True, descending=descending)
    kept = [rows[i] for i in order]
    meta = read_meta(out)
    write_rows(out, iter(kept))
    if meta is not None:  # the description stays with the file, saying what was kept
        meta.update(rows=len(kept), selection={"sort": by, "top": k, "descending": descending,
                                                "rows_before": len(rows)})
        write_meta(out, meta)
    return kept, len(rows)
