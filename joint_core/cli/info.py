"""``joint info``: a model's configuration, size and origin."""

from __future__ import annotations

import argparse
import json

from ..checkpoint import MODEL_CARD_NAME, read_config_dict
from .common import EXIT_OK, load_scorer


def register(sub) -> argparse.ArgumentParser:
    i = sub.add_parser("info", help="show a model's configuration, size and origin")
    i.add_argument("model", nargs="?", help="model folder or hub id (default: the resolution order)")
    i.add_argument("--json", action="store_true", help="print JSON")
    return i


def run(args: argparse.Namespace) -> int:
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
