"""Ship a trained run as a model folder: weights (optionally fp16), config, a model card.

    python -m train export runs/joint-default --to joint_core/weights/default   # fp16; --fp32 to keep fp32

The model card is generated from the run's ``metrics.json`` and ``recipe.yaml`` (data sets,
licences, measured agreement with human ratings, intended use, known limits). Licence notices
that must travel with derived work (``notices`` - e.g. CLIVE's copyright notice) are copied
next to the weights.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from joint_core.checkpoint import CONFIG_NAME, MODEL_CARD_NAME, load_model, save_model
from joint_core.outputs import input_conflict

CARD_TEMPLATE = """# {name}

{description}

- **Architecture.** Technical branch `{tech}` ({tech_input}), rationality branch `{rat}`
  ({rat_input}); {heads}.
  `naturalness = {w_t:.4f} * technical + {w_r:.4f} * rationality {b_sign} {b_abs:.4f}`.
  {params:,} parameters, {size_mb:.1f} MiB on disk ({dtype}).
- **Default ranking.** {ranking}
- **Scale.** Higher is better. {scale}
- **Training data.** {data}
- **How it was trained.** `{command}`. Recipe `{recipe}`, seed {seed}. Best
  epoch on validation: {best_epoch} (0 = the linear probe, before any fine-tuning).

## Agreement with human ratings (held-out test sets, never used for selection)

{table}

95 % bootstrap intervals, {bootstrap} resamples of the test images. PLCC is after the standard
4-parameter logistic fit; "raw" is before it.

## Intended use

- Ranking or filtering generated images by naturalness (for example best-of-N, or dropping the
  worst of a batch), and comparing generators on the same prompts.
- Research on naturalness assessment.

## Known limits

{data_limits}- Agreement with people is moderate, not high (see the table). Use the scores to rank images
  from the same generator and prompt, not as an absolute verdict on a single image.
- It is not a detector of AI generation and not a content or safety filter.

## Licences

{licences}
"""


# What each kind of training set implies for the model's limits (the card's "Known limits").
DATA_LIMITS = {
    "raise": "It learned naturalness from RAISE: 600 images of 512x384 from a handful of generators, plus "
             "real photographs. Generators, styles and resolutions far from these are out of distribution.",
    "clive": "The technical branch learned from CLIVE smartphone photographs (authentic camera distortions), "
             "not from AI-generated images. Generation artifacts reach it only through the fusion.",
    # CLIVE beside AI-generated ratings: the technical branch saw both kinds
    "clive+generated": "The technical branch also learned from CLIVE smartphone photographs (authentic camera "
                       "distortions), so it rates photographs as well as generations.",
    "agin": "It learned from AGIN (AI-generated images of 2023-era generators); newer generators may be "
            "out of distribution.",
    "agiqa3k": "The technical branch learned AI-generated image quality from AGIQA-3K: 2,982 images of 300 "
               "prompts by 2022-2023 generators (AttnGAN, GLIDE, DALL-E 2, Midjourney, Stable Diffusion 1.5, "
               "SDXL) at 512x512. Newer generators and other resolutions may be out of distribution.",
    "degenerate": "Synthetic broken frames (black, flat, noise, blocks, blur, stripes) were added at the bottom "
                  "of the technical scale, so failed generations score low; they are not human ratings.",
}


def _fmt_metric(m: Dict, key: str) -> str:
    ci = m.get(f"{key}_ci")
    v = m.get(key)
    if v is None:
        return "-"
    return f"{v:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def metrics_table(test: Dict[str, Dict[str, Dict]]) -> str:
    rows = ["| test set | score | n | SRCC | PLCC | PLCC raw | KRCC |", "|---|---|--:|---|---|---|---|"]
    for ds, axes in test.items():
        for axis, m in axes.items():
            rows.append(f"| {ds} | {axis} | {m.get('n', '-')} | {_fmt_metric(m, 'srcc')} | {_fmt_metric(m, 'plcc')} | "
                        f"{_fmt_metric(m, 'plcc_raw')} | {_fmt_metric(m, 'krcc')} |")
    return "\n".join(rows)


def export_run(run_dir: Path, to: Path, fp16: bool = True, notices: Sequence[Union[Path, str]] = (),
               licences: Optional[List[str]] = None, command: str = "", int8: Sequence[str] = (),
               overwrite: bool = False) -> Path:
    """Ship ``run_dir``'s model into ``to`` (written aside, then swapped in): weights in fp16
    (or fp32), the weights matching an ``int8`` regular expression as int8 with per-row scales
    (:func:`joint_core.checkpoint.save_model`), licence notices copied beside them, a model card.

    ``notices``: files copied beside the weights under their own name, or ``NAME=PATH`` to name
    the copy (a data set's notice is often a ``README.txt`` that says nothing beside weights).

    ``to`` may not be or hold what the export reads (the run, the notices); an existing model
    folder is replaced only with ``overwrite``, and only if it holds nothing but a model's files
    (config, weights, ``.md`` and ``.txt`` files): a folder with anything else is never removed."""
    run_dir, to = Path(run_dir), Path(to)
    problem = input_conflict(to, [run_dir, *(src for _, src in (_notice_copy(n) for n in notices))], what="--to")
    if problem:
        raise FileExistsError(f"export: {problem}")
    copies = [_notice_copy(n) for n in notices]
    for need in (run_dir / "model", run_dir / "metrics.json", run_dir / "recipe.yaml", *(src for _, src in copies)):
        if not need.exists():
            raise FileNotFoundError(f"export: {need} does not exist (is {run_dir} a finished run?)")
    if to.exists() and (not to.is_dir() or (any(to.iterdir()) and not (to / CONFIG_NAME).is_file())):
        raise FileExistsError(f"export: {to} exists and is not a model folder; refusing to replace it")
    if to.is_dir() and any(to.iterdir()):
        others = [p.name for p in to.iterdir() if p.is_dir() or p.suffix.lower() not in (".json", ".safetensors",
                                                                                          ".md", ".txt")]
        if others:
            raise FileExistsError(f"export: {to} holds files that are not a model's ({others[0]}, ...); "
                                  "refusing to replace it")
        if not overwrite:
            raise FileExistsError(f"export: {to} already holds a model; pass --overwrite to replace it")
    model = load_model(run_dir / "model")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    recipe = _read_yaml(run_dir / "recipe.yaml")
    final, to = to, to.with_name(to.name + ".export-tmp")  # written aside, then swapped in
    if to.exists():
        shutil.rmtree(to)
    save_model(model, to, dtype=torch.float16 if fp16 else None, int8=int8)
    for name, src in copies:
        shutil.copyfile(src, to / name)
    cfg = model.config
    size = sum(p.stat().st_size for p in to.iterdir())
    data = "; ".join(
        f"{d['name']} ({d['kind']}, split {d['split'].get('kind', 'random')}"
        + (f", labels not used: {', '.join(d['drop_labels'])}" if d.get("drop_labels") else "") + ")"
        for d in recipe["data"])
    splits = metrics.get("splits", {})
    if splits:
        data += ". Images: " + ", ".join(f"{n} {v['train']}/{v['val']}/{v['test']} train/val/test"
                                         for n, v in splits.items())
    card = CARD_TEMPLATE.format(
        name=cfg.name or recipe["name"], description=cfg.description,
        tech=cfg.technical.backbone, rat=cfg.rationality.backbone,
        tech_input=_describe_tech(cfg), rat_input=_describe_rat(cfg),
        w_t=cfg.fusion.technical_weight, w_r=cfg.fusion.rationality_weight,
        b_sign="-" if cfg.fusion.bias < 0 else "+", b_abs=abs(cfg.fusion.bias),
        params=model.num_parameters(), size_mb=size / 2**20,
        dtype=("fp16 weights" if fp16 else "fp32 weights") + (
            "; the large frozen weights (" + ", ".join(f"`{p}`" for p in int8) + ") as int8 with a float32 "
            "scale per output row, turned back into float32 when the model is loaded" if int8 else ""),
        data=data, command=command or f"python -m train fit --config {_recipe_ref(recipe)}",
        recipe=_recipe_ref(recipe, path=True),
        seed=recipe.get("seed", 0), best_epoch=_describe_epoch(metrics.get("best_epoch")),
        table=metrics_table(metrics.get("test", {})),
        heads=_describe_heads(cfg), scale=_describe_scale(recipe), data_limits=_data_limits(recipe),
        bootstrap=recipe.get("train", {}).get("bootstrap", 1000),
        licences="\n".join(f"- {line}" for line in (licences or [])) or "- see the training data sets' terms",
        ranking=_describe_ranking(cfg.ranking),
    )
    (to / MODEL_CARD_NAME).write_text(card, encoding="utf-8")
    old = final.with_name(final.name + ".export-old")
    if final.exists():   # swapped: the old model goes only once the new one is in place
        if old.exists():
            shutil.rmtree(old)
        final.rename(old)
    to.rename(final)
    if old.exists():
        shutil.rmtree(old)
    return final


def _notice_copy(notice: Union[Path, str]) -> Tuple[str, Path]:
    """``(name of the copy, source)`` of a ``--notice`` (``PATH`` or ``NAME=PATH``)."""
    text = str(notice)
    name, sep, src = text.partition("=")
    if sep and name and "/" not in name and "\\" not in name and not Path(text).exists():
        return name, Path(src)
    return Path(text).name, Path(text)


def _describe_ranking(ranking) -> str:
    """What every face ranks by when the user names no axis (``JointConfig.ranking``)."""
    from joint_core.result import describe_by

    if isinstance(ranking, str):
        return f"Images are ranked by `{ranking}` when no axis is named (CLI, ComfyUI, diffusers hook)."
    total = sum(ranking.values())
    mix = " + ".join(f"{w / total:.3g} * {axis}" for axis, w in ranking.items() if w)
    return (f"Images are ranked by the mix `{describe_by(ranking)}`, i.e. `{mix}`, when no axis is named "
            "(CLI, ComfyUI Best-of-N, diffusers hook).")


def _describe_epoch(best) -> str:
    if isinstance(best, dict):  # per-branch selection; a branch not listed kept its probe or was frozen
        return ", ".join(f"{b} branch {e}" for b, e in best.items())
    return str(best)


def _recipe_ref(recipe: dict, path: bool = False) -> str:
    """The bundled recipe file whose ``name`` is the run's (its stem, or its repository path);
    an ablation variant's run is named ``"<recipe name> [<variant>]"``."""
    from .recipe import RECIPES_DIR

    name, _, variant = str(recipe.get("name")).partition(" [")
    suffix = f" (variant {variant.rstrip(']')})" if variant and path else ""
    for f in sorted(RECIPES_DIR.glob("*.yaml")):
        try:
            if _read_yaml(f).get("name") == name:
                return (f"train/recipes/{f.name}" + suffix) if path else f.stem
        except Exception:  # an unreadable recipe is not ours
            continue
    return f"{recipe.get('name')} (run folder recipe.yaml)" if path else str(recipe.get("name"))


def _data_limits(recipe: dict) -> str:
    import textwrap

    kinds = dict.fromkeys(d["kind"] for d in recipe["data"] if d["kind"] in DATA_LIMITS)
    if "clive" in kinds and ("agiqa3k" in kinds or "agin" in kinds):
        kinds = {("clive+generated" if k == "clive" else k): None for k in kinds}
    return "".join(textwrap.fill(DATA_LIMITS[k], 96, initial_indent="- ", subsequent_indent="  ") + "\n"
                   for k in kinds)


def _describe_heads(cfg) -> str:
    inputs = {"stages": "multi-level feature statistics", "pooled": "the pooled features",
              "logits": "the ImageNet logits",
              "tokens": "token statistics (per block: class token, patch-token mean and std)"}
    def head(b) -> str:
        return ("a linear head" if b.head_activation == "none" else "a two-layer head") + \
            f" on {inputs.get(b.head_input, b.head_input)}"

    tech, rat = head(cfg.technical), head(cfg.rationality)
    if tech == rat:
        return f"each followed by {tech}"
    return f"the technical branch followed by {tech}, the rationality branch by {rat}"


def _describe_scale(recipe: dict) -> str:
    ranges = {tuple(d["rescale"]) for d in recipe["data"] if d.get("rescale")}
    if len(ranges) == 1:
        lo, hi = ranges.pop()
        return (f"The training ratings were mapped linearly from each data set's own scale onto "
                f"{lo:g}-{hi:g}, so technical, rationality and naturalness are read on that scale.")
    return "The training ratings were used on their native scales: " + ", ".join(
        f"{d['name']} {tuple(d['rescale']) if d.get('rescale') else 'native'}" for d in recipe["data"]) + "."


def _describe_tech(cfg) -> str:
    t = cfg.preprocess.technical
    if t.sampling == "fragments":
        return (f"{t.grid}x{t.grid} native-resolution fragments of {t.fragment} px"
                + (", patch partition" if t.partition else ""))
    if not t.partition:
        return f"the whole image resized to {t.size}x{t.size} px"
    return f"{t.size} px resize cut into {t.grid}x{t.grid} patches, patch partition"


def _describe_rat(cfg) -> str:
    r = cfg.preprocess.rationality
    if r.native:
        return f"{r.crop} px native-resolution crop"
    return f"shorter side {r.resize} px, centre crop {r.crop}" if r.resize else f"whole image at {r.crop} px"


def _read_yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())
