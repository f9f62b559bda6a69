"""`curves.png`: training loss, learning rate and validation mIoU of a run, from MMEngine's logs.

MMEngine's LocalVisBackend appends one JSON line per logged step to
`RUN/<timestamp>/vis_data/scalars.json`; every start or resume writes a new timestamped folder.
A resume re-trains from its checkpoint, so a later segment replaces what an earlier one logged
from its first step on. Lines cut short by a kill are skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

CURVES_NAME = "curves.png"


@dataclass
class Curves:
    loss: dict[int, float] = field(default_factory=dict)
    lr: dict[int, float] = field(default_factory=dict)
    miou: dict[int, float] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.loss or self.miou)


def _read_segment(path: Path) -> Curves:
    seg = Curves()
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return seg
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if not isinstance(row, dict) or "step" not in row:
            continue
        step = int(row["step"])
        if "mIoU" in row:
            seg.miou[step] = float(row["mIoU"])
        elif "loss" in row:
            seg.loss[step] = float(row["loss"])
            if "lr" in row:
                seg.lr[step] = float(row["lr"])
    return seg


def read_curves(work_dir: str | Path) -> Curves:
    """All logged segments of a run, merged in order (a later segment wins from its first step)."""
    merged = Curves()
    for path in sorted(Path(work_dir).glob("*/vis_data/scalars.json")):
        seg = _read_segment(path)
        steps = list(seg.loss) + list(seg.miou)
        if not steps:
            continue
        start = min(steps)
        for name in ("loss", "lr", "miou"):
            target: dict[int, float] = getattr(merged, name)
            for step in [s for s in target if s >= start]:
                del target[step]
            target.update(getattr(seg, name))
    return merged


def write_curves(work_dir: str | Path) -> Path | None:
    """Plot loss, LR and val mIoU to `work_dir/curves.png` (replaced atomically); None if nothing is logged yet."""
    import io

    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from vocseg.files import owned_write_bytes

    curves = read_curves(work_dir)
    if not curves:
        return None
    fig = Figure(figsize=(12, 3.4), dpi=100)
    FigureCanvasAgg(fig)
    panels = (("training loss", curves.loss, "tab:blue"), ("learning rate", curves.lr, "tab:orange"), ("val mIoU (%)", curves.miou, "tab:green"))
    for i, (title, data, color) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1)
        steps = sorted(data)
        ax.plot(steps, [data[s] for s in steps], color=color, marker="o" if len(steps) < 30 else None, markersize=3)
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        if title == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    fig.tight_layout()
    buf = io.BytesIO()
    with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):  # texts are data, never mathtext
        fig.savefig(buf, format="png")
    target = Path(work_dir) / CURVES_NAME
    owned_write_bytes(target, buf.getvalue())
    return target
