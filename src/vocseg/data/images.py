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

    Raises what Pillow raises for files it cannot decode (OSError, SyntaxError, ValueError, ...).
    """
    from PIL import Image

    with Image.open(path) as im:
        orientation = exif_orientation(im)
        w, h = im.size
        im.draft("RGB", (max(1, w // 8), max(1, h // 8)))
        im.load()
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
