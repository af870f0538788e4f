"""Scoring a dataset from files: images/s and peak memory against the number of images, for
``--workers`` 0/1/2 and the local Ray engine, with the in-memory ``score()`` rate beside them as
the ceiling, plus the per-image decode and model costs that ``docs/scale.md`` builds on.

    python benchmarks/bulk_score.py                                  # the full grid (hours on 2 cores)
    python benchmarks/bulk_score.py --sizes 512 --formats png --counts 1000 10000 --workers 2
    python benchmarks/bulk_score.py --counts 1000 --workers 0 1 2 --ray --out bulk.json

Data: synthetic photo-like PNG and JPEG images (smooth fields, edges and sensor-like noise, so
file sizes and decode costs are those of photographs), ``--unique`` distinct ones per set and
hard links up to the largest count (distinct names and ids, little disk; the page cache is warm
either way). Each measurement is a fresh process that runs the same job as ``joint score FILES
--out scores.csv``: peak RSS of that process (``VmHWM``), and the peak of the summed PSS of
it and all its children (decoding workers, Ray), sampled twice a second. The machine's load
average is recorded next to every figure: compare ratios measured in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

HERE = Path(__file__).resolve()


def load() -> float:
    return os.getloadavg()[0]


def peak_rss_mb() -> float:
    """This process's own peak resident memory: ``VmHWM`` (Linux). Not ``ru_maxrss``: across
    ``execve`` Linux keeps the high-water mark of the process image it replaced, so a process
    started by a big parent (this script after loading the model, a test runner) would report
    the parent's peak instead of its own."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def synthetic(size: int, seed: int) -> np.ndarray:
    """A photo-like RGB image: a few smooth colour fields, hard edges, texture and noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = np.zeros((size, size, 3), np.float32)
    for _ in range(6):
        fx, fy, ph = rng.uniform(0.5, 4), rng.uniform(0.5, 4), rng.uniform(0, 6.3)
        img += rng.uniform(0.2, 1.0, 3) * (0.5 + 0.5 * np.sin(2 * np.pi * (fx * xx + fy * yy) + ph))[..., None]
    for _ in range(4):  # shapes with hard edges
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.3)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.uniform(0, 6, 3)
    img = img / img.max() * 235
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_set(root: Path, fmt: str, size: int, count: int, unique: int) -> List[str]:
    from PIL import Image

    d = root / f"{fmt}{size}"
    d.mkdir(parents=True, exist_ok=True)
    ext = "jpg" if fmt == "jpeg" else "png"
    paths = []
    for i in range(count):
        p = d / f"{i:06d}.{ext}"
        if not p.exists():  # written under a temporary name: an interrupted run leaves no half file
            tmp = p.with_name(f".{p.name}.tmp")
            if i < unique:
                img = Image.fromarray(synthetic(size, seed=i))
                img.save(tmp, format="JPEG", quality=90) if fmt == "jpeg" else img.save(tmp, format="PNG")
            else:
                tmp.unlink(missing_ok=True)
                os.link(d / f"{i % unique:06d}.{ext}", tmp)
            os.replace(tmp, p)
        paths.append(str(p))
    return paths


# --------------------------------------------------------------------------------------------
# one measurement, in its own process
# --------------------------------------------------------------------------------------------


class TreePSS:
    """Peak of the summed PSS of this process and its descendants (workers, Ray)."""

    def __init__(self, interval: float = 0.5):
        self.interval, self.peak = interval, 0
        self._stop = threading.Event()

    def sample(self) -> int:
        import psutil

        me = psutil.Process()
        total = 0
        for p in [me] + me.children(recursive=True):
            try:
                total += p.memory_full_info().pss
            except (psutil.Error, AttributeError):
                pass
        return total

    def __enter__(self):
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.sample())
            self._stop.wait(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def job(spec: Dict) -> Dict:
    """Score ``spec['files']`` as ``joint score FILES --out CSV`` would, and measure it."""
    from joint_core import NaturalnessScorer
    from joint_core.stream import Paths, ScoreJob

    scorer = NaturalnessScorer.from_pretrained(spec["model"], device="cpu")
    files = Path(spec["files"]).read_text().splitlines()
    if spec["engine"] == "memory":
        return in_memory_job(scorer, files, spec)
    out = Path(spec["tmp"]) / "scores.csv"
    sj = ScoreJob(Paths(files), out=str(out), mode="overwrite")
    sj.plan()
    if spec["engine"] == "ray":
        from joint_core.stream.ray_engine import RayEngine

        engine = RayEngine(scorer, batch_size=spec["batch_size"])
    else:
        import torch

        from joint_core.devices import plan_cpu

        # what `joint score --workers W [--threads T]` does: the CPU plan from the model's cost
        plan = plan_cpu("cpu", scorer.gflops() if spec.get("threads") is None else None,
                        workers=spec["workers"], threads=spec.get("threads"))
        if plan.threads:
            torch.set_num_threads(plan.threads)
        engine = lambda samples: scorer.score_iter(samples, batch_size=spec["batch_size"],  # noqa: E731
                                                   num_workers=plan.workers, progress=False,
                                                   worker_nice=plan.nice)
    marks: Dict[str, float] = {}

    def on_batch(records):
        if "first" not in marks:
            marks["first"] = time.perf_counter()
            marks["first_n"] = len(records)

    load0 = load()
    t0 = time.perf_counter()
    with TreePSS() as tree:
        outcome = sj.run(engine, on_batch=on_batch, progress=False)
    t1 = time.perf_counter()
    assert outcome.scored == len(files), outcome
    steady_n = outcome.scored - marks.get("first_n", 0)
    import torch

    return {
        "images": outcome.scored, "wall_s": t1 - t0,
        "images_per_s": outcome.scored / (t1 - t0),                         # model loaded, all else in
        "steady_images_per_s": steady_n / max(1e-9, t1 - marks.get("first", t0)),  # after the first batch
        "startup_s": marks.get("first", t1) - t0, "model_threads": torch.get_num_threads(),
        "peak_rss_mb": peak_rss_mb(),
        "peak_tree_pss_mb": tree.peak / 2**20,
        "load_before": load0, "load_after": load(),
    }


def in_memory_job(scorer, files: List[str], spec: Dict) -> Dict:
    """The ceiling: ``score()`` on images already decoded (64 of them, cycled to the count), in
    the same kind of process and for as long as a run from files."""
    import torch

    from joint_core.preprocess.images import load_image

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    pool = [load_image(p) for p in files[:64]]
    scorer.score(pool[:spec["batch_size"]], batch_size=spec["batch_size"])  # warm-up, as a run's first batch
    load0 = load()
    t0 = time.perf_counter()
    done = 0
    with TreePSS() as tree:
        while done < len(files):
            n = min(len(pool), len(files) - done)
            scorer.score(pool[:n], batch_size=spec["batch_size"])
            done += n
    dt = time.perf_counter() - t0
    return {"images": done, "wall_s": dt, "images_per_s": done / dt, "steady_images_per_s": done / dt,
            "startup_s": 0.0, "model_threads": torch.get_num_threads(),
            "peak_rss_mb": peak_rss_mb(),
            "peak_tree_pss_mb": tree.peak / 2**20, "load_before": load0, "load_after": load()}


def run_job(spec: Dict) -> Dict:
    with tempfile.TemporaryDirectory(prefix="bulk-") as tmp:
        spec = dict(spec, tmp=tmp)
        files = Path(tmp) / "files.txt"
        files.write_text("\n".join(spec.pop("paths")) + "\n")
        spec["files"] = str(files)
        proc = subprocess.run([sys.executable, str(HERE), "--_job", json.dumps(spec)], capture_output=True,
                              text=True)
        if proc.returncode:
            raise RuntimeError(f"job {spec} failed:\n{proc.stderr[-3000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# per-image costs and the in-memory ceiling
# --------------------------------------------------------------------------------------------


def decode_cost(paths: List[str], n: int = 40) -> Dict[str, float]:
    """Decoding one file (what a worker does per image): wall and CPU milliseconds."""
    from joint_core.preprocess.images import load_image

    load_image(paths[0])
    n = min(n, len(paths))
    t, c = time.perf_counter(), time.process_time()
    for p in paths[:n]:
        load_image(p)
    return {"decode_ms_per_image": 1000 * (time.perf_counter() - t) / n,
            "decode_cpu_ms_per_image": 1000 * (time.process_time() - c) / n}


def in_memory(model: str, paths: List[str], batch_size: int, n: int = 64) -> Dict:
    """The model's cost per image (``score()`` on decoded images): wall and CPU on one thread."""
    import torch

    from joint_core import NaturalnessScorer
    from joint_core.preprocess.images import load_image

    scorer = NaturalnessScorer.from_pretrained(model, device="cpu")
    images = [load_image(p) for p in paths[:n]]
    default = torch.get_num_threads()
    load0 = load()
    rates = {}
    for threads in sorted({1, default}):
        torch.set_num_threads(threads)
        scorer.score(images[:batch_size], batch_size=batch_size)   # warm-up (graphs, allocator)
        t, c = time.perf_counter(), time.process_time()
        scorer.score(images, batch_size=batch_size)
        dt, cpu = time.perf_counter() - t, time.process_time() - c
        rates[threads] = {"images_per_s": len(images) / dt, "cpu_ms": 1000 * cpu / len(images)}
    torch.set_num_threads(default)
    best = max(rates, key=lambda k: rates[k]["images_per_s"])
    return {"images_per_s": rates[best]["images_per_s"], "best_threads": best,
            "by_threads": {str(k): round(v["images_per_s"], 2) for k, v in rates.items()},
            "model_ms_per_image": 1000 / rates[best]["images_per_s"],
            "model_1thread_ms_per_image": 1000 / rates[1]["images_per_s"],
            "model_cpu_ms_per_image": rates[1]["cpu_ms"],
            "threads": default, "load_before": load0, "load_after": load()}


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--_job", help=argparse.SUPPRESS)
    ap.add_argument("--model", default="default", help="model folder / hub id (default: the shipped one)")
    ap.add_argument("--formats", nargs="+", default=["png", "jpeg"], choices=["png", "jpeg"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[512, 1024])
    ap.add_argument("--counts", nargs="+", type=int, default=[1000, 10000])
    ap.add_argument("--workers", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--threads", nargs="+", type=int, default=None,
                    help="model threads to try (default: what `joint score` picks for the worker count)")
    ap.add_argument("--ray", action="store_true", help="also the local Ray engine (needs the ray extra)")
    ap.add_argument("--ceiling-threads", nargs="+", type=int, default=None,
                    help="model threads of the in-memory runs (default: 1 and torch's default; the best counts)")
    ap.add_argument("--no-ceiling", dest="ceiling", action="store_false",
                    help="skip the in-memory runs (before and after each group) that give the ceiling")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--unique", type=int, default=200, help="distinct images per set (the rest are hard links)")
    ap.add_argument("--data", default="bulk_data", help="where the image sets are made (kept for reruns)")
    ap.add_argument("--out", default="bulk_score.json")
    args = ap.parse_args(argv)
    if args._job:
        print(json.dumps(job(json.loads(args._job))))
        return
    root = Path(args.data)
    top = max(args.counts)
    rows, costs = [], []
    meta = {"cores": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
            "python": platform.python_version(), "model": args.model, "batch_size": args.batch_size}
    print(f"machine: {meta['cores']} cores, load {load():.2f}", flush=True)
    for size in args.sizes:
        for fmt in args.formats:
            paths = make_set(root, fmt, size, top, args.unique)
            costs_now = in_memory(args.model, paths, args.batch_size)
            cost = {"format": fmt, "size": size, **decode_cost(paths),
                    "model_1thread_ms_per_image": costs_now["model_1thread_ms_per_image"],
                    "model_cpu_ms_per_image": costs_now["model_cpu_ms_per_image"],
                    "torch_threads": costs_now["threads"], "load": costs_now["load_before"]}
            costs.append(cost)
            print(f"{fmt:>4} {size}px: decode {cost['decode_ms_per_image']:.1f} ms/img "
                  f"({cost['decode_cpu_ms_per_image']:.1f} ms CPU); model {cost['model_cpu_ms_per_image']:.1f} "
                  f"ms CPU/img on 1 thread [load {cost['load']:.1f}]", flush=True)
            engines = [("local", w, t) for w in args.workers for t in (args.threads or [None])]
            engines += [("ray", None, None)] if args.ray else []
            for count in args.counts:
                tried = args.ceiling_threads or sorted({1, costs_now["threads"]})
                ceilings = [("memory", None, t) for t in tried] if args.ceiling else []
                group = []
                for engine, workers, threads in ceilings + engines + ceilings:   # ceilings before and after
                    spec = {"model": args.model, "paths": paths[:count], "engine": engine, "workers": workers,
                            "threads": threads, "batch_size": args.batch_size}
                    r = run_job(spec)
                    name = {"ray": "ray", "memory": f"in memory, {threads} thr"}.get(
                        engine, f"workers={workers}" + (f", {threads} thr" if threads else ""))
                    r.update(format=fmt, size=size, count=count, engine=name)
                    group.append(r)
                    print(f"  {count:>6} images, {name:>16} ({r.get('model_threads')} thr): "
                          f"{r['images_per_s']:6.1f} img/s, peak RSS {r['peak_rss_mb']:.0f} MB, all processes "
                          f"{r['peak_tree_pss_mb']:.0f} MB PSS, start-up {r['startup_s']:.1f} s "
                          f"[load {r['load_before']:.1f} -> {r['load_after']:.1f}]", flush=True)
                by_threads: Dict[str, List[float]] = {}
                for r in group:
                    if r["engine"].startswith("in memory"):
                        by_threads.setdefault(r["engine"], []).append(r["images_per_s"])
                ceiling = max((sum(v) / len(v) for v in by_threads.values()), default=None)
                for r in group:
                    r["ceiling_images_per_s"] = ceiling
                    r["of_ceiling"] = r["images_per_s"] / ceiling if ceiling else None
                rows.extend(group)
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "costs": costs, "rows": rows}, f, indent=2)
    print(f"wrote {args.out}")
    print()
    print("| images | format | size | engine | img/s | of in-memory | peak RSS (main) | peak PSS (all) | load |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        share = f"{100 * r['of_ceiling']:.0f} %" if r.get("of_ceiling") else "-"
        print(f"| {r['count']:,} | {r['format'].upper()} | {r['size']} | {r['engine']} | {r['images_per_s']:.1f} | "
              f"{share} | {r['peak_rss_mb']:.0f} MB | {r['peak_tree_pss_mb']:.0f} MB | {r['load_before']:.1f} |")


if __name__ == "__main__":
    main()
