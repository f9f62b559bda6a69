"""MMEngine's process-wide instances (logger, message hub, visualizer), one set per run."""

from __future__ import annotations

import os
import time
from typing import Any


def unique_instance_names(cfg: Any, stem: str) -> None:
    """MMEngine keeps one logger, message hub and visualizer per name for the whole process, named
    after the config file and the second the run started. Two runs in one process (tests, or a
    notebook) in the same second would share them: logs in the other run's folder, its best
    score. A name of its own for each run."""
    cfg.experiment_name = f"{stem}-{os.getpid()}-{time.monotonic_ns()}"
    visualizer = cfg.get("visualizer")
    if isinstance(visualizer, dict):
        visualizer.pop("name", None)  # then named after the experiment
