"""Experiment trackers (`--log-to tensorboard,wandb,mlflow`): names, extras, and the config entries.

Facts only, no heavy imports: which trackers exist, which optional extra installs each, whether
it is installed (checked before a run folder is written), and the MMEngine visualization backend
dicts a config names. The backends themselves (thin subclasses of MMEngine's
`TensorboardVisBackend`, `WandbVisBackend`, `MLflowVisBackend`) are in
`vocseg.training.trackers`.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

from vocseg.errors import VocsegError


@dataclass(frozen=True)
class Tracker:
    name: str  # as written after --log-to
    backend: str  # the MMEngine visualization backend vocseg registers (VISBACKENDS)
    module: str  # the package that must be importable
    extra: str  # pip extra of vocseg that installs it


TRACKERS: dict[str, Tracker] = {
    t.name: t
    for t in (
        # torch.utils.tensorboard writes the event files; it needs the `tensorboard` package.
        Tracker("tensorboard", "VocsegTensorboardVisBackend", "tensorboard", "tensorboard"),
        Tracker("wandb", "VocsegWandbVisBackend", "wandb", "wandb"),
        Tracker("mlflow", "VocsegMLflowVisBackend", "mlflow", "mlflow"),
    )
}
TRACKER_HOOK = "VocsegTrackerHook"  # per-class IoU to the trackers after each validation
LOG_TO_HINT = f"Use a comma-separated subset of {', '.join(TRACKERS)}, or none."


def parse_log_to(text: str | None) -> tuple[str, ...]:
    """`--log-to tensorboard,wandb` -> ('tensorboard', 'wandb'), in vocseg's order, each once.

    Raises VocsegError on an unknown name. `none` or an empty string -> ().
    """
    if text is None:
        return ()
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    if names in ([], ["none"]):
        return ()
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise VocsegError(f"--log-to {text!r}: unknown tracker {', '.join(repr(u) for u in unknown)}.", LOG_TO_HINT)
    return tuple(n for n in TRACKERS if n in names)


def check_installed(names: tuple[str, ...] | list[str]) -> None:
    """Refuse trackers whose package is missing, naming the extra that installs it (before anything is written)."""
    find_spec = importlib.util.find_spec
    missing = [TRACKERS[n] for n in names if find_spec(TRACKERS[n].module) is None]
    if missing:
        extras = ",".join(t.extra for t in missing)
        raise VocsegError(
            f"--log-to {','.join(t.name for t in missing)} needs the {' and '.join(t.module for t in missing)} package, which is not installed.",
            f"Install it with: pip install \"vocseg[{extras}]\", or log without it (--log-to with the others, or none).",
        )


def backend_configs(names: tuple[str, ...] | list[str]) -> list[dict[str, Any]]:
    """The `vis_backends` entries for the trackers (LocalVisBackend, which writes scalars.json, not included)."""
    return [dict(type=TRACKERS[n].backend) for n in names]


def trackers_of_backends(vis_backends: list[Any] | None) -> tuple[str, ...]:
    """The tracker names a config's `visualizer.vis_backends` list holds (others are ignored)."""
    by_backend = {t.backend: t.name for t in TRACKERS.values()}
    found = {by_backend[b.get("type")] for b in vis_backends or [] if isinstance(b, dict) and b.get("type") in by_backend}
    return tuple(n for n in TRACKERS if n in found)
