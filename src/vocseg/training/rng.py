"""Random-number streams: saved with every checkpoint, restored on resume, untouched by validation.

`VocsegRngStateHook` stores every process's RNG states in checkpoints and restores them."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_dist_info, is_distributed
from mmengine.hooks import Hook
from mmseg.registry import HOOKS


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])



_outer_rng_states: list[dict[str, Any]] = []  # training RNG states while inside `preserved_rng`


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block without moving this process's training RNG streams (python, numpy, torch, CUDA).

    A checkpoint saved inside the block (MMEngine saves `iter_N.pth` again after a validation
    that found a new best) stores the training streams as they were on entry.
    """
    saved = rng_state()
    _outer_rng_states.append(saved)
    try:
        yield
    finally:
        _outer_rng_states.pop()
        set_rng_state(saved)


def training_rng_state() -> dict[str, Any]:
    """The RNG state the training stream continues from (outside any `preserved_rng` block)."""
    return _outer_rng_states[0] if _outer_rng_states else rng_state()



def gather_rng_states(runner: Any) -> None:
    """Collect every rank's RNG state (a collective: all ranks call it) for the next save."""
    state = training_rng_state()
    runner._vocseg_rng_states = all_gather_object(state) if is_distributed() else [state]



@HOOKS.register_module(name="VocsegRngStateHook")
class RngStateHook(Hook):
    """Every rank's RNG state (dropout and the like) travels with the checkpoint."""

    priority = "VERY_LOW"

    def before_save_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        # Gathered by VocsegCheckpointHook on all ranks; this method runs on rank 0 only.
        states = getattr(runner, "_vocseg_rng_states", None)
        runner._vocseg_rng_states = None
        checkpoint["vocseg_rng"] = states if states else [training_rng_state()]

    def after_load_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        states = checkpoint.get("vocseg_rng")
        rank, world = get_dist_info()
        if not states or len(states) != world:
            return  # another process count: the streams cannot continue one-to-one
        set_rng_state(states[rank])
