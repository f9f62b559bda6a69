"""What a run was trained on and how long, read from the run's own files (no heavy imports).

The sources, in order: `RUN/recipe.json` (written by `vocseg config` / `train`), the data root's
`vocseg_demo.json` marker (written by `vocseg prepare --demo`), and for runs without a recipe the
config's training `data_root` (mmseg's `VOCdevkit/VOC2012`, two levels below the data root).
Used by `predict` (the demo caveat), `report` and `compare` (explanations derived from the run).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vocseg.runs.folders import CONFIG_NAME, RECIPE_NAME

DEMO_CAVEAT = (
    "trained on vocseg's synthetic demo shapes, not on photos: its labels on real photos are meaningless"
)

# The official list sizes (VOC 2012 train, VOC train + SBD aug): other sizes mean a subset or own lists.
VOC_TRAIN_IMAGES, VOC_TRAINAUG_IMAGES = 1464, 10582


def is_demo_root(data_root: str | Path) -> bool:
    """True when `data_root` (or the data root above a `VOCdevkit/VOC2012` path) carries the demo marker."""
    from vocseg.data.demo import DEMO_MARKER  # numpy at import: not at `vocseg --help`

    path = Path(data_root).expanduser()
    for candidate in (path, path.parent, path.parent.parent):
        if (candidate / DEMO_MARKER).is_file():
            return True
    return False


def read_recipe_fields(run: Path) -> dict[str, Any]:
    """`RUN/recipe.json` as a plain dict ({} when it is missing or unreadable)."""
    try:
        data = json.loads((run / RECIPE_NAME).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def config_data_root(run: Path) -> str:
    """The training data root named in `RUN/config.py` (text search: no config execution), or ""."""
    try:
        text = (run / CONFIG_NAME).read_text(errors="replace")
    except OSError:
        return ""
    m = re.search(r"""['"]?data_root['"]?\s*[:=]\s*['"]([^'"]+)['"]""", text)
    return m.group(1) if m else ""


def run_data_root(run: Path) -> str:
    """The data root the run trained on: recipe.json's, else the config's ("" when neither says)."""
    return str(read_recipe_fields(run).get("data_root") or "") or config_data_root(run)


def trained_on_demo(run: Path | None, cfg: Any = None) -> bool:
    """True when the run (or, for a bare checkpoint, its loaded mmengine config) trained on demo data."""
    roots: list[str] = []
    if run is not None:
        roots.append(run_data_root(run))
    if cfg is not None:
        try:
            roots.append(str(cfg.train_dataloader.dataset.get("data_root", "")))
        except (AttributeError, KeyError, TypeError):
            pass
    return any(r and is_demo_root(r) for r in roots)


@dataclass(frozen=True)
class DataSource:
    """Which data a run trained on. kind: demo | voc | voc+sbd | own; `images` is the training list size when known."""

    kind: str
    images: int | None = None

    @property
    def label(self) -> str:
        n = f" ({self.images:,} images)" if self.images else ""
        return {
            "demo": f"vocseg's synthetic demo data{n}: shapes with exact masks, not photos",
            "voc": f"VOC 2012 train{n}: fine masks with a void band",
            "voc+sbd": f"VOC train + SBD aug{n}: SBD's masks are coarser polygons",
        }.get(self.kind, f"own or subset lists{n}")

    @property
    def has_sbd_polygons(self) -> bool:
        return self.kind == "voc+sbd"


def data_source(data_root: str, aug: bool, train_images: int | None) -> DataSource:
    """demo (marker), voc / voc+sbd (official list sizes, or unknown size), else own lists."""
    if data_root and is_demo_root(data_root):
        return DataSource("demo", train_images)
    official = VOC_TRAINAUG_IMAGES if aug else VOC_TRAIN_IMAGES
    if train_images is not None and train_images != official:
        return DataSource("own", train_images)
    return DataSource("voc+sbd" if aug else "voc", train_images)
