"""The pictures of `vocseg report`, as data URIs: thumbnails, outlined label maps, error maps, legends.

Label maps are shrunk with nearest-neighbour sampling *before* outlines are drawn, so every
outline pixel in a thumbnail is its class's palette colour, the colour of its legend swatch in
the page (JPEG without chroma subsampling keeps it within a few levels; PNG over a photo would
make the page five times larger).
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field

import numpy as np

from vocseg.data.dataset import active_dataset
from vocseg.data.voc import IGNORE_INDEX
from vocseg.visualization.overlays import FN_COLOUR, FP_COLOUR, IGNORED, LIGHT_FILL, OTHER_ERROR, error_map, outlined

THUMB = 320  # the longest side of a gallery thumbnail, pixels
PHOTO_THUMB = 480  # the longest side of a --photos picture


def hex_colour(rgb: tuple[int, ...] | list[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb[:3])


def class_colour(index: int) -> str:
    return hex_colour(active_dataset().full_palette[index])


def data_uri(array: np.ndarray, *, photo: bool = False) -> str:
    """(H, W, 3) uint8 -> `data:image/jpeg;base64,...`.

    Photos: quality 85. Pictures with outlines: quality 92 without chroma subsampling, so a 2-pixel
    outline keeps its colour (within a few levels) at a fifth of a PNG's size over a photo.
    """
    from PIL import Image

    buf = io.BytesIO()
    if photo:
        Image.fromarray(array).save(buf, format="JPEG", quality=85)
    else:
        Image.fromarray(array).save(buf, format="JPEG", quality=92, subsampling=0)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def thumb_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(height, width) scaled so that the longest side is at most max_side (never enlarged)."""
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def shrink(rgb: np.ndarray, maps: list[np.ndarray], max_side: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """The photo (bilinear) and label maps (nearest: class ids stay class ids) at thumbnail size."""
    from PIL import Image

    h, w = thumb_size(*rgb.shape[:2], max_side)
    if (h, w) == rgb.shape[:2]:
        return rgb, maps
    small = np.asarray(Image.fromarray(rgb).resize((w, h), Image.BILINEAR))
    return small, [np.asarray(Image.fromarray(m.astype(np.uint8)).resize((w, h), Image.NEAREST)) for m in maps]


@dataclass
class LegendItem:
    name: str
    colour: str  # hex, the palette colour drawn on the outline
    note: str = ""


def legend(*maps: np.ndarray) -> list[LegendItem]:
    """The classes drawn in the given label maps (background and void left out), in class order."""
    present: set[int] = set()
    for m in maps:
        present.update(int(v) for v in np.unique(m))
    spec = active_dataset()
    return [LegendItem(spec.classes[i], class_colour(i)) for i in sorted(present) if i < spec.num_classes and i != spec.background]


@dataclass
class GalleryPictures:
    image: str
    truth: str
    prediction: str
    errors: str
    legend: list[LegendItem] = field(default_factory=list)
    width: int = 0
    height: int = 0


def gallery_pictures(rgb: np.ndarray, label: np.ndarray, pred: np.ndarray, cls: int, max_side: int = THUMB) -> GalleryPictures:
    """image | ground truth | prediction | error map for class `cls`, each at most max_side pixels."""
    small, (small_label, small_pred) = shrink(rgb, [label, pred], max_side)
    truth_map = np.where(small_label == IGNORE_INDEX, 0, small_label)  # void is shown white in the error map
    return GalleryPictures(
        image=data_uri(small, photo=True),
        truth=data_uri(outlined(small, truth_map, LIGHT_FILL)),
        prediction=data_uri(outlined(small, small_pred, LIGHT_FILL)),
        errors=data_uri(error_map(small, small_pred, small_label, cls)),
        legend=legend(truth_map, small_pred),
        width=small.shape[1],
        height=small.shape[0],
    )


def photo_pictures(rgb: np.ndarray, pred: np.ndarray, max_side: int = PHOTO_THUMB) -> tuple[str, str, list[LegendItem]]:
    """(photo, outlined prediction, legend) of a user's photo."""
    small, (small_pred,) = shrink(rgb, [pred], max_side)
    return data_uri(small, photo=True), data_uri(outlined(small, small_pred, LIGHT_FILL)), legend(small_pred)


ERROR_LEGEND = [
    LegendItem("missed: the class's pixels predicted as something else", hex_colour(FN_COLOUR)),
    LegendItem("false alarm: predicted as the class where it is not", hex_colour(FP_COLOUR)),
    LegendItem("other errors", hex_colour(OTHER_ERROR)),
    LegendItem("void (not scored)", hex_colour(IGNORED)),
]
