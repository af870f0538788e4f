"""``joint info``: a model's configuration, size and origin; ``--list``: every loadable model."""

from __future__ import annotations

import argparse
import json

from ..checkpoint import MODEL_CARD_NAME, list_models, read_config_dict
from ..config import list_presets
from .common import EXIT_OK, load_scorer


def register(sub) -> argparse.ArgumentParser:
    i = sub.add_parser("info", help="show a model's configuration, size and origin, or list the models",
                       description="Show a model's configuration, size and origin. With --list: the trained "
                                   "models that can be loaded here without a download.")
    i.add_argument("model", nargs="?", help="model folder or hub id (default: the resolution order)")
    i.add_argument("--list", action="store_true",
                   help="list the loadable models ($JOINT_MODEL, the user cache, the local hub cache, the shipped "
                        "default); '*' marks the one used when no model is named")
    i.add_argument("--json", action="store_true", help="print JSON")
    return i


def run(args: argparse.Namespace) -> int:
    if args.list:
        return _list(args.json)
    scorer = load_scorer(args.model, device="cpu", dtype="float32")
    info = scorer.info()
    assert scorer.source is not None
    info["config"] = read_config_dict(scorer.source.path)
    if args.json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
    width = max(len(k) for k in info)
    for k, v in info.items():
        if k == "config":
            continue
        if k == "parameters":
            v = f"{v:,} ({v / 1e6:.1f} M)"
        print(f"{k:<{width}}  {v}")
    card = scorer.source.path / MODEL_CARD_NAME
    if card.is_file():
        print(f"{'model card':<{width}}  {card}")
    return EXIT_OK


def _list(as_json: bool) -> int:
    models = list_models()
    if as_json:
        print(json.dumps({"models": [{"name": m.name, "path": str(m.path), "origin": m.origin,
                                      "description": m.description, "default": m.is_default} for m in models],
                          "presets": list_presets()}, indent=2))
        return EXIT_OK
    if not models:
        print("no trained model found (see `joint score --help` for the resolution order)")
    for m in models:
        print(f"{'*' if m.is_default else ' '} {m.name}  [{m.origin}]  {m.description}")
        if m.name != str(m.path):
            print(f"    {m.path}")
    print(f"architecture presets (untrained, for from_config and training): {', '.join(list_presets())}")
    return EXIT_OK
