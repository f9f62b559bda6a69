"""The result of one evaluation (percentages, as mmseg prints them) and its files: JSON and CSV."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vocseg.errors import VocsegError

METRIC_KEYS = ("IoU", "Acc", "Dice", "Precision", "Recall", "Fscore")


@dataclass
class EvalResult:
    """Percentages, as mmseg prints them. `per_class[name]` has IoU and Acc (and Dice, Precision, ...)."""

    mIoU: float
    mAcc: float
    aAcc: float
    per_class: dict[str, dict[str, float]]
    checkpoint: str = ""
    split: str = "val"
    num_images: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    confusion: list[list[int]] | None = None  # rows: true class, columns: predicted class (pixels)

    def to_json(self) -> dict[str, Any]:
        def clean(v: Any) -> Any:
            return None if v is None or (isinstance(v, float) and math.isnan(v)) else v

        data: dict[str, Any] = {
            "mIoU": self.mIoU,
            "mAcc": self.mAcc,
            "aAcc": self.aAcc,
            "per_class": {c: {k: clean(v) for k, v in m.items()} for c, m in self.per_class.items()},
            "checkpoint": self.checkpoint,
            "split": self.split,
            "num_images": self.num_images,
            **self.extra,
        }
        if self.confusion is not None:
            data["confusion"] = {"rows": "true class", "columns": "predicted class", "classes": list(self.per_class), "pixels": self.confusion}
        return data


def write_json(result: EvalResult, path: Path, *, force: bool = False) -> None:
    from vocseg.files import write_text_atomic

    write_text_atomic(path, json.dumps(result.to_json(), indent=1) + "\n", force=force)


def csv_text(result: EvalResult) -> str:
    """One row per class (percent; empty where mmseg's value is NaN: the class is in neither map), then the means."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["class", *METRIC_KEYS, "gt_pixels", "pred_pixels"])

    def cell(v: Any) -> str:
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else (f"{v:.2f}" if isinstance(v, float) else str(v))

    for name, vals in result.per_class.items():
        writer.writerow([name, *(cell(vals.get(k)) for k in METRIC_KEYS), cell(vals.get("gt_pixels")), cell(vals.get("pred_pixels"))])
    means = result.extra.get("means", {})
    writer.writerow(["mean", cell(result.mIoU), cell(result.mAcc), *(cell(means.get(f"m{k}")) for k in METRIC_KEYS[2:]), "", ""])
    writer.writerow(["aAcc", cell(result.aAcc), "", "", "", "", "", "", ""])
    return buf.getvalue()


def write_csv(result: EvalResult, path: Path, *, force: bool = False) -> None:
    from vocseg.files import write_text_atomic

    write_text_atomic(path, csv_text(result), force=force)


def load_result(path: Path) -> EvalResult:
    """An eval JSON back into an EvalResult (a one-line error if it is not one)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VocsegError(f"{path} is not readable JSON ({exc}).", "Pass a file written by `vocseg eval --json`.") from None
    if not isinstance(data, dict) or not isinstance(data.get("per_class"), dict) or not all(k in data for k in ("mIoU", "mAcc")):
        raise VocsegError(f"{path} is not an eval result (no mIoU/mAcc/per_class).", "Pass a file written by `vocseg eval --json`.")
    known = {"mIoU", "mAcc", "aAcc", "per_class", "checkpoint", "split", "num_images", "confusion"}
    confusion = data.get("confusion", {}).get("pixels") if isinstance(data.get("confusion"), dict) else None
    return EvalResult(
        mIoU=float(data["mIoU"]),
        mAcc=float(data["mAcc"]),
        aAcc=float(data.get("aAcc") or float("nan")),
        per_class=data["per_class"],
        checkpoint=str(data.get("checkpoint", "")),
        split=str(data.get("split", "val")),
        num_images=int(data.get("num_images") or 0),
        extra={k: v for k, v in data.items() if k not in known},
        confusion=confusion,
    )
