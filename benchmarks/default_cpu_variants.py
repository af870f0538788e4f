"""Can the default model itself run cheaper on CPU? (issue 21 item 3, second half)

    python benchmarks/default_cpu_variants.py                 # 32 images, 2 repeats
    python benchmarks/default_cpu_variants.py --variants eager int8-per-channel --out variants.json

Each variant of the shipped default scores the same decoded images in memory (batch 16, every
core); the table gives img/s, the ratio to the shipped path, and how far the scores move from
it: the largest absolute change of each output (on the 1-5 scale) and the SRCC of naturalness
with the shipped path's. Images: scikit-image's photographs with blurred, noisy and JPEG copies
(a range of quality, so that the SRCC means something) plus synthetic 512 px frames.

Variants: ``shipped`` (what ``NaturalnessScorer`` runs on CPU: frozen TorchScript graphs),
``eager`` (plain PyTorch), ``channels-last`` (eager, the model in channels-last memory format),
``int8-per-channel`` (dynamic int8 of every linear layer of the CLIP ViT, one scale per output
channel, ``torch.ao.quantization``), ``int8-smoothed`` (what ``int8=True`` / ``joint score --int8`` run: the same
after SmoothQuant-style smoothing, the MLP's second layer in float; :mod:`joint_core.int8`),
``compile`` (``torch.compile`` of the backbone; its compile
time is printed separately). Timings are interleaved and the best of ``--repeats`` is kept.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bulk_score import synthetic  # noqa: E402

from joint_core import NaturalnessScorer  # noqa: E402
from joint_core.preprocess.paths import expand_paths  # noqa: E402

VARIANTS = ("shipped", "eager", "channels-last", "int8-per-channel", "int8-smoothed", "compile")
AXES = ("technical", "rationality", "naturalness")


def images(count: int) -> list:
    """Photographs and their damaged copies, then synthetic frames, ``count`` in all."""
    out = []
    try:
        from skimage import data
        for name in ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins"):
            img = Image.fromarray(getattr(data, name)()).convert("RGB")
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=15)
            noisy = np.asarray(img, np.float32) + np.random.default_rng(0).normal(0, 30, (img.height, img.width, 3))
            out += [np.asarray(img), np.asarray(img.filter(ImageFilter.GaussianBlur(3))),
                    np.clip(noisy, 0, 255).astype(np.uint8), np.asarray(Image.open(buf).convert("RGB"))]
    except ImportError:
        print("scikit-image is not installed: synthetic frames only", file=sys.stderr)
    out += [synthetic(512, seed=i) for i in range(max(0, count - len(out)))]
    return out[:count]


def build(variant: str) -> NaturalnessScorer:
    if variant == "shipped":
        return NaturalnessScorer.from_pretrained("default", device="cpu")
    if variant == "int8-smoothed":
        return NaturalnessScorer.from_pretrained("default", device="cpu", int8=True)
    scorer = NaturalnessScorer.from_pretrained("default", device="cpu", optimize=False)
    backbone = scorer.model.technical.backbone
    if variant == "channels-last":
        scorer.model.to(memory_format=torch.channels_last)
    elif variant == "int8-per-channel":
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
        scorer.model.technical.backbone = quantize_dynamic(backbone, {torch.nn.Linear: per_channel_dynamic_qconfig},
                                                           dtype=torch.qint8)
    elif variant == "compile":
        scorer.model.technical.backbone = torch.compile(backbone)
    elif variant != "eager":
        raise SystemExit(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    return scorer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--images", nargs="+", help="score these image files (or every image in these folders) "
                                                "instead of the built-in photographs and frames")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.images:
        imgs = [np.asarray(Image.open(p).convert("RGB")) for p in expand_paths(args.images)]
    else:
        imgs = images(args.count)
    scorers, scores, best = {}, {}, {}
    for v in args.variants:
        t0 = time.perf_counter()
        scorers[v] = build(v)
        res = scorers[v].score(imgs, batch_size=args.batch_size, progress=False)   # warm-up (and compile)
        print(f"{v}: built and first pass in {time.perf_counter() - t0:.1f} s", flush=True)
        scores[v] = {a: getattr(res, a).double().numpy() for a in AXES}
        best[v] = float("inf")
    for _ in range(args.repeats):
        for v, s in scorers.items():
            t0 = time.perf_counter()
            s.score(imgs, batch_size=args.batch_size, progress=False)
            best[v] = min(best[v], time.perf_counter() - t0)
    ref = "shipped" if "shipped" in scores else args.variants[0]
    rows = {}
    print(f"\n{len(imgs)} images, batch {args.batch_size}, {torch.get_num_threads()} threads; reference: {ref}")
    print(f"{'variant':<18} {'img/s':>7} {'x ref':>6}  max |change| T / R / N        SRCC(N)")
    for v in scorers:
        rate = len(imgs) / best[v]
        moved = {a: float(np.abs(scores[v][a] - scores[ref][a]).max()) for a in AXES}
        rho = float(spearmanr(scores[v]["naturalness"], scores[ref]["naturalness"])[0])
        rows[v] = {"img_s": rate, "ratio": rate / (len(imgs) / best[ref]), "max_change": moved, "srcc_n": rho}
        print(f"{v:<18} {rate:7.2f} {rows[v]['ratio']:6.2f}  "
              + " / ".join(f"{moved[a]:.4f}" for a in AXES) + f"   {rho:.4f}")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
