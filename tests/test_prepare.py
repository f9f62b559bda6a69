"""SBD conversion (pixel-identical to mmseg's own voc_aug.py), the aug lists, data already in place,
idempotency, and bad input during conversion."""

from __future__ import annotations

import errno
import importlib.util
import io
import os
import shutil
import sys
import urllib.request
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

from vocseg.data import sbd
from vocseg.data.voc import SBD_SUBDIR, SPLITS_SUBDIR, VOC_SUBDIR
from vocseg.errors import VocsegError
from vocseg.files import RECORD_NAME


def mmseg_voc_aug() -> ModuleType:
    """mmseg's converter script from the installed wheel."""
    import mmseg

    path = Path(mmseg.__file__).parent / ".mim" / "tools" / "dataset_converters" / "voc_aug.py"
    if "mmseg_voc_aug" not in sys.modules:
        spec = importlib.util.spec_from_file_location("mmseg_voc_aug", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules["mmseg_voc_aug"] = module
        spec.loader.exec_module(module)
    return sys.modules["mmseg_voc_aug"]


def pixels(path: Path) -> tuple[str, np.ndarray]:
    with Image.open(path) as im:
        return im.mode, np.asarray(im)


def without_conversion(root: Path) -> Path:
    """The data root as a user might have it: extracted VOC and SBD, nothing converted or listed."""
    shutil.rmtree(root / VOC_SUBDIR / "SegmentationClassAug")
    for name in ("aug.txt", "trainaug.txt"):
        (root / VOC_SUBDIR / SPLITS_SUBDIR / name).unlink()
    return root


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Nothing here may download: data already in place needs no network."""

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("prepare tried to download")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setenv("VOCSEG_CACHE_DIR", str(tmp_path / "user-cache"))


# ---------------------------------------------------------------- same labels as mmseg


def test_conversion_is_pixel_identical_to_mmsegs_converter(demo_root: Path, tmp_path: Path) -> None:
    module = mmseg_voc_aug()
    cls_dir = demo_root / SBD_SUBDIR / "cls"
    theirs = tmp_path / "mmseg"
    theirs.mkdir()
    for mat in sorted(cls_dir.glob("*.mat")):
        module.convert_mat(mat.name, str(cls_dir), str(theirs))
    ours = demo_root / VOC_SUBDIR / "SegmentationClassAug"
    names = sorted(p.name for p in theirs.iterdir())
    assert names and names == sorted(p.name for p in ours.iterdir() if p.name != RECORD_NAME)
    for name in names:
        (mode_a, a), (mode_b, b) = pixels(theirs / name), pixels(ours / name)
        assert mode_a == mode_b == "L" and a.dtype == b.dtype == np.uint8
        assert np.array_equal(a, b), name


def test_lists_have_mmsegs_sets_sorted(demo_root: Path) -> None:
    module = mmseg_voc_aug()
    splits = demo_root / VOC_SUBDIR / SPLITS_SUBDIR
    full_aug = sbd.read_ids(demo_root / SBD_SUBDIR / "train.txt") + sbd.read_ids(demo_root / SBD_SUBDIR / "val.txt")
    train, val = sbd.read_ids(splits / "train.txt"), sbd.read_ids(splits / "val.txt")
    expected = {"trainaug": module.generate_aug_list(train + full_aug, val), "aug": module.generate_aug_list(full_aug, train + val)}
    for name, theirs in expected.items():
        ours = sbd.read_ids(splits / f"{name}.txt")
        assert ours == sorted(set(theirs)), name


def save_mat(path: Path, variant: str, seg: np.ndarray) -> None:
    import scipy.sparse as sp
    from scipy.io import savemat

    boundaries = np.empty((20, 1), dtype=object)
    for k in range(20):
        boundaries[k, 0] = sp.csc_matrix(seg == k + 1)
    gtcls = {"Boundaries": boundaries, "Segmentation": seg, "CategoriesPresent": np.unique(seg)[1:].reshape(-1, 1).astype(np.uint8)}
    if variant == "compressed":
        savemat(path, {"GTcls": gtcls}, do_compression=True)
    elif variant == "uncompressed":
        savemat(path, {"GTcls": gtcls})
    elif variant == "other variable first, fields reordered":
        savemat(path, {"Info": np.arange(5.0), "GTcls": {"CategoriesPresent": gtcls["CategoriesPresent"], "Segmentation": seg}}, do_compression=True)
    elif variant == "double labels":
        savemat(path, {"GTcls": {**gtcls, "Segmentation": seg.astype(np.float64)}}, do_compression=True)
    elif variant == "struct array":
        second = {**gtcls, "Segmentation": np.zeros_like(seg)}
        arr = np.empty((1, 2), dtype=[(k, object) for k in gtcls])
        for j, g in enumerate((gtcls, second)):
            for k, v in g.items():
                arr[0, j][k] = v
        savemat(path, {"GTcls": arr}, do_compression=True)
    else:
        raise AssertionError(variant)


FAST = ("compressed", "uncompressed", "other variable first, fields reordered")


@pytest.mark.parametrize("variant", [*FAST, "double labels", "struct array"])
@pytest.mark.parametrize("shape", [(375, 500), (1, 7), (333, 1)])
def test_reader_returns_exactly_what_loadmat_gives(variant: str, shape: tuple[int, int], tmp_path: Path) -> None:
    rng = np.random.default_rng(sum(shape))
    seg = rng.integers(0, 21, size=shape, dtype=np.uint8)
    seg[rng.random(shape) < 0.05] = 255
    path = tmp_path / "x.mat"
    save_mat(path, variant, seg)
    expected = sbd.read_segmentation_scipy(path)
    got = sbd.read_sbd_mat(path)
    assert got.dtype == np.uint8 and got.shape == expected.shape == shape and np.array_equal(got, expected)
    if variant in FAST:  # taken straight from the file, no loadmat
        assert np.array_equal(sbd.read_segmentation_fast(path.read_bytes()), expected)
    else:
        with pytest.raises(sbd._NotRecognised):
            sbd.read_segmentation_fast(path.read_bytes())


@pytest.mark.parametrize("shape", [(1, 1), (3, 1), (1, 500), (375, 500), (500, 375)])
def test_png_encoder_writes_the_same_pixels_pillow_reads(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    mask = rng.integers(0, 256, size=shape, dtype=np.uint8)
    with Image.open(io.BytesIO(sbd.encode_png(mask))) as im:
        im.load()
        assert im.mode == "L" and im.size == (shape[1], shape[0])
        assert np.array_equal(np.asarray(im), mask)
    transposed = np.asfortranarray(mask)  # what the .mat reader hands over
    assert sbd.encode_png(transposed) == sbd.encode_png(mask)


def test_workers_do_not_change_the_output(demo_copy: Path, tmp_path: Path) -> None:
    out = demo_copy / VOC_SUBDIR / "SegmentationClassAug"
    single = {p.name: p.read_bytes() for p in out.iterdir() if p.name != RECORD_NAME}
    shutil.rmtree(out)
    seen: list[int] = []
    assert sbd.convert_sbd(demo_copy, workers=2, progress=seen.append) == len(single)
    assert sum(seen) == len(single)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != RECORD_NAME} == single


# ---------------------------------------------------------------- data already there, idempotency


def test_data_already_in_place_is_used_as_is(cli, demo_copy: Path) -> None:
    root = without_conversion(demo_copy)
    mats = len(list((root / SBD_SUBDIR / "cls").glob("*.mat")))
    result = cli("prepare", "--data-root", root, "--workers", "2")  # SBD by default: what `train` uses by default
    assert result.code == 0, result.out + result.err
    out = " ".join(result.out.split())
    assert "already there (not extracted by vocseg)" in out and f"converted {mats} of {mats}" in out
    aug = len(sbd.read_ids(root / VOC_SUBDIR / SPLITS_SUBDIR / "aug.txt"))
    assert f"aug.txt {aug} ids: the {mats} SBD labels minus {mats - aug} images that are in VOC train" in out
    assert out.rstrip().endswith(f"Train with: vocseg train --data-root {root} --model tiny --device cpu --batch 8 --iters 3000 --workers 2")  # a demo root: the demo's recipe
    pngs = root / VOC_SUBDIR / "SegmentationClassAug"
    assert len(list(pngs.glob("*.png"))) == mats and not [p for p in pngs.glob(".*") if p.name != RECORD_NAME]  # no temporary files left
    for name in ("aug.txt", "trainaug.txt"):
        ids = sbd.read_ids(root / VOC_SUBDIR / SPLITS_SUBDIR / name)
        assert ids == sorted(set(ids))

    stamps = {p.name: p.stat().st_mtime_ns for p in pngs.iterdir()}
    again = cli("prepare", "--aug", "--data-root", root)
    assert again.code == 0 and f"all {mats} already converted" in again.out
    assert {p.name: p.stat().st_mtime_ns for p in pngs.iterdir()} == stamps

    assert sbd.convert_sbd(root, workers=1, force=True) == mats  # --force converts every file again
    assert all(p.stat().st_mtime_ns != stamps[p.name] for p in pngs.iterdir())


def test_check_alone_and_without_aug(cli, demo_root: Path) -> None:
    result = cli("prepare", "--check", "--data-root", demo_root)
    assert result.code == 0 and "trainaug" in result.out  # aug lists found, so checked too
    assert cli("prepare", "--check", "--data-root", demo_root.parent / "nothing-here").code == 2


# ---------------------------------------------------------------- bad input while converting


def test_a_damaged_mat_is_named_and_the_rest_is_kept(cli, demo_copy: Path, demo_root: Path) -> None:
    root = without_conversion(demo_copy)
    mats = sorted((root / SBD_SUBDIR / "cls").glob("*.mat"))
    good = mats[3].read_bytes()
    mats[3].write_bytes(good[: len(good) // 2])  # truncated
    mats[7].write_bytes(b"<html>not a mat file</html>")  # something else
    result = cli("prepare", "--aug", "--data-root", root, "--workers", "2")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1
    message = " ".join(result.err.split())
    assert f"Damaged SBD label file {mats[3]}" in message and "(and 1 more)" in message
    assert f"the {len(mats) - 2} labels converted now are kept" in message
    pngs = root / VOC_SUBDIR / "SegmentationClassAug"
    assert sorted(p.stem for p in pngs.iterdir() if p.name != RECORD_NAME) == sorted(p.stem for i, p in enumerate(mats) if i not in (3, 7))

    # Re-running continues from there: only what is still missing is converted.
    mats[3].write_bytes(good)
    again = cli("prepare", "--aug", "--data-root", root)
    assert again.code == 2 and f"Damaged SBD label file {mats[7]}" in " ".join(again.err.split())
    shutil.copy(demo_root / SBD_SUBDIR / "cls" / mats[7].name, mats[7])
    fixed = cli("prepare", "--aug", "--data-root", root)
    assert fixed.code == 0, fixed.out + fixed.err
    assert f"converted 1 of {len(mats)}" in " ".join(fixed.out.split())


def test_disk_full_while_converting_keeps_what_was_written(demo_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = without_conversion(demo_copy)
    real_write = sbd.write_atomic
    written = {"n": 0}

    def fills_up(target: Path, data: bytes) -> None:
        if written["n"] == 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(target, data)
        written["n"] += 1

    monkeypatch.setattr(sbd, "write_atomic", fills_up)
    with pytest.raises(VocsegError) as err:
        sbd.convert_sbd(root, workers=1)
    assert err.value.message.startswith("Disk full while writing SBD labels") and "the 5 labels already converted are kept" in err.value.hint
    monkeypatch.setattr(sbd, "write_atomic", real_write)
    total = len(list((root / SBD_SUBDIR / "cls").glob("*.mat")))
    assert sbd.convert_sbd(root, workers=1) == total - 5  # continues from there


def test_an_interrupted_png_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "a.png"

    def broken_replace(src: object, dst: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(KeyboardInterrupt):
        sbd.write_atomic(target, b"data")
    assert [p for p in tmp_path.iterdir() if p.name != RECORD_NAME] == []


def test_temporary_files_of_a_killed_run_are_removed_and_not_counted(demo_copy: Path) -> None:
    out = demo_copy / VOC_SUBDIR / "SegmentationClassAug"
    victim = sorted(out.glob("*.png"))[0]
    victim.rename(out / f".{victim.name}.4242.tmp")  # killed between write and rename: the record names it
    with open(out / RECORD_NAME, "a") as record:
        record.write(f'{{"t": ".{victim.name}.4242.tmp", "pid": 4242}}\n')
    pending, total = sbd.pending_mats(demo_copy)
    assert pending == [victim.stem + ".mat"] and not [p for p in out.glob(".*") if p.name != RECORD_NAME]
    assert sbd.convert_sbd(demo_copy, workers=1) == 1 and victim.is_file()
