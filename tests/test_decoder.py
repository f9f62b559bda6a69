"""The one decoder's fast JPEG path (simplejpeg) reads the same pixels as Pillow, and as mmcv's cv2 reading.

`vocseg.data.images.read_image` decodes plain JPEGs with simplejpeg when it is installed; the check,
the loader, eval and predict all read through it. These tests pin that the pixels do not depend on
whether simplejpeg is there (the project works without it), over the JPEG variants a VOC-like
collection holds: chroma subsampling 4:2:0 / 4:2:2 / 4:4:4, greyscale, progressive, qualities
75-95, odd sizes, and every EXIF orientation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vocseg.data import images
from vocseg.data.images import read_image, read_image_bgr, read_image_rgb

pytest.importorskip("simplejpeg")

VARIANTS = [
    dict(subsampling=2, quality=75),  # 4:2:0, as most cameras and VOC
    dict(subsampling=1, quality=85),  # 4:2:2
    dict(subsampling=0, quality=95),  # 4:4:4
    dict(subsampling=2, quality=90, progressive=True),
    dict(subsampling=2, quality=80, optimize=True),
]


def photo(seed: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([rng.uniform(30, 220) + rng.uniform(-80, 80) * xx / w + rng.uniform(-80, 80) * yy / h for _ in range(3)], -1)
    return np.clip(base + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)


def write_jpeg(path: Path, rgb: np.ndarray, orientation: int = 1, grey: bool = False, **options: object) -> Path:
    from PIL import Image

    im = Image.fromarray(rgb).convert("L") if grey else Image.fromarray(rgb)
    exif = Image.Exif()
    if orientation != 1:
        exif[images.ORIENTATION_TAG] = orientation
    im.save(path, "JPEG", exif=exif, **options)
    return path


def pillow_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "_SIMPLEJPEG", None)


@pytest.mark.parametrize("variant", range(len(VARIANTS)))
@pytest.mark.parametrize("size", [(375, 500), (500, 375), (333, 497)])
def test_fast_jpeg_path_reads_pillows_pixels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variant: int, size: tuple[int, int]) -> None:
    path = write_jpeg(tmp_path / "a.jpg", photo(variant, *size), **VARIANTS[variant])
    fast, fast_bgr = read_image_rgb(path), read_image_bgr(path)
    assert images.fast_jpeg_decoder() is not None
    pillow_only(monkeypatch)
    slow, slow_bgr = read_image_rgb(path), read_image_bgr(path)
    assert np.array_equal(fast, slow)
    assert np.array_equal(fast_bgr, slow_bgr) and np.array_equal(fast_bgr, fast[..., ::-1])
    assert fast_bgr.flags.c_contiguous


@pytest.mark.parametrize("orientation", range(1, 9))
def test_fast_path_applies_exif_orientation_as_pillow_and_opencv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, orientation: int) -> None:
    import cv2

    path = write_jpeg(tmp_path / "o.jpg", photo(orientation, 120, 170), orientation=orientation, quality=85)
    fast = read_image(path, order="BGR")
    assert fast.orientation == orientation
    # mmcv's LoadImageFromFile (MMSeg's stock pipeline) reads with cv2.imread, which applies EXIF orientation too
    assert np.array_equal(fast.rgb, cv2.imread(str(path), cv2.IMREAD_COLOR))
    pillow_only(monkeypatch)
    assert np.array_equal(fast.rgb, read_image(path, order="BGR").rgb)


def test_greyscale_jpeg_through_the_fast_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_jpeg(tmp_path / "g.jpg", photo(3, 90, 130), grey=True, quality=80)
    fast = read_image_rgb(path)
    pillow_only(monkeypatch)
    assert fast.shape == (90, 130, 3) and np.array_equal(fast, read_image_rgb(path))


def test_cmyk_jpeg_is_left_to_pillow(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "c.jpg"
    Image.fromarray(photo(4, 40, 60)).convert("CMYK").save(path, "JPEG")
    with Image.open(path) as im:
        assert images._decode_jpeg(path.read_bytes(), im, "RGB") is None
    assert read_image_rgb(path).shape == (40, 60, 3)
