"""A training batch's CPU preprocessing in one pass per image: `VocsegFastSegDataPreProcessor`.

Imported by `vocseg.mmseg_plugin`, never at `vocseg --help`.

MMSeg's `SegDataPreProcessor` makes a training batch from uint8 (3, H, W) images in five passes
over float32 copies (channel swap, `.float()`, `- mean`, `/ std`, pad, stack: ~2 ms per 512x512
image on one core, plus ~1 ms for a channels-last copy), which counts wherever it runs on the CPU
(issue 22). This class gives the same tensor in two vectorised passes per image, written straight
into its place in the padded batch (`normalise_into`: `float32(v) - mean`, then `/ std`, the same
two IEEE float32 operations MMSeg applies, so the same bits; only the padding around an image is
filled): plane by plane into NCHW memory (the channel swap is the choice of plane), or pixel by
pixel into NHWC memory when `channels_last` is asked and the images are packed as (H, W, 3) views
(`VocsegPackSegInputs`). Bit for bit MMSeg's batch and padded labels
(tests/test_transforms.py). Evaluation batches of same-sized uint8 images without `test_cfg`
padding (vocseg's configs) are made the same way, stacked as MMSeg stacks them. Anything else (a
batch already on a GPU, which is where training on a GPU preprocesses, non-uint8 or non-3-channel
inputs, batch augments, edge or depth maps, test-time padding) goes through MMSeg's own code.

Written into every config vocseg writes as `VocsegSegDataPreProcessor` (the name configs of earlier
versions already carry, then for a channels-last copy only); `VocsegFastSegDataPreProcessor` is
the same class.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - torch's own spelling
from mmseg.models.data_preprocessor import SegDataPreProcessor
from mmseg.registry import MODELS

from vocseg.data.samples import fresh_copy, set_metainfo


def normalise_into(src: np.ndarray, mean: np.ndarray, std: np.ndarray, target: np.ndarray) -> None:
    """`(float32(src) - mean) / std` written into `target`, in float32: the two IEEE operations
    SegDataPreProcessor applies per value (`.float()`, `- mean`, `/ std`), so the same bits.

    src: (H, W) uint8 plane with scalar mean/std (np.float32), or (H, W, 3) uint8 pixels in the
    output's channel order with (W * 3,) float32 rows of the per-channel mean/std repeated
    (`channel_rows`), each row computed as one flat run. target: a float32 view of the batch
    (its slot, padded or not). Two passes of NumPy's vectorised loops (~0.37 ms for 512x512x3,
    against ~0.65 ms for a 256-entry float table lookup, `cv2.LUT`)."""
    if src.ndim == 3:
        h, w = src.shape[:2]
        src, target, mean, std = src.reshape(h, w * 3), rows_view(target, h, w * 3), mean[: w * 3], std[: w * 3]
    np.subtract(src, mean, out=target, dtype=np.float32)
    np.divide(target, std, out=target)


def rows_view(target: np.ndarray, h: int, width: int) -> np.ndarray:
    """`target` seen as (h, width) without copying: writes through it land in the batch. Raises
    AttributeError where that needs a copy (NumPy refuses to set such a shape on a view)."""
    view = target.view()
    view.shape = (h, width)
    return view


def channel_rows(values: torch.Tensor, width: int) -> np.ndarray:
    """(width * 3,) float32: the three per-channel values (MMSeg's float32 mean or std) repeated
    for a row of `width` pixels in (H, W, 3) memory."""
    return np.tile(values.float().cpu().reshape(3).numpy(), width)


@MODELS.register_module(name=["VocsegSegDataPreProcessor", "VocsegFastSegDataPreProcessor"])
class VocsegFastSegDataPreProcessor(SegDataPreProcessor):
    """SegDataPreProcessor computing CPU batches in two vectorised passes per image (module docstring);
    `channels_last=True` returns every 4-D batch channels-last (NHWC memory, NCHW shape)."""

    def __init__(self, channels_last: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.channels_last = channels_last
        self._rows: tuple[np.ndarray, np.ndarray] | None = None  # mean and std rows, channel_rows

    def forward(self, data: dict, training: bool = False) -> dict:
        if self._fast_path_applies(data, training):
            return self._cpu_batch(data, training)
        out = super().forward(data, training)
        if self.channels_last and out["inputs"].dim() == 4:
            out["inputs"] = out["inputs"].contiguous(memory_format=torch.channels_last)
        return out

    def _fast_path_applies(self, data: dict, training: bool) -> bool:
        inputs, samples = data.get("inputs"), data.get("data_samples")
        if not isinstance(inputs, (list, tuple)) or not inputs:
            return False
        if training and (samples is None or len(samples) != len(inputs)):
            return False
        if training and (self.size is None) == (self.size_divisor is None):
            return False  # MMSeg's stack_batch asserts exactly one of them: its own code and message
        if self.device.type != "cpu" or not self._enable_normalize or (training and self.batch_augments is not None):
            return False
        if self.mean.dtype != torch.float32 or self.std.dtype != torch.float32:
            return False  # MMSeg's batch then has their dtype: its own code
        if not training and (self.test_cfg or len({tuple(t.shape) for t in inputs}) != 1):
            return False  # test-time padding, or sizes MMSeg refuses to stack: its own code and messages
        if not all(isinstance(t, torch.Tensor) and t.dtype == torch.uint8 and t.dim() == 3 and t.shape[0] == 3 and t.device.type == "cpu" for t in inputs):
            return False
        if training and any("gt_edge_map" in s or "gt_depth_map" in s for s in samples):
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

    def _cpu_batch(self, data: dict, training: bool) -> dict:
        """MMSeg's batch: training padded to `_padded_shape` with padded labels and pad metainfo,
        evaluation stacked as it is (same-sized images, samples untouched)."""
        # new sample objects, as MMSeg's forward makes with cast_data (the loader's batch is left
        # as it was), without its deep copies of every sample's metadata (vocseg.data.samples)
        inputs, samples = list(data["inputs"]), data.get("data_samples")
        if samples is not None:
            samples = [fresh_copy(sample) for sample in samples]
        if training:
            height, width = self._padded_shape(inputs[0].shape[-2:], inputs)
        else:
            height, width = int(inputs[0].shape[-2]), int(inputs[0].shape[-1])
        if self._rows is None or self._rows[0].size < width * 3:
            self._rows = (channel_rows(self.mean, width), channel_rows(self.std, width))
        means, stds = self.mean.float().cpu().reshape(3).numpy(), self.std.float().cpu().reshape(3).numpy()
        # plane by plane into NCHW memory (the CPU's layout; also for (3, H, W) images, copied to
        # channels-last after when asked: cheaper than transposing each image), else pixel by
        # pixel into NHWC memory; each image straight into its place in the batch
        planar = not self.channels_last or inputs[0].is_contiguous()
        shape = (len(inputs), 3, height, width) if planar else (len(inputs), height, width, 3)
        batch = torch.empty(shape, dtype=torch.float32)
        array = batch.numpy()
        for i, tensor in enumerate(inputs):
            h, w = int(tensor.shape[-2]), int(tensor.shape[-1])
            if (h, w) != (height, width):  # only the padding: the image overwrites the rest
                slot = array[i] if planar else array[i].transpose(2, 0, 1)  # (3, H, W) either way
                slot[:, :h, w:] = self.pad_val
                slot[:, h:, :] = self.pad_val
            if planar and tensor.is_contiguous():  # (3, H, W) memory: MMSeg's PackSegInputs
                planes = list(tensor.numpy())
            else:  # (H, W, 3) memory: VocsegPackSegInputs' view (any other layout is copied into it)
                pixels = np.ascontiguousarray(tensor.permute(1, 2, 0).numpy())
                planes = list(cv2.split(pixels)) if planar else []  # one pass (three extractChannel calls: 1.4x its time)
            if planar:
                for c in range(3):  # output channel c from input plane 2 - c when swapping BGR to RGB
                    plane = np.ascontiguousarray(planes[2 - c if self.channel_conversion else c])
                    normalise_into(plane, means[c], stds[c], array[i, c, :h, :w])
            else:
                if self.channel_conversion:
                    pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
                normalise_into(pixels, self._rows[0], self._rows[1], array[i, :h, :w])
            if not training:
                continue
            sample = samples[i]
            padding = (0, width - w, 0, height - h)
            pad_shape = None
            if "gt_sem_seg" in sample:
                seg = sample.gt_sem_seg.data
                if any(padding):  # F.pad by nothing is a copy of the (1, H, W) int64 labels
                    del sample.gt_sem_seg.data
                    sample.gt_sem_seg.data = F.pad(seg, padding, value=self.seg_pad_val)
                pad_shape = sample.gt_sem_seg.shape
            set_metainfo(sample, {"img_shape": tensor.shape[-2:], "pad_shape": pad_shape, "padding_size": padding})
        out = batch.permute(0, 3, 1, 2) if not planar else batch  # (N, 3, H, W) values
        if self.channels_last and planar:
            out = out.contiguous(memory_format=torch.channels_last)
        return dict(inputs=out, data_samples=samples)
