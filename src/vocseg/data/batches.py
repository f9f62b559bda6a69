"""A training batch's CPU preprocessing in one pass per image: `VocsegFastSegDataPreProcessor`.

Imported by `vocseg.mmseg_plugin`, never at `vocseg --help`.

MMSeg's `SegDataPreProcessor` makes a training batch from uint8 (3, H, W) images in five passes
over float32 copies (channel swap, `.float()`, `- mean`, `/ std`, pad, stack: ~2 ms per 512x512
image on one core, plus ~1 ms for a channels-last copy), which counts wherever it runs on the CPU
(issue 22). This class gives the same tensor in two vectorised passes per image plane, written
straight into its place in the padded batch (`normalise_into`: `float32(v) - mean`, then `/ std`
by OpenCV, the same two IEEE float32 operations MMSeg applies, so the same bits; only the padding
around an image is filled): into NCHW memory (the channel swap is the choice of plane), or, when
`channels_last` is asked and the images are packed as (H, W, 3) views (`VocsegPackSegInputs`),
into scratch planes interleaved into NHWC memory by `cv2.merge`. The batch's memory is the last
batch's when nothing holds that any more (`BatchBuffer`). Bit for bit MMSeg's batch and padded labels
(tests/test_transforms.py). Evaluation batches of same-sized uint8 images without `test_cfg`
padding (vocseg's configs) are made the same way, stacked as MMSeg stacks them. Anything else (a
batch already on a GPU, which is where training on a GPU preprocesses, non-uint8 or non-3-channel
inputs, batch augments, edge or depth maps, test-time padding) goes through MMSeg's own code.

Written into every config vocseg writes as `VocsegSegDataPreProcessor` (the name configs of earlier
versions already carry, then for a channels-last copy only); `VocsegFastSegDataPreProcessor` is
the same class.
"""

from __future__ import annotations

import functools
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - torch's own spelling
from mmseg.models.data_preprocessor import SegDataPreProcessor
from mmseg.registry import MODELS

from vocseg.data.samples import fresh_copy, set_metainfo


def normalise_into(plane: np.ndarray, mean: np.float32, std: np.float32, target: np.ndarray) -> None:
    """`(float32(plane) - mean) / std` written into `target`, in float32: the two IEEE operations
    SegDataPreProcessor applies per value (`.float()`, `- mean`, `/ std`), so the same bits.

    plane: (H, W) uint8; mean, std: np.float32 scalars (one channel's); target: an (H, W) float32
    view of the batch (its slot, padded or not). Computed by OpenCV's `subtract` and `divide`
    (`cv_normalised_into`: ~0.2 ms for the three planes of a 512x512 image, against ~0.6-0.8 ms
    for NumPy's two passes, in throwaway microbenchmarks on one core; `benchmarks/pipeline_speed.py
    --profile` shows both calls' time per image in the pipeline), else (a layout OpenCV would not
    write into in place) by NumPy's."""
    if cv_normalised_into(plane, mean, std, target):
        return
    np.subtract(plane, mean, out=target, dtype=np.float32)
    np.divide(target, std, out=target)


def cv_normalised_into(plane: np.ndarray, mean: np.float32, std: np.float32, target: np.ndarray) -> bool:
    """`(float32(plane) - mean) / std` into the (H, W) float32 `target` with `cv2.subtract` and
    `cv2.divide`, `plane` (H, W) uint8; False (nothing written that counts) where OpenCV would not
    write into `target` itself.

    The same bits as NumPy's float32 operations: a uint8 value and a float32 mean/std are exact in
    float32 and in double, and whether OpenCV subtracts and divides in float32 or in double
    rounded to float32, the result is the correctly rounded float32 one (double has more than
    2 * 24 + 2 bits, so rounding twice cannot differ for + - * /: Figueroa, "When is double
    rounding innocuous?", 1995); tests/test_transforms.py compares every uint8 value with NumPy's."""
    if plane.dtype != np.uint8 or target.dtype != np.float32 or plane.ndim != 2 or plane.shape != target.shape:
        return False
    if not (abs(float(mean)) < _CV_SCALAR_LIMIT and abs(float(std)) < _CV_SCALAR_LIMIT):
        return False  # OpenCV clamps a scalar beyond the int16 range here: NumPy's arithmetic
    if plane.strides[-1] != 1 or target.strides[-1] != 4:  # columns apart: no cv::Mat is that view
        return False
    try:
        if cv2.subtract(plane, float(mean), dst=target, dtype=cv2.CV_32F) is not target:
            return False  # OpenCV allocated its own array: target holds nothing that counts
        return cv2.divide(target, float(std), dst=target) is target
    except cv2.error:  # a layout OpenCV refuses for dst
        return False


_CV_SCALAR_LIMIT = 32767.0  # |mean|, |std| OpenCV's subtract/divide take as they are for a uint8 source (beyond: clamped)


def merge_into(planes: list[np.ndarray], target: np.ndarray) -> None:
    """Three (H, W) float32 planes interleaved into the (H, W, 3) float32 `target` (a view of an
    NHWC batch): `cv2.merge` in place (~0.1 ms at 512x512), else NumPy's stack."""
    try:
        if cv2.merge(planes, target) is target:
            return
    except cv2.error:  # a layout OpenCV refuses for dst
        pass
    target[...] = np.stack(planes, axis=-1)


class BatchBuffer:
    """The float32 memory of the last batch, handed out again when nothing outside holds it.

    A new 12 MB batch (4 x 3 x 512 x 512) is memory the kernel maps page by page as it is first
    written when the allocator has returned it (in `benchmarks/pipeline_speed.py`'s loop, ~77
    page faults per image in the preprocessor before this and none after, by a throwaway count
    with `resource.getrusage`; the time saved was within that machine's noise, ~0.03-0.1 ms per
    image). The batch goes out as a view; when the storage's reference
    count is back to what it was when allocated (the view, the model's saved activations and
    anything a hook kept are gone), the next batch of the same shape is written into it; else
    it is left to its holders and a new one made. The count is PyTorch's own
    (`torch._C._storage_Use_Count`, which its CUDA-graph trees use the same way); without it,
    every batch is new."""

    def __init__(self) -> None:
        self.tensor: torch.Tensor | None = None
        self.alone = 0  # the use count with only this object holding the storage

    def take(self, shape: tuple[int, ...]) -> torch.Tensor:
        """A float32 tensor of `shape` (contents undefined): the last one when free, else new."""
        held = self.tensor
        if not use_count_tells_holders():
            return torch.empty(shape, dtype=torch.float32)
        if held is not None and tuple(held.shape) == shape and storage_use_count(held) == self.alone:
            return held
        self.tensor = torch.empty(shape, dtype=torch.float32)
        self.alone = storage_use_count(self.tensor)
        return self.tensor


_STORAGE_USE_COUNT = getattr(torch._C, "_storage_Use_Count", None)


def storage_use_count(tensor: torch.Tensor) -> int:
    """How many references PyTorch holds to `tensor`'s storage (tensors and views on it, saved
    activations, its Python storage object)."""
    return int(_STORAGE_USE_COUNT(tensor.untyped_storage()._cdata))


@functools.cache
def use_count_tells_holders() -> bool:
    """Whether this torch's `_storage_Use_Count` rises with a view and with an activation autograd
    saves, and falls back when they are gone (checked once per process): else no batch memory is
    reused, so a torch that counted otherwise cannot make a held batch be overwritten."""
    if _STORAGE_USE_COUNT is None:
        return False
    try:
        tensor = torch.zeros((1, 1, 4, 4))
        alone = storage_use_count(tensor)
        view = tensor.view(tensor.shape)
        with_view = storage_use_count(tensor)
        del view
        weight = torch.ones((1, 1, 1, 1), requires_grad=True)
        out = F.conv2d(tensor.view(tensor.shape), weight)  # saves its input for the weight's gradient
        with_saved = storage_use_count(tensor)
        del out
        return with_view > alone and with_saved > alone and storage_use_count(tensor) == alone
    except Exception:  # noqa: BLE001 - any surprise: no reuse
        return False


@MODELS.register_module(name=["VocsegSegDataPreProcessor", "VocsegFastSegDataPreProcessor"])
class VocsegFastSegDataPreProcessor(SegDataPreProcessor):
    """SegDataPreProcessor computing CPU batches in two vectorised passes per image plane (module docstring);
    `channels_last=True` returns every 4-D batch channels-last (NHWC memory, NCHW shape)."""

    def __init__(self, channels_last: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.channels_last = channels_last
        self._scratch: np.ndarray | None = None  # (3, H, W) float32: an NHWC image's planes before merging
        self._buffer = BatchBuffer()

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

    def _planes(self, h: int, w: int) -> list[np.ndarray]:
        """Three (h, w) float32 views of scratch memory kept for the next image (3 MB at 512x512)."""
        if self._scratch is None or self._scratch.shape[1] < h or self._scratch.shape[2] < w:
            self._scratch = np.empty((3, h, w), dtype=np.float32)
        return [self._scratch[c, :h, :w] for c in range(3)]

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
        means, stds = self.mean.float().cpu().reshape(3).numpy(), self.std.float().cpu().reshape(3).numpy()
        # plane by plane into NCHW memory (the CPU's layout; also for (3, H, W) images, copied to
        # channels-last after when asked: cheaper than transposing each image), else through
        # scratch planes merged into NHWC memory; each image straight into its place in the batch
        planar = not self.channels_last or inputs[0].is_contiguous()
        shape = (len(inputs), 3, height, width) if planar else (len(inputs), height, width, 3)
        batch = self._buffer.take(shape)  # every element is written below: the images, then their padding
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
                planes = list(cv2.split(pixels))  # one pass (three extractChannel calls: 1.4x its time)
            # output channel c from input plane 2 - c when swapping BGR to RGB; into the batch's
            # planes, or into scratch planes interleaved into its pixels after
            targets = [array[i, c, :h, :w] for c in range(3)] if planar else self._planes(h, w)
            for c in range(3):
                plane = np.ascontiguousarray(planes[2 - c if self.channel_conversion else c])
                normalise_into(plane, means[c], stds[c], targets[c])
            if not planar:
                merge_into(targets, array[i, :h, :w])
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
        out = batch.permute(0, 3, 1, 2) if not planar else batch.view(shape)  # (N, 3, H, W) values; a view, never the buffer itself
        if self.channels_last and planar:
            out = out.contiguous(memory_format=torch.channels_last)
        return dict(inputs=out, data_samples=samples)
