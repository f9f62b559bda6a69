"""vocseg's training transforms: MMSeg's augmentation, bit for bit where claimed, at a fraction of its CPU cost.

Imported by `vocseg.mmseg_plugin` (every config vocseg writes names it), never at `vocseg --help`.
Each class subclasses the MMSeg/MMCV transform it replaces, takes the same options, draws the same
random numbers from the same generator (NumPy's global one) in the same order, and returns the
same arrays for the same draws, except where the table says otherwise (tests/test_transforms.py
checks every one against MMSeg's over many seeds, and the distribution where not bit for bit). What changes is how the work is done (issue 22; figures in docs/performance.md):

| vocseg | replaces | how |
|---|---|---|
| `VocsegRandomResizeCrop` | `RandomResize` + `RandomCrop` | the label map as MMSeg (same windows, same labels), the image only where the crop keeps it: not bit for bit (max 1 level, mean 0.12); `exact_resize=True` is |
| `VocsegRandomCrop` | `RandomCrop` | `cat_max_ratio` by counting the crop's labels instead of `np.unique` (sorts 262,144 labels, ~7 ms per try, ~2-3 tries per image): only the labels the mask holds (`SEG_LABELS_KEY`, from the loader's check), one comparison each (~0.02 ms), else a 256-bin count (`cv2.calcHist`, ~0.1 ms) |
| `VocsegRandomFlip` | `RandomFlip` | the direction from the same single `random_sample()` draw as `np.random.choice` (without its ~30 us of checks); flips with `cv2.flip` into a contiguous array (the next steps would otherwise copy NumPy's negative-stride view, ~1 ms) |
| `VocsegPhotoMetricDistortion` | `PhotoMetricDistortion` | brightness/contrast/saturation/hue as 256-entry lookup tables on uint8 (`cv2.LUT`), built with MMSeg's own float32 arithmetic, clip and cast, so each entry is MMSeg's value; consecutive tables are composed into one, a table that is a saturating add applied as `cv2.add`; the HSV round trips are MMSeg's (`cv2.cvtColor` on uint8) except when saturation and hue are both drawn: one round trip instead of two, not bit for bit (max `HSV_MERGE_MAX_DIFF` levels); `exact_hsv=True` is |
| `VocsegPackSegInputs` | `PackSegInputs` | the image tensor is a (3, H, W) view of the (H, W, 3) array (no transposing copy); same values, channels-last strides, which `SegDataPreProcessor` reads as fast or faster; the metadata set without deep copies of immutable values (`vocseg.data.samples`) |

Anything these do not handle (a float image, a 2-D image, options MMSeg's transform supports that
are not the VOC recipe's) goes to MMSeg's own code path unchanged. The dataset runs
`VocsegRandomResizeCrop`, `VocsegRandomFlip`, `VocsegPhotoMetricDistortion` as one step
(`vocseg.data.fused`: their `choose_window`/`cut` and `draw`/`apply` halves, the distortion on
an enlarged crop's source pixels).
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np
import torch
from mmcv.transforms import BaseTransform, RandomFlip
from mmcv.transforms.utils import cache_randomness
from mmseg.datasets.transforms import PackSegInputs, PhotoMetricDistortion, RandomCrop
from mmseg.registry import TRANSFORMS

from vocseg.data.samples import set_metainfo

_FLIP_CODES = {"horizontal": 1, "vertical": 0, "diagonal": -1}
HSV_MERGE_MAX_DIFF = 5  # levels: VocsegPhotoMetricDistortion's one HSV round trip against MMSeg's two (measured: 4 on photos, 5 on noise)


def label_counts(labels: np.ndarray) -> np.ndarray:
    """How many pixels of each value 0..255 a uint8 label array holds: (256,) int64.

    `cv2.calcHist` counts in float32, exact up to 2**24 pixels per value (a 4096x4096 crop);
    larger or non-uint8 arrays are counted with `np.bincount`."""
    if labels.dtype == np.uint8 and labels.size < 1 << 24:
        hist = cv2.calcHist([np.ascontiguousarray(labels)], [0], None, [256], [0, 256])
        return hist.ravel().astype(np.int64)
    return np.bincount(labels.ravel().astype(np.int64), minlength=256)


def crop_accepted(labels: np.ndarray, cat_max_ratio: float, ignore_index: int, present: tuple[int, ...] | None = None) -> bool:
    """MMSeg's RandomCrop test: more than one class (ignore_index left out) and no class above
    `cat_max_ratio` of the counted pixels. `np.unique`'s counts without sorting: the same ints.

    `present`: the values the label map was counted to hold (`SEG_LABELS_KEY`), when known: then
    only those are counted, one comparison each (`cv2.compare` + `cv2.countNonZero`, ~0.02 ms a
    value for a 512x512 window, against ~0.1 ms for a 256-bin count), and the counts are used only
    when they add up to the window's size, i.e. when the window holds no other value (a map
    changed in place since it was counted, e.g. by `RandomCutOut`, is counted in full)."""
    cnt: list[int] | None = None
    if present is not None and len(present) <= _COMPARE_AT_MOST and labels.dtype == np.uint8 and labels.ndim == 2:
        held = [(value, cv2.countNonZero(cv2.compare(labels, value, cv2.CMP_EQ))) for value in present]
        if sum(n for _, n in held) == labels.size:
            cnt = [n for value, n in held if n and value != ignore_index]
    if cnt is None:
        counts = label_counts(labels)
        if 0 <= ignore_index < counts.size:
            counts[ignore_index] = 0
        cnt = counts[counts > 0].tolist()
    return len(cnt) > 1 and max(cnt) / sum(cnt) < cat_max_ratio


_COMPARE_AT_MOST = 6  # values counted one comparison each; above, one 256-bin count is cheaper

SEG_LABELS_KEY = "vocseg_seg_labels"
"""results key: (the label map, the values it holds as a sorted tuple of ints), set by
`VocsegLoadAnnotations` from the count that checks the mask. Nearest resizing, cropping and
flipping only move values, so it stays true for every map cut from that one; the crop uses it
only while `gt_seg_map` is that same array or its resized copy (`present_labels`), and only where
a window's counts of those values add up to its size (`crop_accepted`)."""


def present_labels(results: dict, seg: np.ndarray) -> tuple[int, ...] | None:
    """The values `seg` holds, from `SEG_LABELS_KEY` when `seg` is the map they were counted on
    (or its resized copy); None when unknown (then each window is counted in full)."""
    known = results.get(SEG_LABELS_KEY)
    if known is None or known[0] is not seg:
        return None
    return known[1]


@TRANSFORMS.register_module()
class VocsegRandomCrop(RandomCrop):
    """RandomCrop with `cat_max_ratio` by counting: the same windows for the same draws."""

    @cache_randomness
    def crop_bbox(self, results: dict) -> tuple:
        seg = results.get("gt_seg_map")
        if self.cat_max_ratio >= 1.0 or seg is None or seg.dtype.kind not in "iu":
            return RandomCrop.__dict__["crop_bbox"].func(self, results)
        h, w = results["img"].shape[:2]
        ch, cw = self.crop_size

        def generate() -> tuple[int, int, int, int]:
            offset_h = np.random.randint(0, max(h - ch, 0) + 1)
            offset_w = np.random.randint(0, max(w - cw, 0) + 1)
            return offset_h, offset_h + ch, offset_w, offset_w + cw

        present = present_labels(results, seg)
        decided: dict[tuple[int, int, int, int], bool] = {}  # a map smaller than the crop: the same window every try
        bbox = generate()
        for _ in range(10):  # MMSeg's 10 tries, then its 11th window unchecked
            if bbox not in decided:
                y1, y2, x1, x2 = bbox
                decided[bbox] = crop_accepted(seg[y1:y2, x1:x2], self.cat_max_ratio, self.ignore_index, present)
            if decided[bbox]:
                break
            bbox = generate()
        return bbox


@TRANSFORMS.register_module()
class VocsegRandomResizeCrop(BaseTransform):
    """MMCV's `RandomResize` (keep_ratio) then MMSeg's `RandomCrop`, resizing only the image region
    that the crop keeps.

    The same draws in the same order (the resize ratio, then each crop try's offsets), the same
    resized label map (`cv2.resize`, nearest, the whole map: the crop tries count it), hence the
    same crop windows, `cat_max_ratio` decisions and cropped labels, bit for bit. The image
    window is interpolated straight from the source (`cv2.warpAffine`, bilinear, with the exact
    source coordinates `cv2.resize` uses, `(x + 0.5) * src / dst - 0.5`): OpenCV quantises those
    positions to 1/32 pixel there, against 1/2048 in `cv2.resize`, so pixels may differ from
    MMSeg's by 1 level (measured on VOC-like photos: max 1, mean 0.12, 12% of pixels; see
    tests/test_transforms.py), for ~2x less work (a 512x512 window against the whole resized
    image, 0.34-3.7 megapixels). `exact_resize=True` resizes the whole image, as MMSeg does.

    Sets what both replaced transforms set: `scale`, `scale_factor`, `keep_ratio`, `img_shape`
    (the crop's), `img`, `gt_seg_map`.
    """

    def __init__(
        self,
        scale: tuple[int, int],
        ratio_range: tuple[float, float],
        crop_size: int | tuple[int, int],
        cat_max_ratio: float = 1.0,
        ignore_index: int = 255,
        keep_ratio: bool = True,
        exact_resize: bool = False,
    ) -> None:
        super().__init__()
        if not keep_ratio:
            raise ValueError("VocsegRandomResizeCrop keeps the aspect ratio (keep_ratio=True), as the VOC recipe; use RandomResize + RandomCrop otherwise")
        self.scale = tuple(scale)
        self.ratio_range = tuple(ratio_range)
        self.crop = VocsegRandomCrop(crop_size if isinstance(crop_size, int) else tuple(crop_size), cat_max_ratio, ignore_index)
        self.keep_ratio = keep_ratio
        self.exact_resize = exact_resize

    def transform(self, results: dict) -> dict:
        window = self.choose_window(results)
        if window is not None:
            self.cut(results, window, window.warp(results["img"]))
        return results

    def choose_window(self, results: dict) -> CropWindow | None:
        """Everything but the image's pixels: the resize ratio and the crop tries drawn (MMSeg's
        draws, in its order), `scale`, `scale_factor`, `keep_ratio` set, the label maps resized
        whole; returns the image's crop window for `cut`. With `exact_resize` (or a non-uint8
        image) the image is resized whole and cropped here, as MMSeg does: returns None."""
        import mmcv
        from mmcv.transforms import RandomResize

        scale = RandomResize._random_sample_ratio(self.scale, self.ratio_range)  # noqa: SLF001 - MMCV's own draw
        img = results["img"]
        h, w = img.shape[:2]
        new_w, new_h = mmcv.rescale_size((w, h), scale)
        results["scale"] = scale
        results["scale_factor"] = (new_w / w, new_h / h)
        results["keep_ratio"] = True
        known = results.get(SEG_LABELS_KEY)
        for key in results.get("seg_fields", []):
            resized = cv2.resize(results[key], (new_w, new_h), interpolation=cv2.INTER_NEAREST)
            if key == "gt_seg_map" and known is not None and known[0] is results[key]:
                results[SEG_LABELS_KEY] = (resized, known[1])  # nearest resizing only moves values
            results[key] = resized
        if self.exact_resize or img.dtype != np.uint8:
            results["img"] = mmcv.imresize(img, (new_w, new_h), interpolation="bilinear")
            results["img_shape"] = (new_h, new_w)
            self.crop.transform(results)
            return None
        results["img"] = _ShapeOnly((new_h, new_w, *img.shape[2:]))
        y1, y2, x1, x2 = self.crop.crop_bbox(results)
        results["img"] = img
        return CropWindow(x1, y1, min(x2, new_w), min(y2, new_h), w / new_w, h / new_h)

    @staticmethod
    def cut(results: dict, window: CropWindow, pixels: np.ndarray) -> None:
        """Put the window's image `pixels` ((h, w) or (h, w, C), from `CropWindow.warp`) in
        `results`, with `img_shape`, and cut the window out of every label map."""
        results["img"] = pixels
        results["img_shape"] = pixels.shape[:2]
        for key in results.get("seg_fields", []):
            results[key] = results[key][window.y1 : window.y2, window.x1 : window.x2]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(scale={self.scale}, ratio_range={self.ratio_range}, crop_size={self.crop.crop_size}, cat_max_ratio={self.crop.cat_max_ratio})"


class CropWindow:
    """A crop window of the resized image, [y1:y2, x1:x2] in its pixels, with `cv2.resize`'s
    inverse scales `sx`, `sy` (source pixels per resized pixel): what `warp` needs to interpolate
    the window straight from the source image."""

    def __init__(self, x1: int, y1: int, x2: int, y2: int, sx: float, sy: float) -> None:
        self.x1, self.y1, self.x2, self.y2, self.sx, self.sy = x1, y1, x2, y2, sx, sy

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in resized pixels."""
        return self.x2 - self.x1, self.y2 - self.y1

    def source_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1): the source pixels the bilinear warp reads (each position's two taps,
        one pixel more on each side for OpenCV's 1/32-pixel rounding), inside a width x height image."""
        def span(first: int, last: int, scale: float, size: int) -> tuple[int, int]:
            low = int(np.floor((first + 0.5) * scale - 0.5)) - 1
            high = int(np.floor((last - 0.5) * scale - 0.5)) + 3
            return max(low, 0), min(high, size)

        x0, x1 = span(self.x1, self.x2, self.sx, width)
        y0, y1 = span(self.y1, self.y2, self.sy, height)
        return x0, y0, x1, y1

    def warp(self, img: np.ndarray, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
        """The window interpolated from `img` (the source image, or a part of it whose top-left
        pixel is source pixel `origin` = (x, y)): bilinear, `cv2.resize`'s source coordinates
        `(x + 0.5) * src / dst - 0.5`, edges replicated. (h, w[, C]) like `img`."""
        sx, sy = self.sx, self.sy
        matrix = np.array([[sx, 0.0, (self.x1 + 0.5) * sx - 0.5 - origin[0]], [0.0, sy, (self.y1 + 0.5) * sy - 0.5 - origin[1]]])
        window = cv2.warpAffine(img, matrix, self.size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
        return window.reshape(self.y2 - self.y1, self.x2 - self.x1, *img.shape[2:])


class _ShapeOnly:
    """Stands for the resized image while the crop window is drawn: only its shape is read."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape


def flip_directions(direction: object, prob: object) -> tuple[list, np.ndarray] | None:
    """(directions with None last, their cumulative probabilities as `np.random.choice` makes them
    in MMCV's `RandomFlip._choose_direction`: float64 cumsum divided by its last entry); None for
    what MMCV alone handles (a list of probabilities, probabilities that do not add up to 1)."""
    if isinstance(direction, str):
        directions: list = [direction, None]
    elif isinstance(direction, (list, tuple)):
        directions = list(direction) + [None]
    else:
        return None
    if not isinstance(prob, float):
        return None  # a list of probabilities: MMCV's own checks and draw
    single = prob / (len(directions) - 1)
    p = np.asarray([single] * (len(directions) - 1) + [1.0 - prob], dtype=np.float64)
    if p.min() < 0 or not np.isclose(p.sum(), 1.0):
        return None
    cdf = p.cumsum()
    cdf /= cdf[-1]
    return directions, cdf


@TRANSFORMS.register_module()
class VocsegRandomFlip(RandomFlip):
    """RandomFlip whose flipped image and mask are contiguous copies (`cv2.flip`), not NumPy views
    with negative strides: the same values, without the slow copy later steps would make.

    The direction is MMCV's draw without `np.random.choice`'s checks and object arrays (~30 us a
    call): the same one `random_sample()` draw placed in the same cumulative probabilities."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._directions = flip_directions(self.direction, self.prob)

    @cache_randomness
    def _choose_direction(self) -> str | None:
        if self._directions is None:
            return RandomFlip.__dict__["_choose_direction"].func(self)
        directions, cdf = self._directions
        return directions[int(np.searchsorted(cdf, np.random.random_sample(), side="right"))]

    def _flip(self, results: dict) -> None:
        img, seg = results.get("img"), results.get("gt_seg_map")
        super()._flip(results)
        code = _FLIP_CODES.get(results["flip_direction"])
        if code is None:
            return
        if isinstance(img, np.ndarray) and img.dtype == np.uint8:
            flipped = cv2.flip(img, code)
            results["img"] = flipped.reshape(img.shape)  # cv2 drops a trailing 1-channel axis
        if isinstance(seg, np.ndarray) and self.swap_seg_labels is None and seg.dtype == np.uint8:
            results["gt_seg_map"] = cv2.flip(seg, code).reshape(seg.shape)


def convert_lut(alpha: float, beta: float) -> np.ndarray:
    """MMSeg's `PhotoMetricDistortion.convert` (float32 `x * alpha + beta`, clip to 0-255, cast
    to uint8) for every uint8 value: (256,) uint8. The same NumPy operations on the same
    float32 values, so `lut[img]` equals `convert(img)` bit for bit."""
    values = np.arange(256, dtype=np.uint8).astype(np.float32) * alpha + beta
    return np.clip(values, 0, 255).astype(np.uint8)


def hue_lut(delta: int) -> np.ndarray:
    """MMSeg's hue shift `(h + delta) % 180` for every uint8 value (OpenCV's H is 0..179): (256,) uint8."""
    return ((np.arange(256, dtype=np.int64) + delta) % 180).astype(np.uint8)


_VALUES = np.arange(256, dtype=np.int64)


def apply_table(img: np.ndarray, table: np.ndarray, scale: float | None = None) -> np.ndarray:
    """`cv2.LUT(img, table)` for a uint8 image (any channels, any part of one) and a (256,) uint8
    table, the same pixels. A table that adds one integer and saturates (`clip(v + c, 0, 255)`
    for every v, which MMSeg's brightness gives for 99.98% of its draws) is applied as a
    saturating add (`cv2.add`, ~0.02 ms for 512x512x3, against ~0.2-0.3 ms for the lookup); a
    table that is MMSeg's contrast alone (`scale`: its alpha) as `cv2.convertScaleAbs` where that
    gives the table for every value (`scales_like`: ~0.1 ms); any other table, or one that
    differs from those in a single entry (float32 rounding at a boundary), is looked up."""
    c = int(table[128]) - 128
    if np.array_equal(table, np.clip(_VALUES + c, 0, 255)):
        if c == 0:
            return img
        flat = img.reshape(img.shape[0], -1)  # one channel (a scalar then applies to all values); a view where rows allow
        return (cv2.add(flat, c) if c > 0 else cv2.subtract(flat, -c)).reshape(img.shape)
    if scale is not None and scales_like(table, scale):
        return cv2.convertScaleAbs(img, alpha=scale, beta=-0.5)
    return cv2.LUT(img, table)


def scales_like(table: np.ndarray, scale: float) -> bool:
    """Whether `cv2.convertScaleAbs(v, alpha=scale, beta=-0.5)` (round(|v * scale - 0.5|),
    saturated) is `table[v]` for every uint8 v, through OpenCV's vector loop (one continuous row)
    and its scalar loop (rows of one value): MMSeg's contrast truncates `v * alpha`, which this
    rounds after taking half away, so the two differ only where `v * alpha` is a whole number (a
    tie) or rounds differently; then the table is looked up."""
    vector = cv2.convertScaleAbs(_ROW, alpha=scale, beta=-0.5).ravel()
    scalar = cv2.convertScaleAbs(_COLUMN, alpha=scale, beta=-0.5).ravel()
    return np.array_equal(vector, table) and np.array_equal(scalar, table)


_ROW = np.arange(256, dtype=np.uint8)[None]  # (1, 256): one continuous row
_COLUMN = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 2, axis=1)[:, :1]  # (256, 1) rows apart: one value per row


def compose(first: np.ndarray | None, then: np.ndarray | None) -> np.ndarray | None:
    """One table doing `first`, then `then` (None: nothing to do)."""
    if first is None:
        return then
    if then is None:
        return first
    return then[first]


@TRANSFORMS.register_module()
class VocsegPhotoMetricDistortion(PhotoMetricDistortion):
    """PhotoMetricDistortion as lookup tables on uint8: the same draws; the same pixels, except one
    HSV round trip where MMSeg makes two (below).

    Draw order (MMSeg's): brightness? (beta), mode, [contrast? (alpha) if mode 1], saturation?
    (alpha), hue? (delta), [contrast? (alpha) if mode 0]. Brightness and a contrast applied
    before the HSV steps are one table; so are all of them when neither HSV step applies.

    When both saturation and hue are drawn (a quarter of the images), MMSeg converts to HSV and
    back twice; this does it once, both channels through their tables in one lookup: not bit for
    bit, since the uint8 round trip in between is lossy (measured: at most 4 levels on VOC-like
    photos, mean 0.21 over those images, tests/test_transforms.py; 5 on noise and all-colour
    images, `HSV_MERGE_MAX_DIFF`: a following contrast step scales a difference of 3 by up to 1.5).
    `exact_hsv=True` keeps MMSeg's two round trips, bit for bit. (The dataset runs this step fused
    with the resize-crop and flip, `vocseg.data.fused`; the image is then bit for bit MMSeg's
    only with `exact_resize=True` on the resize-crop too.)
    """

    def __init__(self, *args: object, exact_hsv: bool = False, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.exact_hsv = exact_hsv

    def transform(self, results: dict) -> dict:
        img = results["img"]
        if not self.handles(img):
            return super().transform(results)
        results["img"] = self.apply(img, self.draw())
        return results

    @staticmethod
    def handles(img: object) -> bool:
        """An (H, W, 3) uint8 image: what the tables apply to (anything else: MMSeg's code)."""
        return isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3

    def draw(self) -> PhotometricPlan:
        """MMSeg's draws, in its order, as the tables they make."""
        random = np.random
        before: np.ndarray | None = None
        before_scale = after_scale = None  # a contrast's alpha where its table is the whole step
        if random.randint(2):
            before = convert_lut(1, random.uniform(-self.brightness_delta, self.brightness_delta))
        mode = random.randint(2)
        if mode == 1 and random.randint(2):
            alpha = random.uniform(self.contrast_lower, self.contrast_upper)
            before_scale = alpha if before is None else None
            before = compose(before, convert_lut(alpha, 0))
        saturation = hue = None
        if random.randint(2):
            saturation = convert_lut(random.uniform(self.saturation_lower, self.saturation_upper), 0)
        if random.randint(2):
            hue = hue_lut(random.randint(-self.hue_delta, self.hue_delta))
        after: np.ndarray | None = None
        if mode == 0 and random.randint(2):
            after_scale = random.uniform(self.contrast_lower, self.contrast_upper)
            after = convert_lut(after_scale, 0)
        if saturation is None and hue is None:
            before_scale = before_scale if after is None else after_scale if before is None else None
            before, after, after_scale = compose(before, after), None, None
        return PhotometricPlan(before, saturation, hue, after, before_scale, after_scale)

    def apply(self, img: np.ndarray, plan: PhotometricPlan) -> np.ndarray:
        """The drawn distortion on an (H, W, 3) uint8 BGR image (any part of one: it works pixel by
        pixel); a new array, or `img` itself when nothing was drawn."""
        before, saturation, hue, after = plan.before, plan.saturation, plan.hue, plan.after
        if before is not None:
            img = apply_table(img, before, plan.before_scale)
        if saturation is not None and hue is not None and not self.exact_hsv:
            both = np.stack([hue, saturation, np.arange(256, dtype=np.uint8)], axis=-1)[None]  # (1, 256, 3): H, S, V
            img = cv2.cvtColor(cv2.LUT(cv2.cvtColor(img, cv2.COLOR_BGR2HSV), both), cv2.COLOR_HSV2BGR)
            saturation = hue = None
        for lut, channel in ((saturation, 1), (hue, 0)):
            if lut is not None:  # one round trip per op, as MMSeg (the uint8 HSV round trip is lossy)
                hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
                # the one channel through its table (~0.5 ms at 512x512, against ~1.1 ms for a 3-channel table)
                hsv = cv2.insertChannel(cv2.LUT(cv2.extractChannel(hsv, channel), lut), hsv, channel)
                img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
        if after is not None:
            img = apply_table(img, after, plan.after_scale)
        return img


class PhotometricPlan(NamedTuple):
    """One image's drawn distortion as (256,) uint8 tables, None where not drawn: `before` the HSV
    steps (brightness, and contrast in MMSeg's mode 1), `saturation` (S channel), `hue` (H
    channel, OpenCV's 0..179), `after` them (contrast in mode 0); `before_scale`/`after_scale`: the
    contrast's alpha where that table is the contrast alone (`apply_table` may then scale)."""

    before: np.ndarray | None
    saturation: np.ndarray | None
    hue: np.ndarray | None
    after: np.ndarray | None
    before_scale: float | None = None
    after_scale: float | None = None


@TRANSFORMS.register_module()
class VocsegPackSegInputs(PackSegInputs):
    """PackSegInputs whose `inputs` is a (C, H, W) view of the (H, W, C) image: no transposing copy.

    The values are PackSegInputs' (uint8, C x H x W); the strides are channels-last. Everything
    else (the label map as (1, H, W) int64, the meta keys) is MMSeg's code."""

    def transform(self, results: dict) -> dict:
        seg = results.get("gt_seg_map")
        if self._plain(results, seg):
            return self._pack(results, seg)
        img = results.pop("img", None)
        try:
            packed = super().transform(results)
        finally:
            if img is not None:
                results["img"] = img
        if img is not None:
            if img.ndim < 3:
                img = img[..., None]
            packed["inputs"] = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)
        return packed

    @staticmethod
    def _plain(results: dict, seg: object) -> bool:
        """An (H, W, C) image with a 2-D label map (or none) and no edge or depth map: `_pack`."""
        img = results.get("img")
        if not (isinstance(img, np.ndarray) and img.ndim == 3):
            return False
        if "gt_edge_map" in results or "gt_depth_map" in results:
            return False
        return seg is None or (isinstance(seg, np.ndarray) and seg.ndim == 2)

    def _pack(self, results: dict, seg: np.ndarray | None) -> dict:
        """PackSegInputs' fields and values for `_plain` results, metadata set without deep copies
        of its immutable values (`vocseg.data.samples`)."""
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample

        sample = SegDataSample()
        if seg is not None:
            sample.gt_sem_seg = PixelData(data=int64_labels(seg))
        set_metainfo(sample, {key: results[key] for key in self.meta_keys if key in results})
        return dict(inputs=torch.from_numpy(np.ascontiguousarray(results["img"])).permute(2, 0, 1), data_samples=sample)


def int64_labels(seg: np.ndarray) -> torch.Tensor:
    """PackSegInputs' label tensor, `seg[None].astype(np.int64)` as (1, H, W) int64: the same
    values; a uint8 map converted by torch (~0.03 ms at 512x512 against ~0.05-0.1 ms)."""
    if seg.dtype != np.uint8:
        return torch.from_numpy(seg[None, ...].astype(np.int64))
    if min(seg.strides) < 0 or not seg.flags.writeable:
        seg = seg.copy()  # torch.from_numpy wants forward strides and warns on read-only memory
    return torch.from_numpy(seg).to(torch.int64).contiguous()[None]  # a crop window's rows apart: one copy, by the conversion
