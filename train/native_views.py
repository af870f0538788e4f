"""Issue 21: does a native-resolution view rank RAISE's realness better? (validation parts only)

    python -m train.native_views --raise <RAISE>/dataset --clive <ChallengeDB_release> \\
        --agiqa <AIGC>/data --work runs/v3

The default sees every image resized to 224x224; RAISE's images are 512x384, so the fine texture
that could give a generation away is partly lost. This compares, for RAISE's realness alone, the
default's head input (CLIP ViT-B/16 token statistics) of

- the whole image resized to 224 (what the default computes; :mod:`train.ranked_default`'s cache),
- a 224 px crop at native resolution from the centre, and the mean over the centre and the four
  corner crops (computed here, about 15 minutes on 2 CPU cores, cached in ``--work``),
- the whole image and the crops together (concatenated, or averaged),

each through a linear head fitted with the fidelity loss on pairs within RAISE's training part
(:mod:`train.rankfit`) at several L2 strengths, and a photograph-vs-generation classifier. Printed:
SRCC with RAISE's realness and the classifier's AUC on the validation part. The findings are in
docs/default-model.md ("RAISE and anatomy").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from joint_core.preprocess.pipeline import Preprocessor
from joint_core.weights_io import load_model

from .metrics import roc_auc, srcc
from .rankfit import fit_classifier, fit_linear, rated_pairs, standardize
from .ranked_default import PHOTO_L2, add_data_arguments, is_photo, prepared_data, rows_and_features

CROP = 224
L2S = (0.003, 0.01, 0.03, 0.1)


def crop_offsets(height: int, width: int) -> list:
    """``(top, left)`` of the centre crop and the four corner crops."""
    return [((height - CROP) // 2, (width - CROP) // 2), (0, 0), (0, width - CROP), (height - CROP, 0),
            (height - CROP, width - CROP)]


def main() -> None:
    ap = argparse.ArgumentParser(description="native-resolution views for RAISE (see the module docstring)")
    add_data_arguments(ap)
    ap.add_argument("--base", default="joint_core/weights/default", help="the model whose CLIP features are cached")
    ap.add_argument("--work", required=True, help="train.ranked_default's work folder (features are cached there)")
    args = ap.parse_args()
    torch.manual_seed(0)
    base = load_model(args.base).eval()
    data = prepared_data(args)
    rows, x = rows_and_features(args, base, data)
    idx = np.array([k for k, r in enumerate(rows) if r["dataset"] == "raise" and r["kind"] == "orig"])
    cache = Path(args.work) / "native-crops.npy"
    if cache.is_file():
        crops = np.load(cache)
    else:
        pre = Preprocessor(base.config.preprocess)
        crops = np.zeros((len(idx), 5, x.shape[1]), np.float32)
        with torch.inference_mode():
            for n, k in enumerate(idx):
                img = data.cache[rows[k]["key"]]
                views = [img[:, a:a + CROP, b:b + CROP] for a, b in crop_offsets(*img.shape[1:])]
                crops[n] = base.technical(pre.technical(pre.prepare(views))).embedding.float().numpy()
                print(f"crops: {n + 1}/{len(idx)}", end="\r", flush=True)
        np.save(cache, crops)
    whole = np.asarray(x[idx])
    part = np.array([rows[k]["part"] for k in idx])
    y = np.array([rows[k]["mos"] for k in idx], dtype=float)
    photo = is_photo(rows)[idx]
    train, val = np.flatnonzero(part == "train"), part == "val"
    pairs = rated_pairs(train, y[train], 40000, 0)
    five = crops.mean(1)
    views = {"whole image at 224 (the default)": whole, "centre crop": crops[:, 0], "mean of 5 crops": five,
             "whole + 5 crops, concatenated": np.concatenate([whole, five], 1),
             "whole and 5 crops, averaged": (whole + five) / 2}
    print("| view | " + " | ".join(f"RAISE val SRCC, L2 {v:g}" for v in L2S) + " | photo AUC |\n|---|"
          + "---|" * (len(L2S) + 1))
    for name, f in views.items():
        mean, std = standardize(f, train)
        z = ((f - mean) / std).astype(np.float32)
        cells = [f"{srcc((z @ fit_linear(z, pairs, l2))[val], y[val]):.3f}" for l2 in L2S]
        v, b = fit_classifier(z[train], photo[train], PHOTO_L2)
        print(f"| {name} | " + " | ".join(cells) + f" | {roc_auc((z @ v + b)[val], photo[val] > 0.5):.3f} |",
              flush=True)


if __name__ == "__main__":
    main()
