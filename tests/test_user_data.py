"""The files users really have (issue 11): every case of tests/data/cases/ (copied byte for byte
from the shared cases) and generated variants of each kind, run through the CLI as a user would.

One reading of the data everywhere: what `prepare --check` passes trains and evaluates; what the
loader cannot read, the check, `train` and `eval` refuse first, in one line naming the file and
`vocseg prepare --check`, never with a traceback, and before anything is written.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vocseg.data import sbd
from vocseg.data.lists import parse_id_lines, read_id_list
from vocseg.data.voc import PALETTE, SBD_SUBDIR, SPLITS_SUBDIR, VOC_SUBDIR
from vocseg.errors import VocsegError

CASES = Path(__file__).parent / "data" / "cases"
TINY_2 = ("--model", "tiny", "--device", "cpu", "--no-aug", "--iters", "2", "--batch", "2", "--workers", "0")


def case_root(name: str, tmp_path: Path) -> Path:
    """A writable copy of a case's data root (the cases are demo-style trees of 4 train + 4 val ids)."""
    target = tmp_path / name.replace("/", "-")
    shutil.copytree(CASES / name, target)
    for p in [target, *target.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return target


def voc(root: Path) -> Path:
    return root / VOC_SUBDIR


def image(root: Path, image_id: str) -> Path:
    return voc(root) / "JPEGImages" / f"{image_id}.jpg"


def mask(root: Path, image_id: str) -> Path:
    return voc(root) / "SegmentationClass" / f"{image_id}.png"


def one_line(text: str) -> str:
    return " ".join(text.split())


def assert_refused(result, *needles: str) -> None:
    """Non-zero exit, one error line (no traceback) that names every needle."""
    assert result.code != 0, result.out
    assert "Traceback" not in result.out + result.err
    lines = result.err.strip().splitlines()
    assert lines and lines[0].startswith("error:"), result.err
    message = one_line(result.err)
    assert len(result.err.strip().split("\nerror:")) == 1, result.err
    for needle in needles:
        assert needle in message, (needle, message)


def save_palette(path: Path, labels: np.ndarray) -> None:
    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    im.putpalette([c for colour in PALETTE for c in colour])
    im.save(path)


def labels_of(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def with_orientation(path: Path, orientation: int) -> None:
    """Re-save a JPEG with the same stored pixels and an EXIF Orientation tag."""
    with Image.open(path) as im:
        pixels = im.convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = orientation
    pixels.save(path, quality=95, exif=exif.tobytes())


# ---------------------------------------------------------------- split lists: one reading


def test_a_list_reads_the_same_whatever_its_line_ends_bom_and_blank_lines() -> None:
    plain = b"2007_000032\n2007_000039\n"
    for variant in (
        b"2007_000032\r\n2007_000039\r\n",  # CRLF
        b"\xef\xbb\xbf2007_000032\r\n2007_000039",  # BOM, CRLF, no final newline
        b"\n2007_000032  \n\n\t2007_000039\n\n",  # blank lines, spaces, a tab
        b"2007_000032\r2007_000039\r",  # old Mac line ends
    ):
        assert parse_id_lines(variant, "x.txt") == parse_id_lines(plain, "x.txt") == ["2007_000032", "2007_000039"]


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"2007_000032\n2007_\xe9000039\n", "is not UTF-8 text (byte 0xe9 on line 2)"),
        (b"\n\n2007_000032\nJPEGImages/2007_000039\n", "Line 4 of split list L.txt holds a path"),
        (b"2007_000032 1\n", "Line 1 of split list L.txt holds more than an id"),
        (b"a\nb\n2007_000032.jpg\n", "Line 3 of split list L.txt names a file"),
    ],
)
def test_a_list_that_is_not_ids_is_named_with_its_line(data: bytes, needle: str) -> None:
    with pytest.raises(VocsegError) as err:
        parse_id_lines(data, "L.txt")
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_case_list_blank_line_reads_as_its_four_ids() -> None:
    assert read_id_list(CASES / "list-blank-line" / "val.txt") == ["2026_000081", "2026_000082", "2026_000083", "2026_000084"]


# ---------------------------------------------------------------- data that trains


@pytest.fixture
def user_root(tmp_path: Path) -> Path:
    """The uppercase-jpg case (2026_000001.JPG) with the list-blank-line case's val.txt, a train list
    with a BOM, CRLF and spaces, and one image stored as `.jpeg`: each kind of file users have."""
    root = case_root("uppercase-jpg", tmp_path)
    lists = voc(root) / SPLITS_SUBDIR
    shutil.copy(CASES / "list-blank-line" / "val.txt", lists / "val.txt")
    lists.joinpath("train.txt").write_bytes(b"\xef\xbb\xbf2026_000001\r\n 2026_000002 \r\n\r\n2026_000003\r\n2026_000004\r\n")
    image(root, "2026_000083").rename(image(root, "2026_000083").with_suffix(".jpeg"))
    return root


def test_user_files_check_plan_train_and_eval_alike(cli, user_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None) -> None:
    from vocseg.recipe.recipe import Recipe, plan

    check = cli("prepare", "--check", "--data-root", user_root)
    assert check.code == 0, check.out + check.err
    assert "missing" not in check.out

    recipe = Recipe(data_root=str(user_root), model="tiny", device="cpu", aug=False, batch=2, iters=2)
    assert plan(recipe).train_size == 4  # the schedule counts the ids the loader reads

    # Relative --data-root and --work-dir from the user's own folder.
    work = tmp_path / "project"
    work.mkdir()
    monkeypatch.chdir(work)
    os.symlink(user_root, work / "data")
    trained = cli("train", "--data-root", "data", *TINY_2, "--work-dir", "runs/mine")
    assert trained.code == 0, trained.out + trained.err
    config = (work / "runs" / "mine" / "config.py").read_text()
    assert f"'data_root': '{user_root.resolve()}/VOCdevkit/VOC2012'" in config  # resolved before it went into the config

    # eval from another folder: a relative run folder, a relative data root, a list file with CRLF + BOM.
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    (other / "my_list.txt").write_bytes(b"\xef\xbb\xbf2026_000083\r\n\r\n  2026_000001  \r\n")
    result = cli("eval", "../project/runs/mine", "--data-root", "../project/data", "--split", "my_list.txt", "--no-plots", "--workers", "0")
    assert result.code == 0, result.out + result.err
    assert "my_list on 2 images" in one_line(result.out) or "(2 images)" in one_line(result.out)
    val = cli("eval", "../project/runs/mine", "--split", "val", "--no-plots", "--workers", "0")
    assert val.code == 0 and "(4 images)" in one_line(val.out), val.out + val.err


def test_the_loader_reads_the_pixels_the_check_reads(tmp_path: Path) -> None:
    """vocseg's load step gives the pixels of mmcv's LoadImageFromFile (cv2, EXIF applied) for
    tagged and untagged images, and the masks of mmseg's LoadAnnotations."""
    from vocseg.stack.compat import ensure_stack

    ensure_stack()  # before mmseg is imported (mmcv-lite has no compiled ops)
    from mmcv.transforms import LoadImageFromFile
    from mmseg.datasets.transforms import LoadAnnotations

    from vocseg.data.images import read_image_rgb
    from vocseg.data.loading import VocsegLoadAnnotations, VocsegLoadImageFromFile

    for case in ("exif/phone-style", "exif/tag-only", "uppercase-jpg"):
        root = CASES / case
        for jpg in sorted((voc(root) / "JPEGImages").iterdir()):
            theirs = LoadImageFromFile()(dict(img_path=str(jpg)))["img"]
            ours = VocsegLoadImageFromFile()(dict(img_path=str(jpg)))["img"]
            assert ours.shape == theirs.shape and np.array_equal(ours, theirs), jpg
            assert np.array_equal(ours[..., ::-1], read_image_rgb(jpg))
    png = mask(CASES / "uppercase-jpg", "2026_000081")
    sample = dict(seg_map_path=str(png), reduce_zero_label=False, seg_fields=[])
    theirs = LoadAnnotations()(dict(sample, seg_fields=[]))["gt_seg_map"]
    ours = VocsegLoadAnnotations()(dict(sample, seg_fields=[]))["gt_seg_map"]
    assert np.array_equal(ours, theirs)


# ---------------------------------------------------------------- data that must not train


def gen_label_21(root: Path) -> tuple[str, str]:
    m = labels_of(mask(root, "2026_000082")).copy()
    m[:3, :3] = 21
    save_palette(mask(root, "2026_000082"), m)
    return str(mask(root, "2026_000082")), "has labels [21] outside 0..20 and 255"


def gen_label_200_grayscale(root: Path) -> tuple[str, str]:
    m = labels_of(mask(root, "2026_000003")).copy()
    m[-2:, -2:] = 200
    Image.fromarray(m, mode="L").save(mask(root, "2026_000003"))
    return str(mask(root, "2026_000003")), "has labels [200] outside 0..20 and 255"


def gen_rgba_palette_mask(root: Path) -> tuple[str, str]:
    m = labels_of(mask(root, "2026_000084"))
    rgba = np.concatenate([np.asarray(PALETTE, np.uint8)[m], np.full(m.shape + (1,), 255, np.uint8)], axis=-1)
    Image.fromarray(rgba, mode="RGBA").save(mask(root, "2026_000084"))
    return str(mask(root, "2026_000084")), "is an RGB colour picture in the VOC palette"


def gen_rgb_other_colours(root: Path) -> tuple[str, str]:
    m = labels_of(mask(root, "2026_000002"))
    Image.fromarray(np.stack([m * 10, m, m], axis=-1).astype(np.uint8), mode="RGB").save(mask(root, "2026_000002"))
    return str(mask(root, "2026_000002")), "is not single-channel"


def gen_truncated_png_mask(root: Path) -> tuple[str, str]:
    data = mask(root, "2026_000004").read_bytes()
    mask(root, "2026_000004").write_bytes(data[: len(data) // 2])
    return str(mask(root, "2026_000004")), "unreadable mask"


def gen_jpeg_cut_at_60_percent(root: Path) -> tuple[str, str]:
    data = image(root, "2026_000084").read_bytes()
    image(root, "2026_000084").write_bytes(data[: len(data) * 6 // 10])
    return str(image(root, "2026_000084")), "unreadable image"


def gen_tag_only_orientation_8(root: Path) -> tuple[str, str]:
    with_orientation(image(root, "2026_000002"), 8)  # pixels as stored, masks match them: the tag lies
    return str(image(root, "2026_000002")), "EXIF orientation 8 turns the stored 160x120"


def gen_png_where_a_jpeg_should_be(root: Path) -> tuple[str, str]:
    with Image.open(image(root, "2026_000003")) as im:
        im.save(image(root, "2026_000003").with_suffix(".png"))
    image(root, "2026_000003").unlink()
    return str(image(root, "2026_000003")), "(found 2026_000003.png"


GENERATED = [v for k, v in dict(globals()).items() if k.startswith("gen_")]
BROKEN_CASES = {
    "rgb-mask": ("2026_000001.png", "is an RGB colour picture in the VOC palette"),
    "label-out-of-range": ("2026_000001.png", "has labels [38] outside 0..20 and 255"),
    "truncated-jpeg": ("2026_000001.jpg", "unreadable image"),
    "exif/tag-only": ("2026_000001.jpg", "EXIF orientation 6 turns the stored 160x120"),
}


def broken_root(kind: str, tmp_path: Path) -> tuple[Path, str, str]:
    if kind in BROKEN_CASES:
        root = case_root(kind, tmp_path)
        name, why = BROKEN_CASES[kind]
        return root, name, why
    root = case_root("uppercase-jpg", tmp_path)
    path, why = next(g for g in GENERATED if g.__name__ == kind)(root)
    return root, Path(path).name, why


@pytest.mark.parametrize("kind", [*BROKEN_CASES, *(g.__name__ for g in GENERATED)])
def test_data_the_check_rejects_never_starts_training(cli, kind: str, tmp_path: Path) -> None:
    root, name, why = broken_root(kind, tmp_path)
    check = cli("prepare", "--check", "--data-root", root)
    assert check.code == 1 and name in check.out and why in one_line(check.out), check.out
    assert "Traceback" not in check.out + check.err

    work_dir = tmp_path / "run"
    trained = cli("train", "--data-root", root, *TINY_2, "--work-dir", work_dir)
    assert_refused(trained, name, why, f"vocseg prepare --check --data-root {root}", "Nothing was started")
    assert not work_dir.exists()  # refused before anything was written


@pytest.mark.parametrize("kind", ["label-out-of-range", "exif/tag-only", "gen_rgb_other_colours"])
def test_eval_refuses_the_same_data(cli, kind: str, trained_run: Path, tmp_path: Path) -> None:
    root, name, why = broken_root(kind, tmp_path)
    result = cli("eval", trained_run, "--data-root", root, "--split", "trainval", "-o", tmp_path / "out")
    assert_refused(result, name, why, "vocseg prepare --check")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("*.json"))


@pytest.mark.parametrize(
    ("content", "needle"),
    [(b"2026_000001\r\n../2026_000002\r\n", "Line 2 of split list"), (b"2026_000001\n\xff\xfe\n", "is not UTF-8 text")],
)
def test_a_list_that_is_not_ids_stops_train_in_one_line(cli, content: bytes, needle: str, tmp_path: Path) -> None:
    root = case_root("uppercase-jpg", tmp_path)
    (voc(root) / SPLITS_SUBDIR / "train.txt").write_bytes(content)
    assert_refused(cli("train", "--data-root", root, *TINY_2, "--work-dir", tmp_path / "run"), needle, "train.txt")
    assert_refused(cli("prepare", "--check", "--data-root", root), "1 problem in", "Fix it, then run")


# ---------------------------------------------------------------- RGB colour masks


def test_rgb_palette_masks_are_converted_keeping_the_originals(cli, tmp_path: Path) -> None:
    root = case_root("rgb-mask", tmp_path)
    gen_rgba_palette_mask(root)  # an RGBA one too
    originals = {p.name: p.read_bytes() for p in (voc(root) / "SegmentationClass").iterdir() if Image.open(p).mode in ("RGB", "RGBA")}
    assert len(originals) == 5
    result = cli("prepare", "--check", "--convert-rgb-masks", "--data-root", root)
    assert result.code == 0, result.out + result.err
    backup = voc(root) / "SegmentationClass-rgb-originals"
    assert "converted 5 to palette PNGs" in one_line(result.out) and str(backup) in one_line(result.out)
    assert {p.name: p.read_bytes() for p in backup.iterdir() if p.name != ".vocseg-written.jsonl"} == originals  # the user's files, byte for byte
    for name in originals:
        expected = labels_of(CASES / "uppercase-jpg" / VOC_SUBDIR / "SegmentationClass" / name)
        with Image.open(voc(root) / "SegmentationClass" / name) as im:
            assert im.mode == "P" and np.array_equal(np.asarray(im), expected)

    again = cli("prepare", "--check", "--convert-rgb-masks", "--data-root", root)
    assert again.code == 0 and "none in VOC palette colours" in again.out
    assert {p.name: p.read_bytes() for p in backup.iterdir() if p.name != ".vocseg-written.jsonl"} == originals


def test_masks_in_other_colours_are_not_converted(cli, tmp_path: Path) -> None:
    root = case_root("uppercase-jpg", tmp_path)
    path, _ = gen_rgb_other_colours(root)
    before = Path(path).read_bytes()
    result = cli("prepare", "--check", "--convert-rgb-masks", "--data-root", root)
    assert result.code == 1 and "not converted" in result.out and "outside the VOC palette" in one_line(result.out)
    assert Path(path).read_bytes() == before


# ---------------------------------------------------------------- EXIF orientation


def test_phone_style_images_pass_with_a_warning(cli, tmp_path: Path) -> None:
    root = case_root("exif/phone-style", tmp_path)
    result = cli("prepare", "--check", "--data-root", root)
    assert result.code == 0, result.out + result.err
    out = one_line(result.out)
    assert "6 images carry an EXIF orientation tag" in out and "EXIF orientation 6" in out
    assert "size mismatch" not in out


def test_a_square_image_with_a_turning_tag_is_warned_about(cli, tmp_path: Path) -> None:
    root = case_root("uppercase-jpg", tmp_path)
    square = CASES / "exif" / "square-orientation6.jpg"
    shutil.copy(square, image(root, "2026_000081"))
    with Image.open(square) as im:
        side = im.size[0]
    save_palette(mask(root, "2026_000081"), np.zeros((side, side), np.uint8))
    result = cli("prepare", "--check", "--data-root", root)
    assert result.code == 0, result.out + result.err
    out = one_line(result.out)
    assert f"{image(root, '2026_000081')} has EXIF orientation 6" in out and "a square image cannot be checked by size" in out


def test_a_tag_that_keeps_the_size_is_warned_about(cli, tmp_path: Path) -> None:
    root = case_root("uppercase-jpg", tmp_path)
    with_orientation(image(root, "2026_000004"), 3)  # turned 180 degrees: same size, labels upside down
    result = cli("prepare", "--check", "--data-root", root)
    assert result.code == 0 and "EXIF orientation 3 (viewers show it turned 180 degrees)" in one_line(result.out)


# ---------------------------------------------------------------- a file changed after the check


def test_a_file_changed_after_the_check_is_named_by_the_loader(cli, trained_run: Path, tmp_path: Path) -> None:
    from vocseg.data.loading import DataFileError

    root = case_root("uppercase-jpg", tmp_path)
    out = tmp_path / "out"
    assert cli("eval", trained_run, "--data-root", root, "--split", "val", "-o", out, "--no-plots", "--workers", "0").code == 0
    # Rewritten in place after the check passed (the folder's mtime kept: the cache still holds).
    folder = voc(root) / "SegmentationClass"
    stamp = folder.stat()
    gen_label_21(root)
    os.utime(folder, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    result = cli("eval", trained_run, "--data-root", root, "--split", "val", "-o", out, "--no-plots", "--workers", "1")
    assert_refused(result, str(mask(root, "2026_000082")), "has labels [21] outside 0..20 and 255", "vocseg prepare --check")

    # How torch re-raises a worker's exception: the worker's traceback as the message.
    text = "Caught DataFileError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n  File x\nvocseg.data.loading.DataFileError: Data file /d/m.png is missing. It changed."
    assert str(DataFileError(text)) == "Data file /d/m.png is missing. It changed."


def test_the_pre_check_is_cached_per_list_and_modification_time(tmp_path: Path) -> None:
    from vocseg.data.precheck import ListSpec, precheck

    root = case_root("uppercase-jpg", tmp_path)
    spec = ListSpec(voc(root) / SPLITS_SUBDIR / "trainval.txt", voc(root) / "JPEGImages", voc(root) / "SegmentationClass")
    first = precheck([spec], workers=1)
    assert (first.pairs, first.checked) == (8, 8)
    assert list((voc(root) / ".vocseg-cache").glob("precheck-*.json"))  # under the data root
    assert precheck([spec], workers=1).checked == 0
    spec.list_path.write_text(spec.list_path.read_text() + "\n")
    os.utime(spec.list_path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert precheck([spec], workers=1).checked == 8
    gen_label_21(root)  # a file replaced (the folder's mtime changes): checked again, and refused
    with pytest.raises(VocsegError, match="outside 0..20"):
        precheck([spec], workers=1)


# ---------------------------------------------------------------- damaged SBD .mat files


def damage_bytes(path: Path, offset_from_end: int) -> None:
    data = bytearray(path.read_bytes())
    for k in range(offset_from_end, offset_from_end + 6):
        data[-k] ^= 0xA5
    path.write_bytes(bytes(data))


def test_case_damaged_mat_is_damaged_not_a_crash() -> None:
    with pytest.raises(sbd.DamagedMatError):
        sbd.read_sbd_mat(CASES / "damaged-mat" / "damaged-1.mat")


def test_damaged_mat_files_are_named_and_the_rest_converted(cli, demo_copy: Path, demo_root: Path) -> None:
    root = demo_copy
    mats = sorted((root / SBD_SUBDIR / "cls").glob("*.mat"))
    out = voc(root) / "SegmentationClassAug"
    victims = [mats[2], mats[5], mats[9], mats[11], mats[14]]
    shutil.copy(CASES / "damaged-mat" / "damaged-1.mat", victims[0])  # the case, byte for byte
    shutil.copy(CASES / "damaged-mat" / "damaged-1.mat", victims[1])
    victims[2].write_bytes(victims[2].read_bytes()[:200])  # cut short
    victims[3].write_bytes(b"")  # empty
    damage_bytes(victims[4], 40)  # bytes flipped inside the compressed data
    good = [mats[0], mats[7], mats[-1]]
    for v in victims + good:
        (out / f"{v.stem}.png").unlink()

    result = cli("prepare", "--demo", "--data-root", root, "--workers", "2")
    assert_refused(result, f"Damaged SBD label file {victims[0]}", "(and 4 more)", "the 3 labels converted now are kept")
    assert all((out / f"{v.stem}.png").is_file() for v in good)  # the rest converted
    assert not any((out / f"{v.stem}.png").exists() for v in victims)

    again = cli("prepare", "--demo", "--data-root", root, "--workers", "2")  # re-running continues
    assert_refused(again, f"Damaged SBD label file {victims[0]}", "(and 4 more)")
    for v in victims:
        shutil.copy(demo_root / SBD_SUBDIR / "cls" / v.name, v)
    fixed = cli("prepare", "--demo", "--data-root", root)
    assert fixed.code == 0, fixed.out + fixed.err
    assert "converted 5 of" in one_line(fixed.out)


# ---------------------------------------------------------------- pool workers and their parent


def test_pool_workers_exit_when_their_parent_is_killed(tmp_path: Path) -> None:
    pids = tmp_path / "pids.txt"
    script = textwrap.dedent(
        f"""
        import os, time
        from vocseg.data.pool import process_pool

        def hang(_):
            time.sleep(120)
            return os.getpid()

        def pid(_):
            return os.getpid()

        with process_pool(2) as pool:
            seen = set(pool.map(pid, range(20)))
            open({str(pids)!r}, "w").write(" ".join(map(str, seen)))
            list(pool.map(hang, range(2)))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    parent = subprocess.Popen([sys.executable, "-c", script], env=env)
    deadline = time.monotonic() + 60
    while not (pids.is_file() and pids.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    workers = [int(p) for p in pids.read_text().split()]
    assert workers
    time.sleep(0.5)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 60  # a bound for failure only: the loop ends as soon as they are gone
    alive = workers
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in workers if running(p)]
    assert not alive, f"orphaned pool workers {alive}"


def running(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan is reaped by init, not by the test)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_png_with_a_palette_is_what_voc_ships() -> None:
    from vocseg.data.rgb_masks import palette_png_bytes

    labels = np.arange(21, dtype=np.uint8).reshape(3, 7)
    with Image.open(io.BytesIO(palette_png_bytes(labels))) as im:
        assert im.mode == "P" and np.array_equal(np.asarray(im), labels)
        assert im.getpalette()[:6] == [0, 0, 0, 128, 0, 0]


def test_the_readme_eval_forms_work_from_any_folder(cli, trained_run: Path, demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`vocseg eval runs/NAME --split trainaug --data-root data` (relative run folder and data root)
    once joined the list under the data root a second time ("Failed to load ann_file")."""
    project = tmp_path / "project"
    (project / "runs").mkdir(parents=True)
    os.symlink(trained_run, project / "runs" / "tiny")
    os.symlink(demo_root, project / "data")
    monkeypatch.chdir(project)
    here = cli("eval", "runs/tiny", "--split", "trainaug", "--data-root", "data", "-o", "out", "--no-plots", "--workers", "0")
    assert here.code == 0, here.out + here.err
    trainaug = len(read_id_list(demo_root / VOC_SUBDIR / SPLITS_SUBDIR / "trainaug.txt"))
    assert f"({trainaug} images)" in one_line(here.out) and (project / "out" / "trainaug.json").is_file()
    (project / "sub").mkdir()
    monkeypatch.chdir(project / "sub")
    there = cli("eval", "../runs/tiny", "--split", "trainaug", "--data-root", "../data", "-o", "../out2", "--no-plots", "--workers", "0")
    assert there.code == 0, there.out + there.err
    assert (project / "out2" / "trainaug.json").is_file()
