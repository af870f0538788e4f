"""Peak memory that scoring one hostile input costs, above a warmed-up scorer.

Each case runs in its own process (the peak resident set, ``VmHWM``, only ever grows): the
script makes the file, loads the model, scores a small image once (graphs built, allocator warm),
records the peak, scores the case, and prints how far the peak rose. Tiny files that used to
allocate gigabytes (issue 17): a 1x5000 PNG, three of them in one batch, a 12000x7400 1-bit PNG
of 10 KB. Normal images are measured alongside for scale.

    python benchmarks/input_memory.py                 # every case, a table (the shipped default model)
    python benchmarks/input_memory.py thin --json     # one case in this process, as JSON (used by tests)

Linux only (reads /proc/self/status).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import warnings
import zlib
from typing import Dict, List, Tuple

import numpy as np

# case -> (what it is, how many copies in one call)
CASES: Dict[str, Tuple[str, int]] = {
    "thin": ("1x5000 PNG", 1),
    "thin-x3": ("1x5000 PNG, 3 copies in one batch", 3),
    "thin-x16": ("1x5000 PNG, 16 copies in one batch", 16),
    "bilevel": ("12000x7400 1-bit PNG", 1),
    "jpeg-large": ("12000x7400 JPEG", 1),
    "photo-2048": ("2048x2048 RGB PNG (normal, for scale)", 1),
    "photo-512-x16": ("512x512 RGB PNG, 16 copies (normal, for scale)", 16),
}


def peak_rss() -> int:
    """Peak resident set of this process in bytes (``VmHWM``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def write_bilevel_png(path: str, width: int, height: int) -> None:
    """A 1-bit PNG of ``width`` x ``height``, all black, written row by row (a few KB, no big buffer)."""
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (width + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def make_case(case: str, folder: str) -> List[str]:
    """Write the case's file into ``folder``; returns the list of paths one call scores."""
    from PIL import Image

    n = CASES[case][1]
    rng = np.random.default_rng(0)
    if case.startswith("thin"):
        path = os.path.join(folder, "thin.png")
        Image.fromarray(np.linspace(0, 255, 5000).astype(np.uint8)[:, None]).convert("RGB").save(path)
    elif case == "bilevel":
        path = os.path.join(folder, "bilevel.png")
        write_bilevel_png(path, 12000, 7400)
    elif case == "jpeg-large":
        path = os.path.join(folder, "large.jpg")
        small = rng.integers(0, 256, (74, 120, 3), dtype=np.uint8)
        Image.fromarray(small).resize((12000, 7400), Image.BILINEAR).save(path, quality=85)
    else:
        side = 2048 if case == "photo-2048" else 512
        path = os.path.join(folder, f"photo{side}.png")
        small = rng.integers(0, 256, (side // 16, side // 16, 3), dtype=np.uint8)
        Image.fromarray(small).resize((side, side), Image.BILINEAR).save(path)
    return [path] * n


def measure(case: str, model: str = "default", threads: int = 2) -> Dict[str, object]:
    """Score ``case`` in this process; returns the peak's rise above the warmed-up scorer."""
    import torch

    torch.set_num_threads(threads)
    from joint_core import NaturalnessScorer

    with tempfile.TemporaryDirectory() as folder:
        paths = make_case(case, folder)
        scorer = NaturalnessScorer.from_pretrained(model, device="cpu")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scorer.score([np.full((300, 400, 3), 90, np.uint8)])   # warm-up
            before = peak_rss()
            result = scorer.score(paths, batch_size=16)
            after = peak_rss()
        size = os.path.getsize(paths[0])
    return {"case": case, "what": CASES[case][0], "file_bytes": size,
            "peak_rise_mb": round((after - before) / 2**20, 1), "baseline_mb": round(before / 2**20, 1),
            "scored": len(result) - len(result.errors), "errors": list(result.errors.values()),
            "warnings": list(result.warnings.values()) if hasattr(result, "warnings") else []}


def run_in_subprocess(case: str, model: str = "default", timeout: float = 600) -> Dict[str, object]:
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), case, "--json", "--model", model],
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{case}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("case", nargs="?", choices=list(CASES), help="one case, measured in this process")
    ap.add_argument("--json", action="store_true", help="print the one case's result as JSON")
    ap.add_argument("--model", default="default", help="model to score with (default: the shipped one)")
    args = ap.parse_args(argv)
    if args.case:
        out = measure(args.case, args.model)
        print(json.dumps(out) if args.json else out)
        return 0
    rows: List[Dict[str, object]] = [run_in_subprocess(c, args.model) for c in CASES]
    print(f"{'case':<48} {'file (KB)':>10} {'peak rise (MB)':>15}")
    for r in rows:
        print(f"{r['what']:<48} {r['file_bytes'] / 1024:>10.1f} {r['peak_rise_mb']:>15}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

