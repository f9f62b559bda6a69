"""Pictures of label maps that can be read: VOC-palette colours, outlined overlays with a legend, label PNGs.

A blended fill alone does not work: at 50% opacity a class colour mixes with the photo under it,
so the legend swatch no longer matches what is seen (a "horse" region turns grey-pink, chair and
cat both look dark red). Overlays here draw each class region's *outline* (its inner boundary, a
few pixels wide) in the exact VOC palette colour, over a fill of the same colour at the given
opacity (the report uses a light one, LIGHT_FILL). The legend's swatch for a class is that same
colour, and it lists only the classes drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vocseg.data.dataset import active_dataset

BACKGROUND = 0  # VOC's background id; an own dataset's is `active_dataset().background` (None: every class painted)


def _palette() -> list[tuple[int, int, int]]:
    """256 colours: the active dataset's classes (VOC unless a run of another dataset is loaded)."""
    return active_dataset().full_palette


def _background_name() -> str | None:
    spec = active_dataset()
    return spec.classes[spec.background] if spec.background is not None else None
LIGHT_FILL = 0.35  # the fill opacity of the report's pictures: the photo shows through, the outline names the class


BLEND_PIXELS = 1 << 22  # pixels blended at a time (a band of rows): bounds the float32 copies to ~50 MB


def class_shares(label_map: np.ndarray, classes: tuple[str, ...] | None = None) -> dict[str, float]:
    """Percent of the image per class present, largest first (classes: the active dataset's)."""
    classes = classes or active_dataset().classes
    counts = np.bincount(label_map.ravel(), minlength=len(classes))[: len(classes)]
    total = max(1, int(counts.sum()))
    return {classes[i]: round(100.0 * int(counts[i]) / total, 2) for i in np.argsort(-counts, kind="stable") if counts[i] > 0}


def share_text(share: float) -> str:
    """A share in percent as the legend prints it: never "0.0%" for a class that is there."""
    return "<0.1%" if 0 < share < 0.05 else f"{share:.1f}%"


def outline_width(height: int, width: int) -> int:
    """Outline thickness in pixels: 2 on small images, growing with the image (about 1/200 of its short side)."""
    return max(2, round(min(height, width) / 200))


def outline_mask(label_map: np.ndarray, width: int) -> np.ndarray:
    """(H, W) bool: pixels within `width` pixels (square neighbourhood) of a pixel of another class.

    Each region's outline lies inside the region itself, so two touching regions each show their
    own colour along the shared edge. The image border is not an edge.
    """
    from scipy import ndimage

    size = 2 * width - 1
    low = ndimage.minimum_filter(label_map, size=size, mode="nearest")
    high = ndimage.maximum_filter(label_map, size=size, mode="nearest")
    return (low != label_map) | (high != label_map)


def outlined(rgb: np.ndarray, label_map: np.ndarray, opacity: float = LIGHT_FILL, *, width: int | None = None) -> np.ndarray:
    """The photo with each non-background region filled at `opacity` and outlined in its exact palette colour.

    rgb: (H, W, 3) uint8; label_map: (H, W) class ids. Returns (H, W, 3) uint8. Background is left
    as the photo. Outline pixels hold exactly PALETTE[class] (what the legend shows). Opacity 0 is
    the photo unchanged (no fill, no outline); opacity 1 is the label map in palette colours.
    """
    if rgb.shape[:2] != label_map.shape:
        raise ValueError(f"image {rgb.shape[:2]} and label map {label_map.shape} differ in size")
    alpha = float(np.clip(opacity, 0.0, 1.0))
    if alpha == 0:
        return rgb.copy()
    lut = np.array(_palette(), dtype=np.uint8)
    bg = active_dataset().background
    background = -1 if bg is None else bg  # -1: no id is background, every region is painted
    out = rgb.copy()
    # Blended in bands of rows: float copies of a whole 8000 x 8000 photo would take gigabytes.
    rows = max(1, BLEND_PIXELS // max(1, label_map.shape[1]))
    for top in range(0, label_map.shape[0], rows):
        band, labels = out[top : top + rows], label_map[top : top + rows]
        painted = labels != background
        if painted.any():
            mixed = (1 - alpha) * band[painted].astype(np.float32) + alpha * lut[labels[painted]].astype(np.float32)
            band[painted] = mixed.clip(0, 255).astype(np.uint8)
    edge = outline_mask(label_map, width or outline_width(*label_map.shape)) & (label_map != background)
    out[edge] = lut[label_map[edge]]
    return out


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default()


def legend_lines(shares: dict[str, float]) -> list[tuple[str, str]]:
    """(class, text) for the legend: painted classes present, largest first; background last, unpainted."""
    background = _background_name()
    lines = [(name, f"{name}  {share_text(share)}") for name, share in shares.items() if share > 0 and name != background]
    if background is not None and shares.get(background, 0) > 0:
        lines.append((background, f"{background}  {share_text(shares[background])} (not painted)"))
    return lines


DEMO_LEGEND = ("demo model: trained on", "synthetic shapes, not", "photos: labels are", "not meaningful here")


def overlay_image(rgb: np.ndarray, label_map: np.ndarray, opacity: float, shares: dict[str, float], caveat: tuple[str, ...] = ()) -> Any:
    """The outlined photo (see `outlined`) and a legend panel on the right: one swatch per class drawn.

    Each swatch is the class's palette colour, the colour of its outline in the picture. `caveat`:
    lines printed in red under the classes (`DEMO_LEGEND` for a model trained on the demo data).
    Returns a PIL image (photo width + legend width, at least the photo's height).
    """
    from PIL import Image, ImageDraw

    photo = Image.fromarray(outlined(rgb, label_map, opacity))
    size = max(12, min(28, photo.height // 24))  # legend text readable next to small and large photos
    font = _font(size)
    row = int(size * 1.5)
    lines = legend_lines(shares)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    header = "classes (share)"
    text_w = max([probe.textlength(header, font=font)] + [probe.textlength(t, font=font) for _, t in lines] + [probe.textlength(t, font=font) - size * 1.4 for t in caveat])
    width = int(text_w + size * 2.5)
    height = max(photo.height, row * (len(lines) + 1 + (len(caveat) + 1 if caveat else 0)) + size)
    canvas = Image.new("RGB", (photo.width + width, height), (255, 255, 255))
    canvas.paste(photo, (0, 0))
    draw = ImageDraw.Draw(canvas)
    x = photo.width + size // 2
    draw.text((x, size // 3), header, fill=(0, 0, 0), font=font)
    for k, (name, text) in enumerate(lines, start=1):
        y = size // 3 + k * row
        if name == _background_name():
            draw.rectangle([x, y + 2, x + size - 2, y + size], fill=(255, 255, 255), outline=(128, 128, 128))
        else:
            draw.rectangle([x, y + 2, x + size - 2, y + size], fill=tuple(_palette()[active_dataset().classes.index(name)]))
        draw.text((x + int(size * 1.4), y), text, fill=(0, 0, 0), font=font)
    for k, text in enumerate(caveat, start=len(lines) + 2):
        draw.text((x, size // 3 + k * row), text, fill=(190, 0, 0), font=font)
    return canvas


FN_COLOUR = (213, 94, 0)  # vermilion: true class pixels predicted as something else (missed)
FP_COLOUR = (0, 114, 178)  # blue: pixels predicted as the class where it is not (false alarm)
OTHER_ERROR = (150, 150, 150)  # wrong, but not about this class
IGNORED = (224, 224, 192)  # VOC's void band (label 255, drawn in VOC's own void colour): not scored


def error_map(rgb: np.ndarray, pred: np.ndarray, label: np.ndarray, cls: int, ignore_index: int = 255) -> np.ndarray:
    """(H, W, 3) uint8: for class `cls`, missed pixels in FN_COLOUR, false alarms in FP_COLOUR,
    other wrong pixels mid grey, void in VOC's void colour, correct pixels as a faded (near-white) grey photo."""
    grey = rgb.astype(np.float32).mean(axis=2, keepdims=True)
    out = np.repeat(0.2 * grey + 0.8 * 255, 3, axis=2).astype(np.uint8)  # faded: the colours stand out
    scored = label != ignore_index
    wrong = scored & (pred != label)
    out[wrong] = OTHER_ERROR
    out[wrong & (label == cls)] = FN_COLOUR
    out[wrong & (pred == cls)] = FP_COLOUR
    out[~scored] = IGNORED
    return out


def save_label_png(label_map: np.ndarray, path: Path, *, protect: tuple[Path, ...] = (), force: bool = False, option: str = "--save-predictions") -> None:
    """A palette PNG: pixel values are class ids, colours are the active dataset's (VOC's by default). Written through
    `vocseg.files.atomic_writer` (recorded temporary file, renamed into place): never in place,
    never into a folder in `protect` (the dataset's masks), never over a file of the user's
    unless `force` (`option`: the flag named in a refusal)."""
    from PIL import Image

    from vocseg.files import atomic_writer

    image = Image.fromarray(label_map.astype(np.uint8), mode="P")
    image.putpalette([c for rgb in _palette() for c in rgb])
    with atomic_writer(path, protect=protect, force=force, option=option) as tmp:
        image.save(tmp, format="PNG")
