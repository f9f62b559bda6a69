"""Decoding pictures as a viewer shows them (vocseg.data.images): bit depths, modes, frames, orientation, size limit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from vocseg.data.images import oriented_size, read_image, read_image_rgb

CASES = Path(__file__).parent / "data" / "cases" / "predict-inputs"


@pytest.fixture
def photo() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random((30, 40, 3)) * 255).astype(np.uint8)


def test_gray16_case_is_scaled_not_clipped() -> None:
    raw = np.asarray(Image.open(CASES / "gray16.png"))
    assert raw.dtype == np.uint16 and raw.min() > 255  # every value would clip to white
    decoded = read_image(CASES / "gray16.png")
    assert decoded.rgb.shape == (*raw.shape, 3) and decoded.rgb.dtype == np.uint8
    assert np.array_equal(decoded.rgb[..., 0], (raw >> 8).astype(np.uint8))
    assert 0 < decoded.rgb.min() and decoded.rgb.max() < 255 and "16-bit" in decoded.notes[0]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_as_pillow_applies_it(tmp_path: Path, photo: np.ndarray, orientation: int) -> None:
    path = tmp_path / "o.jpg"
    exif = Image.Image().getexif()
    exif[0x0112] = orientation
    Image.fromarray(photo).save(path, exif=exif, quality=95)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    assert np.array_equal(read_image_rgb(path), expected)
    assert oriented_size(path) == ((expected.shape[1], expected.shape[0]), orientation)


def test_float_and_integer_depths(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    unit = rng.random((20, 30)).astype(np.float32)
    Image.fromarray(unit).save(tmp_path / "unit.tif")  # 32-bit float, values 0-1
    got = read_image(tmp_path / "unit.tif")
    assert np.abs(got.rgb[..., 0].astype(int) - np.rint(unit * 255)).max() <= 1 and "0-1" in got.notes[0]
    wide = unit * 5000 - 1000
    wide[0, 0] = np.nan
    Image.fromarray(wide).save(tmp_path / "wide.tif")  # float outside 0-1 (with a NaN): stretched
    got = read_image(tmp_path / "wide.tif").rgb[..., 0]
    finite = np.isfinite(wide)
    assert got[finite].min() == 0 and got[finite].max() == 255 and got[0, 0] == 0
    ints = (unit * 2**30).astype(np.int32)
    Image.fromarray(ints).save(tmp_path / "i32.tif")
    got = read_image(tmp_path / "i32.tif").rgb[..., 0]
    assert got.min() == 0 and got.max() == 255 and np.corrcoef(got.ravel(), ints.ravel())[0, 1] > 0.99


def test_multichannel_16bit_and_float_through_opencv(tmp_path: Path) -> None:
    import cv2

    rng = np.random.default_rng(2)
    rgb16 = (rng.random((20, 30, 3)) * 65535).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "rgb16.png"), rgb16[..., ::-1])  # OpenCV writes BGR
    assert np.array_equal(read_image_rgb(tmp_path / "rgb16.png"), (rgb16 >> 8).astype(np.uint8))
    rgbf = rng.random((20, 30, 3)).astype(np.float32)
    cv2.imwrite(str(tmp_path / "rgbf.tif"), rgbf[..., ::-1])  # Pillow cannot open this one
    got = read_image(tmp_path / "rgbf.tif")
    assert np.abs(got.rgb.astype(int) - np.rint(rgbf * 255)).max() <= 1 and "OpenCV" in got.notes[0]
    assert oriented_size(tmp_path / "rgbf.tif") == ((30, 20), 1)


def test_modes_frames_and_transparency(tmp_path: Path, photo: np.ndarray) -> None:
    image = Image.fromarray(photo)
    image.convert("1").save(tmp_path / "bw.png")
    got = read_image_rgb(tmp_path / "bw.png")
    assert set(np.unique(got)) <= {0, 255} and got.shape == (30, 40, 3)
    image.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    assert np.abs(read_image_rgb(tmp_path / "cmyk.jpg").astype(int) - photo).mean() < 12
    image.convert("P").save(tmp_path / "pal.png")
    assert np.array_equal(read_image_rgb(tmp_path / "pal.png"), np.asarray(image.convert("P").convert("RGB")))
    rgba = np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])
    rgba[:10, :, 3] = 0  # a transparent band: shown on white
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    got = read_image(tmp_path / "rgba.png")
    assert (got.rgb[:10] == 255).all() and np.array_equal(got.rgb[10:], photo[10:]) and "white" in got.notes[0]
    la = Image.fromarray(photo[..., 0]).convert("LA")
    la.save(tmp_path / "la.png")
    assert np.array_equal(read_image_rgb(tmp_path / "la.png")[..., 1], photo[..., 0])
    frames = [Image.fromarray(np.roll(photo, k, axis=1)) for k in range(3)]
    for name in ("multi.gif", "multi.tif"):
        frames[0].save(tmp_path / name, save_all=True, append_images=frames[1:])
        got = read_image(tmp_path / name)
        assert got.frames == 3 and "3 frames: the first" in got.notes[-1]
        assert np.abs(got.rgb.astype(int) - np.asarray(Image.open(tmp_path / name).convert("RGB"))).max() == 0


def test_voc_label_map_is_recognised(tmp_path: Path) -> None:
    from vocseg.data.voc import PALETTE

    mask = Image.fromarray(np.zeros((8, 8), np.uint8), mode="P")
    mask.putpalette([c for rgb in PALETTE for c in rgb])
    mask.save(tmp_path / "m.png")
    assert read_image(tmp_path / "m.png").voc_label_map
    assert not read_image(CASES / "good.jpg").voc_label_map


def test_above_the_pixel_limit_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, photo: np.ndarray) -> None:
    Image.fromarray(np.kron(photo, np.ones((4, 4, 1), np.uint8))).save(tmp_path / "big.png")  # 160 x 120 = 19200 px
    monkeypatch.setenv("VOCSEG_MAX_MEGAPIXELS", "0.01")
    with pytest.raises(Image.DecompressionBombError, match=r"too large to decode \(0.0192 megapixels\): above the 0.01-megapixel limit.*not damaged"):
        read_image(tmp_path / "big.png")
    with pytest.raises(Image.DecompressionBombError, match="not damaged"):
        oriented_size(tmp_path / "big.png")
    monkeypatch.setenv("VOCSEG_MAX_MEGAPIXELS", "0.03")  # warned above 15000 px, decoded
    got = read_image(tmp_path / "big.png")
    assert got.rgb.shape == (120, 160, 3) and "megapixels" in got.notes[0]
    monkeypatch.delenv("VOCSEG_MAX_MEGAPIXELS")
    assert read_image(tmp_path / "big.png").notes == [] and Image.MAX_IMAGE_PIXELS == 89478485
