"""``python -m train`` (also installed as ``joint-train``).

    python -m train fit       --config RECIPE [--var NAME=VALUE] [--set KEY=VALUE] [--out DIR] [--split I] [--resume]
    python -m train cv        --config RECIPE ...
    python -m train ablate    --config RECIPE [--variants "w/o regularization,L_FS"] ...
    python -m train baselines --config RECIPE [--backbones vgg16,resnet18] [--kinds regressor,fr-regressor] ...
    python -m train recipes                      # list the bundled recipes
    python -m train export RUN --to DIR [--fp32] # ship a run's model with a generated model card
    python -m train plot RUN --to scatter.svg    # predicted-vs-MOS plots of a run's test set
    python -m train crosseval --config RECIPE --models default,RUN/model [--anatomy DIR]   # every model on every set

Several GPUs or machines: ``accelerate launch -m train fit --config ...`` (no code change).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import List, Optional, Sequence

from joint_core.backbones import WeightMappingError
from joint_core.checkpoint import CheckpointError
from joint_core.config import ConfigError
from joint_core.preprocess.images import ImageInputError
from joint_core.preprocess.localizer import LocalizerError

from .datasets.base import DatasetError
from .recipe import RECIPES_DIR, RecipeError, load_recipe


def _kv(items: Sequence[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise RecipeError(f"--var {item!r}: expected NAME=VALUE")
        k, v = item.split("=", 1)
        out[k] = v
    return out


def _split_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--split", type=int, default=0, help="the one split to run (default 0)")
    g.add_argument("--splits", help="several splits, e.g. 0,1,2,3,4 or 'all': each in <out>/split-<i>, "
                                    "mean ± std over them beside")


def _parse_splits(text: str, recipe) -> List[int]:
    from .data import n_splits

    if text.strip().lower() == "all":
        return list(range(n_splits(recipe)))
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise RecipeError(f"--splits: expected comma-separated split numbers or 'all', got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train", description="Train JOINT / JOINT++ and baselines.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", "-c", required=True, help="recipe YAML (a path or a bundled recipe name)")
    common.add_argument("--var", action="append", default=[], metavar="NAME=VALUE", help="fills ${NAME} in the recipe")
    common.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe field, e.g. train.epochs=5 or data.raise.args.root=/data/RAISE/dataset")
    common.add_argument("--out", "-o", help="output folder (default: runs/<recipe name>[/<command>][/split-<i>])")
    common.add_argument("--cache", help="decoded-image cache folder "
                                        "(default: $JOINT_TRAIN_CACHE or ~/.cache/joint/train-cache)")
    common.add_argument("--localizer", help="PAL4VST TorchScript end2end.pt for the artifact-guided partition")
    common.add_argument("--no-progress", action="store_true")
    f = sub.add_parser("fit", parents=[common], help="train on one split")
    f.add_argument("--split", type=int, default=0)
    f.add_argument("--resume", action="store_true", help="continue from the last finished epoch in --out")
    c = sub.add_parser("cv", parents=[common], help="train on every split; mean and std")
    c.add_argument("--resume", action="store_true")
    a = sub.add_parser("ablate", parents=[common], help="the paper's ablation variants (Tables 4-6)")
    a.add_argument("--variants", help="comma-separated variant names (default: all)")
    _split_options(a)
    b = sub.add_parser("baselines", parents=[common], help="single-backbone and NR/FR-AIGCIQA baselines")
    b.add_argument("--backbones", help="comma-separated timm names (default: vgg16,vgg19,resnet18,resnet50,"
                                       "inception_v4,swin_tiny_patch4_window7_224)")
    b.add_argument("--kinds", default="regressor", help="regressor (NR) and/or fr-regressor (FR)")
    b.add_argument("--init", default="timm", help="backbone init: timm, imagenet-package or none")
    _split_options(b)
    x = sub.add_parser("crosseval", parents=[common],
                       help="every model on the test part of every set of the recipe (and the anatomical-error set)")
    x.add_argument("--models", required=True,
                   help="comma-separated model folders or 'default' (the shipped model), the baseline first")
    x.add_argument("--names", help="comma-separated row names for the models (default: from their paths)")
    x.add_argument("--anatomy", help="the ai-human-images repository folder (anatomical-error check)")
    x.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals")
    x.add_argument("--batch-size", type=int, default=16)
    x.add_argument("--device", default="cpu")
    x.add_argument("--split", type=int, default=0)
    sub.add_parser("recipes", help="list the bundled recipes")
    e = sub.add_parser("export", help="ship a run's best model (weights, config, model card)")
    e.add_argument("run", help="a run folder (holds model/, metrics.json, recipe.yaml)")
    e.add_argument("--to", required=True, help="output model folder, e.g. joint_core/weights/default")
    e.add_argument("--fp32", action="store_true", help="keep float32 weights (default: fp16, half the size)")
    e.add_argument("--overwrite", action="store_true", help="replace the model folder --to already holds")
    e.add_argument("--notice", action="append", default=[], metavar="[NAME=]PATH",
                   help="a licence notice file to copy beside the weights (as NAME when given)")
    e.add_argument("--licence", action="append", default=[], help="a licence line for the model card")
    e.add_argument("--trained-with", default="", help="the command that trained the run (for the model card)")
    e.add_argument("--int8", action="append", default=[], metavar="REGEX",
                   help="store the weights whose names match as int8 with per-row scales (large frozen weights "
                        "that came from an int8 source), e.g. '^technical\\.backbone\\.blocks\\.'")
    pl = sub.add_parser("plot", help="predicted-vs-MOS scatter plots of a run's test predictions")
    pl.add_argument("run", help="a run folder (holds predictions.csv)")
    pl.add_argument("--to", required=True, help="output image; the suffix picks the format (.png, .svg, .pdf)")
    return p


# Errors that are the user's input (a recipe, a data set, a file, a checkpoint), reported in one
# line; anything else is a bug in train and keeps its traceback.
USER_ERRORS = (RecipeError, DatasetError, ConfigError, ImageInputError, WeightMappingError, CheckpointError,
               LocalizerError, FileNotFoundError, FileExistsError)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        # our own warnings (e.g. a split without content groups) once each, one line each
        # (deduplicated here: a nested catch_warnings forgets what a "once" filter has shown)
        warnings.filterwarnings("always", category=UserWarning, module=r"train\.")
        default_show, shown = warnings.showwarning, set()

        def show(message, category, filename, lineno, file=None, line=None):
            if "/train/" not in filename.replace("\\", "/"):
                default_show(message, category, filename, lineno, file, line)
            elif str(message) not in shown:
                shown.add(str(message))
                print(f"train: warning: {message}", file=sys.stderr)

        warnings.showwarning = show
        try:
            return _run(args)
        except USER_ERRORS as e:
            print(f"train: error: {e}", file=sys.stderr)
            return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "export":
        from .export import export_run

        out = export_run(Path(args.run), Path(args.to), fp16=not args.fp32, notices=args.notice,
                         licences=args.licence, command=args.trained_with, int8=args.int8,
                         overwrite=args.overwrite)
        print(f"exported {args.run} -> {out}")
        return 0
    if args.command == "plot":
        from .report import plot_predictions

        plot_predictions(Path(args.run) / "predictions.csv", Path(args.to))
        print(f"wrote {args.to}")
        return 0
    if args.command == "recipes":
        for f in sorted(RECIPES_DIR.glob("*.yaml")):
            first = next((line[1:].strip() for line in f.read_text().splitlines() if line.startswith("#")), "")
            print(f"{f.stem:28s} {first}")
        return 0
    from . import experiments

    recipe = load_recipe(args.config, variables=_kv(args.var), sets=args.set)
    base = Path(args.out) if args.out else Path("runs") / experiments._slug(recipe.name)
    kw = dict(progress=not args.no_progress, cache_root=Path(args.cache) if args.cache else None)
    if args.localizer:
        from joint_core.preprocess import build_localizer

        from .recipe import deep_merge, recipe_from_dict

        kw["localizer"] = build_localizer(args.localizer)
        # the exported config records the detector (the scorer then asks for it); the
        # "w/o localization" variant still overrides this back to "none"
        recipe = recipe_from_dict(deep_merge(recipe.to_dict(), {"model": {"config": {"preprocess": {
            "technical": {"localizer": "pal4vst"}}}}}))
    if args.command == "crosseval":
        from .crosseval import crosseval

        out = Path(args.out) if args.out else Path("runs") / "crosseval"
        crosseval(recipe, [m.strip() for m in args.models.split(",") if m.strip()], out, anatomy=args.anatomy,
                  split=args.split, bootstrap=args.bootstrap, batch_size=args.batch_size, device=args.device,
                  labels=[n.strip() for n in args.names.split(",")] if args.names else None,
                  progress=not args.no_progress)
        print(f"results in {out}/crosseval.md")
        return 0
    if args.command == "fit":
        if args.split and not args.out:
            base = base / f"split-{args.split}"
        res = experiments.fit(recipe, base, split=args.split, resume=args.resume, **kw)
        print(f"best epoch {res.best_epoch}; results in {res.out_dir}/results.md")
    elif args.command == "cv":
        out = base if args.out else base / "cv"
        experiments.cv(recipe, out, resume=args.resume, **kw)
        print(f"results in {out}/cv.md")
    elif args.command in ("ablate", "baselines"):
        out = base if args.out else base / args.command
        if args.command == "ablate":
            kw["variants"] = [v.strip() for v in args.variants.split(",")] if args.variants else None
        else:
            kw.update(backbones=args.backbones.split(",") if args.backbones else None, kinds=args.kinds.split(","),
                      init=args.init)
        fn = getattr(experiments, args.command)
        if args.splits:
            experiments.over_splits(args.command, recipe, out, _parse_splits(args.splits, recipe), **kw)
        else:
            if args.split and not args.out:
                out = out / f"split-{args.split}"
            fn(recipe, out, split=args.split, **kw)
        print(f"results in {out}/{'ablation' if args.command == 'ablate' else 'baselines'}.md")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
