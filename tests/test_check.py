"""`vocseg prepare --check`: each kind of damage is found, named exactly, and fails the command."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vocseg.data.check import check_data_root
from vocseg.data.demo import DEMO_MARKER
from vocseg.data.voc import SPLIT_SIZES, SPLITS_SUBDIR, VOC_SUBDIR


def ids(root: Path, split: str) -> list[str]:
    return (root / VOC_SUBDIR / SPLITS_SUBDIR / f"{split}.txt").read_text().split()


def jpeg(root: Path, image_id: str) -> Path:
    return root / VOC_SUBDIR / "JPEGImages" / f"{image_id}.jpg"


def fine(root: Path, image_id: str) -> Path:
    return root / VOC_SUBDIR / "SegmentationClass" / f"{image_id}.png"


def coarse(root: Path, image_id: str) -> Path:
    return root / VOC_SUBDIR / "SegmentationClassAug" / f"{image_id}.png"


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def rewrite_mask(path: Path, change: Callable[[np.ndarray], np.ndarray], mode: str | None = None) -> None:
    with Image.open(path) as im:
        palette = im.getpalette()
        values = np.asarray(im).copy()
    out = Image.fromarray(change(values), mode) if mode else Image.fromarray(change(values))
    if palette and out.mode == "L" and mode is None:
        out = out.convert("P")
        out.putpalette(palette)
    out.save(path)


def damage_missing_image(root: Path) -> tuple[str, set[str]]:
    i = ids(root, "train")[0]
    jpeg(root, i).unlink()
    return f"missing image {jpeg(root, i)}", {"train", "trainval", "trainaug"}


def damage_missing_fine_mask(root: Path) -> tuple[str, set[str]]:
    i = ids(root, "val")[-1]
    fine(root, i).unlink()
    return f"missing mask {fine(root, i)}", {"val", "trainval"}


def damage_missing_sbd_mask(root: Path) -> tuple[str, set[str]]:
    i = ids(root, "aug")[0]
    coarse(root, i).unlink()
    return f"missing mask {coarse(root, i)}", {"aug", "trainaug"}


def damage_size_mismatch(root: Path) -> tuple[str, set[str]]:
    i = ids(root, "val")[0]
    rewrite_mask(fine(root, i), lambda m: m[:-10, :])
    with Image.open(jpeg(root, i)) as im:
        w, h = im.size
    return f"size mismatch: {jpeg(root, i)} is {w}x{h}, {fine(root, i)} is {w}x{h - 10}", {"val", "trainval"}


def damage_bad_labels(root: Path) -> tuple[str, set[str]]:
    i = ids(root, "aug")[-1]

    def paint(m: np.ndarray) -> np.ndarray:
        m[:5, :5], m[-5:, -5:] = 42, 21
        return m

    rewrite_mask(coarse(root, i), paint)
    return f"mask {coarse(root, i)} has labels [21, 42] outside 0..20 and 255", {"aug", "trainaug"}


def damage_rgb_mask(root: Path) -> tuple[str, set[str]]:
    i = ids(root, "train")[-1]
    rewrite_mask(fine(root, i), lambda m: np.stack([m, m, m], axis=-1), "RGB")
    return f"mask {fine(root, i)} is not single-channel", {"train", "trainval", "trainaug"}  # trainaug uses fine labels where they exist


def damage_truncated_mask(root: Path) -> tuple[str, set[str]]:
    i = ids(root, "val")[1]
    truncate(fine(root, i))
    return f"unreadable mask {fine(root, i)}", {"val", "trainval"}


def damage_truncated_image(root: Path) -> tuple[str, set[str]]:
    i = ids(root, "aug")[1]
    truncate(jpeg(root, i))
    return f"unreadable image {jpeg(root, i)}", {"aug", "trainaug"}


def damage_duplicate(root: Path) -> tuple[str, set[str]]:
    lst = root / VOC_SUBDIR / SPLITS_SUBDIR / "train.txt"
    listed = ids(root, "train")
    lst.write_text("".join(f"{i}\n" for i in listed[:-1] + [listed[0]]))
    return f"{lst} lists 1 ids more than once (e.g. {listed[0]})", {"train"}


def damage_missing_list(root: Path) -> tuple[str, set[str]]:
    lst = root / VOC_SUBDIR / SPLITS_SUBDIR / "trainaug.txt"
    lst.unlink()
    return f"missing list {lst}", {"trainaug"}


DAMAGES = [v for k, v in dict(globals()).items() if k.startswith("damage_")]


def test_a_sound_data_root_passes(cli, demo_root: Path) -> None:
    report = check_data_root(demo_root, aug=True, workers=1)
    assert report.ok, report.problems
    assert {s.name: (s.count, s.expected, s.checked) for s in report.splits} == {s.name: (s.count, s.count, s.count) for s in report.splits}
    result = cli("prepare", "--check", "--data-root", demo_root)
    assert result.code == 0 and "Dataset check" in result.out and "ok:" in result.out


@pytest.mark.parametrize("damage", DAMAGES, ids=[d.__name__[len("damage_") :] for d in DAMAGES])
def test_each_kind_of_damage_is_found_and_named(damage: Callable[[Path], tuple[str, set[str]]], demo_copy: Path) -> None:
    problem, lists = damage(demo_copy)
    report = check_data_root(demo_copy, aug=True, workers=1)
    assert any(p.startswith(problem) for p in report.problems), report.problems
    assert len(report.problems) == 1, report.problems  # that one problem and nothing else
    assert {s.name for s in report.splits if s.problems} == lists


def test_the_command_lists_the_problems_and_fails(cli, demo_copy: Path) -> None:
    first, _ = damage_missing_image(demo_copy)
    second, _ = damage_bad_labels(demo_copy)
    result = cli("prepare", "--check", "--data-root", demo_copy, "--workers", "2")
    assert result.code == 1
    assert f"- {first}" in result.out and f"- {second}" in result.out and "Dataset check" in result.out
    assert "2 problems in" in " ".join(result.err.split()) and len(result.err.strip().splitlines()) == 1


def test_other_split_sizes_than_the_official_ones_are_warnings_with_their_meaning(demo_copy: Path) -> None:
    (demo_copy / DEMO_MARKER).unlink()
    report = check_data_root(demo_copy, aug=True, workers=1)
    assert {s.name: s.expected for s in report.splits} == SPLIT_SIZES
    assert report.ok, report.problems  # train and eval use such lists as they are
    assert f"train.txt has {len(ids(demo_copy, 'train'))} ids; VOC's has 1464: a subset? (train and eval use the list as it is)" in report.warnings
    assert any(w.startswith(f"trainaug.txt has {len(ids(demo_copy, 'trainaug'))} ids; VOC's has 10582: a subset?") for w in report.warnings)


def test_a_subset_list_tree_passes_the_check_with_warnings(cli, demo_copy: Path) -> None:
    lst = demo_copy / VOC_SUBDIR / SPLITS_SUBDIR / "train.txt"
    lst.write_text("".join(f"{i}\n" for i in ids(demo_copy, "train")[:4]))
    (demo_copy / DEMO_MARKER).unlink()
    result = cli("prepare", "--check", "--data-root", demo_copy, "--workers", "1")
    text = " ".join(result.out.split())
    assert result.code == 0, result.err
    assert "train.txt has 4 ids; VOC's has 1464: a subset?" in text and "--force" not in text + result.err


def test_a_missing_list_of_a_tree_vocseg_did_not_extract_never_suggests_force(demo_copy: Path) -> None:
    lst = demo_copy / VOC_SUBDIR / SPLITS_SUBDIR / "val.txt"
    lst.unlink()
    report = check_data_root(demo_copy, aug=True, workers=1)
    assert any(p.startswith(f"missing list {lst}") for p in report.problems)
    assert not any("--force" in p for p in report.problems)


def test_a_mask_without_labelled_pixels_is_a_warning_and_a_void_split_an_error(demo_copy: Path) -> None:
    from PIL import Image

    val = ids(demo_copy, "val")
    first = fine(demo_copy, val[0])
    with Image.open(first) as im:
        size = im.size
    Image.new("L", size, 255).save(first)
    report = check_data_root(demo_copy, aug=False, workers=1)
    assert report.ok, report.problems
    assert f"mask {first} holds no labelled pixel (all ignore): it teaches nothing" in report.warnings
    for i in val:
        with Image.open(fine(demo_copy, i)) as im:
            size = im.size
        Image.new("L", size, 255).save(fine(demo_copy, i))
    report = check_data_root(demo_copy, aug=False, workers=1)
    assert any("every mask of val" in p and "holds no labelled pixel" in p for p in report.problems), report.problems


def test_an_incomplete_extraction_vocseg_made_is_an_error_with_the_command_that_completes_it(cli, demo_copy: Path) -> None:
    from vocseg.data.extract import EXTRACTED_MARKER

    (demo_copy / VOC_SUBDIR / EXTRACTED_MARKER).write_text('{"archive": "VOCtrainval_11-May-2012.tar", "md5": "x"}')
    lst = demo_copy / VOC_SUBDIR / SPLITS_SUBDIR / "val.txt"
    lst.unlink()
    result = cli("prepare", "--check", "--data-root", demo_copy, "--workers", "1")
    text = " ".join(result.out.split())
    assert result.code == 1
    assert f"missing list {lst}: the extraction vocseg made is incomplete (run `vocseg prepare --redo --data-root {demo_copy}`" in text
