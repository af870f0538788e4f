"""Resume state: what ``--resume`` needs to continue a run exactly where it stopped.

``last/`` holds the weights (through :mod:`joint_core.checkpoint`, hash-checked like every
weights file), the optimizer, scheduler, selection records and history, and the random
generators' states: a resumed run draws the same batches and augmentations as one that was
never interrupted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from joint_core.checkpoint import load_weights, save_weights

from .selection import Selector

STATE_WEIGHTS = "weights.safetensors"


def loader_generators(dl: torch.utils.data.DataLoader) -> List[torch.Generator]:
    """The random generators that decide a loader's batch order (its own, its sampler's, its
    batch sampler's), each once. Accelerate's prepared loader shares these objects."""
    found: List[torch.Generator] = []
    for owner in (dl, dl.sampler, dl.batch_sampler, getattr(dl.batch_sampler, "sampler", None)):
        g = getattr(owner, "generator", None)
        if isinstance(g, torch.Generator) and all(g is not f for f in found):
            found.append(g)
    return found


def rng_state(loader_generators: Sequence[torch.Generator]) -> Dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "loader": [g.get_state() for g in loader_generators]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Optional[Dict[str, Any]], loader_generators: Sequence[torch.Generator]) -> bool:
    """Put the generators back where the interrupted run left them; False for a resume state
    written before they were saved (or by a loader of another shape)."""
    if not state or len(state.get("loader", [])) != len(loader_generators):
        return False
    torch.set_rng_state(state["torch"])
    for g, s in zip(loader_generators, state["loader"]):
        g.set_state(s)
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    return True


def save_state(folder: Path, task, opt, sched, epoch: int, selector: Selector,
                history: list, rng: Optional[Dict[str, Any]] = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(task.model.state_dict(), folder / STATE_WEIGHTS)
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch,
                "rng": rng, **selector.state()}, folder / "state.pt")
    (folder / "history.json").write_text(json.dumps(history))


def load_state(folder: Path, task, opt, sched):
    load_weights(task.model, folder / STATE_WEIGHTS)
    st = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
    opt.load_state_dict(st["optimizer"])
    sched.load_state_dict(st["scheduler"])
    history = json.loads((folder / "history.json").read_text())
    return st["epoch"], st, history
