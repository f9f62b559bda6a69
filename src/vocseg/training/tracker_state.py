"""`RUN/trackers.json`: what lets every start of a run log to the same tracker runs. No heavy imports.

Holds the W&B run id and the MLflow run id (and tracking URI) chosen at the first start, and the
trackers a `vocseg resume --log-to` chose (they replace the ones config.py names, which stays as
written). Written by vocseg only, atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vocseg.files import owned_write_text

STATE_NAME = "trackers.json"


def read_state(run_dir: Path) -> dict[str, Any]:
    """The file's object, or {} when there is none (or it is damaged: ids are then chosen anew)."""
    try:
        data = json.loads((run_dir / STATE_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def update_state(run_dir: Path, **values: Any) -> None:
    """Set top-level keys, keeping the others."""
    owned_write_text(run_dir / STATE_NAME, json.dumps({**read_state(run_dir), **values}, indent=1, sort_keys=True) + "\n")
