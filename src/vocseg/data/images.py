"""The one way vocseg reads a picture: the check, the training/eval loader, eval and predict alike.

The rule: an image is read as a viewer shows it. Its EXIF Orientation tag is
applied (as MMCV's `LoadImageFromFile` does by default, and as phones expect); masks are read as
stored (PNG masks carry no orientation). A mask must therefore match the *oriented* image: a JPEG
whose tag rotates it 90 degrees needs a mask of the rotated size. Orientations 5-8 swap width and
height; 2-4 mirror or turn the picture without changing its size (square images included), which
the check reports as a warning because no size test can catch it.

Pixel formats (`read_image`): whatever Pillow opens, else whatever OpenCV opens, becomes 8-bit RGB
the way image viewers show it:

| stored as | shown as |
|---|---|
| 8-bit RGB, grey (`L`), 1-bit, palette, YCbCr, LAB, HSV | Pillow's conversion to RGB |
| CMYK | through the embedded ICC profile when there is one (as viewers do), else Pillow's conversion |
| with transparency (RGBA, LA, PA, palette with a transparent index) | composited over white |
| 16-bit integer (grey, or RGB through OpenCV) | the high byte: value >> 8, i.e. scaled by the bit depth (0-65535 -> 0-255), never clipped |
| 32-bit integer | stretched from its own min-max to 0-255 (a 32-bit range would show black) |
| floating point | x 255 when every finite value lies in [0, 1] (the usual convention); else min-max; NaN -> 0 |
| several frames (GIF, APNG, multi-page TIFF, WebP) | the first frame (`DecodedImage.notes` says so) |

Images above Pillow's decompression-bomb limit (`Image.MAX_IMAGE_PIXELS` x 2, 178.9 megapixels by
default, or `$VOCSEG_MAX_MEGAPIXELS`) are refused with a `PIL.Image.DecompressionBombError` whose message says why (size, limit, not damaged); images
above half of it are decoded with a note.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ORIENTATION_TAG = 0x0112  # EXIF "Orientation" (TIFF tag 274)
SWAPS_AXES = frozenset({5, 6, 7, 8})  # transpose, rotate 270, transverse, rotate 90
BITS_PER_SAMPLE_TAG = 258  # TIFF
MAX_MEGAPIXELS_ENV = "VOCSEG_MAX_MEGAPIXELS"


@dataclass
class DecodedImage:
    """An image as a viewer shows it.

    `rgb`: (H, W, 3) uint8, EXIF orientation applied. `notes`: what was done to show it (scaled
    bit depth, first of N frames, ...), one short phrase each. `voc_label_map`: a palette image
    with VOC's palette, i.e. a label mask rather than a photo.
    """

    rgb: np.ndarray
    notes: list[str] = field(default_factory=list)
    frames: int = 1
    orientation: int = 1
    voc_label_map: bool = False


def exif_orientation(image: object) -> int:
    """The EXIF Orientation of an open PIL image: 1 (as stored) when absent or unreadable."""
    try:
        value = image.getexif().get(ORIENTATION_TAG, 1)  # type: ignore[attr-defined]
        return int(value) if int(value) in range(1, 9) else 1
    except Exception:  # noqa: BLE001 - a broken EXIF block means "as stored", as viewers treat it
        return 1


def oriented_size(path: Path) -> tuple[tuple[int, int], int]:
    """((width, height) as a viewer shows the image, its EXIF orientation), without decoding pixels.

    Raises OSError / PIL.UnidentifiedImageError for files Pillow cannot open, and
    PIL.Image.DecompressionBombError (message: size, limit, "not damaged") above the decoding limit.
    Files only OpenCV opens (e.g. a 3-channel float TIFF) are decoded to learn their size.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with max_pixels_limit() as limit, Image.open(path) as im:
            orientation = exif_orientation(im)
            w, h = im.size
    except Image.DecompressionBombError as exc:
        raise Image.DecompressionBombError(too_large_message(path, str(exc), limit)) from None
    except UnidentifiedImageError:
        rgb = _read_with_opencv(path)
        if rgb is None:
            raise
        return (rgb.shape[1], rgb.shape[0]), 1
    return ((h, w) if orientation in SWAPS_AXES else (w, h)), orientation


def read_image_rgb(path: Path) -> np.ndarray:
    """The image as a viewer shows it: (H, W, 3) uint8 RGB, EXIF orientation applied (see `read_image`).

    Raises OSError / PIL.UnidentifiedImageError / PIL.Image.DecompressionBombError (its message
    says why: size and limit, not damaged) as the decoders do; callers turn them into one-line
    errors naming the file.
    """
    return read_image(path).rgb


def read_image_bgr(path: Path) -> np.ndarray:
    """`read_image_rgb`'s pixels with the channels in OpenCV's order: (H, W, 3) uint8 BGR, contiguous.

    Baseline and progressive JPEGs are decoded straight into BGR by simplejpeg when it is
    installed (the same libjpeg-turbo decoding as Pillow's: the same pixels, `tests/test_images.py`);
    everything else is `read_image_rgb` with its channels reversed. Raises as `read_image_rgb`.
    """
    decoded = read_image(path, order="BGR")
    return decoded.rgb


def read_image(path: Path, order: str = "RGB") -> DecodedImage:
    """Decode any image Pillow (or, failing that, OpenCV) opens, as a viewer shows it (module docstring).

    `order="BGR"` returns the channels reversed (the field is still called `rgb`), contiguous.
    Single-frame JPEGs that Pillow reads as 8-bit RGB or grey, without an Adobe colour transform,
    are decoded by simplejpeg when it is installed (`fast_jpeg_decoder`): libjpeg-turbo with the
    accurate integer DCT and fancy upsampling, as Pillow's own JPEG decoder, i.e. the same pixels.
    Raises PIL.UnidentifiedImageError when neither opens it, OSError for damaged files, and
    PIL.Image.DecompressionBombError (message from `too_large_message`) above the decoding limit.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with max_pixels_limit() as limit, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            # a JPEG for the fast decoder is read once, for Pillow's header parsing and simplejpeg
            data = Path(path).read_bytes() if Path(path).suffix.lower() in (".jpg", ".jpeg") and fast_jpeg_decoder() else None
            with Image.open(io.BytesIO(data) if data is not None else path) as im:
                frames = _frame_count(im)
                orientation = exif_orientation(im)
                label_map = is_voc_palette(im)
                pixels = _decode_jpeg(data, im, order) if data is not None else None
                if pixels is None:
                    rgb, notes = _pil_to_rgb8(im)
                    pixels = _in_order(rgb, order)
                else:
                    notes = []
    except Image.DecompressionBombError as exc:
        raise Image.DecompressionBombError(too_large_message(path, str(exc), limit)) from None
    except UnidentifiedImageError:
        rgb = _read_with_opencv(path)
        if rgb is None:
            raise
        return DecodedImage(_in_order(rgb, order), ["decoded by OpenCV (Pillow cannot open it); EXIF orientation not read"])
    if any(issubclass(w.category, Image.DecompressionBombWarning) for w in caught):
        notes.append(f"{pixels.shape[1]}x{pixels.shape[0]} = {pixels.shape[0] * pixels.shape[1] / 1e6:.0f} megapixels, above Pillow's warning limit")
    if frames > 1:
        notes.append(f"{frames} frames: the first was used")
    return DecodedImage(apply_orientation(pixels, orientation), notes, frames, orientation, label_map)


def _in_order(rgb: np.ndarray, order: str) -> np.ndarray:
    return np.ascontiguousarray(rgb[..., ::-1]) if order == "BGR" else rgb


def fast_jpeg_decoder() -> Any:
    """The simplejpeg module when installed (`pip install simplejpeg`, a wheel bundling
    libjpeg-turbo), else None: JPEGs are then decoded by Pillow, to the same pixels, ~1 ms slower."""
    global _SIMPLEJPEG
    if _SIMPLEJPEG is False:
        try:
            import simplejpeg
        except ImportError:
            simplejpeg = None
        _SIMPLEJPEG = simplejpeg
    return _SIMPLEJPEG


_SIMPLEJPEG: Any = False  # not looked up yet


def _decode_jpeg(data: bytes, im: Any, order: str) -> np.ndarray | None:
    """The JPEG file `data` (opened by Pillow as `im`) as (H, W, 3) uint8 in `order`, as stored
    (orientation not applied), by simplejpeg; None where Pillow decodes it: not a plain
    single-frame JPEG (MPO, CMYK, Adobe transform, 12-bit), or no simplejpeg."""
    if im.format != "JPEG" or im.mode not in ("RGB", "L") or "adobe" in im.info:
        return None
    decoder = fast_jpeg_decoder()
    if decoder is None:
        return None
    try:
        if im.mode == "L":
            return _gray(decoder.decode_jpeg(data, colorspace="GRAY")[..., 0])
        pixels = decoder.decode_jpeg(data, colorspace=order)
    except ValueError:  # what simplejpeg does not decode (e.g. arithmetic coding): Pillow's error or pixels
        return None
    return pixels if pixels.shape[:2] == (im.size[1], im.size[0]) else None


class max_pixels_limit:  # noqa: N801 - used as a context manager, like contextlib's
    """Pillow's decompression-bomb limit as vocseg applies it, for the duration of a `with` block.

    Pillow refuses above 2 x `Image.MAX_IMAGE_PIXELS` (89.5 M by default) and warns above 1 x;
    `$VOCSEG_MAX_MEGAPIXELS` moves the refusal limit. `__enter__` returns the limit in pixels.
    """

    def __enter__(self) -> int:
        from PIL import Image

        self.saved = Image.MAX_IMAGE_PIXELS
        raw = os.environ.get(MAX_MEGAPIXELS_ENV, "").strip()
        try:
            megapixels = float(raw) if raw else 0.0
        except ValueError:
            megapixels = 0.0
        if megapixels > 0:
            Image.MAX_IMAGE_PIXELS = int(megapixels * 1e6 / 2)
        return 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else 0

    def __exit__(self, *exc: object) -> None:
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = self.saved


def too_large_message(path: Path, pillow_message: str, limit: int) -> str:
    """One line for an image above the limit: its size, the limit, and why there is one."""
    import re

    m = re.search(r"\((\d+) pixels\)", pillow_message)
    size = f" ({int(m.group(1)) / 1e6:.3g} megapixels)" if m else ""
    return (
        f"{path} is too large to decode{size}: above the {limit / 1e6:.3g}-megapixel limit (Pillow's guard against "
        f"decompression bombs, files that expand into gigabytes of memory). It is not damaged: "
        f"raise the limit with {MAX_MEGAPIXELS_ENV}=N (megapixels) if you trust the file, or downscale it."
    )


def is_voc_palette(image: Any) -> bool:
    """A palette image whose first 21 colours are VOC's: a label mask, not a photo."""
    from vocseg.data.voc import PALETTE

    if image.mode != "P":
        return False
    try:
        palette = image.getpalette() or []
    except Exception:  # noqa: BLE001 - an unreadable palette is not VOC's
        return False
    wanted = [c for rgb in PALETTE[:21] for c in rgb]
    return palette[: len(wanted)] == wanted


def apply_orientation(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """Turn/mirror stored pixels (H, W, C) the way EXIF `orientation` (1-8) tells a viewer to
    (the same result as `PIL.ImageOps.exif_transpose`)."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
        8: lambda a: np.rot90(a, 1),
    }
    op = ops.get(orientation)
    return np.ascontiguousarray(op(rgb)) if op else rgb


def _frame_count(im: Any) -> int:
    try:
        return max(1, int(getattr(im, "n_frames", 1)))
    except Exception:  # noqa: BLE001 - a damaged later frame: the first one still counts
        return 1


def _pil_to_rgb8(im: Any) -> tuple[np.ndarray, list[str]]:
    """(H, W, 3) uint8 from an open PIL image of any mode, and notes on what was done."""
    mode = im.mode
    if mode.startswith("I;16"):
        return _gray(_scale_uint16(np.asarray(im))), ["16-bit image scaled to 8 bits"]
    if mode == "I":
        data = np.asarray(im)
        bits = _declared_bits(im)
        if bits is not None and bits <= 16 and data.min() >= 0:
            return _gray(_scale_uint16(data.astype(np.uint32) << (16 - bits))), [f"{bits}-bit image scaled to 8 bits"]
        return _gray(_stretch(data)), ["32-bit integer image stretched from its min-max to 8 bits"]
    if mode == "F":
        rgb, note = _float_to_uint8(np.asarray(im))
        return _gray(rgb), [note]
    if _has_transparency(im):
        rgba = np.asarray(im.convert("RGBA"))
        alpha = rgba[..., 3:4].astype(np.uint16)
        if int(alpha.min()) == 255:
            return np.ascontiguousarray(rgba[..., :3]), []
        over_white = (rgba[..., :3].astype(np.uint16) * alpha + 255 * (255 - alpha) + 127) // 255
        return over_white.astype(np.uint8), ["transparent areas shown on white"]
    if mode == "CMYK" and im.info.get("icc_profile"):
        try:
            import io

            from PIL import ImageCms

            source = ImageCms.ImageCmsProfile(io.BytesIO(im.info["icc_profile"]))
            converted = ImageCms.profileToProfile(im, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
            if converted is not None:
                return np.asarray(converted), ["CMYK converted through its ICC profile"]
        except Exception:  # noqa: BLE001 - a broken profile: Pillow's plain conversion, as some viewers do
            pass
    if mode == "RGB":
        return np.asarray(im), []
    try:
        return np.asarray(im.convert("RGB")), ([f"{mode} converted to RGB"] if mode == "CMYK" else [])
    except ValueError:  # a mode Pillow cannot convert (e.g. 16-bit multi-channel): through numpy
        data = np.asarray(im)
        if data.dtype == np.uint16:
            data = _scale_uint16(data)
        elif data.dtype != np.uint8:
            data = _stretch(data)
        rgb = _gray(data) if data.ndim == 2 else data[..., :3]
        return np.ascontiguousarray(rgb), [f"{mode} converted to 8-bit RGB"]


def _has_transparency(im: Any) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode in ("P", "L", "RGB") and "transparency" in im.info)


def _declared_bits(im: Any) -> int | None:
    tags = getattr(im, "tag_v2", None)
    try:
        bits = tags.get(BITS_PER_SAMPLE_TAG) if tags is not None else None
    except Exception:  # noqa: BLE001
        return None
    if isinstance(bits, (tuple, list)):
        bits = bits[0] if bits else None
    return int(bits) if isinstance(bits, int) and 0 < bits <= 32 else None


def _scale_uint16(data: np.ndarray) -> np.ndarray:
    """0-65535 -> 0-255 by the bit depth (the high byte), as Pillow does for 16-bit RGB PNGs."""
    return (data >> 8).astype(np.uint8)


def _stretch(data: np.ndarray) -> np.ndarray:
    """Min-max of the finite values -> 0-255; NaN and a constant image -> 0."""
    values = data.astype(np.float64, copy=False)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(data.shape, dtype=np.uint8)
    lo, hi = float(values[finite].min()), float(values[finite].max())
    if hi <= lo:
        return np.zeros(data.shape, dtype=np.uint8)
    out = (np.where(finite, values, lo) - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _float_to_uint8(data: np.ndarray) -> tuple[np.ndarray, str]:
    finite = np.isfinite(data)
    if finite.any() and float(data[finite].min()) >= 0.0 and float(data[finite].max()) <= 1.0:
        out = np.where(finite, data, 0.0) * 255.0
        return np.clip(np.rint(out), 0, 255).astype(np.uint8), "floating-point image (0-1) scaled to 8 bits"
    return _stretch(data), "floating-point image stretched from its min-max to 8 bits"


def _gray(data: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(data[..., None], 3, axis=2)) if data.ndim == 2 else data


def _read_with_opencv(path: Path) -> np.ndarray | None:
    """What Pillow cannot open but OpenCV can (multi-channel float or 16-bit TIFF, ...), as 8-bit RGB; None if OpenCV cannot either."""
    try:
        import cv2
    except ImportError:
        return None
    try:
        data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return None
    if data is None or data.size == 0:
        return None
    if data.dtype == np.uint16:
        data = _scale_uint16(data)
    elif data.dtype.kind == "f":
        data, _ = _float_to_uint8(data)
    elif data.dtype != np.uint8:
        data = _stretch(data)
    if data.ndim == 2:
        return _gray(data)
    channels = data.shape[2]
    if channels == 1:
        return _gray(data[..., 0])
    if channels == 2:  # grey + alpha
        data = np.concatenate([_gray(data[..., 0]), data[..., 1:2]], axis=2)
    else:
        data = np.concatenate([data[..., 2::-1], data[..., 3:4]], axis=2) if channels >= 4 else data[..., ::-1]
    if data.shape[2] == 4:
        alpha = data[..., 3:4].astype(np.uint16)
        data = ((data[..., :3].astype(np.uint16) * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
    return np.ascontiguousarray(data)



# ---------------------------------------------------------------- files of a VOC tree

IMAGE_SUFFIXES = (".jpg", ".jpeg")  # JPEGImages/<id>.jpg as VOC stores it; .jpeg, any case, is found too
MASK_SUFFIXES = (".png",)


class FolderIndex:
    """The files of one folder by (stem, lower-case extension): `<id>.JPG` or `<id>.jpeg` is found
    for `<id>` as well as `<id>.jpg`, without a `stat` per id. Built on first use; the listing is
    taken once (a folder of 17,125 VOC images lists in about 10 ms)."""

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        self._names: dict[tuple[str, str], list[str]] | None = None

    def _index(self) -> dict[tuple[str, str], list[str]]:
        if self._names is None:
            import os

            names: dict[tuple[str, str], list[str]] = {}
            try:
                entries = os.listdir(self.folder)
            except OSError:
                entries = []
            for name in entries:
                stem, dot, ext = name.rpartition(".")
                if dot and stem:
                    names.setdefault((stem, "." + ext.lower()), []).append(name)
            for found in names.values():
                found.sort()
            self._names = names
        return self._names

    def find(self, image_id: str, suffixes: tuple[str, ...]) -> Path | None:
        """The file of `image_id` with the first of `suffixes` (any case) that exists, else None.
        The exact spelling `<id><suffix>` wins over other cases of the same extension."""
        index = self._index()
        for suffix in suffixes:
            found = index.get((image_id, suffix))
            if found:
                exact = image_id + suffix
                return self.folder / (exact if exact in found else found[0])
        return None


def draft_decode(path: Path) -> tuple[tuple[int, int], int]:
    """Decode an image enough to find a truncated or corrupt file (JPEGs at 1/8 scale: every
    scan is still read) and return ((width, height) as a viewer shows it, EXIF orientation).

    Raises what Pillow raises for files it cannot decode (OSError, SyntaxError, ValueError, ...),
    and DecompressionBombError above the same limit as `read_image` (the loader), with its message.
    """
    from PIL import Image

    try:
        with max_pixels_limit() as limit, Image.open(path) as im:
            orientation = exif_orientation(im)
            w, h = im.size
            im.draft("RGB", (max(1, w // 8), max(1, h // 8)))
            im.load()
    except Image.DecompressionBombError as exc:
        raise Image.DecompressionBombError(too_large_message(path, str(exc), limit)) from None
    return ((h, w) if orientation in SWAPS_AXES else (w, h)), orientation


def read_mask(path: Path) -> np.ndarray:
    """A label mask as stored: class indices of a palette ("P") or grayscale PNG as a 2-D array
    ((H, W), the stored dtype); other modes keep their channels ((H, W, C) for RGB). No EXIF
    orientation: masks are aligned with the stored pixels, as MMSeg's LoadAnnotations reads them."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im)


def mask_problem(mask: np.ndarray, num_classes: int, ignore_index: int) -> str | None:
    """What keeps a mask array from training (one phrase), or None: it must be 2-D with integer
    values in 0..num_classes-1 or ignore_index (VOC: 0..20 and 255)."""
    if mask.ndim != 2:
        return f"is not single-channel (shape {tuple(mask.shape)})"
    if mask.dtype.kind not in "biu":
        return f"holds {mask.dtype} values, not class indices"
    if mask.dtype.kind == "b" or (mask.size and int(mask.max()) < num_classes and int(mask.min()) >= 0):
        return None
    bad = np.unique(mask[((mask >= num_classes) & (mask != ignore_index)) | (mask < 0)])
    if bad.size:
        return f"has labels {bad[:5].tolist()} outside 0..{num_classes - 1} and {ignore_index}"
    return None
