"""Issue 21, method 4: a photograph-vs-generation signal for naturalness, on the validation parts.

    python -m train.photo_signal --raise <RAISE>/dataset --clive <ChallengeDB_release> \\
        --agiqa <AIGC>/data --work runs/v3 --out runs/v3/photo-signal.json

On :mod:`train.ranked_default`'s cached CLIP features, rows and pairs (the same recipe, splits and
rationality fit as the shipped v3), nothing on the test parts:

1. A photo classifier ``S``: L2 logistic regression (classes weighed equally) on the standardised
   features of the training originals, CLIVE and RAISE's real photographs (1) against AGIQA-3K and
   RAISE's generations (0); ``S`` is its probability, ``logit S`` its logit (linear in the
   features, like the rationality head). Also one trained on RAISE alone and one on
   CLIVE against AGIQA-3K alone (the latter never sees RAISE: does "photo" transfer to RAISE?).
2. The shipped fusion ``N = f(T, R)`` (fitted on the training rows) and ``f(T, R, S)``.
3. Cross-fitting: ``R`` and ``S`` out of fold (5 folds of the training images, an AGIQA-3K prompt's
   images in one fold, each degraded copy with its source), so that the fusion learns from scores
   the heads did not fit; ``f(T, R)`` and
   ``f(T, R, S)`` fitted on those, applied to the full heads.
4. ``N + c * S`` for fixed ``c``: what choosing ``c`` on validation would give.

Printed for each: naturalness SRCC with people on RAISE / AGIQA-3K / CLIVE validation, their mean,
AGIQA-3K within-prompt SRCC, the share of degraded copies below their clean image, and how well
naturalness separates RAISE's real photographs from its generations (AUC). The findings are in
docs/default-model.md ("A photograph-vs-generation signal").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

from joint_core.weights_io import load_model

from .metrics import roc_auc, srcc, within_groups
from .rankfit import PairSet, fit_classifier, standardize, to_scale
from .ranked_default import (L2, PHOTO_L2, add_data_arguments, fit_fusion, head_scores, is_photo, out_of_fold,
                             rationality_head, rows_and_features, training_pairs)

FIXED_C = (0.2, 0.5, 0.8)


def main() -> None:
    ap = argparse.ArgumentParser(description="a photograph-vs-generation signal (see the module docstring)")
    add_data_arguments(ap)
    ap.add_argument("--base", default="joint_core/weights/default", help="the model whose CLIP features are cached")
    ap.add_argument("--work", required=True, help="train.ranked_default's work folder (features are cached there)")
    ap.add_argument("--l2", type=float, default=L2, help=f"the rationality head's L2 strength (the build's: {L2})")
    ap.add_argument("--out", help="write the table as JSON here")
    args = ap.parse_args()
    torch.manual_seed(0)
    base = load_model(args.base).eval()
    rows, x = rows_and_features(args, base)
    pairs, label, ds = training_pairs(rows)
    part = np.array([r["part"] for r in rows])
    orig = np.array([r["kind"] == "orig" for r in rows])
    train_rows = np.flatnonzero(part == "train")
    t_score = head_scores(base.technical, x)
    mean, std = standardize(x, train_rows)
    z = ((x - mean) / std).astype(np.float32)
    del x
    photo = is_photo(rows)
    groups = np.array([r["group"] for r in rows], dtype=object)
    index = {r["key"]: k for k, r in enumerate(rows)}
    copies = np.flatnonzero(~orig)
    sources = np.array([index[rows[k]["source"]] for k in copies])
    train_photo = np.flatnonzero((part == "train") & orig & ~np.isnan(photo))
    classifiers = {"all four kinds": lambda rs: rs,
                   "RAISE only": lambda rs: rs[ds[rs] == "raise"],
                   "CLIVE vs AGIQA-3K": lambda rs: rs[ds[rs] != "raise"]}
    rated_label = np.where(np.isin(ds, ["raise", "agiqa3k"]) & orig, label, np.nan)

    def rationality(fit_pairs: PairSet, fit_rows: np.ndarray) -> np.ndarray:
        w, c = rationality_head(z, fit_pairs, fit_rows, rated_label, ds, args.l2)
        return z @ w + c

    def photo_logit(fit_rows: np.ndarray) -> np.ndarray:
        w, b = fit_classifier(z[fit_rows], photo[fit_rows], PHOTO_L2)
        return z @ w + b

    def prob(logit: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-logit))

    def heads(keep_pairs: np.ndarray, fit_rows: np.ndarray) -> np.ndarray:
        """``[N, 4]``: the rationality score and the three classifiers' logits (``classifiers``' order)."""
        learn = train_photo[fit_rows[train_photo]]
        return np.stack([rationality(pairs.subset(keep_pairs), fit_rows)]
                        + [photo_logit(pick(learn)) for pick in classifiers.values()], 1)

    full = heads(np.ones(len(pairs), bool), part == "train")
    # out-of-fold heads on the training rows (validation and test rows keep the full heads' scores)
    oof = out_of_fold(rows, pairs, heads, full)
    r_full, r_oof = full[:, 0], oof[:, 0]
    s_full = {name: full[:, 1 + n] for n, name in enumerate(classifiers)}   # logits
    s_oof = {name: oof[:, 1 + n] for n, name in enumerate(classifiers)}

    def fusion(fit_cols: List[np.ndarray], use_cols: List[np.ndarray]) -> np.ndarray:
        m, s, w = fit_fusion(np.stack(fit_cols, 1), pairs, train_rows)
        return ((np.stack(use_cols, 1) - m) / s) @ w

    def measure(n: np.ndarray) -> Dict[str, float]:
        out = {}
        for name in ("raise", "agiqa3k", "clive"):
            m = (ds == name) & (part == "val") & orig
            out[name] = srcc(n[m], label[m])
        out["mean"] = (out["raise"] + out["agiqa3k"] + out["clive"]) / 3
        m = (ds == "agiqa3k") & (part == "val") & orig
        out["within_prompt"] = within_groups(n[m], label[m], groups[m])["within_srcc"]
        out["copies_below_clean"] = float(np.mean(n[sources] > n[copies]))
        m = (ds == "raise") & (part == "val") & orig
        out["raise_real_auc"] = roc_auc(n[m], photo[m] > 0.5)
        return out

    table: Dict[str, Dict[str, float]] = {}
    shipped = fusion([t_score, r_full], [t_score, r_full])
    table["shipped: f(T, R), fusion on the heads' training scores"] = measure(shipped)
    for name, s in s_full.items():
        m = (ds == "raise") & (part == "val") & orig
        print(f"photo classifier ({name}): RAISE validation real-vs-generated AUC {roc_auc(s[m], photo[m] > 0.5):.3f}")
        table[f"f(T, R, S), S on {name}"] = measure(fusion([t_score, r_full, prob(s)], [t_score, r_full, prob(s)]))
    table["cross-fitted f(T, R)"] = measure(fusion([t_score, r_oof], [t_score, r_full]))
    for name in s_full:
        table[f"cross-fitted f(T, R, S), S on {name}"] = measure(
            fusion([t_score, r_oof, prob(s_oof[name])], [t_score, r_full, prob(s_full[name])]))
    # the logit instead of the probability: linear in the features like R, so R + c * logit is
    # again a linear head and ships without a third fusion input
    for name in ("all four kinds", "RAISE only"):
        table[f"cross-fitted f(T, R, logit S), S on {name}"] = measure(
            fusion([t_score, r_oof, s_oof[name]], [t_score, r_full, s_full[name]]))
    overall = np.where(np.isin(ds, ["raise", "agiqa3k", "clive"]) & orig & (part == "train"), label, np.nan)
    a, c = to_scale(shipped, overall, ds)
    s_all = prob(s_full["all four kinds"])
    for k in FIXED_C:
        table[f"shipped N + {k} S (S on all four kinds)"] = measure(a * shipped + c + k * s_all)
    m = (ds == "raise") & (part == "train") & orig
    print(f"rationality head on RAISE's training images: SRCC {srcc(r_full[m], label[m]):.3f} fitted on them, "
          f"{srcc(r_oof[m], label[m]):.3f} out of fold")
    cols = ["raise", "agiqa3k", "clive", "mean", "within_prompt", "copies_below_clean", "raise_real_auc"]
    print("| naturalness | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols))
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(f"{row[k]:.3f}" for k in cols) + " |")
    if args.out:
        Path(args.out).write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
