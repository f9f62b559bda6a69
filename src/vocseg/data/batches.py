"""A training batch's CPU preprocessing in one pass per image: `VocsegFastSegDataPreProcessor`.

Imported by `vocseg.mmseg_plugin`, never at `vocseg --help`.

MMSeg's `SegDataPreProcessor` makes a training batch from uint8 (3, H, W) images in five passes
over float32 copies (channel swap, `.float()`, `- mean`, `/ std`, pad, stack: ~2 ms per 512x512
image on one core, plus ~1 ms for a channels-last copy), which counts wherever it runs on the CPU
(issue 22). This class gives the same tensor from one `cv2.LUT` per image: every uint8 value's
normalised float32 is computed once, by the same float32 torch operations MMSeg applies per pixel
(`(v - mean) / std`), into a (256, 3) table, and each image is looked up straight into its place in
the padded batch (channels-last memory when asked). Bit for bit MMSeg's batch and padded labels
(tests/test_transforms.py); anything else (a batch already on a GPU, which is where
training on a GPU preprocesses, evaluation, non-uint8 or non-3-channel inputs, batch augments,
edge or depth maps) goes through MMSeg's own code.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - torch's own spelling
from mmseg.models.data_preprocessor import SegDataPreProcessor
from mmseg.registry import MODELS


def normalise_table(mean: torch.Tensor, std: torch.Tensor, bgr_to_rgb: bool) -> np.ndarray:
    """(1, 256, 3) float32: entry [0, v, c] = (float32(v) - mean[c]) / std[c] for output channel c,
    by the same float32 torch operations SegDataPreProcessor applies per pixel. With `bgr_to_rgb`
    the channels are the output's (RGB) order; the caller swaps the input's first."""
    values = torch.arange(256, dtype=torch.uint8).float().view(1, 256, 1).expand(3, 256, 1)
    table = (values - mean.float().cpu().view(3, 1, 1)) / std.float().cpu().view(3, 1, 1)
    return np.ascontiguousarray(table[:, :, 0].T.numpy())[None]


@MODELS.register_module()
class VocsegFastSegDataPreProcessor(SegDataPreProcessor):
    """SegDataPreProcessor computing CPU training batches by table lookup (module docstring);
    `channels_last=True` also returns them channels-last, as `VocsegSegDataPreProcessor` does."""

    def __init__(self, channels_last: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.channels_last = channels_last
        self._table: np.ndarray | None = None

    def forward(self, data: dict, training: bool = False) -> dict:
        if training and self._fast_path_applies(data):
            return self._training_batch(data)
        out = super().forward(data, training)
        if self.channels_last and out["inputs"].dim() == 4:
            out["inputs"] = out["inputs"].contiguous(memory_format=torch.channels_last)
        return out

    def _fast_path_applies(self, data: dict) -> bool:
        inputs, samples = data.get("inputs"), data.get("data_samples")
        if not isinstance(inputs, (list, tuple)) or not inputs or samples is None or len(samples) != len(inputs):
            return False
        if self.device.type != "cpu" or not self._enable_normalize or self.batch_augments is not None:
            return False
        if not all(isinstance(t, torch.Tensor) and t.dtype == torch.uint8 and t.dim() == 3 and t.shape[0] == 3 and t.device.type == "cpu" for t in inputs):
            return False
        if any("gt_edge_map" in s or "gt_depth_map" in s for s in samples):
            return False
        shapes = {self._padded_shape(t.shape[-2:], inputs) for t in inputs}
        return len(shapes) == 1

    def _padded_shape(self, hw: tuple[int, int], inputs: list[torch.Tensor]) -> tuple[int, int]:
        """stack_batch's target: `size` (never cropping), else the batch's largest rounded up to `size_divisor`."""
        h, w = int(hw[0]), int(hw[1])
        if self.size is not None:
            return max(self.size[-2], h), max(self.size[-1], w)
        max_h = max(int(t.shape[-2]) for t in inputs)
        max_w = max(int(t.shape[-1]) for t in inputs)
        d = self.size_divisor if self.size_divisor and self.size_divisor > 1 else 1
        return max(-(-max_h // d) * d, h), max(-(-max_w // d) * d, w)

    def _training_batch(self, data: dict) -> dict:
        inputs, samples = list(data["inputs"]), data["data_samples"]
        if self._table is None:
            self._table = normalise_table(self.mean, self.std, self.channel_conversion)
        height, width = self._padded_shape(inputs[0].shape[-2:], inputs)
        batch = torch.empty((len(inputs), height, width, 3), dtype=torch.float32)  # NHWC memory
        nhwc = batch.numpy()
        for i, (tensor, sample) in enumerate(zip(inputs, samples)):
            h, w = int(tensor.shape[-2]), int(tensor.shape[-1])
            img = np.ascontiguousarray(tensor.permute(1, 2, 0).numpy())  # a view when packed by VocsegPackSegInputs
            if self.channel_conversion:
                img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
            if (h, w) == (height, width):
                cv2.LUT(img, self._table, dst=nhwc[i])
            else:
                nhwc[i] = self.pad_val
                nhwc[i, :h, :w] = cv2.LUT(img, self._table)
            padding = (0, width - w, 0, height - h)
            pad_shape = None
            if "gt_sem_seg" in sample:
                seg = sample.gt_sem_seg.data
                del sample.gt_sem_seg.data
                sample.gt_sem_seg.data = F.pad(seg, padding, value=self.seg_pad_val)
                pad_shape = sample.gt_sem_seg.shape
            sample.set_metainfo({"img_shape": tensor.shape[-2:], "pad_shape": pad_shape, "padding_size": padding})
        out = batch.permute(0, 3, 1, 2)  # (N, 3, H, W) values, channels-last strides
        if not self.channels_last:
            out = out.contiguous()
        return dict(inputs=out, data_samples=samples)
