"""`VocsegPerClassIoUMetric`: mmseg's IoUMetric that also keeps its per-class table."""

from __future__ import annotations

from typing import Any

import numpy as np
from mmseg.evaluation import IoUMetric
from mmseg.registry import METRICS


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
        return super().compute_metrics(results)
