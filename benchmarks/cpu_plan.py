"""`joint score` from files against the in-memory rate, for a heavy (ViT) and a light (v1-class)
model, under the CPU plan (joint_core.stream.loader.plan_cpu) and the alternatives it chose
between. Issue 21 item 2: from files >= 90 % of the in-memory rate on an idle machine.

    python benchmarks/cpu_plan.py                       # default model + a v1-class model, 64 images each
    python benchmarks/cpu_plan.py --count 128 --repeats 3 --out cpu_plan.json

The in-memory rate is `NaturalnessScorer.score` on already-decoded tensors, the better of one
thread and every core (the ceiling); "from files" is `score_iter` on 512 px PNG files (what `joint
score FILES` runs) with the plan's workers, decoder priority and threads. Every configuration is
timed after a warm-up batch, repeated, interleaved (A B C A B C ...), and the best time kept, so
a passing load spike costs one sample, not one configuration. The load average is printed: ratios
measured in one run are comparable, absolute rates only on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bulk_score import synthetic  # noqa: E402

from joint_core import NaturalnessScorer  # noqa: E402
from joint_core.config import get_preset  # noqa: E402
from joint_core.preprocess.images import load_image  # noqa: E402
from joint_core.preprocess.loader import iter_batches  # noqa: E402
from joint_core.stream.loader import available_cores, plan_cpu  # noqa: E402


def v1_class() -> NaturalnessScorer:
    """The first default's architecture (EfficientNet-Lite0 on native-resolution fragments +
    MobileNetV2), random weights: the speed is the architecture's, the scores do not matter."""
    cfg = get_preset("paper")
    cfg.technical.backbone, cfg.technical.head_input = "efficientnet_lite0", "stages"
    cfg.rationality.backbone, cfg.rationality.head_input = "mobilenetv2_100", "stages"
    t = cfg.preprocess.technical
    t.sampling, t.grid, t.fragment, t.partition, t.resize, t.crop = "fragments", 7, 32, False, None, 224
    cfg.preprocess.rationality.resize, cfg.preprocess.rationality.crop = 224, 224
    cfg.preprocess.rationality.low_frequency = False
    return NaturalnessScorer.from_config(cfg, device="cpu")


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=64)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--models", nargs="+", default=["default", "v1-class"])
    ap.add_argument("--out")
    args = ap.parse_args()
    cores = available_cores()
    results = {"cores": cores, "count": args.count, "size": args.size, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(args.count):
            p = Path(tmp) / f"{i:04d}.png"
            Image.fromarray(synthetic(args.size, seed=i)).save(p)
            paths.append(str(p))
        decoded = [load_image(p) for p in paths]
        for name in args.models:
            scorer = v1_class() if name == "v1-class" else NaturalnessScorer.from_pretrained(name, device="cpu")
            g = scorer.gflops()
            plan = plan_cpu("cpu", g)
            configs = {
                **{f"in memory, {t} thread{'s' if t > 1 else ''}": t for t in sorted({1, cores})},
                f"plan: {plan.workers} worker nice {plan.nice}, {plan.threads} threads": (plan.workers, plan.nice,
                                                                                            plan.threads),
                "1 worker, 1 thread (the old rule)": (1, 0, max(1, cores - 1)),
                f"1 worker at normal priority, {cores} threads": (1, 0, cores),
                f"1 worker nice 19, {cores} threads": (1, 19, cores),
                f"no worker, {cores} threads": (0, 0, cores),
                f"no worker, {cores} threads, decoding on one core": (0, 0, cores, 1),
            }

            def run(cfg, scorer=scorer):
                if isinstance(cfg, int):
                    torch.set_num_threads(cfg)
                    return lambda: scorer.score(decoded, batch_size=args.batch_size, progress=False)
                if len(cfg) == 4:   # decoding in this process without the decoding threads (before issue 21)
                    torch.set_num_threads(cfg[2])
                    return lambda: [scorer.score_items(items) for items in iter_batches(
                        paths, args.batch_size, 0, limits=scorer.limits, threads=cfg[3])]
                workers, nice, threads = cfg
                torch.set_num_threads(threads)
                return lambda: [b for b in scorer.score_iter(paths, batch_size=args.batch_size, num_workers=workers,
                                                             worker_nice=nice, progress=False)]

            torch.set_num_threads(cores)
            scorer.score(decoded[:args.batch_size], batch_size=args.batch_size, progress=False)   # warm-up
            best = {k: float("inf") for k in configs}
            for _ in range(args.repeats):
                for k, cfg in configs.items():
                    best[k] = min(best[k], timed(run(cfg)))
            ceiling = max(args.count / v for k, v in best.items() if k.startswith("in memory"))
            rows = {k: {"img_s": args.count / v, "of_in_memory": args.count / v / ceiling} for k, v in best.items()}
            results["models"][name] = {"gflops": g, "plan": plan.__dict__, "rates": rows, "load": os.getloadavg()[0]}
            print(f"{name} ({g:.1f} GFLOPs an image; load {os.getloadavg()[0]:.1f}, {cores} cores)")
            for k, r in rows.items():
                print(f"  {k:<45} {r['img_s']:6.2f} img/s  {100 * r['of_in_memory']:5.1f} % of in memory")
            torch.set_num_threads(cores)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
