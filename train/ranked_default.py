"""Build the default model v3.1 (issue 21): one CLIP backbone, two heads, naturalness learnt by ranking.

    python -m train.ranked_default --raise /data/RAISE/dataset --clive /data/ChallengeDB_release \\
        --agiqa /data/AIGC/data --base joint_core/weights/default --work runs/v3 --out runs/v3/model \\
        --photo-signal

What it does, on frozen features (every step seeded, the fits deterministic):

1. The data sets and splits of ``train/recipes/default-model.yaml`` (RAISE's official test split,
   seeded 20 % test parts of CLIVE and of AGIQA-3K's prompts, the 56 synthetic broken frames).
   Degraded copies of 360 training images (150 RAISE, 150 AGIQA-3K, 60 CLIVE; Gaussian blur
   sigma 2, Gaussian noise sigma 25/255, JPEG quality 80 and 20).
2. The head input of the ``--base`` model's technical branch (CLIP ViT-B/16 token statistics,
   28,160 features) for every image and copy, cached in ``--work``.
3. The technical head is kept from ``--base`` (AGIQA-3K quality, CLIVE, broken frames).
4. The rationality head is a new linear head on the same CLIP features (``backbone: none``,
   ``head_extra: technical``: no second backbone), fitted with the fidelity loss on pairs drawn
   within RAISE (realness), within AGIQA-3K (quality), within CLIVE (weight 0.25), a clean
   image above each of its own degraded copies, and rated images above broken frames
   (:mod:`train.rankfit`); L2 strength ``3e-2`` (chosen on the validation parts), then mapped
   onto the 1-5 scale by least squares.
5. The fusion ``N = w_T T + w_R R + b`` is fitted the same way on the same pairs, and the model
   ranks by naturalness (``config.ranking``).
6. ``--photo-signal`` (what the shipped default, v3.1, is built with; without it the build is v3): an L2 logistic
   regression of RAISE's real photographs against its generations on the same features; its
   logit ``S`` is linear in them like ``R``. ``R`` and ``S`` are also fitted out of fold (5 folds
   of the training images, an AGIQA-3K prompt's images together, a copy with its source), the
   fusion of ``(T, R, S)`` is fitted on those out-of-fold scores, and ``R + k S`` with the fused
   ratio ``k`` becomes the rationality head, so the model needs no third input. Every 1-5 scale is
   fitted on the training rows. Validation: docs/default-model.md, "A photograph-vs-generation
   signal".
7. The config's description, which ``joint info --list`` and the ComfyUI loader show, names the
   build, the speed measured elsewhere (``--rate``) and its naturalness SRCC with people on each
   test part, from the cached features (reported, never used for a choice).

The exploration that chose these settings (validation parts only) is in docs/default-model.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch
from PIL import Image

from joint_core.config import BranchConfig
from joint_core.model import JointModel, Standardize
from joint_core.preprocess.pipeline import Preprocessor
from joint_core.weights_io import load_model, save_model

from .data import prepare_data
from .metrics import srcc
from .degrade import gaussian_blur
from .probe import set_linear_head
from .rankfit import PairSet, fit_classifier, fit_linear, ordered_pairs, rated_pairs, standardize, to_scale
from .recipe import load_recipe

DEGRADATIONS = ("blur2", "noise25", "jpeg80", "jpeg20")
SOURCES = (("raise", 150), ("agiqa3k", 150), ("clive", 60))
L2 = 3e-2
SET_WEIGHTS = {"raise": 1.0, "agiqa3k": 1.0, "clive": 0.25}
DEGRADED_WEIGHT, BROKEN_WEIGHT = 1.0, 0.5
MAX_PAIRS = 40000
FUSION_L2 = 1e-4
FOLDS = 5            # cross-fitting folds (``--photo-signal``)
PHOTO_L2 = 1e-2      # the photo classifier's L2 strength


def degrade(x: torch.Tensor, kind: str, seed: int) -> torch.Tensor:
    """uint8 ``[3, H, W]`` -> its degraded copy (uint8)."""
    if kind == "blur2":
        return gaussian_blur(x[None].float() / 255, torch.tensor([2.0]))[0].mul(255).round().clamp(0, 255).byte()
    if kind == "noise25":
        g = torch.Generator().manual_seed(seed)
        return (x.float() + 25 * torch.randn(x.shape, generator=g)).round().clamp(0, 255).byte()
    buf = io.BytesIO()
    Image.fromarray(x.permute(1, 2, 0).numpy()).save(buf, "JPEG", quality=int(kind[4:]))
    return torch.from_numpy(np.array(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))).permute(2, 0, 1)


def add_data_arguments(ap: argparse.ArgumentParser) -> None:
    """The data set folders every build from this recipe's data takes."""
    ap.add_argument("--raise", dest="raise_root", required=True, help="RAISE's dataset/ folder")
    ap.add_argument("--clive", required=True, help="CLIVE's ChallengeDB_release folder")
    ap.add_argument("--agiqa", required=True, help="AGIQA-3K's data/ folder (ACGIQA-3K/ and data.csv)")


def prepared_data(args):
    """The data sets and splits of ``default-model.yaml``, decoded images cached in ``args.work``."""
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    recipe = load_recipe("default-model", variables={
        "RAISE_ROOT": args.raise_root, "CLIVE_ROOT": args.clive, "AGIQA_ROOT": args.agiqa,
        "DEGENERATE_ROOT": str(work / "degenerate")})
    return prepare_data(recipe, cache_root=work / "cache")


def rows_and_features(args, base: JointModel, data=None) -> Tuple[List[Dict], np.ndarray]:
    """Every image and degraded copy (rows) and ``base``'s technical head input for each, cached
    in ``args.work``; ``data``: :func:`prepared_data` when the caller already has it."""
    work = Path(args.work)
    data = data if data is not None else prepared_data(args)
    rows = [dict(key=it.key, dataset=it.dataset, part=part, mos=it.sample.mos, mos_t=it.sample.mos_t,
                 mos_r=it.sample.mos_r, group=it.sample.group, kind="orig")
            for part in ("train", "val", "test") for it in data.items(part)]
    rng = np.random.default_rng(0)
    for name, n in SOURCES:
        train = [r for r in rows if r["dataset"] == name and r["part"] == "train" and r["kind"] == "orig"]
        for k in rng.choice(len(train), min(n, len(train)), replace=False):
            rows += [dict(train[k], key=train[k]["key"] + "#" + d, kind=d, source=train[k]["key"])
                     for d in DEGRADATIONS]
    feats = work / "technical-features.npy"
    if feats.is_file() and json.loads((work / "rows.json").read_text()) == rows:
        return rows, np.load(feats)
    pre = Preprocessor(base.config.preprocess)
    out = []
    with torch.inference_mode():
        for i in range(0, len(rows), 16):
            imgs = []
            for j, r in enumerate(rows[i:i + 16]):
                x = data.cache[r["key"].split("#")[0]]
                imgs.append(x if r["kind"] == "orig" else degrade(x, r["kind"], i + j))
            out.append(base.technical(pre.technical(pre.prepare(imgs))).embedding.float().numpy())
            print(f"features: {min(i + 16, len(rows))}/{len(rows)}", end="\r", flush=True)
    x = np.concatenate(out)
    np.save(feats, x)
    (work / "rows.json").write_text(json.dumps(rows))
    return rows, x


def rating(row: Dict) -> float:
    """The rating a row is ranked by: RAISE's realness MOS, the technical MOS elsewhere (NaN: none)."""
    value = row["mos"] if row["dataset"] == "raise" else row["mos_t"]
    return np.nan if value is None else value


def head_scores(branch, x: np.ndarray) -> np.ndarray:
    """A branch's head on cached head inputs ``x`` (``[N, d]``, float32) -> ``[N]`` float64 scores."""
    with torch.no_grad():
        f = torch.as_tensor(x, dtype=torch.float32)
        return branch.head(branch.head_norm(f)).squeeze(-1).double().numpy()


def fit_fusion(columns: np.ndarray, pairs: PairSet, train_rows: np.ndarray
               ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fusion of score ``columns`` (``[N, k]``): ``(mean, std, w)`` with
    ``((columns - mean) / std) @ w`` ranking like the pairs (fidelity, standardised on the
    training rows)."""
    mean, std = standardize(columns, train_rows)
    return mean, std, fit_linear((columns - mean) / std, pairs, FUSION_L2)


def rationality_head(z: np.ndarray, pairs: PairSet, fit_rows: np.ndarray, rated: np.ndarray, ds: np.ndarray,
                     l2: float = L2) -> Tuple[np.ndarray, float]:
    """``(w, c)`` of the linear rationality head ``z @ w + c`` fitted on ``pairs`` (fidelity, L2
    strength ``l2``) and put on the 1-5 scale by the ``rated`` ratings (NaN: unrated) of the
    boolean mask ``fit_rows``."""
    w = fit_linear(z, pairs, l2)
    a, c = to_scale(z @ w, np.where(fit_rows, rated, np.nan), ds)
    return a * w, c


def is_photo(rows: List[Dict]) -> np.ndarray:
    """1 for a photograph (CLIVE, RAISE's ``r*`` files), 0 for a generation (AGIQA-3K, RAISE's
    ``f*`` files), NaN for copies, broken frames and anything else."""
    out = np.full(len(rows), np.nan)
    for k, r in enumerate(rows):
        if r["kind"] != "orig":
            continue
        if r["dataset"] == "raise":
            out[k] = float(os.path.basename(r["key"]).startswith("r"))
        elif r["dataset"] in ("clive", "agiqa3k"):
            out[k] = float(r["dataset"] == "clive")
    return out


def cross_fit_folds(rows: List[Dict], folds: int = FOLDS, seed: int = 0) -> np.ndarray:
    """The fold (0..folds-1) of every training row, -1 for the others: an AGIQA-3K prompt's images
    share a fold (whole content groups), every other image is alone, each degraded copy goes with
    its source."""
    fold = np.full(len(rows), -1)
    train_orig = [k for k, r in enumerate(rows) if r["part"] == "train" and r["kind"] == "orig"]
    keys = [f"group:{rows[k]['group']}" if rows[k]["group"] is not None else f"image:{k}" for k in train_orig]
    names, of = np.unique(keys, return_inverse=True)
    fold[train_orig] = (np.random.default_rng(seed).permutation(len(names)) % folds)[of]
    index = {r["key"]: k for k, r in enumerate(rows)}
    for k, r in enumerate(rows):
        if r["kind"] != "orig":
            fold[k] = fold[index[r["source"]]]
    return fold


def fold_photo_signal(t: np.ndarray, r: np.ndarray, s: np.ndarray, fit_cols: np.ndarray, pairs: PairSet,
                      train_rows: np.ndarray, rated: np.ndarray, overall: np.ndarray, ds: np.ndarray
                      ) -> Tuple[float, float, float, float, float]:
    """Fold a photo logit ``s`` into the rationality score ``r``: returns ``(k, alpha, gamma, w_t,
    w_r, bias)``.

    The fusion of ``(T, R, logit S)`` is fitted on ``fit_cols`` (``[N, 3]``, out-of-fold R and S on
    the training rows) like :func:`fit_fusion`; with ``R* = r + k s`` and the rationality output
    ``alpha R* + gamma`` (least squares onto the ``rated`` ratings), naturalness
    ``w_t T + w_r (alpha R* + gamma) + bias`` ranks exactly as the fitted fusion and is mapped onto
    the ``overall`` ratings. Both ``r`` and ``s`` linear in the same features means ``R*`` is one
    linear head."""
    m, sd, wf = fit_fusion(fit_cols, pairs, train_rows)
    if wf[1] <= 0:
        raise ValueError(f"the fusion gives the rationality score a weight of {wf[1]:.3g}: nothing to fold into")
    k = float((wf[2] / sd[2]) / (wf[1] / sd[1]))
    r_star = r + k * s
    alpha, gamma = to_scale(r_star, rated, ds)
    raw = (wf[0] / sd[0]) * t + (wf[1] / sd[1]) * r_star - float(wf @ (m / sd))
    af, cf = to_scale(raw, overall, ds)
    w_t = af * wf[0] / sd[0]
    w_r = af * (wf[1] / sd[1]) / alpha
    bias = cf - af * float(wf @ (m / sd)) - w_r * gamma
    return k, alpha, gamma, float(w_t), float(w_r), float(bias)


def training_pairs(rows: List[Dict], seed: int = 0) -> Tuple[PairSet, np.ndarray, np.ndarray]:
    """The pairs every fit learns from, each row's rating (:func:`rating`) and data set name."""
    ds = np.array([r["dataset"] for r in rows])
    part = np.array([r["part"] for r in rows])
    orig = np.array([r["kind"] == "orig" for r in rows])
    label = np.array([rating(r) for r in rows], dtype=float)
    parts = []
    for name, weight in SET_WEIGHTS.items():
        i = np.flatnonzero((ds == name) & (part == "train") & orig & ~np.isnan(label))
        parts.append(rated_pairs(i, label[i], MAX_PAIRS, seed, weight=weight))
    index = {r["key"]: k for k, r in enumerate(rows)}
    copies = np.flatnonzero(~orig)
    parts.append(ordered_pairs([index[rows[k]["source"]] for k in copies], copies, weight=DEGRADED_WEIGHT))
    broken = np.flatnonzero(ds == "degenerate")
    rated = np.flatnonzero(orig & (part == "train") & np.isin(ds, list(SET_WEIGHTS)))
    rng = np.random.default_rng(seed)
    parts.append(ordered_pairs(rng.choice(rated, 4000), rng.choice(broken, 4000), weight=BROKEN_WEIGHT))
    return PairSet.concat(parts), label, ds


def out_of_fold(rows: List[Dict], pairs: PairSet, fit: Callable[[np.ndarray, np.ndarray], np.ndarray],
                full: np.ndarray) -> np.ndarray:
    """Cross-fitted scores: ``fit(keep_pairs, fit_rows)`` (boolean masks of the pairs and the rows it
    may learn from) returns ``[N, ...]`` scores of every row; each training row gets the scores of
    the fit that did not see its fold (:func:`cross_fit_folds`), every other row keeps ``full``."""
    fold = cross_fit_folds(rows)
    train = np.array([r["part"] == "train" for r in rows])
    out = full.copy()
    for f in range(FOLDS):
        held = fold == f
        out[held] = fit((fold[pairs.i] != f) & (fold[pairs.j] != f), train & ~held)[held]
        print(f"cross-fitting: fold {f + 1}/{FOLDS}", end="\r" if f + 1 < FOLDS else "\n", flush=True)
    return out


def photo_folded_head(rows: List[Dict], z: np.ndarray, t_score: np.ndarray, pairs: PairSet, ds: np.ndarray,
                      rated: np.ndarray, overall: np.ndarray
                      ) -> Tuple[np.ndarray, float, Tuple[float, float, float]]:
    """``--photo-signal``: the rationality head with a photo classifier's logit folded in, and the
    fusion ``(w_t, w_r, bias)``, cross-fitted (see the module docstring). Returns the head's
    weights on the standardised features ``z`` and its bias."""
    train = np.array([r["part"] == "train" for r in rows])
    photo = is_photo(rows)
    photo_rows = np.flatnonzero(train & (ds == "raise") & ~np.isnan(photo))

    def heads(keep_pairs: np.ndarray, fit_rows: np.ndarray) -> Tuple[np.ndarray, float, np.ndarray, float]:
        w, c = rationality_head(z, pairs.subset(keep_pairs), fit_rows, rated, ds)
        p = photo_rows[fit_rows[photo_rows]]
        v, b = fit_classifier(z[p], photo[p], PHOTO_L2)
        return w, c, v, b

    def scores(w: np.ndarray, c: float, v: np.ndarray, b: float) -> np.ndarray:
        return np.stack([z @ w + c, z @ v + b], 1)

    w, c, v, b = heads(np.ones(len(pairs), bool), train)
    full = scores(w, c, v, b)
    oof = out_of_fold(rows, pairs, lambda keep, fit_rows: scores(*heads(keep, fit_rows)), full)
    k, alpha, gamma, w_t, w_r, bias = fold_photo_signal(
        t_score, full[:, 0], full[:, 1], np.column_stack([t_score, oof]), pairs, np.flatnonzero(train),
        np.where(train, rated, np.nan), np.where(train, overall, np.nan), ds)
    print(f"photo logit folded into rationality with weight {k:.4g}")
    return alpha * (w + k * v), alpha * (c + k * b) + gamma, (w_t, w_r, bias)


def build(args) -> JointModel:
    base = load_model(args.base).eval()
    rows, x = rows_and_features(args, base)
    pairs, label, ds = training_pairs(rows)
    part = np.array([r["part"] for r in rows])
    train_rows = np.flatnonzero(part == "train")
    mean, std = standardize(x, train_rows)
    z = (x - mean) / std
    orig = np.array([r["kind"] == "orig" for r in rows])
    rated = np.where(np.isin(ds, ["raise", "agiqa3k"]) & orig, label, np.nan)
    overall = np.where(np.isin(ds, list(SET_WEIGHTS)) & orig, label, np.nan)
    t_score = head_scores(base.technical, x)   # technical scores of the base model from the same features
    photo = getattr(args, "photo_signal", False)
    if photo:
        w, c, (w_t, w_r, bias) = photo_folded_head(rows, z, t_score, pairs, ds, rated, overall)
    else:
        # v3 (the plain build): the 1-5 scales below were fitted on every rated row, the validation and
        # test parts included (a positive affine map: no order changes); the --photo-signal build
        # fits them on the training rows only
        w, c = rationality_head(z, pairs, np.ones(len(rows), bool), rated, ds)
        tr = np.stack([t_score, z @ w + c], 1)
        m2, s2, wf = fit_fusion(tr, pairs, train_rows)
        af, cf = to_scale(((tr - m2) / s2) @ wf, overall, ds)
        w_t, w_r = af * wf / s2
        bias = cf - af * float(wf @ (m2 / s2))

    cfg = base.config
    cfg.rationality = BranchConfig(backbone="none", head_hidden=1, head_input="tokens", head_activation="none",
                                   head_norm="standardize", head_extra="technical")
    cfg.fusion.technical_weight, cfg.fusion.rationality_weight, cfg.fusion.bias = float(w_t), float(w_r), float(bias)
    cfg.ranking = {"naturalness": 1.0}
    version = "v3.1" if photo else "v3"
    cfg.name = f"joint-default-{version}"
    model = JointModel(cfg).eval()
    model.technical.load_state_dict(base.technical.state_dict())
    norm: Standardize = model.rationality.head_norm
    norm.mean.copy_(torch.as_tensor(mean, dtype=norm.mean.dtype))
    norm.std.copy_(torch.as_tensor(std, dtype=norm.std.dtype))
    set_linear_head(model.rationality, w, c)
    n = w_t * t_score + w_r * head_scores(model.rationality, x) + bias
    test = (part == "test") & orig
    agree = " / ".join(f"{label} {srcc(n[test & (ds == name)], overall[test & (ds == name)]):.2f}"
                       for name, label in (("raise", "RAISE"), ("agiqa3k", "AGIQA-3K"), ("clive", "CLIVE")))
    cfg.description = (f"joint's default model {version}: one CLIP ViT-B/16 backbone; technical head (AGIQA-3K, CLIVE, "
                       "broken frames), rationality head ranked within RAISE, AGIQA-3K and CLIVE and above degraded "
                       "copies and broken frames" + (" plus a photograph-vs-generation logit (RAISE), cross-fitted "
                                                     "fusion" if photo else "") + "; naturalness ranked the same way; "
                       f"{getattr(args, 'rate', None) or 'rate not measured'}; naturalness SRCC with people on the "
                       f"test parts {agree}")
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description="build the default model (see the module docstring)")
    add_data_arguments(ap)
    ap.add_argument("--base", default="joint_core/weights/default", help="the v2 model (its CLIP branch and head)")
    ap.add_argument("--work", required=True, help="folder for the image cache, features and splits")
    ap.add_argument("--out", required=True, help="where the model folder is written")
    ap.add_argument("--photo-signal", action="store_true",
                    help="fold a photograph-vs-generation logit into the rationality head (step 6): v3.1, the "
                         "shipped default; without it, v3")
    ap.add_argument("--rate", help="the measured speed, for the description that `joint info --list` and the ComfyUI "
                                   "loader show (e.g. '3.7 img/s from 512 px files on 2 CPU cores', from "
                                   "benchmarks/cpu_plan.py)")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = build(args)
    save_model(model, args.out, dtype=torch.float16, int8=[r"^technical\.backbone\.blocks\."])
    print(f"\nwrote {args.out}: fusion {model.config.fusion}")


if __name__ == "__main__":
    main()
