"""The flags' thresholds, in a module of their own: `vocseg compare --help` shows them as defaults,
and `vocseg --help` must not import the comparison code (benchmarks/startup.py)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Thresholds:
    """The flags' thresholds (percentage points, or a ratio of areas): `vocseg compare`'s options,
    the report's flags and the sentences that explain them all read this one object."""

    min_change: float = 3.0  # over-filled: IoU down and Acc up by at least this many points against the baseline
    area_limit: float = 1.5  # over-filled: predicted area at least this many times the true area
    gap: float = 10.0  # memorisation: train mIoU at least this many points above val
    weak_margin: float = 10.0  # weak: class IoU at least this many points below its run's mIoU in every result

    def to_json(self) -> dict[str, float]:
        return asdict(self)


DEFAULT_THRESHOLDS = Thresholds()
