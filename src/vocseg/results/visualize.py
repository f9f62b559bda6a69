"""Pictures of label maps: VOC-palette colours, overlays with a legend, palette label PNGs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vocseg.data.voc import CLASSES, PALETTE


def colourise(label_map: np.ndarray) -> np.ndarray:
    lut = np.array(PALETTE, dtype=np.uint8)
    return lut[label_map]


def class_shares(label_map: np.ndarray, classes: tuple[str, ...] = CLASSES) -> dict[str, float]:
    """Percent of the image per class present, largest first."""
    counts = np.bincount(label_map.ravel(), minlength=len(classes))[: len(classes)]
    total = max(1, int(counts.sum()))
    return {classes[i]: round(100.0 * int(counts[i]) / total, 2) for i in np.argsort(-counts, kind="stable") if counts[i] > 0}


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default()


def overlay_image(rgb: np.ndarray, label_map: np.ndarray, opacity: float, shares: dict[str, float]) -> Any:
    """The photo with non-background classes blended in, and a legend panel on the right."""
    from PIL import Image, ImageDraw

    colours = colourise(label_map).astype(np.float32)
    blend = rgb.astype(np.float32)
    painted = label_map > 0
    blend[painted] = (1 - opacity) * blend[painted] + opacity * colours[painted]
    photo = Image.fromarray(blend.clip(0, 255).astype(np.uint8))
    size = max(12, min(28, photo.height // 24))  # legend text readable next to small and large photos
    font = _font(size)
    row = int(size * 1.5)
    lines = [(name, f"{name}  {share:.1f}%") for name, share in shares.items()]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = max([probe.textlength("classes (share)", font=font)] + [probe.textlength(t, font=font) for _, t in lines])
    width = int(text_w + size * 2.5)
    height = max(photo.height, row * (len(lines) + 1) + size)
    canvas = Image.new("RGB", (photo.width + width, height), (255, 255, 255))
    canvas.paste(photo, (0, 0))
    draw = ImageDraw.Draw(canvas)
    x = photo.width + size // 2
    draw.text((x, size // 3), "classes (share)", fill=(0, 0, 0), font=font)
    for k, (name, text) in enumerate(lines, start=1):
        y = size // 3 + k * row
        draw.rectangle([x, y + 2, x + size - 2, y + size], fill=PALETTE[CLASSES.index(name)], outline=(0, 0, 0))
        draw.text((x + int(size * 1.4), y), text, fill=(0, 0, 0), font=font)
    return canvas


def save_label_png(label_map: np.ndarray, path: Path) -> None:
    """A palette PNG: pixel values are class ids, colours are VOC's."""
    from PIL import Image

    image = Image.fromarray(label_map.astype(np.uint8), mode="P")
    image.putpalette([c for rgb in PALETTE for c in rgb])
    image.save(path)
