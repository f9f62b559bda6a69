"""Training: launching processes, the MMEngine components (loop, sampler, hooks), run folders and resuming.

The commands call `start` and `resume` (`vocseg.training.entry`); the names are imported on first
use, so a training process importing `vocseg.training.<module>` does not load the launcher.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vocseg.training.entry import ResumeOptions, RunOutcome, resume, start
    from vocseg.training.launch import LaunchOptions

_FACE = {"start": "entry", "resume": "entry", "ResumeOptions": "entry", "RunOutcome": "entry", "LaunchOptions": "launch"}
__all__ = ["LaunchOptions", "ResumeOptions", "RunOutcome", "resume", "start"]


def __getattr__(name: str) -> Any:
    if name not in _FACE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_FACE[name]}"), name)
