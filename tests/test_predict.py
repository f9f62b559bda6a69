"""vocseg predict: overlays, VOC-palette label maps, legends, names, slide mode, and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vocseg.data.voc import PALETTE, VOC_SUBDIR


@pytest.fixture(scope="module")
def varied_run(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained run with a random classifier, so predictions hold several classes (see test_eval)."""
    import torch

    from vocseg.runs.folders import latest_checkpoint
    from vocseg.stack.compat import ensure_stack, load_checkpoint_file

    ensure_stack()
    target = tmp_path_factory.mktemp("varied_predict") / "run"
    target.mkdir()
    shutil.copy(trained_run / "config.py", target / "config.py")
    checkpoint = load_checkpoint_file(latest_checkpoint(trained_run))
    g = torch.Generator().manual_seed(1)
    for key in ("decode_head.conv_seg.weight", "decode_head.conv_seg.bias"):
        checkpoint["state_dict"][key] = torch.randn(checkpoint["state_dict"][key].shape, generator=g) * 3
    torch.save(checkpoint, target / "iter_8.pth")
    return target


@pytest.fixture
def photos(demo_root: Path, tmp_path: Path) -> Path:
    """A folder with 3 photos, a corrupt JPEG, a text file, and a same-named photo in a subfolder."""
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    jpgs = sorted((demo_root / VOC_SUBDIR / "JPEGImages").glob("*.jpg"))
    for src in jpgs[:3]:
        shutil.copy(src, folder / src.name)
    shutil.copy(jpgs[3], folder / "more" / jpgs[0].name)  # same stem as a top-level photo
    (folder / "broken.jpg").write_bytes(jpgs[4].read_bytes()[:200])
    (folder / "notes.txt").write_text("not an image\n")
    return folder


def test_folder_glob_corrupt_and_non_images(cli, varied_run: Path, photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = sorted(photos.glob("*.jpg"))[0]
    r = cli("predict", photos, str(photos / "more" / "*.jpg"), "--checkpoint", varied_run, "--out", out, "--device", "auto")
    assert r.code == 0, r.err
    report = json.loads((out / "predictions.json").read_text())
    by_name = {Path(item["image"]).name: item for item in report["images"] if "more" not in item["image"]}
    assert len(report["images"]) == 6
    assert "4 input(s) segmented, 2 skipped" in " ".join(r.out.split())
    assert f"written to {out} (list: predictions.json)" in " ".join(r.out.split())  # trial 2, item 10: not "(report ...)"
    assert "damaged" in by_name["broken.jpg"]["error"] and "not an image" in by_name["notes.txt"]["error"]
    done = [item for item in report["images"] if item["error"] is None]
    assert len(done) == 4
    # colliding stems get their folder name in front; the others keep their own
    names = sorted(Path(item["label"]).name for item in done)
    assert f"photos_{first.stem}_label.png" in names and f"more_{first.stem}_label.png" in names
    for item in done:
        label = Image.open(item["label"])
        assert label.mode == "P" and label.size == tuple(item["size"]) == Image.open(item["image"]).size
        assert label.getpalette()[: 3 * 21] == [c for rgb in PALETTE[:21] for c in rgb]
        ids = np.asarray(label)
        assert ids.max() <= 20
        shares = item["shares"]
        assert abs(sum(shares.values()) - 100) < 0.1 and list(shares.values()) == sorted(shares.values(), reverse=True)
        counts = np.bincount(ids.ravel(), minlength=21)
        top = max(shares, key=lambda c: shares[c])
        from vocseg.data.voc import CLASSES

        assert round(100 * counts[CLASSES.index(top)] / ids.size, 2) == shares[top]
        overlay = Image.open(item["overlay"])
        assert overlay.height >= label.height and overlay.width > label.width  # photo + legend panel
    assert sum(len(item["shares"]) for item in done) > 4  # the legend has several classes to show


def test_opacity_blends_exactly(cli, varied_run: Path, photos: Path, tmp_path: Path) -> None:
    photo = sorted(photos.glob("*.jpg"))[0]
    rgb = np.asarray(Image.open(photo).convert("RGB"))
    for opacity in ("0", "1"):
        out = tmp_path / opacity
        assert cli("predict", photo, "-c", varied_run, "-o", out, "--opacity", opacity).code == 0
        overlay = np.asarray(Image.open(out / f"{photo.stem}_overlay.png").convert("RGB"))[: rgb.shape[0], : rgb.shape[1]]
        ids = np.asarray(Image.open(out / f"{photo.stem}_label.png"))
        if opacity == "0":
            assert np.array_equal(overlay, rgb)
        else:
            painted = ids > 0
            assert painted.any()
            assert np.array_equal(overlay[painted], np.array(PALETTE, dtype=np.uint8)[ids[painted]])
            assert np.array_equal(overlay[~painted], rgb[~painted])


def test_slide_mode_on_a_large_image(cli, varied_run: Path, demo_root: Path, tmp_path: Path) -> None:
    jpgs = sorted((demo_root / VOC_SUBDIR / "JPEGImages").glob("*.jpg"))[:4]
    tiles = [np.asarray(Image.open(p).convert("RGB")) for p in jpgs]
    big = np.concatenate([np.concatenate(tiles[:2], axis=1), np.concatenate(tiles[2:], axis=1)], axis=0)
    big = np.kron(big, np.ones((2, 2, 1), dtype=np.uint8))  # 640 x 480
    path = tmp_path / "large.png"
    Image.fromarray(big).save(path)
    r = cli("predict", path, "-c", varied_run, "-o", tmp_path / "out", "--mode", "slide")
    assert r.code == 0, r.err
    report = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert report["mode"] == "slide"
    assert Image.open(tmp_path / "out" / "large_label.png").size == (640, 480)


def test_nothing_to_do_and_bad_checkpoints(cli, varied_run: Path, photos: Path, tmp_path: Path) -> None:
    r = cli("predict", photos / "notes.txt", photos / "broken.jpg", "-c", varied_run, "-o", tmp_path / "o")
    assert r.code != 0 and "None of the 2 inputs" in r.err and "Traceback" not in r.err
    r = cli("predict", tmp_path / "empty_dir_missing" / "*.png", "-c", varied_run, "-o", tmp_path / "o")
    assert r.code != 0
    bad = tmp_path / "bad_run"
    bad.mkdir()
    shutil.copy(varied_run / "config.py", bad / "config.py")
    (bad / "iter_1.pth").write_bytes((varied_run / "iter_8.pth").read_bytes()[:5000])  # an interrupted copy
    r = cli("predict", photos, "-c", bad, "-o", tmp_path / "o")
    assert r.code != 0 and "Cannot read checkpoint" in r.err
    r = cli("predict", photos, "-c", varied_run, "--mode", "tiles")
    assert r.code != 0 and "--mode" in r.err


def test_checkpoint_for_another_number_of_classes(cli, varied_run: Path, photos: Path, tmp_path: Path) -> None:
    import torch

    from vocseg.stack.compat import load_checkpoint_file

    other = tmp_path / "five"
    other.mkdir()
    shutil.copy(varied_run / "config.py", other / "config.py")
    checkpoint = load_checkpoint_file(varied_run / "iter_8.pth")
    for key in ("decode_head.conv_seg.weight", "decode_head.conv_seg.bias", "auxiliary_head.conv_seg.weight", "auxiliary_head.conv_seg.bias"):
        checkpoint["state_dict"][key] = checkpoint["state_dict"][key][:5]
    torch.save(checkpoint, other / "iter_8.pth")
    r = cli("predict", photos, "-c", other, "-o", tmp_path / "o")
    assert r.code != 0 and "does not fit this model" in r.err and "(5," in r.err
