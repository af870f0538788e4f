"""``joint score``: score images - files, folders, globs, lists, WebDataset tars, Parquet/CSV
tables - as a job: the score file is written as the work goes, survives a kill, and ``--resume``
continues it; ``--shard i/n`` splits a job over processes or machines; ``--engine ray`` runs it
on a Ray cluster. The work itself lives in :mod:`joint_core.stream`; this module only wires it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
from typing import Any, Dict, List, Optional

import torch
from tqdm import tqdm

from ..outputs import input_conflict
from ..report import ReportError, write_html_report
from ..ranking import BY_HELP, by_argument
from ..stream import (
    InputError,
    OutputError,
    ScoreJob,
    model_description,
    open_inputs,
    parse_shard,
    read_rows,
    result_from_rows,
    sort_output,
)
from ..stream.ray_engine import RayEngine
from ..stream.sinks import FORMATS, read_paths
from ..devices import plan_cpu
from .common import EXIT_ERROR, EXIT_OK, EXIT_SOME_FAILED, load_scorer, non_negative_int, positive_int, show
from .report import check_report_path, progress_bar

EXIT_INTERRUPTED = 130


def register(sub) -> argparse.ArgumentParser:
    s = sub.add_parser(
        "score", help="score images: files, folders, globs, lists, WebDataset tars, Parquet/CSV tables",
        description="Score images. Without --model: $JOINT_MODEL, then the user cache, then the default "
                    "model shipped with joint. With --out, scores are written as they come; --resume "
                    "continues an interrupted run.")
    s.add_argument("paths", nargs="*", metavar="PATH",
                   help="image files, folders, glob patterns, WebDataset *.tar shards, *.parquet/*.csv tables")
    s.add_argument("--files-from", metavar="LIST", help="also score the image paths listed in LIST, one a line "
                                                        "('-': standard input)")
    s.add_argument("--null", "-0", action="store_true", help="--files-from entries are separated by NUL bytes")
    s.add_argument("--column", help="for Parquet/CSV inputs: the column with image paths or image bytes")
    s.add_argument("--id-column", help="for Parquet/CSV inputs: the column whose value names each row "
                                       "(default: the path, else FILE#ROW)")
    s.add_argument("--recursive", "-r", action="store_true", help="look into sub-folders of folders")
    s.add_argument("--model", "-m", help="model folder or hub id (owner/name); 'default' or 'fast' for the shipped "
                                         "ones (fast: a small CNN distilled from default, for CPUs)")
    s.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:1, mps")
    s.add_argument("--dtype", default="auto", help="auto (bf16/fp16 on GPU, fp32 on CPU), fp32, fp16, bf16")
    s.add_argument("--int8", action="store_true",
                   help="CPU only: run the ViT of the default model as smoothed int8, 1.3-1.7x faster, "
                        "scores close to float32's (SRCC 0.997); not for the fast model")
    s.add_argument("--batch-size", "-b", type=positive_int, default=16, help="images per batch (default 16)")
    s.add_argument("--workers", "-j", type=non_negative_int, default=None,
                   help="processes that decode images (default: from the model's cost, the cores and the "
                        "device; 0: none)")
    s.add_argument("--prefetch", type=positive_int, default=2, help="batches each worker decodes ahead (default 2)")
    s.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads of the model (default on CPU: every core for a heavy model, beside one "
                        "low-priority decoder; else the cores the decoding workers leave)")
    s.add_argument("--localizer", help="artifact localizer: path to a TorchScript PAL4VST end2end.pt")
    s.add_argument("--out", "-o", help=f"write the scores to FILE ({', '.join(FORMATS)}), as they come")
    again = s.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue --out: skip the inputs it holds")
    again.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    s.add_argument("--shard", metavar="I/N", help="score only part I of N (0 <= I < N) of the inputs; "
                                                  "`joint merge` joins the parts")
    s.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local (this process and its decoding workers) or ray (Ray Data actors)")
    s.add_argument("--address", help="with --engine ray: the cluster to join (default: $RAY_ADDRESS, "
                                     "else a local Ray started for this run)")
    s.add_argument("--actors", type=positive_int, help="with --engine ray: scoring actors (default: one per "
                                                       "GPU, else one per 2 CPUs of the cluster)")
    s.add_argument("--sort", type=by_argument("--sort"), metavar="KEY",
                   help=f"at the end, list best first by this ranking key: {BY_HELP} (with --top alone: the "
                        "model's own ranking)")
    s.add_argument("--ascending", action="store_true", help="with --sort/--top: worst first")
    s.add_argument("--top", type=positive_int, metavar="K",
                   help="at the end, keep only the K best (by --sort, else the model's own ranking)")
    s.add_argument("--report", metavar="HTML", help="after scoring, write an HTML report of the scores "
                                                    "(as `joint report` does: thumbnails, histograms, folders)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("--quiet", "-q", action="store_true", help="no table on the terminal")
    return s


def _fail(msg: str) -> int:
    print(f"joint: error: {show(msg, sys.stderr)}", file=sys.stderr)
    return EXIT_ERROR


def resume_command(args: argparse.Namespace) -> str:
    argv = [a for a in getattr(args, "argv", []) if a not in ("--overwrite", "--resume")]
    text = "joint " + shlex.join(argv) + " --resume"
    if args.files_from == "-":
        text += "   (with the same list on standard input)"
    return show(text, sys.stderr)


def run(args: argparse.Namespace) -> int:
    if not args.paths and args.files_from is None:
        return _fail("nothing to score: give image files, folders, globs, tars or tables, or --files-from LIST")
    if args.resume and not args.out:
        return _fail("--resume needs --out")
    if args.overwrite and not (args.out or args.report):
        return _fail("--overwrite needs --out or --report")
    if args.engine != "ray" and (args.address or args.actors):
        return _fail("--address and --actors need --engine ray")
    inputs = [p for p in args.paths if os.path.isfile(p)] + [args.files_from or ""]
    if args.out:
        problem = input_conflict(args.out, inputs)
        if problem:
            return _fail(problem)
    if args.report:
        problem = check_report_path(args.report, args.out, args.overwrite,   # before any work, as for --out
                                    inputs + (read_paths(args.out) if args.out else []))
        if problem:
            return _fail(problem)
    try:
        shard_spec = parse_shard(args.shard) if args.shard else None
        if shard_spec is not None and args.engine == "ray":
            return _fail("--shard splits a job without a cluster; with --engine ray, one job uses the whole cluster")
        if args.int8 and args.engine == "ray":
            return _fail("--int8 runs with --engine local only")
        source = open_inputs(args.paths, recursive=args.recursive, files_from=args.files_from,
                             column=args.column, id_column=args.id_column, null=args.null)
        mode = "resume" if args.resume else "overwrite" if args.overwrite else "new"
        job = ScoreJob(source, args.out, shard_spec, mode)   # --out is created here: checked before any work
    except (InputError, OutputError, ValueError) as e:
        return _fail(str(e))
    for note in (job.sink.notes if job.sink else []):
        print(f"joint: note: {show(note, sys.stderr)}", file=sys.stderr)
    try:
        scorer = load_scorer(args.model, args.device, args.dtype, args.localizer, int8=args.int8)
        job.check_model(model_description(scorer))
        plan = job.plan()
    except OutputError as e:
        job.discard_if_unused()
        return _fail(str(e))
    except BaseException:
        job.discard_if_unused()
        raise
    for what, n in plan.skipped.items():
        print(f"joint: skipped {n} {show(what, sys.stderr)}", file=sys.stderr)
    if plan.inputs == 0:
        job.discard_if_unused()
        where = " ".join(args.paths) + (f" --files-from {args.files_from}" if args.files_from else "")
        return _fail(f"no images found in {where}")
    # a shard can be empty (fewer inputs than shards): it still writes its (empty) part for merge
    if args.resume and plan.todo == 0 and not args.quiet:
        print(f"nothing left to score: all {plan.expected} inputs are in {show(args.out)}")

    selecting = bool(args.sort or args.top)
    collected: Optional[List[Dict[str, Any]]] = [] if (selecting or args.report) and not args.out else None
    printer = _Printer(quiet=args.quiet or selecting)

    def on_batch(records: List[Dict[str, Any]]) -> None:
        printer.rows(records)
        if collected is not None:
            collected.extend(records)

    try:
        engine = _engine(args, scorer)
    except ImportError as e:
        job.discard_if_unused()
        return _fail(str(e))
    progress = False if args.no_progress else None
    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, _raise_interrupt)  # a scheduler's stop: same clean stop as Ctrl-C
    except ValueError:  # not the main thread
        previous = None
    try:
        outcome = job.run(engine, on_batch=on_batch, progress=progress)
    except KeyboardInterrupt:
        printer.flush()
        where = (f"the {job.sink.rows} rows scored so far are in {show(job.sink.partial_path, sys.stderr)}; "
                 f"resume with:\n  {resume_command(args)}") if job.sink else "nothing was saved (no --out)"
        print(f"\njoint: interrupted; {where}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OutputError as e:
        kept = job.sink.rows if job.sink else 0
        where = "" if " kept in " in str(e) else f"; the {kept} rows written before are kept in {job.sink.partial_path}"
        return _fail(f"{e}{where}; when it can be written again, continue with: {resume_command(args)}")
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    printer.flush()

    code = EXIT_OK
    if selecting:
        code = _select(args, scorer, collected)
    if not args.quiet:
        if args.out:
            print(f"wrote {job.sink.rows} rows to {show(args.out)}"
                  + (f" (shard {args.shard} of {plan.inputs} inputs)" if shard_spec else ""))
        n_ok = outcome.total - outcome.total_failed
        rate = outcome.scored / outcome.seconds if outcome.seconds > 0 else 0.0
        print(f"{n_ok}/{outcome.total} images scored" + (f", {outcome.total_failed} failed" if outcome.total_failed
                                                          else "")
              + (f", {outcome.total_flagged} flagged (ranked last)" if outcome.total_flagged else "")
              + f" with {scorer.source.describe() if scorer.source else 'model'}; scores on the "
              f"{scorer.config.score_range[0]:g}-{scorer.config.score_range[1]:g} scale, higher is better"
              + (f" ({outcome.scored} this run, {rate:.1f} img/s)" if args.resume or outcome.scored > 100 else ""))
    ids = "mixed" if plan.path_ids and plan.key_ids else "keys" if plan.key_ids else "paths"
    if args.report and not _report(args, collected, ids):
        return EXIT_ERROR
    if outcome.total and outcome.total_failed == outcome.total:
        return EXIT_ERROR
    if outcome.total_failed:
        return EXIT_SOME_FAILED
    return code


def _report(args: argparse.Namespace, collected: Optional[List[Dict[str, Any]]], ids: str) -> bool:
    """--report: the HTML report of what --out holds (after --sort/--top), or of the rows printed,
    written by the one report writer (:func:`joint_core.report.write_html_report`)."""
    try:
        rows = list(read_rows(args.out)) if args.out else collected
        summary = write_html_report(rows, args.report, title=f"joint report: {args.out}" if args.out else None,
                                    progress=None if args.quiet or args.no_progress else progress_bar(),
                                    overwrite=args.overwrite, ids=ids, made_from=args.out)
    except (ReportError, OutputError, OSError) as e:
        kept = f"; the scores are in {show(args.out, sys.stderr)} (joint report makes it from them)" if args.out else ""
        print(f"joint: error: report not written: {show(e, sys.stderr)}{kept}", file=sys.stderr)
        return False
    if not args.quiet:
        print(f"wrote the report {show(summary.path)}: {summary.images} images, {summary.bytes / 1e6:.1f} MB")
    return True


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _engine(args: argparse.Namespace, scorer):
    if args.engine == "ray":
        return RayEngine(scorer, batch_size=args.batch_size, address=args.address, actors=args.actors,
                         localizer=args.localizer, dtype=args.dtype)
    cpu = scorer.device.type == "cpu"
    # the model's cost decides only what the user left open (counting it runs one blank image)
    needed = cpu and (args.workers is None or args.threads is None)
    plan = plan_cpu(scorer.device, scorer.gflops() if needed else None, workers=args.workers, threads=args.threads)
    if plan.threads:
        torch.set_num_threads(plan.threads)
    return lambda samples: scorer.score_iter(
        samples, batch_size=args.batch_size, num_workers=plan.workers, prefetch=args.prefetch, progress=False,
        worker_nice=plan.nice)


def _select(args: argparse.Namespace, scorer, collected: Optional[List[Dict[str, Any]]]) -> int:
    """--sort / --top at the end, from the score file (or the rows kept for printing)."""
    descending = not args.ascending
    if args.out:
        try:
            rows, _ = sort_output(args.out, args.sort, args.top, descending, default_by=scorer.config.ranking)
        except OutputError as e:
            print(f"joint: warning: --sort/--top not applied: {show(e, sys.stderr)}", file=sys.stderr)
            return EXIT_SOME_FAILED
    else:
        result = result_from_rows(collected or [], scorer.config.ranking)
        rows = [collected[i] for i in result.keep(args.sort, k=args.top, sort=True, descending=descending)]
    if not args.quiet:
        p = _Printer(quiet=False, messages=False)   # the run printed them as they came
        p.rows(rows)
        p.flush()
    return EXIT_OK


class _Printer:
    """The table on stdout, rows as they come (above the progress bar), failures and flagged
    images (``joint: warning: ...``) on stderr."""

    def __init__(self, quiet: bool, messages: bool = True):
        self.quiet, self.messages = quiet, messages   # messages: False when they were printed already
        self.header = False

    def rows(self, records: List[Dict[str, Any]]) -> None:
        lines = []
        for r in records:
            if not self.messages:
                pass
            elif r.get("error"):
                tqdm.write(f"joint: skipped {show(r['error'], sys.stderr)}", file=sys.stderr)
            elif r.get("warning"):
                tqdm.write(f"joint: warning: {show(r['warning'], sys.stderr)}", file=sys.stderr)
            if self.quiet:
                continue
            if not self.header:
                head = f"{'technical':>10} {'rationality':>12} {'naturalness':>12}  file"
                lines += [head, "-" * len(head)]
                self.header = True
            lines.append(format_row(r))
        if lines:
            tqdm.write("\n".join(lines), file=sys.stdout)

    def flush(self) -> None:
        sys.stdout.flush()


def format_row(r: Dict[str, Any]) -> str:
    name = show(r["source"])
    if r.get("error") or r.get("naturalness") is None:
        return f"{'-':>10} {'-':>12} {'-':>12}  {name}  (unreadable)"
    return (f"{r['technical']:>10.4f} {r['rationality']:>12.4f} {r['naturalness']:>12.4f}  {name}"
            + ("  (flagged)" if r.get("warning") else ""))
