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


def two_decimals(value: Any) -> float:
    """A percentage as mmseg prints it: mmseg rounds its float32 arrays (`np.round(x * 100, 2)`:
    0.11 is stored as 0.10999999940395355); this is the same number with two decimals. NaN stays NaN."""
    v = float(value)
    return v if math.isnan(v) else round(v, 2)


def format_value(value: Any, digits: int = 2, missing: str = "-") -> str:
    """A value for a table or a message: floats with `digits` decimals, `missing` for None or NaN
    (undefined: 0/0, a class in neither map), anything else as `str`."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


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


@dataclass(frozen=True)
class Evaluation:
    """One evaluation: its `result` (all that its JSON publishes) and where its files go, which
    the JSON does not hold: `out_dir`, `tag` (the file stem: <tag>.json, <tag>.csv, <tag>_iou.png)
    and the data check's warnings (EXIF-rotated images)."""

    result: EvalResult
    out_dir: Path
    tag: str
    data_warnings: tuple[str, ...] = ()


def most_confused_with(result: EvalResult, index: int) -> str:
    """The class taking the largest share of class `index`'s true pixels, other than itself, with that
    share of the row of the confusion matrix: "background 30%", "bottle <1%" (never "0%"); "" when the
    result has no confusion matrix, the class has no true pixels or none of them went elsewhere.
    `eval`'s table and the report's both show this."""
    if not result.confusion:
        return ""
    row = result.confusion[index]
    total = sum(row)
    others = [(v, j) for j, v in enumerate(row) if j != index]
    if not total or not others:
        return ""
    value, j = max(others)
    if not value:
        return ""
    share = 100 * value / total
    return f"{list(result.per_class)[j]} {'<1' if share < 0.5 else f'{share:.0f}'}%"


def write_json(result: EvalResult, path: Path, *, force: bool = False) -> None:
    from vocseg.files import owned_write_text

    owned_write_text(path, json.dumps(result.to_json(), indent=1) + "\n", force=force)


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
    from vocseg.files import owned_write_text

    owned_write_text(path, csv_text(result), force=force)


REWRITE_HINT = "Run `vocseg eval` on the run again to rewrite it, or move the file away."


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def eval_json_problem(data: Any) -> str | None:
    """What makes `data` (a parsed eval JSON) unusable, in a few words, or None when it fits what
    `write_json` writes: numbers (or null/NaN) for mIoU, mAcc, aAcc; `per_class` mapping class
    names to {metric: number or null}; `gt_pixels`/`pred_pixels` whole and >= 0; a confusion
    matrix, if any, of whole pixel counts with one row and one column per class."""
    if not isinstance(data, dict):
        return f"it holds a JSON {type(data).__name__}, not an object"
    for key in ("mIoU", "mAcc"):
        if key not in data:
            return f"no {key}"
    for key in ("mIoU", "mAcc", "aAcc"):
        v = data.get(key)
        if v is not None and not _is_number(v):
            return f"{key} is {v!r:.40}, not a number"
    table = data.get("per_class")
    if not isinstance(table, dict) or not table:
        return "no per_class table"
    for name, row in table.items():
        if not isinstance(row, dict):
            return f"per_class[{name!r:.40}] is not a table of metrics"
        for key, v in row.items():
            if v is not None and not _is_number(v):
                return f"per_class[{name!r:.40}].{key} is {v!r:.40}, not a number"
            if key in ("gt_pixels", "pred_pixels") and v is not None and (not isinstance(v, int) or v < 0):
                return f"per_class[{name!r:.40}].{key} is {v!r:.40}, not a pixel count"
    for key, kind in (("checkpoint", str), ("split", str)):
        if key in data and not isinstance(data[key], kind):
            return f"{key} is {data[key]!r:.40}, not text"
    if "num_images" in data and not (isinstance(data["num_images"], int) and not isinstance(data["num_images"], bool) and data["num_images"] >= 0):
        return f"num_images is {data['num_images']!r:.40}, not a count"
    confusion = data.get("confusion")
    if confusion is not None:
        pixels = confusion.get("pixels") if isinstance(confusion, dict) else None
        n = len(table)
        if not isinstance(pixels, list) or len(pixels) != n:
            return f"confusion.pixels is not a {n} x {n} matrix (one row per class)"
        for row in pixels:
            if not isinstance(row, list) or len(row) != n or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in row):
                return f"confusion.pixels is not a {n} x {n} matrix of pixel counts"
    return None


def load_result(path: Path) -> EvalResult:
    """An eval JSON back into an EvalResult; a one-line VocsegError naming the file when it is not
    readable JSON or not shaped as `write_json` writes it (`eval_json_problem`)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VocsegError(f"{path} is not readable JSON ({exc}).", REWRITE_HINT) from None
    problem = eval_json_problem(data)
    if problem is not None:
        raise VocsegError(f"{path} is not an eval result as `vocseg eval` writes it: {problem}.", REWRITE_HINT)
    known = {"mIoU", "mAcc", "aAcc", "per_class", "checkpoint", "split", "num_images", "confusion"}
    confusion = data.get("confusion", {}).get("pixels") if isinstance(data.get("confusion"), dict) else None

    def number(v: Any) -> float:
        return float("nan") if v is None else float(v)

    return EvalResult(
        mIoU=number(data["mIoU"]),
        mAcc=number(data["mAcc"]),
        aAcc=number(data.get("aAcc")),
        per_class=data["per_class"],
        checkpoint=str(data.get("checkpoint", "")),
        split=str(data.get("split", "val")),
        num_images=int(data.get("num_images") or 0),
        extra={k: v for k, v in data.items() if k not in known},
        confusion=confusion,
    )
