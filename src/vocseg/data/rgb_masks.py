"""Masks saved as RGB colour pictures in the VOC palette (a common mistake: a label PNG opened and
re-saved by an image editor or by `Image.convert("RGB")`): detect them and convert them back to
palette PNGs of class indices, keeping the user's originals.

The colours are the devkit's (`vocseg.data.voc.PALETTE`): index i for classes 0..20 and 255
(224, 224, 192) for the void band. A mask with any other colour (anti-aliased edges, JPEG noise)
is not converted: which class such a pixel means is not decidable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vocseg.data.voc import IGNORE_INDEX, NUM_CLASSES, PALETTE

BACKUP_SUFFIX = "-rgb-originals"  # SegmentationClass -> SegmentationClass-rgb-originals


def colour_codes(rgb: np.ndarray) -> np.ndarray:
    """(H, W) 24-bit codes (r << 16 | g << 8 | b) of an (H, W, 3) RGB array."""
    rgb = rgb.astype(np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


_LABEL_OF_CODE = {(r << 16) | (g << 8) | b: i for i, (r, g, b) in enumerate(PALETTE) if i < NUM_CLASSES or i == IGNORE_INDEX}


def palette_indices(mask: np.ndarray) -> np.ndarray | None:
    """(H, W) uint8 class indices of an (H, W, 3|4) RGB(A) mask drawn in VOC palette colours, else None.

    An alpha channel must be fully opaque. Cost: one np.unique over the pixels (about 5 ms for 500x375).
    """
    if mask.ndim != 3 or mask.shape[2] not in (3, 4) or mask.dtype != np.uint8:
        return None
    if mask.shape[2] == 4:
        if not (mask[..., 3] == 255).all():
            return None
        mask = mask[..., :3]
    codes, inverse = np.unique(colour_codes(mask), return_inverse=True)
    labels = [_LABEL_OF_CODE.get(int(c)) for c in codes]
    if any(label is None for label in labels):
        return None
    return np.asarray(labels, dtype=np.uint8)[inverse.reshape(mask.shape[:2])]


def palette_png_bytes(labels: np.ndarray, palette: list[tuple[int, int, int]] | None = None) -> bytes:
    """A palette ("P") PNG of class indices with the VOC colours (or `palette`: 256 RGB colours of
    an own dataset), as VOC's own SegmentationClass files."""
    import io

    from PIL import Image

    image = Image.fromarray(labels, mode="P")
    image.putpalette([c for colour in (palette or PALETTE) for c in colour])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


@dataclass
class ConversionReport:
    converted: list[Path] = field(default_factory=list)  # now palette PNGs; originals in backup_dirs
    unconvertible: list[tuple[Path, str]] = field(default_factory=list)  # RGB masks with other colours
    backup_dirs: set[Path] = field(default_factory=set)


def convert_rgb_masks(masks: list[Path]) -> ConversionReport:
    """Turn every RGB palette-colour mask among `masks` into a palette PNG of class indices, in place.

    The converted file is written first (a recorded temporary file, `vocseg.files.atomic_writer`);
    then the original is moved (a hard link + unlink: never over an existing name) to
    `<mask folder>-rgb-originals/<name>`; then the converted file is renamed into place. At every
    moment the user's picture exists in one of the two places, and a run killed between the steps
    is completed by the next one: a backup without its mask is converted again from the backup.
    A mask whose original already sits in the backup folder is left alone and reported (a second
    run never overwrites a backup). Masks that are already single-channel are skipped untouched.
    """
    from vocseg.data.images import read_mask
    from vocseg.files import atomic_writer, move_aside

    report = ConversionReport()
    for folder in sorted({p.parent for p in masks}):  # a run killed after moving the original
        backup_dir = folder.with_name(folder.name + BACKUP_SUFFIX)
        if not backup_dir.is_dir() or backup_dir.is_symlink():
            continue
        for backup in sorted(backup_dir.iterdir()):
            path = folder / backup.name
            if os.path.lexists(path) or not backup.is_file() or backup.is_symlink():
                continue
            try:
                labels = palette_indices(read_mask(backup))
            except Exception:  # noqa: BLE001 - unreadable: left for the user
                continue
            if labels is not None:
                with atomic_writer(path, mode="wb") as f:
                    f.write(palette_png_bytes(labels))
                report.converted.append(path)
                report.backup_dirs.add(backup_dir)
    for path in masks:
        try:
            mask = read_mask(path)
        except Exception:  # noqa: BLE001 - unreadable: the check names it
            continue
        if mask.ndim == 2:
            continue
        labels = palette_indices(mask)
        if labels is None:
            report.unconvertible.append((path, f"colour mask {tuple(mask.shape)} with colours outside the VOC palette"))
            continue
        backup_dir = path.parent.with_name(path.parent.name + BACKUP_SUFFIX)
        backup = backup_dir / path.name
        if backup.exists():
            report.unconvertible.append((path, f"its earlier original is already kept as {backup}"))
            continue
        data = palette_png_bytes(labels)
        with atomic_writer(path, mode="wb", force=True) as f:  # renamed over `path` after the move below
            f.write(data)
            move_aside(path, backup)
        report.converted.append(path)
        report.backup_dirs.add(backup_dir)
    return report


def png_colour_type(path: Path) -> int | None:
    """The colour type byte of a PNG's IHDR (0 gray, 2 RGB, 3 palette, 4 gray+alpha, 6 RGBA),
    read from its first 26 bytes; None for anything that is not a PNG."""
    try:
        with open(path, "rb") as f:
            head = f.read(26)
    except OSError:
        return None
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return head[25]


def colour_masks(masks: list[Path]) -> list[Path]:
    """The RGB / RGBA PNGs among `masks` (by header: nothing decoded)."""
    return [m for m in masks if png_colour_type(m) in (2, 6)]
