"""Own datasets in VOC's layout: labelme, CVAT and Datumaro exports, with their own classes.

The exports are written here in each tool's real format (labelme2voc.py: class_names.txt and palette
PNG ids, no lists; CVAT "Segmentation mask 1.1": labelmap.txt, RGB colour masks, SegmentationObject/,
ImageSets/Segmentation/default.txt; Datumaro: a labelmap whose background is neither first nor
black). One tiny training (session fixture) carries the CVAT export through check -> config ->
train -> eval -> predict -> report on the CLI.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import file_tree
from vocseg.cli import run
from vocseg.data.dataset import OWN_DIR, detect, parse_labelmap, read_class_file, stratified_split
from vocseg.data.voc import CLASSES as VOC_CLASSES
from vocseg.data.voc import PALETTE
from vocseg.errors import VocsegError
from vocseg.files import OWN_NAMES

OWN = ("background", "crack", "hole", "rust")
CVAT_COLOURS = {"background": (0, 0, 0), "crack": (250, 50, 83), "hole": (51, 221, 255), "rust": (255, 204, 51)}
# Datumaro: background neither first nor black
DATUMARO_ORDER = ("crack", "background", "hole", "rust")
DATUMARO_COLOURS = {"crack": (250, 50, 83), "background": (20, 60, 20), "hole": (51, 221, 255), "rust": (255, 204, 51)}
VOC_ONLY_NAMES = [c for c in VOC_CLASSES if c not in ("background", "train")]  # "train" is also the split


@pytest.fixture(autouse=True)
def voc_afterwards():
    """Loading an own run makes its classes this process's active dataset (pictures, legends):
    later tests in the same process start from VOC again."""
    from vocseg.data.dataset import VOC, use_dataset

    yield
    use_dataset(VOC)


def samples(n: int, seed: int = 0) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(id, RGB image, class-id map 0..3) as the demo draws them (learnable shapes)."""
    from vocseg.data.demo import render_sample

    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        labels = [1 + (k + j) % 3 for j in range(int(rng.integers(1, 3)))]
        image, label_map = render_sample(rng, labels)
        out.append((f"frame_{k:03d}", image, label_map))
    return out


def save_ids(ids: np.ndarray, path: Path) -> None:
    """A palette PNG of class ids with labelme's (= VOC's) colour map, as labelme2voc.py writes it."""
    mask = Image.fromarray(ids.astype(np.uint8), mode="P")
    mask.putpalette([c for rgb in PALETTE for c in rgb])
    mask.save(path)


def write_labelme(root: Path, n: int = 16) -> Path:
    """What labelme2voc.py writes: palette PNGs of ids (labelme's colour map = VOC's), no lists."""
    for folder in ("JPEGImages", "SegmentationClass", "SegmentationClassVisualization"):
        (root / folder).mkdir(parents=True)
    for image_id, image, label_map in samples(n):
        Image.fromarray(image).save(root / "JPEGImages" / f"{image_id}.jpg")
        save_ids(label_map, root / "SegmentationClass" / f"{image_id}.png")
        Image.fromarray(image).save(root / "SegmentationClassVisualization" / f"{image_id}.jpg")
    (root / "class_names.txt").write_text("_background_\ncrack\nhole\nrust\n")
    return root


def write_colour_export(root: Path, order: tuple[str, ...], colours: dict[str, tuple[int, int, int]], n: int = 16, lists: str = "default") -> Path:
    """CVAT / Datumaro VOC export: labelmap.txt, RGB colour masks, SegmentationObject/, default.txt."""
    for folder in ("JPEGImages", "SegmentationClass", "SegmentationObject", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True)
    lines = ["# label:color_rgb:parts:actions"] + [f"{name}:{','.join(map(str, colours[name]))}::" for name in order]
    (root / "labelmap.txt").write_text("\n".join(lines) + "\n")
    lut = np.array([colours[name] for name in OWN], dtype=np.uint8)  # sample ids are OWN's order
    ids = []
    for image_id, image, label_map in samples(n, seed=1):
        Image.fromarray(image).save(root / "JPEGImages" / f"{image_id}.jpg")
        Image.fromarray(lut[label_map]).save(root / "SegmentationClass" / f"{image_id}.png")
        Image.fromarray(((label_map > 0) * 40).astype(np.uint8)).convert("RGB").save(root / "SegmentationObject" / f"{image_id}.png")
        ids.append(image_id)
    (root / "ImageSets/Segmentation" / f"{lists}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


def text_of(result) -> str:  # noqa: ANN001 - conftest's CliResult
    """Output as one line: table borders dropped, so cells wrapped over lines read as one phrase."""
    return " ".join(re.sub("[\u2500-\u257f]", " ", result.out + result.err).split())


def assert_no_voc_names(text: str) -> None:
    found = [c for c in VOC_ONLY_NAMES if re.search(rf"\b{c}\b", text)]
    assert not found, found


def user_tree(root: Path) -> dict[str, str]:
    return {k: v for k, v in file_tree(root).items() if not k.startswith(OWN_DIR)}


# --- units ------------------------------------------------------------------------------------


def test_a_labelmap_is_read_with_its_colours_in_file_order() -> None:
    names, colours = parse_labelmap("# label:color_rgb:parts:actions\ncrack:250,50,83::\nbackground:20,60,20::\n", "labelmap.txt")
    assert names == ("crack", "background") and colours == ((250, 50, 83), (20, 60, 20))
    with pytest.raises(VocsegError, match="Line 2 of labelmap.txt"):
        parse_labelmap("crack:250,50,83::\nhole 1 2 3\n", "labelmap.txt")
    with pytest.raises(VocsegError, match="colour"):
        parse_labelmap("a:1,2,3::\nb:1,2,3::\n", "labelmap.txt")


def test_a_class_file_may_be_names_or_a_labelmap(tmp_path: Path) -> None:
    names = tmp_path / "names.txt"
    names.write_text("__ignore__\n_background_\ncrack\n\n")
    assert read_class_file(names) == (("background", "crack"), None)
    labelmap = tmp_path / "lm.txt"
    labelmap.write_text("background:0,0,0::\ncrack:1,2,3::\n")
    assert read_class_file(labelmap) == (("background", "crack"), ((0, 0, 0), (1, 2, 3)))


def test_the_split_is_deterministic_and_puts_each_class_in_val() -> None:
    ids = [f"i{k}" for k in range(20)]
    classes = {i: ({0, 1} if k < 17 else {0, 2}) | ({3} if k in (4, 9) else set()) for k, i in enumerate(ids)}
    train, val = stratified_split(ids, classes.__getitem__, ratio=0.2, seed=0)
    assert (train, val) == stratified_split(list(reversed(ids)), classes.__getitem__, ratio=0.2, seed=0)
    assert len(val) == 4 and not set(train) & set(val) and set(train) | set(val) == set(ids)
    assert {c for i in val for c in classes[i]} == {0, 1, 2, 3}


def test_each_export_is_recognised(tmp_path: Path) -> None:
    labelme = detect(write_labelme(tmp_path / "lm", n=2))
    cvat = detect(write_colour_export(tmp_path / "cvat", OWN, CVAT_COLOURS, n=2))
    datumaro = detect(write_colour_export(tmp_path / "dm", DATUMARO_ORDER, DATUMARO_COLOURS, n=2))
    assert (labelme.kind, labelme.classes, labelme.colour_masks, labelme.lists) == ("labelme", OWN, False, {})
    assert (cvat.kind, cvat.classes, cvat.colour_masks, cvat.background) == ("cvat", OWN, True, 0)
    assert (datumaro.classes, datumaro.background, datumaro.palette[1]) == (DATUMARO_ORDER, 1, (20, 60, 20))
    # VOC's own layout without VOCdevkit/VOC2012 above it: VOC's classes, the tree's lists
    bare = tmp_path / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (bare / folder).mkdir(parents=True)
    for split in ("train", "val"):
        (bare / "ImageSets/Segmentation" / f"{split}.txt").write_text("a\n")
    layout = detect(bare)
    assert (layout.kind, layout.num_classes, layout.is_voc) == ("voc-layout", 21, False)
    # a labelme export moved into VOCdevkit/VOC2012 with hand-made lists is still the labelme export
    inside = tmp_path / "moved"
    shutil.copytree(tmp_path / "lm", inside / "VOCdevkit/VOC2012")
    moved = detect(inside)
    assert (moved.kind, moved.num_classes, moved.base) == ("labelme", 4, inside / "VOCdevkit/VOC2012")


# --- the CLI ----------------------------------------------------------------------------------


def test_the_check_says_what_it_found_and_writes_nothing(cli, tmp_path: Path) -> None:
    root = write_colour_export(tmp_path / "cvat", OWN, CVAT_COLOURS, n=10)
    before = file_tree(root)
    result = cli("prepare", "--check", "--data-root", root, "--workers", "1")
    text = text_of(result)
    assert result.code == 0, text
    assert "found a CVAT / Datumaro export with 4 classes (classes from labelmap.txt): background, crack, hole, rust" in text
    assert "vocseg's seeded split (seed 0, val 20%, stratified by class)" in text
    assert file_tree(root) == before  # --check only reads
    assert_no_voc_names(text)


def test_a_colour_not_in_the_labelmap_is_named_with_its_pixels_and_files(cli, tmp_path: Path) -> None:
    root = write_colour_export(tmp_path / "cvat", OWN, CVAT_COLOURS, n=6)
    mask = root / "SegmentationClass" / "frame_002.png"
    pixels = np.asarray(Image.open(mask)).copy()
    pixels[:2, :5] = (7, 7, 7)
    Image.fromarray(pixels).save(mask)
    result = cli("prepare", "--check", "--data-root", root, "--workers", "1")
    text = text_of(result)
    assert result.code == 1
    assert "colour (7, 7, 7) is not in labelmap.txt: 10 pixels in 1 masks (frame_002.png)" in text
    # train's fast check names the user's mask (not the class-id file vocseg would have derived) and prepare
    result = cli("train", "--data-root", root, "--model", "tiny", "--device", "cpu", "--iters", "2", "--batch", "2", "--workers", "0")
    text = text_of(result)
    assert result.code == 2 and str(mask) in text and "has no class-id copy" in text and "writes it, or names the colour" in text, text


def test_a_converted_mask_changed_to_an_unknown_colour_is_not_trained_on(cli, tmp_path: Path) -> None:
    """A CVAT mask converted once, then painted with a colour the labelmap does not name: the old
    class-id copy is deleted (never trained on with its old labels) and train refuses, naming the
    user's mask in a folder whose path holds a space."""
    root = write_colour_export(tmp_path / "my cvat", OWN, CVAT_COLOURS, n=6)
    assert cli("prepare", "--data-root", root, "--workers", "1").code == 0
    copy = root / ".vocseg" / "SegmentationClassIds" / "frame_002.png"
    assert copy.is_file()
    mask = root / "SegmentationClass" / "frame_002.png"
    pixels = np.asarray(Image.open(mask)).copy()
    pixels[:2, :5] = (7, 7, 7)
    Image.fromarray(pixels).save(mask)
    result = cli("train", "--data-root", root, "--model", "tiny", "--device", "cpu", "--iters", "2", "--batch", "2", "--workers", "0")
    text = text_of(result)
    assert result.code == 2 and str(mask) in text and "has no class-id copy" in text, text
    assert not copy.exists()


def test_ids_beyond_the_classes_and_void_masks_are_reported(cli, tmp_path: Path) -> None:
    root = write_labelme(tmp_path / "lm", n=8)
    bad = root / "SegmentationClass" / "frame_001.png"
    ids = np.asarray(Image.open(bad)).copy()
    ids[0, 0] = 7
    save_ids(ids, bad)
    void = root / "SegmentationClass" / "frame_002.png"
    save_ids(np.full_like(ids, 255), void)
    text = text_of(cli("prepare", "--check", "--data-root", root, "--workers", "1"))
    assert f"mask {bad} has labels [7] outside 0..3 and 255" in text
    assert f"mask {void} holds no labelled pixel" in text


def test_the_precheck_refuses_a_split_whose_masks_are_all_void(tmp_path: Path) -> None:
    from vocseg.data.dataset import materialize
    from vocseg.data.precheck import ListSpec, precheck

    spec = materialize(detect(write_labelme(tmp_path / "lm", n=10)))
    val = spec.lists["val"]
    specs = [ListSpec(val, spec.image_dir, spec.mask_dir, 4, OWN)]
    assert precheck(specs, use_cache=False).pairs == 2
    for image_id in val.read_text().split():
        save_ids(np.full((120, 160), 255, dtype=np.uint8), spec.mask_dir / f"{image_id}.png")
    with pytest.raises(VocsegError, match="every mask of val .2. holds no labelled pixel"):
        precheck(specs, use_cache=False)


def test_a_folder_of_images_without_class_names_is_never_offered_voc(cli, tmp_path: Path) -> None:
    root = write_labelme(tmp_path / "lm", n=2)
    (root / "class_names.txt").unlink()
    before = file_tree(root)
    for args in (("prepare", "--check"), ("prepare",)):
        result = cli(*args, "--data-root", root)
        text = text_of(result)
        assert result.code != 0 and "--classes FILE" in text and "nothing was downloaded" in text, text
    assert file_tree(root) == before
    names = tmp_path / "my_classes.txt"
    names.write_text("background\ncrack\nhole\nrust\n")
    result = cli("prepare", "--check", "--data-root", root, "--classes", names, "--workers", "1")
    assert result.code == 0 and "with 4 classes (classes from my_classes.txt)" in text_of(result)


def test_config_writes_the_classes_of_a_datumaro_export(cli, tmp_path: Path) -> None:
    root = write_colour_export(tmp_path / "dm", DATUMARO_ORDER, DATUMARO_COLOURS, n=10, lists="default")
    before = user_tree(root)
    out = tmp_path / "cfg.py"
    result = cli("config", "--data-root", root, "--model", "tiny", "--device", "cpu", "--iters", "4", "-o", out)
    text = text_of(result)
    assert result.code == 0, text
    cfg = out.read_text()
    assert cfg.count("'num_classes': 4") == 2
    assert "'classes': ['crack', 'background', 'hole', 'rust']" in cfg and "[20, 60, 20]" in cfg
    assert "SBD aug is PASCAL VOC's, so off" in text and "VOC's official 40k x 16 schedule is no reference" in text
    assert_no_voc_names(cfg + text)
    assert user_tree(root) == before  # vocseg wrote only into .vocseg/
    converted = sorted(p.name for p in (root / OWN_DIR / "SegmentationClassIds").iterdir() if p.name not in OWN_NAMES)  # vocseg's record aside
    assert converted == sorted(p.name for p in (root / "SegmentationClass").iterdir())
    converted = np.asarray(Image.open(root / OWN_DIR / "SegmentationClassIds" / "frame_000.png"))
    original = np.asarray(Image.open(root / "SegmentationClass" / "frame_000.png"))
    assert (converted[(original == (20, 60, 20)).all(axis=2)] == 1).all()  # background is id 1 in this labelmap
    split = json.loads((root / OWN_DIR / "splits" / "split.json").read_text())
    assert (split["train"], split["val"], split["seed"]) == (8, 2, 0)
    result = cli("config", "--data-root", root, "--model", "tiny", "--device", "cpu", "--iters", "4", "--aug")
    assert result.code != 0 and "--aug adds SBD" in text_of(result)


def test_the_own_demo_is_a_labelme_export(cli, tmp_path: Path) -> None:
    root = tmp_path / "own"
    result = cli("prepare", "--demo", "--own", "--data-root", root, "--workers", "1")
    text = text_of(result)
    assert result.code == 0, text
    assert "found a labelme export with 4 classes (classes from class_names.txt): background, crack, hole, rust" in text
    assert (root / "class_names.txt").read_text().startswith("_background_\n")
    assert text.rstrip().endswith(f"Train with: vocseg train --data-root {root} --model tiny --device cpu --batch 8 --iters 3000 --workers 2")


def test_config_before_the_data_exist_plans_with_the_official_sizes(cli, tmp_path: Path) -> None:
    result = cli("config", "--data-root", tmp_path / "empty", "--gpus", "0,1", "--batch", "4", "--schedule", "40k", "-o", tmp_path / "cfg.py")
    text = text_of(result)
    assert result.code == 0, text
    assert "holds no VOCdevkit/VOC2012 yet: this plan uses VOC's official train + SBD aug size (10582 images)" in text
    assert "10582 images" in text


# --- one training through the CLI ---------------------------------------------------------------


@pytest.fixture(scope="session")
def cvat_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str], list[str]]:
    """A CVAT export, a tiny run on it and the transcript of check -> config -> train."""
    base = tmp_path_factory.mktemp("own")
    root = write_colour_export(base / "cvat export", OWN, CVAT_COLOURS, n=16)
    before = user_tree(root)
    work = base / "run"
    transcript = []
    import contextlib
    import io

    for args in (
        ["prepare", "--check", "--data-root", str(root), "--workers", "1"],
        ["config", "--data-root", str(root), "--model", "tiny", "--device", "cpu", "--batch", "2", "--iters", "4", "-o", str(base / "cfg.py")],
        ["train", "--data-root", str(root), "--model", "tiny", "--device", "cpu", "--batch", "2", "--num-workers", "0", "--iters", "4", "--work-dir", str(work)],
    ):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            code = run(args)
        transcript.append(buf.getvalue())
        assert code == 0, buf.getvalue()
    return root, work, before, transcript


@pytest.mark.slow
def test_a_cvat_export_goes_from_check_to_report_with_its_own_classes(cli, cvat_run, tmp_path: Path) -> None:
    root, work, before, transcript = cvat_run
    config = (work / "config.py").read_text()
    assert config.count("'num_classes': 4") == 2
    train_text = " ".join(" ".join(transcript).split())
    assert "cvat export (cvat)" in train_text and "background" in train_text and "rust" in train_text
    result = cli("eval", work)
    assert result.code == 0, result.err
    evaluated = json.loads((work / "eval" / "val.json").read_text())
    assert list(evaluated["per_class"]) == list(OWN)
    # a split without some classes: eval says which are excluded (issue 20: no dashes, no numpy warning)
    one = tmp_path / "one.txt"
    one.write_text("frame_000\n")
    result = cli("eval", work, "--split", one)
    assert result.code == 0, result.err
    single = json.loads((work / "eval" / "one.json").read_text())
    assert single["excluded"] and set(single["excluded"]) < set(OWN[1:])
    assert "not in this split" in text_of(result) and "Mean of empty slice" not in result.err
    photo = root / "JPEGImages" / "frame_003.jpg"
    result = cli("predict", photo, "-c", work)
    assert result.code == 0, result.err
    predictions = json.loads(next(work.glob("predict*/predictions.json")).read_text())
    legend = np.asarray(Image.open(next(work.glob("predict*/frame_003_overlay.png"))))
    assert legend.shape[1] > 160  # photo + legend panel
    result = cli("report", work)
    assert result.code == 0, result.err
    html = (work / "report.html").read_text()
    for name in OWN[1:]:
        assert name in html
    onnx_file = tmp_path / "own.onnx"
    result = cli("export", work, "-o", onnx_file, "--check-count", "1")
    assert result.code == 0, result.err
    from vocseg.inference.onnx_model import load_onnx_model

    exported = load_onnx_model(onnx_file, device="cpu")
    assert exported.classes == OWN and exported.metadata["palette"][1] == list(CVAT_COLOURS["crack"])
    everything = " ".join([train_text, text_of(result), json.dumps(evaluated), json.dumps(predictions), config])
    assert_no_voc_names(everything)
    assert user_tree(root) == before  # the user's export is unchanged: vocseg wrote only into .vocseg/


def test_train_and_the_demo_refuse_a_folder_of_images_without_class_names(cli, tmp_path: Path) -> None:
    """The one refusal (vocseg.data.dataset.unknown_classes_error) for train and for prepare --demo
    too: the --classes hint, never `prepare --demo` or a VOC download, and nothing written; the
    demo is not written into an own dataset that has its class file either."""
    root = write_labelme(tmp_path / "lm", n=2)
    (root / "class_names.txt").unlink()
    before = file_tree(root)
    for args in (("train", "--model", "tiny", "--device", "cpu", "--iters", "2"), ("config",), ("prepare", "--demo")):
        result = cli(*args, "--data-root", root)
        text = text_of(result)
        assert result.code == 2 and "--classes FILE" in text and "prepare --demo" not in text and "Traceback" not in text, (args, text)
        assert file_tree(root) == before, args
    labelled = write_labelme(tmp_path / "lm2", n=2)
    before = file_tree(labelled)
    result = cli("prepare", "--demo", "--data-root", labelled)
    assert result.code == 2 and "a folder of its own" in text_of(result) and "lm2-demo" in text_of(result), text_of(result)
    assert file_tree(labelled) == before
    # VOC's own layout without VOCdevkit/VOC2012 above it (with its lists) is VOC, not refused
    bare = tmp_path / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (bare / folder).mkdir(parents=True)
    for split in ("train", "val"):
        (bare / "ImageSets/Segmentation" / f"{split}.txt").write_text("a\n")
    result = cli("config", "--data-root", bare)
    assert "--classes FILE" not in text_of(result), text_of(result)
    # the VOC2012 folder itself given as the data root: the folder above VOCdevkit is the hint
    deep = tmp_path / "voc" / "VOCdevkit" / "VOC2012"
    (deep / "JPEGImages").mkdir(parents=True)
    result = cli("train", "--data-root", deep, "--model", "tiny", "--device", "cpu")
    assert result.code == 2 and "the folder above VOCdevkit/VOC2012/" in text_of(result) and str(tmp_path / "voc") in text_of(result), text_of(result)
