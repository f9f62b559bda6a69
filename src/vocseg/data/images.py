"""The one way vocseg reads a picture: the check, the training/eval loader, eval and predict alike.

The rule (chosen for issue 11): an image is read as a viewer shows it. Its EXIF Orientation tag is
applied (as MMCV's `LoadImageFromFile` does by default, and as phones expect); masks are read as
stored (PNG masks carry no orientation). A mask must therefore match the *oriented* image: a JPEG
whose tag rotates it 90 degrees needs a mask of the rotated size. Orientations 5-8 swap width and
height; 2-4 mirror or turn the picture without changing its size (square images included), which
the check reports as a warning because no size test can catch it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ORIENTATION_TAG = 0x0112  # EXIF "Orientation" (TIFF tag 274)
SWAPS_AXES = frozenset({5, 6, 7, 8})  # transpose, rotate 270, transverse, rotate 90


def exif_orientation(image: object) -> int:
    """The EXIF Orientation of an open PIL image: 1 (as stored) when absent or unreadable."""
    try:
        value = image.getexif().get(ORIENTATION_TAG, 1)  # type: ignore[attr-defined]
        return int(value) if int(value) in range(1, 9) else 1
    except Exception:  # noqa: BLE001 - a broken EXIF block means "as stored", as viewers treat it
        return 1


def oriented_size(path: Path) -> tuple[tuple[int, int], int]:
    """((width, height) as a viewer shows the image, its EXIF orientation), without decoding pixels.

    Raises OSError / PIL.UnidentifiedImageError for files Pillow cannot open.
    """
    from PIL import Image

    with Image.open(path) as im:
        orientation = exif_orientation(im)
        w, h = im.size
    return ((h, w) if orientation in SWAPS_AXES else (w, h)), orientation


def read_image_rgb(path: Path) -> np.ndarray:
    """The image as a viewer shows it: (H, W, 3) uint8 RGB, EXIF orientation applied.

    Raises OSError / PIL.UnidentifiedImageError / PIL.Image.DecompressionBombError as Pillow does;
    callers turn them into one-line errors naming the file.
    """
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        return np.asarray(im.convert("RGB"))
