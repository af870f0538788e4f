"""``joint merge``: join the score files of a split job (``joint score --shard i/n``) into one,
after checking that every shard is there, finished, and holds each of its inputs exactly once.

The checks use the job description each part carries (``PART.joint.json``): the shard, the
inputs every shard saw (an ordered fingerprint), the model, how many inputs the shard holds and
an order-free fingerprint of their ids. Parts without one can still be joined; then only
doubled rows can be found, not missing ones.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, List, Optional

from ..outputs import input_conflict
from ..stream import InputError, OutputError, read_meta, read_rows, write_rows
from ..stream.job import write_meta
from ..stream.sinks import existing_score_file, out_format, read_paths
from ..stream.sources import KeySetHash
from .common import EXIT_ERROR, EXIT_OK, EXIT_SOME_FAILED, show


def register(sub) -> argparse.ArgumentParser:
    m = sub.add_parser("merge", help="join the score files of `joint score --shard` runs, checking that no "
                                     "input is missing or doubled",
                       description="Join score files (any of .csv, .jsonl, .json, .parquet) into --out, "
                                   "in shard order. Refuses when a shard is missing, unfinished, or holds "
                                   "an input twice or not at all.")
    m.add_argument("parts", nargs="+", metavar="PART", help="score files of the shards")
    m.add_argument("--out", "-o", required=True, help="the joined file (.csv, .jsonl, .json, .parquet)")
    m.add_argument("--allow-incomplete", action="store_true",
                   help="write the joined file even if inputs are missing (exit code 1); doubled rows "
                        "are always refused")
    m.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    m.add_argument("--quiet", "-q", action="store_true", help="only errors")
    return m


def run(args: argparse.Namespace) -> int:
    def err(msg: str) -> None:
        print(f"joint: {show(msg, sys.stderr)}", file=sys.stderr)

    try:
        out_format(args.out)
        for p in args.parts:
            out_format(p)
    except OutputError as e:
        err(f"error: {e}")
        return EXIT_ERROR
    problem = (input_conflict(args.out, [q for p in args.parts for q in read_paths(p)])
               or existing_score_file(args.out, args.overwrite))
    if problem:
        err(f"error: {problem}")
        return EXIT_ERROR

    metas: List[Optional[Dict[str, Any]]] = []
    problems: List[str] = []       # missing inputs: refused unless --allow-incomplete
    fatal: List[str] = []          # doubled rows, mixed jobs: always refused
    try:
        for p in args.parts:
            metas.append(read_meta(p))
        counts: List[int] = []
        hashes: List[KeySetHash] = []
        seen_all: Optional[set] = set() if any(m is None for m in metas) else None
        for p, meta in zip(args.parts, metas):
            seen: set = set()
            doubled: List[str] = []
            h = KeySetHash()
            for rec in read_rows(p):
                key = rec["source"]
                h.add(key)
                if key in seen or (seen_all is not None and key in seen_all):
                    doubled.append(key)
                seen.add(key)
            if seen_all is not None:
                seen_all |= seen
            counts.append(h.count)
            hashes.append(h)
            if doubled:
                fatal.append(f"{p}: {len(doubled)} doubled row(s), e.g. {doubled[0]}")
            if meta is None:
                continue
            expected = meta.get("expected")
            if not meta.get("finished"):
                problems.append(f"{p}: its run did not finish ({h.count} of {expected} rows); continue it with "
                                f"`joint score ... --shard {_shard(meta)} --out {p} --resume`")
            elif expected is not None and h.count - len(doubled) < expected:
                cut = " (its run kept only --top rows)" if (meta.get("selection") or {}).get("top") else ""
                problems.append(f"{p}: {expected - (h.count - len(doubled))} of its {expected} inputs missing{cut}")
            elif meta.get("expected_keys") and not doubled and h.hexdigest() != meta["expected_keys"]:
                fatal.append(f"{p}: holds other inputs than those of shard {_shard(meta)}")
        fatal += _check_job(args.parts, metas)
        missing_meta = [p for p, m in zip(args.parts, metas) if m is None]
    except (OutputError, InputError) as e:
        err(f"error: {e}")
        return EXIT_ERROR
    if missing_meta and not args.quiet:
        err(f"warning: no job description next to {', '.join(missing_meta)} (PART.joint.json): "
            "missing rows cannot be detected there, only doubled ones")
    for msg in fatal + problems:
        err(msg)
    if fatal or (problems and not args.allow_incomplete):
        err("error: nothing written" + ("" if fatal else " (--allow-incomplete writes what is there)"))
        return EXIT_ERROR

    def rows():
        for p in args.parts:
            yield from read_rows(p)

    try:
        n = write_rows(args.out, rows())
        if all(m is not None for m in metas) and metas:
            total = KeySetHash()
            for h in hashes:
                total.value = (total.value + h.value) % KeySetHash.MOD
                total.count += h.count
            first = metas[0]
            write_meta(args.out, {**first, "shard": None, "finished": not problems, "rows": n,
                                  "expected": (first.get("inputs") or {}).get("count"),
                                  "expected_keys": total.hexdigest(), "merged_from": list(args.parts)})
    except (OutputError, InputError) as e:
        err(f"error: {e}")
        return EXIT_ERROR
    if not args.quiet:
        print(f"merged {len(args.parts)} file(s), {n} rows -> {show(args.out)}"
              + (f"; {len(problems)} problem(s) above" if problems else ""))
    return EXIT_SOME_FAILED if problems else EXIT_OK


def _shard(meta: Dict[str, Any]) -> str:
    s = meta.get("shard")
    return f"{s[0]}/{s[1]}" if s else "(none)"


def _check_job(parts: List[str], metas: List[Optional[Dict[str, Any]]]) -> List[str]:
    """The parts of one split job: same inputs, same model, shards 0..n-1 each once."""
    known = [(p, m) for p, m in zip(parts, metas) if m is not None]
    if not known:
        return []
    out: List[str] = []
    first_p, first = known[0]
    for p, m in known[1:]:
        if (m.get("inputs") or {}).get("sha256") != (first.get("inputs") or {}).get("sha256"):
            out.append(f"{p} and {first_p} were run on different inputs: they are not parts of one job")
        if (m.get("model") or {}).get("sha256") != (first.get("model") or {}).get("sha256"):
            out.append(f"{p} and {first_p} were scored with different models")
    shards = [m.get("shard") for _, m in known]
    if any(s is None for s in shards):
        if len(known) > 1:
            out.append("a part without --shard holds every input: it cannot be merged with others")
        return out
    n = shards[0][1]
    if any(s[1] != n for s in shards):
        out.append(f"the parts were split differently ({sorted({s[1] for s in shards})} shards)")
        return out
    got: Dict[int, List[str]] = {}
    for (p, _), s in zip(known, shards):
        got.setdefault(s[0], []).append(p)
    for i, ps in sorted(got.items()):
        if len(ps) > 1:
            out.append(f"shard {i}/{n} given twice: {', '.join(ps)}")
    if len(known) == len(parts):
        absent = [f"{i}/{n}" for i in range(n) if i not in got]
        if absent:
            out.append(f"shard(s) {', '.join(absent)} missing")
    return out
