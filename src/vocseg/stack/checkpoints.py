"""Checkpoints are untrusted input: load them safely and check they fit the model before use.

MMEngine's own loading is non-strict: a checkpoint for another number of classes or another
backbone loads with a warning in the log and a model that is partly random. vocseg refuses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vocseg.errors import VocsegError
from vocseg.stack.compat import load_checkpoint_file

# In a training checkpoint's message hub: the iteration whose validation a stop cut off (or came
# before); the resumed run validates it first (`engine.ResumableIterLoop`, `resuming`).
VAL_PENDING_KEY = "vocseg_val_pending"


def state_dict_of(checkpoint: Any) -> dict[str, Any]:
    """The weights of an MMEngine (`state_dict`), plain (`model`) or bare state-dict checkpoint."""
    if isinstance(checkpoint, dict):
        for key in ("state_dict", "model"):
            if isinstance(checkpoint.get(key), dict):
                checkpoint = checkpoint[key]
                break
    if not isinstance(checkpoint, dict) or not checkpoint:
        raise VocsegError("The checkpoint holds no model weights.", "Use a .pth written by vocseg/MMEngine/mmseg.")
    return {k[len("module.") :] if k.startswith("module.") else k: v for k, v in checkpoint.items()}


@dataclass(frozen=True)
class FitReport:
    missing: list[str]
    unexpected: list[str]
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]]

    @property
    def fits(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)


def compare_state_dicts(expected: dict[str, Any], given: dict[str, Any]) -> FitReport:
    """Keys and shapes of `given` against `expected` (BatchNorm's num_batches_tracked ignored)."""

    def keep(k: str) -> bool:
        return not k.endswith("num_batches_tracked")

    exp = {k: tuple(v.shape) for k, v in expected.items() if keep(k)}
    got = {k: tuple(getattr(v, "shape", ())) for k, v in given.items() if keep(k)}
    return FitReport(
        missing=sorted(set(exp) - set(got)),
        unexpected=sorted(set(got) - set(exp)),
        mismatched=sorted((k, got[k], exp[k]) for k in set(exp) & set(got) if exp[k] != got[k]),
    )


def describe_misfit(report: FitReport, limit: int = 3) -> str:
    parts = []
    if report.mismatched:
        k, got, exp = report.mismatched[0]
        parts.append(f"{len(report.mismatched)} shape mismatches (e.g. {k}: {got} vs model {exp})")
    if report.missing:
        parts.append(f"{len(report.missing)} missing keys (e.g. {', '.join(report.missing[:limit])})")
    if report.unexpected:
        parts.append(f"{len(report.unexpected)} unused keys (e.g. {', '.join(report.unexpected[:limit])})")
    return "; ".join(parts)


def load_state_dict_checked(path: Path, model: Any) -> dict[str, Any]:
    """Load `path` safely and refuse it unless it fits `model` exactly."""
    checkpoint = load_checkpoint_file(path)
    weights = state_dict_of(checkpoint)
    report = compare_state_dicts(model.state_dict(), weights)
    if not report.fits:
        num_classes = getattr(getattr(model, "decode_head", None), "num_classes", None)
        raise VocsegError(
            f"Checkpoint {path} does not fit this model ({describe_misfit(report)}).",
            f"Use a checkpoint trained for this config{f' ({num_classes} classes)' if num_classes else ''}, "
            "or pass the config it was trained with (--config).",
        )
    return checkpoint
