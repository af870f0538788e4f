"""What naturalness scoring adds to a diffusers generation: time and peak memory of a plain
pipeline call, the same call with the ``naturalness_filter`` callback, and ``best_of_n``, with
the overhead printed as a ratio to the plain call. Also times the parts (the extra VAE decode and
the scoring). Random-weight pipelines from configs (``diffusers_hook.testing``): nothing is
downloaded; cost does not depend on the weights.

    python benchmarks/pipeline_overhead.py                       # tiny SD on CPU (+ SD1.5 size on CUDA)
    python benchmarks/pipeline_overhead.py --preset tiny-test    # with the tiny scorer
    python benchmarks/pipeline_overhead.py --devices cuda --scale sd15 --size 512 --steps 30 --n 4

The scorer is the default model when one is installed, else ``--preset`` (default ``paper``:
Swin-T + ResNet-50, the cost of a trained JOINT model) with random weights. Times are medians of
``--repeats`` runs after a warm-up; on a shared CPU pass ``--threads 1`` for steadier numbers.
Peak memory is, on CUDA, the allocator's peak above what was allocated before the call; on CPU,
the growth of the resident set (memory the allocator reuses from earlier calls does not show).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from typing import Callable, Dict, List

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from score_throughput import PeakRSS  # noqa: E402

from diffusers_hook import best_of_n, decode_latents, naturalness_filter, testing  # noqa: E402
from joint_core import NaturalnessScorer, NoModelError  # noqa: E402

PROMPT = "a photograph of a lighthouse on a cliff at dusk"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], object], device: torch.device, repeats: int) -> Dict[str, float]:
    """Median wall time of ``fn`` after one warm-up call, and the peak memory it adds above what
    was allocated before it (CUDA: allocator peak; CPU: resident set size)."""
    fn()
    _sync(device)
    times, peaks = [], []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            t = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - t)
            peaks.append(torch.cuda.max_memory_allocated(device) - base)
        else:
            with PeakRSS() as mem:
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
            peaks.append(mem.peak - mem.base)
    return {"seconds": statistics.median(times), "peak_mb": max(peaks) / 2 ** 20,
            "all_seconds": times}


def load_scorer(args, device: torch.device) -> NaturalnessScorer:
    if args.model or not args.preset_only:
        try:
            return NaturalnessScorer.from_pretrained(args.model, device=device)
        except NoModelError:
            if args.model:
                raise
    torch.manual_seed(0)
    return NaturalnessScorer.from_config(args.preset, device=device)


def bench_device(args, device: torch.device) -> Dict[str, object]:
    scale = args.scale or ("sd15" if device.type == "cuda" else "tiny")
    size = args.size or (512 if scale == "sd15" else 32)
    steps = args.steps or (30 if scale == "sd15" else 2)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    pipe = testing.sd_pipeline(scale, device=device, dtype=dtype)
    scorer = load_scorer(args, device)
    n, k = args.n, args.k
    common = dict(num_inference_steps=steps, height=size, width=size, guidance_scale=7.5)

    def gens():
        return [torch.Generator("cpu").manual_seed(i) for i in range(n)]

    def plain():
        return pipe(PROMPT, num_images_per_prompt=n, generator=gens(), **common)

    def with_callback():
        cb = naturalness_filter(scorer, k=k, num_images_per_prompt=n, batch_size=args.score_batch_size)
        return pipe(PROMPT, num_images_per_prompt=n, generator=gens(), callback_on_step_end=cb, **common)

    def wrapper():
        return best_of_n(pipe, PROMPT, n=n, k=k, seed=0, scorer=scorer, score_batch_size=args.score_batch_size,
                         **common)

    latents = pipe(PROMPT, num_images_per_prompt=n, generator=gens(), output_type="latent", **common).images
    images = decode_latents(pipe, latents)

    def decode_only():
        with torch.no_grad():
            return decode_latents(pipe, latents)

    def score_only():
        return scorer.score(images, batch_size=args.score_batch_size, progress=False)

    rows = {}
    for name, fn in (("plain", plain), ("callback", with_callback), ("best_of_n", wrapper),
                     ("extra decode", decode_only), ("scoring", score_only)):
        rows[name] = measure(fn, device, args.repeats)
    base = rows["plain"]
    for r in rows.values():
        r["time_ratio"] = r["seconds"] / base["seconds"]
        # below a megabyte the resident-set delta is allocator noise: no ratio
        r["peak_ratio"] = r["peak_mb"] / base["peak_mb"] if base["peak_mb"] >= 1.0 else float("nan")
    return {"device": str(device), "scale": scale, "size": size, "steps": steps, "n": n, "k": k,
            "pipeline_dtype": str(dtype).replace("torch.", ""), "scorer": scorer.config.name,
            "scorer_parameters": scorer.model.num_parameters(), "threads": torch.get_num_threads(),
            "rows": rows}


def print_table(res: Dict[str, object]) -> None:
    print(f"\n{res['device']}: SD pipeline '{res['scale']}' {res['size']}x{res['size']}, {res['steps']} steps, "
          f"CFG, N={res['n']} images -> keep {res['k']}; scorer {res['scorer']} "
          f"({res['scorer_parameters'] / 1e6:.1f}M params), {res['threads']} CPU threads")
    print(f"{'':14} {'time s':>9} {'x plain':>8} {'peak MB':>9} {'x plain':>8}")
    def ratio(x: float) -> str:
        return "-" if math.isnan(x) else f"{x:.2f}"

    for name, r in res["rows"].items():
        print(f"{name:14} {r['seconds']:9.3f} {r['time_ratio']:8.2f} {r['peak_mb']:9.1f} {ratio(r['peak_ratio']):>8}")
    rows = res["rows"]
    for name in ("callback", "best_of_n"):
        extra = rows[name]["seconds"] - rows["plain"]["seconds"]
        print(f"overhead of {name}: {rows[name]['time_ratio']:.2f}x time ({extra:+.3f} s), "
              f"{ratio(rows[name]['peak_ratio'])}x peak memory")
    # the parts are short and timed alone, so this estimate is steadier on a busy machine
    parts = rows["extra decode"]["seconds"] + rows["scoring"]["seconds"]
    print(f"from the parts: callback ~ {1 + parts / rows['plain']['seconds']:.2f}x time "
          f"(extra decode {rows['extra decode']['seconds']:.3f} s + scoring {rows['scoring']['seconds']:.3f} s)")


def main(argv: List[str] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when present")
    ap.add_argument("--scale", choices=["tiny", "sd15"], default=None,
                    help="pipeline size (default: tiny on CPU, sd15 on CUDA)")
    ap.add_argument("--size", type=int, default=None, help="image side (default: 32 tiny, 512 sd15)")
    ap.add_argument("--steps", type=int, default=None, help="denoising steps (default: 2 tiny, 30 sd15)")
    ap.add_argument("--n", type=int, default=4, help="images generated")
    ap.add_argument("--k", type=int, default=1, help="images kept")
    ap.add_argument("--model", help="scorer model folder / hub id (default: the default model)")
    ap.add_argument("--preset", default="paper", help="scorer preset with random weights when no model")
    ap.add_argument("--preset-only", action="store_true", help="use --preset even if a default model exists")
    ap.add_argument("--score-batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--out", default="pipeline_overhead.json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    results = []
    for d in devices:
        res = bench_device(args, torch.device(d))
        print_table(res)
        results.append(res)
    meta = {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=2)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
