"""Throughput of ``NaturalnessScorer.score``: images/s and peak memory, split into
preprocessing and model time, for several batch sizes and input sizes, on CPU and (when there
is one) GPU. Prints a table and writes JSON.

    python benchmarks/score_throughput.py                       # the default model
    python benchmarks/score_throughput.py --preset paper        # random weights, paper layout
    python benchmarks/score_throughput.py --sizes 512 1024 --batch-sizes 1 8 32 --out bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
from typing import Dict, List

import torch

from joint_core import NaturalnessScorer


class PeakRSS:
    """Samples the process's resident memory in a thread (CPU peak over a block of work)."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def rss() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):  # not Linux
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def __enter__(self):
        self.base = self.rss()
        self.peak = self.base
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.rss())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_one(scorer: NaturalnessScorer, size: int, batch: int, repeats: int) -> Dict[str, float]:
    dev = scorer.device
    gen = torch.Generator().manual_seed(0)
    images = torch.rand((batch, 3, size, size), generator=gen)
    items = list((images * 255).to(torch.uint8))          # what decoding a file gives
    # warm-up (allocators, kernels, lazy init)
    with torch.inference_mode():
        scorer._forward(*scorer.model_inputs(items))
    _sync(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t_pre = t_model = 0.0
    with PeakRSS() as mem, torch.inference_mode():
        for _ in range(repeats):
            t0 = time.perf_counter()
            x_t, x_r = scorer.model_inputs(items)
            _sync(dev)
            t1 = time.perf_counter()
            scorer._forward(x_t, x_r)
            _sync(dev)
            t2 = time.perf_counter()
            t_pre += t1 - t0
            t_model += t2 - t1
    n = batch * repeats
    total = t_pre + t_model
    row = {
        "device": str(dev), "dtype": str(scorer.dtype).replace("torch.", ""), "size": size,
        "batch": batch, "images": n, "images_per_s": n / total,
        "preprocess_ms_per_image": 1000 * t_pre / n, "model_ms_per_image": 1000 * t_model / n,
        "preprocess_share": t_pre / total,
        "peak_cpu_mem_mb": (mem.peak - mem.base) / 2**20,
    }
    if dev.type == "cuda":
        row["peak_gpu_mem_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    return row


def main(argv: List[str] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="model folder / hub id (default: the resolution order)")
    ap.add_argument("--preset", help="use a preset with random weights instead of a trained model")
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when present")
    ap.add_argument("--images", type=int, default=32, help="images per measurement (at least one batch)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--out", default="score_throughput.json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    rows = []
    for device in devices:
        if args.preset:
            scorer = NaturalnessScorer.from_config(args.preset, device=device)
        else:
            scorer = NaturalnessScorer.from_pretrained(args.model, device=device)
        for size in args.sizes:
            for batch in args.batch_sizes:
                repeats = max(1, args.images // batch)
                row = bench_one(scorer, size, batch, repeats)
                row["model"] = scorer.config.name
                rows.append(row)
                print(f"{row['device']:>5} {row['dtype']:>8} {size:>5}px  batch {batch:>3}: "
                      f"{row['images_per_s']:7.1f} img/s  (pre {row['preprocess_ms_per_image']:6.1f} ms, "
                      f"model {row['model_ms_per_image']:6.1f} ms per image)  "
                      f"peak +{row['peak_cpu_mem_mb']:.0f} MB RAM"
                      + (f", {row['peak_gpu_mem_mb']:.0f} MB GPU" if "peak_gpu_mem_mb" in row else ""),
                      flush=True)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor()
            or platform.machine(), "cores": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
