"""Error galleries: per class, the images where it is worst, chosen in the eval pass.

For every evaluated image the eval pass records, per class c, three pixel counts over the
labelled pixels (label != 255, as mmseg's IoUMetric counts them): intersection I_c (true c and
predicted c), predicted area P_c and true area L_c. From them:

- per-image IoU of c = I_c / (P_c + L_c - I_c), defined where c is true or predicted;
- a *missed* image for c: c is present (L_c > 0) and not perfectly segmented; worst = lowest
  IoU first, then the most wrong pixels (P_c + L_c - 2 I_c);
- a *false alarm* image for c: c is absent (L_c == 0) but predicted (P_c > 0); worst = most
  predicted pixels first.

Each class's gallery holds at most `limit` images (4 by default): up to half of them false
alarms when there are any, the rest missed images (`gallery_for_class`). `WorstImages` keeps only
the candidates that can still enter a gallery (2 x limit per class) while the images stream
past, so its memory does not grow with the split. Pure numpy, no heavy imports.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_LIMIT = 4  # images per class in a gallery
MISSED, FALSE_ALARM = "missed", "false alarm"


def image_counts(pred: np.ndarray, label: np.ndarray, num_classes: int, ignore_index: int = 255) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(intersection, predicted area, true area) per class of one image, in pixels.

    pred, label: (H, W) integer class maps of the same shape. Pixels whose label is
    `ignore_index` (or outside 0..num_classes-1) are not counted, as in mmseg's IoUMetric.
    Returns three int64 arrays of length num_classes.
    """
    if pred.shape != label.shape:
        raise ValueError(f"prediction {pred.shape} and label {label.shape} differ in shape")
    keep = (label != ignore_index) & (label >= 0) & (label < num_classes)
    p = pred[keep].astype(np.int64)
    t = label[keep].astype(np.int64)
    inter = np.bincount(t[p == t], minlength=num_classes)[:num_classes]
    pred_area = np.bincount(p[(p >= 0) & (p < num_classes)], minlength=num_classes)[:num_classes]
    true_area = np.bincount(t, minlength=num_classes)[:num_classes]
    return inter, pred_area, true_area


def image_iou(inter: int, pred: int, true: int) -> float | None:
    """Per-image IoU (0..1) of one class; None where the class is neither true nor predicted."""
    union = pred + true - inter
    return None if union <= 0 else inter / union


@dataclass(frozen=True, order=True)
class Entry:
    """One image in a class's gallery, with the numbers that put it there."""

    image_id: str
    kind: str  # MISSED or FALSE_ALARM
    iou: float  # the class's per-image IoU (0..1); 0 for a false alarm
    inter: int
    pred: int
    true: int

    @property
    def wrong(self) -> int:
        """Pixels wrong for this class: false negatives + false positives."""
        return self.pred + self.true - 2 * self.inter

    def to_json(self) -> dict[str, Any]:
        return {"id": self.image_id, "kind": self.kind, "IoU": round(100 * self.iou, 2), "intersection": self.inter, "pred_pixels": self.pred, "gt_pixels": self.true}


def _missed_key(e: Entry) -> tuple[float, int, str]:
    return (e.iou, -e.wrong, e.image_id)  # lowest IoU, then most wrong pixels, then id (stable)


def _alarm_key(e: Entry) -> tuple[int, str]:
    return (-e.pred, e.image_id)  # most predicted pixels first


def candidates(image_id: str, inter: np.ndarray, pred: np.ndarray, true: np.ndarray) -> dict[int, Entry]:
    """class index -> the Entry this image would be in that class's gallery (perfect classes have none)."""
    found: dict[int, Entry] = {}
    for c in np.nonzero((pred > 0) | (true > 0))[0]:
        i, p, t = int(inter[c]), int(pred[c]), int(true[c])
        if t > 0 and p + t - 2 * i > 0:
            found[int(c)] = Entry(image_id, MISSED, i / (p + t - i), i, p, t)
        elif t == 0 and p > 0:
            found[int(c)] = Entry(image_id, FALSE_ALARM, 0.0, 0, p, 0)
    return found


def gallery_for_class(missed: list[Entry], alarms: list[Entry], limit: int = DEFAULT_LIMIT) -> list[Entry]:
    """At most `limit` entries, worst first: up to half false alarms (if any), the rest missed images.

    When one kind has fewer entries than its share, the other fills the remaining places.
    """
    missed = sorted(missed, key=_missed_key)
    alarms = sorted(alarms, key=_alarm_key)
    n_alarms = min(len(alarms), limit // 2)
    n_missed = min(len(missed), limit - n_alarms)
    n_alarms = min(len(alarms), limit - n_missed)
    return missed[:n_missed] + alarms[:n_alarms]


@dataclass
class WorstImages:
    """Streams per-image counts; keeps, per class, the `limit` worst missed and false-alarm images.

    `offer` returns True when the image entered some class's candidates (the caller then keeps its
    prediction via `keep`); `kept_ids` is what may still be needed, so anything else can be dropped.
    """

    num_classes: int
    limit: int = DEFAULT_LIMIT
    _missed: list[list[tuple[Any, Entry]]] = field(default_factory=list, repr=False)
    _alarms: list[list[tuple[Any, Entry]]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._missed = [[] for _ in range(self.num_classes)]
        self._alarms = [[] for _ in range(self.num_classes)]

    def offer(self, image_id: str, inter: np.ndarray, pred: np.ndarray, true: np.ndarray) -> bool:
        entered = False
        for c, entry in candidates(image_id, inter, pred, true).items():
            heap, key = (self._missed[c], _missed_key(entry)) if entry.kind == MISSED else (self._alarms[c], _alarm_key(entry))
            # a max-heap on the key via negation: the root is the least bad kept entry
            item = (_negate(key), entry)
            if len(heap) < self.limit:
                heapq.heappush(heap, item)
                entered = True
            elif item > heap[0]:
                heapq.heapreplace(heap, item)
                entered = True
        return entered

    def kept_ids(self) -> set[str]:
        return {e.image_id for heaps in (self._missed, self._alarms) for heap in heaps for _, e in heap}

    def galleries(self, classes: tuple[str, ...] | list[str]) -> dict[str, list[Entry]]:
        """class name -> its gallery (worst first); classes without errors are left out."""
        out: dict[str, list[Entry]] = {}
        for c, name in enumerate(classes[: self.num_classes]):
            chosen = gallery_for_class([e for _, e in self._missed[c]], [e for _, e in self._alarms[c]], self.limit)
            if chosen:
                out[name] = chosen
        return out


def _negate(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """Reverse the order of a key of numbers and one trailing string (the id)."""
    *numbers, text = key
    return (*(-n for n in numbers), _Reversed(text))


@dataclass(frozen=True)
class _Reversed:
    text: str

    def __lt__(self, other: _Reversed) -> bool:
        return self.text > other.text


def select_worst(per_image: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], classes: tuple[str, ...] | list[str], limit: int = DEFAULT_LIMIT) -> dict[str, list[Entry]]:
    """The galleries of a whole split at once (id -> (intersection, predicted, true) per class)."""
    tracker = WorstImages(len(classes), limit)
    for image_id, (inter, pred, true) in per_image.items():
        tracker.offer(image_id, inter, pred, true)
    return tracker.galleries(classes)




def encode_label_png(label_map: np.ndarray) -> str:
    """A class map as a base64 greyscale PNG (pixel values are class ids; lossless)."""
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(label_map, dtype=np.uint8)).save(buf, format="PNG", compress_level=9)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_label_png(text: str) -> np.ndarray:
    import base64
    import io

    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(text))) as im:
        return np.asarray(im).astype(np.uint8)


def gallery_document(per_image: dict[str, dict[str, Any]], predictions: dict[str, np.ndarray], galleries: dict[str, list[Entry]], classes: list[str] | tuple[str, ...], limit: int, **meta: Any) -> dict[str, Any]:
    """The JSON written beside an eval result as `<tag>_images.json`.

    {"classes", "limit", ..meta, "images": {id: {"image", "label", "pixels", "classes": {index: [I, P, L]}}},
     "galleries": {class: [Entry.to_json()...]}, "predictions": {id: base64 greyscale PNG of class ids}} (pixels; only
    the gallery images' predictions are kept).
    """
    used = {e.image_id for entries in galleries.values() for e in entries}
    return {
        "classes": list(classes),
        "limit": limit,
        **meta,
        "images": per_image,
        "galleries": {name: [e.to_json() for e in entries] for name, entries in galleries.items()},
        "predictions": {i: encode_label_png(predictions[i]) for i in sorted(used) if i in predictions},
    }


def gallery_problem(doc: Any) -> str | None:
    """What makes `doc` (a parsed `<tag>_images.json`) unusable for the report, or None when it has
    the shape `gallery_document` writes: class names, images with their file paths, galleries of
    entries (id, kind, numbers) that name listed images and classes, predictions as text."""
    if not isinstance(doc, dict):
        return f"it holds a JSON {type(doc).__name__}, not an object"
    classes, images, galleries, predictions = (doc.get(k) for k in ("classes", "images", "galleries", "predictions"))
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        return "classes is not a list of class names"
    if not isinstance(images, dict) or not all(isinstance(v, dict) for v in images.values()):
        return "images is not a table of images"
    for image_id, info in images.items():
        if not isinstance(info.get("image"), str) or not isinstance(info.get("label"), str):
            return f"images[{image_id!r:.40}] has no image/label paths"
    if not isinstance(galleries, dict) or not isinstance(predictions, dict) or not all(isinstance(v, str) for v in predictions.values()):
        return "no galleries/predictions tables"
    for name, entries in galleries.items():
        if name not in classes:
            return f"gallery {name!r:.40} is not one of its classes"
        if not isinstance(entries, list):
            return f"gallery {name!r:.40} is not a list"
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or entry.get("kind") not in (MISSED, FALSE_ALARM):
                return f"gallery {name!r:.40} has an entry without id/kind"
            for key in ("IoU", "intersection", "pred_pixels", "gt_pixels"):
                v = entry.get(key)
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                    return f"gallery {name!r:.40}: {key} is {v!r:.40}, not a number"
    return None


def load_gallery_document(path: Path) -> dict[str, Any] | None:
    """`<tag>_images.json` as written by `gallery_document`; None when no regular file is there
    (missing, a link: never followed, a FIFO: never opened; `vocseg.files.read_regular`, the one
    way an earlier output is read back); a one-line VocsegError naming the file when it cannot be
    read or has another shape (`gallery_problem`)."""
    import json

    from vocseg.errors import VocsegError
    from vocseg.files import read_regular

    raw = read_regular(path)
    if raw is None:
        return None
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VocsegError(f"{path} cannot be read ({exc}).", "Run `vocseg eval` on the run again to rewrite it.") from None
    problem = gallery_problem(doc)
    if problem is not None:
        raise VocsegError(f"{path} is not per-image statistics as `vocseg eval` writes them: {problem}.", "Run `vocseg eval` on the run again to rewrite it.")
    return doc


__all__ = ["gallery_problem", "load_gallery_document", "DEFAULT_LIMIT", "FALSE_ALARM", "MISSED", "Entry", "WorstImages", "candidates", "decode_label_png", "encode_label_png", "gallery_document", "gallery_for_class", "image_counts", "image_iou", "select_worst"]
