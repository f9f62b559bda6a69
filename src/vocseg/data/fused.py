"""Resize-crop, flip and photometric distortion as one step, the distortion on the fewer pixels.

Imported by `vocseg.data.loading` (the dataset fuses its own pipeline), never at `vocseg --help`.

The VOC recipe's training pipeline resizes the image by 0.5-2x its 512-pixel scale, crops 512x512
and then distorts the colours of those 262,144 pixels. For four draws in five the crop window
covers fewer source pixels than that (the image was enlarged: at twice the scale, a quarter),
so distorting the source pixels under the window and interpolating after does the same
per-pixel work on fewer pixels: 169 of the 200 draws of `benchmarks/pipeline_speed.py --samples
320 --rounds 1 --fidelity 200` take that path, distorting 0.34 of the window's pixels on average
(issue 22; docs/performance.md has the per-stage times). The draws are the same, in the same order (resize
ratio, crop tries, flip direction, distortion), so are the label maps, windows, flips and
distortion parameters; only the image differs from distorting after interpolation, by
rounding and where colours mix at edges (`benchmarks/pipeline_speed.py --fidelity`, stated in
docs/performance.md). `exact_resize=True` on the resize-crop keeps MMSeg's order: resize, crop,
flip, distort.

`fuse_steps` replaces the sequence `VocsegRandomResizeCrop`, `VocsegRandomFlip`,
`VocsegPhotoMetricDistortion` (exactly these classes, one after the other) in a built pipeline
by one `FusedResizeCropFlipPhotometric`; the config that is written, read and shown keeps the
three steps. Anything else is left as it is.
"""

from __future__ import annotations

from typing import Any

from mmcv.transforms import BaseTransform

from vocseg.data.transforms import VocsegPhotoMetricDistortion, VocsegRandomFlip, VocsegRandomResizeCrop


class FusedResizeCropFlipPhotometric(BaseTransform):
    """`resize_crop`, then `flip`, then `photometric` (module docstring): the same draws and results
    keys as running the three, the distortion applied to the source pixels under the crop window
    when they are fewer than the window's, else to the window."""

    def __init__(self, resize_crop: VocsegRandomResizeCrop, flip: VocsegRandomFlip, photometric: VocsegPhotoMetricDistortion) -> None:
        super().__init__()
        self.resize_crop, self.flip, self.photometric = resize_crop, flip, photometric

    def transform(self, results: dict) -> dict:
        img = results.get("img")
        if self.resize_crop.exact_resize or not VocsegPhotoMetricDistortion.handles(img):
            return self.photometric(self.flip(self.resize_crop(results)))
        window = self.resize_crop.choose_window(results)  # draws: the ratio, the crop tries
        assert window is not None  # only exact_resize or a non-uint8 image resize whole: the three steps above
        direction = self.flip._choose_direction()  # noqa: SLF001 - the flip's own draw, in its turn
        plan = self.photometric.draw()  # the distortion's draws
        x0, y0, x1, y1 = window.source_box(img.shape[1], img.shape[0])
        out_w, out_h = window.size
        first = (x1 - x0) * (y1 - y0) < out_w * out_h  # fewer source pixels: distort, then interpolate
        pixels = window.warp(self.photometric.apply(img[y0:y1, x0:x1], plan), origin=(x0, y0)) if first else window.warp(img)
        self.resize_crop.cut(results, window, pixels)
        flip_with(self.flip, results, direction)
        if not first:  # after the flip, as the three steps: OpenCV's HSV conversion is not the
            # same to the bit at every position in a row (vector body against scalar tail)
            results["img"] = self.photometric.apply(results["img"], plan)
        return results

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.resize_crop!r}, {self.flip!r}, {self.photometric!r})"


def flip_with(flip: VocsegRandomFlip, results: dict, direction: str | None) -> None:
    """MMCV's `RandomFlip._flip_on_direction` for a direction already drawn: the same keys and arrays."""
    if direction is None:
        results["flip"] = False
        results["flip_direction"] = None
    else:
        results["flip"] = True
        results["flip_direction"] = direction
        flip._flip(results)  # noqa: SLF001 - the flip's own code


def fuse_steps(transforms: list[Any]) -> list[Any]:
    """`transforms` with each run of exactly `VocsegRandomResizeCrop`, `VocsegRandomFlip`,
    `VocsegPhotoMetricDistortion` replaced by one `FusedResizeCropFlipPhotometric`; a new list."""
    fused: list[Any] = []
    i = 0
    while i < len(transforms):
        run = transforms[i : i + 3]
        if [type(t) for t in run] == [VocsegRandomResizeCrop, VocsegRandomFlip, VocsegPhotoMetricDistortion]:
            fused.append(FusedResizeCropFlipPhotometric(*run))
            i += 3
        else:
            fused.append(transforms[i])
            i += 1
    return fused

