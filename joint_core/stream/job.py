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

from .loader import Sample
from .sinks import OutputError, Sink, meta_path, read_rows, write_rows
from .sources import KeySetHash, Source, _encode_key, shard

META_FORMAT = 1
SORT_LIMIT = int(os.environ.get("JOINT_SORT_LIMIT", "2000000"))

FAILED, FLAGGED = 1, 2   # states of rows already in a score file (0: scored)

Engine = Callable[[Iterator[Sample]], Iterable[List[Dict[str, Any]]]]


def model_description(scorer: Any) -> Dict[str, Any]:
    """What decides a model's scores: a hash of its config and weights, and the dtype."""
    from ..checkpoint import HASH_KEY, WEIGHTS_NAME, state_hash

    cfg = scorer.config
    weights = None
    if scorer.source is not None:
        try:
            from safetensors import safe_open

            with safe_open(str(Path(scorer.source.path) / WEIGHTS_NAME), framework="pt") as f:
                weights = (f.metadata() or {}).get(HASH_KEY)
        except Exception:  # noqa: BLE001 - fall back to hashing the loaded weights
            weights = None
    if weights is None:
        weights = state_hash(scorer.model.state_dict())
    digest = hashlib.sha256((cfg.to_json() + weights).encode()).hexdigest()
    return {"name": cfg.name, "source": scorer.source.describe() if scorer.source else "in memory",
            "sha256": digest, "dtype": str(scorer.dtype).replace("torch.", ""),
            "localizer": repr(scorer.localizer), "ranking": cfg.ranking,
            "score_range": list(cfg.score_range)}


def read_meta(out: str) -> Optional[Dict[str, Any]]:
    p = meta_path(out)
    if not p.is_file():
        return None
    try:
        meta = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise OutputError(f"{p}: unreadable job description ({e}); remove it to resume without checks") from None
    return meta if isinstance(meta, dict) else None


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
            from .sinks import has_rows

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
            from .sinks import lock_path, remove_output

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
        om = old.get("model", {})
        if om.get("sha256") and om.get("sha256") != model["sha256"]:
            raise OutputError(f"{self.out} was scored with another model ({om.get('source', '?')}); its scores "
                              "cannot be mixed with this one's: use another --out, or --overwrite")
        if om.get("dtype") and om.get("dtype") != model["dtype"]:
            raise OutputError(f"{self.out} was scored in {om['dtype']}, this run uses {model['dtype']}: "
                              "pass the same --dtype, use another --out, or --overwrite")
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
                and self.meta.get("inputs", {}).get("sha256") not in (None, p.inputs_sha256):
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
        from .. import __version__

        p = self._plan or Plan()
        return {"format": META_FORMAT, "joint": __version__, "finished": finished, "rows": rows,
                "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "inputs": {"count": p.inputs, "sha256": p.inputs_sha256},
                "shard": list(self.shard_spec) if self.shard_spec else None,
                "expected": p.expected, "expected_keys": p.expected_keys,
                "model": self.model}

    def run(self, engine: Engine, on_batch: Optional[Callable[[List[Dict[str, Any]]], None]] = None,
            progress: Optional[bool] = None) -> Outcome:
        """Score what is left, append each batch to the score file, call ``on_batch``. A
        ``KeyboardInterrupt`` (SIGINT) stops after the batches written so far: the file is valid and
        ``--resume`` continues it; it is re-raised after the file is closed."""
        from ..scorer import NaturalnessScorer

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


def result_from_rows(rows: List[Dict[str, Any]], default_by: Any = "naturalness", score_range=(1.0, 5.0)):
    """Score-file records -> a :class:`~joint_core.result.ScoreResult` (for ``keep``)."""
    import torch

    from ..result import AXES, ScoreResult

    nan = float("nan")
    cols = {ax: torch.tensor([nan if r[ax] is None else r[ax] for r in rows], dtype=torch.float64)
            for ax in AXES}
    errors = {i: r["error"] for i, r in enumerate(rows) if r["error"] is not None or r["naturalness"] is None}
    errors = {i: (m if m is not None else f"{rows[i]['source']}: no score") for i, m in errors.items()}
    flagged = {i: r["warning"] for i, r in enumerate(rows) if r.get("warning") and i not in errors}
    return ScoreResult(cols["technical"], cols["rationality"], cols["naturalness"],
                       [r["source"] for r in rows], errors, tuple(score_range), default_by=default_by,
                       warnings=flagged)


def sort_output(out: str, by: Any, k: Optional[int], descending: bool, default_by: Any = "naturalness",
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
