"""`VocsegPerClassIoUMetric`: mmseg's IoUMetric that also keeps its per-class table; `VocsegImageStats`: per-image counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from mmengine.evaluator import BaseMetric
from mmseg.evaluation import IoUMetric
from mmseg.registry import METRICS

from vocseg.evaluation.galleries import WorstImages, image_counts


@METRICS.register_module(name="VocsegPerClassIoUMetric")
class PerClassIoUMetric(IoUMetric):
    """IoUMetric, keeping the per-class values (percent) and the raw areas of the last evaluation."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("iou_metrics", ["mIoU", "mDice", "mFscore"])
        super().__init__(**kwargs)
        self.last_per_class: dict[str, dict[str, float]] = {}
        self.last_areas: dict[str, np.ndarray] = {}

    def compute_metrics(self, results: list) -> dict[str, float]:
        columns = tuple(zip(*results))
        areas = [sum(c) for c in columns]
        self.last_areas = {
            name: (a.cpu().numpy() if hasattr(a, "cpu") else np.asarray(a))
            for name, a in zip(("intersect", "union", "pred", "label"), areas)
        }
        per_metric = self.total_area_to_metrics(*areas, self.metrics, self.nan_to_num, self.beta)
        per_metric.pop("aAcc", None)
        classes = self.dataset_meta["classes"]
        self.last_per_class = {
            name: {key: round(float(values[i]) * 100, 2) for key, values in per_metric.items()}
            for i, name in enumerate(classes)
        }
        import warnings

        with warnings.catch_warnings():
            # a split without any labelled pixel: mmseg's nanmean over all-NaN classes; the check and
            # eval say which classes are excluded instead of numpy's "Mean of empty slice"
            warnings.filterwarnings("ignore", message="Mean of empty slice", category=RuntimeWarning)
            warnings.filterwarnings("ignore", message="invalid value encountered", category=RuntimeWarning)
            return super().compute_metrics(results)


@METRICS.register_module(name="VocsegImageStats")
class ImageStatsMetric(BaseMetric):
    """Per-image pixel counts for the error galleries, from the same predictions as the IoU metric.

    Adds no metric value (compute_metrics returns {}). After the loop: `per_image` (image id ->
    paths and per-class [intersection, predicted, true] pixels of the classes in it) and
    `predictions` (image id -> predicted class map, only for the images in some gallery).
    See vocseg.evaluation.galleries for the selection rule.
    """

    def __init__(self, limit: int = 4, ignore_index: int = 255, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.limit = limit
        self.ignore_index = ignore_index
        self.tracker: WorstImages | None = None
        self.per_image: dict[str, dict[str, Any]] = {}
        self.predictions: dict[str, np.ndarray] = {}

    def process(self, data_batch: Any, data_samples: Any) -> None:
        n = len(self.dataset_meta["classes"])
        if self.tracker is None:
            self.tracker = WorstImages(n, self.limit)
        for sample in data_samples:
            pred = sample["pred_sem_seg"]["data"].squeeze().cpu().numpy()
            label = sample["gt_sem_seg"]["data"].squeeze().cpu().numpy()
            image_id = Path(sample["img_path"]).stem
            inter, pred_area, true_area = image_counts(pred, label, n, self.ignore_index)
            present = np.nonzero((pred_area > 0) | (true_area > 0))[0]
            self.per_image[image_id] = {
                "image": str(Path(sample["img_path"]).resolve()),  # absolute: the report may run from another folder
                "label": str(Path(sample["seg_map_path"]).resolve()) if sample.get("seg_map_path") else None,
                "pixels": int(true_area.sum()),
                "classes": {int(c): [int(inter[c]), int(pred_area[c]), int(true_area[c])] for c in present},
            }
            if self.tracker.offer(image_id, inter, pred_area, true_area):
                self.predictions[image_id] = pred.astype(np.uint8)
                kept = self.tracker.kept_ids()
                for old in [k for k in self.predictions if k not in kept]:
                    del self.predictions[old]
            self.results.append(image_id)

    def compute_metrics(self, results: list) -> dict[str, float]:
        return {}
