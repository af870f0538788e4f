"""Training throughput (images/s) with the data pipeline included: cached uint8 images ->
on-device augmentation, patch partition and low-frequency map -> forward -> loss -> backward ->
optimizer step. Per device (one GPU, or the CPU), for a preset and batch sizes. Prints a table
and writes JSON.

    python benchmarks/train_throughput.py --preset paper --batch-sizes 8 32 --objective is
    python benchmarks/train_throughput.py --recipe default-model --var RAISE_ROOT=... --var CLIVE_ROOT=...
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import List

import torch

from joint_core.devices import pick_device


def _synthetic_recipe(preset: str, objective: str, batch: int, device: str, tmp: Path):
    from train.recipe import recipe_from_dict
    from train.synthetic import GROUP_RULE, make_synthetic_set

    labels, images = make_synthetic_set(tmp / "data", scenes=8, per_scene=max(8, batch // 4 + 4), size=512)
    return recipe_from_dict({
        "name": f"bench-{preset}",
        "model": {"preset": preset, "init": {"technical": "none", "rationality": "none"}},
        "data": [{"name": "synth", "kind": "agin",
                  "args": {"labels": str(labels), "image_dir": str(images), "group_rule": GROUP_RULE},
                  "rescale": None, "split": {"kind": "random", "ratios": [0.8, 0.1, 0.1], "n_splits": 1}}],
        "train": {"batch_size": batch, "device": device, "bootstrap": 0, "mixed_precision":
                  "bf16" if device.startswith("cuda") else "no"},
        "loss": {"objective": objective},
    })


def bench(recipe, steps: int, cache_root: Path) -> dict:
    from accelerate import Accelerator

    from train.data import loader, prepare_data
    from train.tasks import build_task

    dev = pick_device(recipe.train.device)
    acc = Accelerator(mixed_precision=recipe.train.mixed_precision, cpu=dev.type == "cpu")
    data = prepare_data(recipe, cache_root=cache_root, progress=False)
    task = build_task(recipe).to(acc.device)
    opt = torch.optim.Adam([p for p in task.model.parameters() if p.requires_grad], lr=1e-5)
    task.model, opt = acc.prepare(task.model, opt)
    dl = loader(data.items("train"), data.cache, recipe.train.batch_size, shuffle=True, seed=0, drop_last=True)
    task.model.train()
    n = 0
    t0 = None
    done = 0
    while done < steps + 2:
        for batch in dl:
            if done == 2:  # two warm-up steps
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t0, n = time.perf_counter(), 0
            with acc.autocast():
                loss, _ = task.loss(batch, torch.Generator().manual_seed(done))
            opt.zero_grad(set_to_none=True)
            acc.backward(loss)
            opt.step()
            n += len(batch)
            done += 1
            if done >= steps + 2:
                break
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    row = {"device": str(dev), "batch": recipe.train.batch_size, "steps": steps,
           "images_per_s": n / seconds, "seconds_per_step": seconds / steps}
    if dev.type == "cuda":
        row["peak_gpu_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return row


def main(argv: List[str] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="paper", help="model preset trained on a synthetic 512 px set")
    ap.add_argument("--recipe", help="instead: a recipe (its first data set and model)")
    ap.add_argument("--var", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--objective", default="is", choices=["is", "fs", "joint++"])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default="train_throughput.json")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for batch in args.batch_sizes:
            if args.recipe:
                from train.recipe import load_recipe

                variables = dict(v.split("=", 1) for v in args.var)
                recipe = load_recipe(args.recipe, variables=variables,
                                     sets=[f"train.batch_size={batch}", f"train.device={args.device}"])
            else:
                recipe = _synthetic_recipe(args.preset, args.objective, batch, args.device, tmp)
            row = bench(recipe, args.steps, tmp / "cache")
            row.update({"model": recipe.name, "objective": recipe.loss.get("objective", "is")})
            rows.append(row)
            print(f"{row['model']:>20} {row['device']:>6} batch {batch:>3}: {row['images_per_s']:7.1f} img/s "
                  f"({row['seconds_per_step']:.2f} s/step)" +
                  (f", {row['peak_gpu_mem_mb']:.0f} MB GPU" if "peak_gpu_mem_mb" in row else ""), flush=True)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cores": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
