"""The command line as a user meets it: help, the whole pipeline on demo data, and bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import TINY_TRAIN
from vocseg.data.voc import CLASSES

COMMANDS = ["prepare", "config", "train", "resume", "eval", "predict"]


@pytest.mark.parametrize("args", [["--help"], *[[c, "--help"] for c in COMMANDS]])
def test_help_imports_nothing_heavy(args: list[str]) -> None:
    code = (
        "import sys\nfrom vocseg.cli import run\ncode = run(sys.argv[1:])\n"
        "heavy = [m for m in ('torch', 'mmengine', 'mmseg', 'mmcv', 'scipy', 'matplotlib') if m in sys.modules]\n"
        "print('HEAVY', heavy); sys.exit(code)"
    )
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Usage" in out.stdout
    assert "HEAVY []" in out.stdout


def test_version(cli) -> None:
    r = cli("--version")
    assert r.code == 0 and r.out.startswith("vocseg ")


def test_prepare_demo_writes_real_layouts(cli, tmp_path: Path) -> None:
    root = tmp_path / "demo"
    r = cli("prepare", "--demo", "--data-root", root)
    assert r.code == 0, r.err
    voc = root / "VOCdevkit" / "VOC2012"
    sbd = root / "benchmark_RELEASE" / "dataset"
    for p in (voc / "JPEGImages", voc / "SegmentationClass", voc / "SegmentationClassAug", sbd / "img", sbd / "cls"):
        assert p.is_dir() and any(p.iterdir())
    for name in ("train", "val", "trainval", "aug", "trainaug"):
        assert (voc / "ImageSets" / "Segmentation" / f"{name}.txt").is_file()
    first = (voc / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[0]
    mask = Image.open(voc / "SegmentationClass" / f"{first}.png")
    assert mask.mode == "P"  # palette PNG, as VOC
    values = set(np.unique(np.asarray(mask)).tolist())
    assert 255 in values and values <= set(range(21)) | {255}  # a void band along borders
    from scipy.io import loadmat

    mat = next((sbd / "cls").glob("*.mat"))
    seg = loadmat(str(mat))["GTcls"][0]["Segmentation"][0]
    assert seg.dtype == np.uint8 and 255 not in np.unique(seg)  # SBD: no void band
    # Every object class appears in the data.
    present: set[int] = set()
    for png in (voc / "SegmentationClass").glob("*.png"):
        present |= set(np.unique(np.asarray(Image.open(png))).tolist())
    assert set(range(21)) <= present
    # Idempotent: a second run skips the generation.
    again = cli("prepare", "--demo", "--data-root", root)
    assert again.code == 0 and "already" in again.out
    # Trial 2, item 5: the next step is the README's demo recipe (the noxfile's demo session), not r50 for 160k iterations.
    from vocseg.data.demo import DEMO_TRAIN_FLAGS

    hint = f"Train with: vocseg train --data-root {root} {' '.join(DEMO_TRAIN_FLAGS)}"
    assert " ".join(r.out.split()).endswith(hint) and " ".join(again.out.split()).endswith(hint), r.out
    noxfile = (Path(__file__).resolve().parents[1] / "noxfile.py").read_text()
    assert ", ".join(f'"{flag}"' for flag in DEMO_TRAIN_FLAGS) in " ".join(noxfile.split())


def test_pipeline_on_demo_data(cli, demo_root: Path, tmp_path: Path) -> None:
    """config -> train (from the config) -> eval (JSON schema) -> predict, each through the real stack."""
    cfg = tmp_path / "cfg.py"
    assert cli("config", "--data-root", demo_root, *TINY_TRAIN, "--iters", "6", "-o", cfg).code == 0
    run_dir = tmp_path / "run"
    r = cli("train", cfg, "--work-dir", run_dir)
    assert r.code == 0, r.err
    assert {"config.py", "recipe.json", "last_checkpoint", "iter_6.pth"} <= {p.name for p in run_dir.iterdir()}
    assert list(run_dir.glob("*/vis_data/scalars.json"))  # MMEngine's own logs are still written

    out_json = tmp_path / "eval.json"
    r = cli("eval", run_dir, "--json", out_json)
    assert r.code == 0, r.err
    assert "mIoU" in r.out and "background" in r.out
    result = json.loads(out_json.read_text())
    assert set(result["per_class"]) == set(CLASSES)
    for key in ("mIoU", "mAcc", "aAcc"):
        assert isinstance(result[key], float) and 0 <= result[key] <= 100
    assert all({"IoU", "Acc"} <= set(v) for v in result["per_class"].values())
    assert (run_dir / "eval" / "val.json").is_file()

    images = sorted((demo_root / "VOCdevkit/VOC2012/JPEGImages").glob("*.jpg"))[:2]
    out = tmp_path / "pred"
    r = cli("predict", *images, "--checkpoint", run_dir, "--out", out)
    assert r.code == 0, r.err
    for img in images:
        label = Image.open(out / f"{img.stem}_label.png")
        assert label.mode == "P" and label.size == Image.open(img).size
        assert set(np.unique(np.asarray(label)).tolist()) <= set(range(21))
        overlay = Image.open(out / f"{img.stem}_overlay.png")
        assert overlay.width > label.width  # photo plus legend


def test_bad_inputs_give_one_line(cli, demo_root: Path, trained_run: Path, tmp_path: Path) -> None:
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("hello")
    cases = [
        (("train", "--data-root", tmp_path / "missing", *TINY_TRAIN, "--iters", "2"), "vocseg prepare"),
        (("train", "--data-root", demo_root, "--model", "mobilenet"), "'mobilenet' is not one of"),
        (("train", "--data-root", demo_root, "--iters", "ten"), "--iters"),
        (("predict", not_image, "--checkpoint", trained_run, "--out", tmp_path / "p"), "could be segmented"),
        (("eval", tmp_path), "has no checkpoint"),
        (("resume", tmp_path), "not a vocseg run folder"),
        (("eval", trained_run, "--split", "nosuch"), "is neither one of"),
    ]
    for args, needle in cases:
        r = cli(*args)
        assert r.code != 0, args
        assert needle in r.err, (args, r.err)
        assert "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1, (args, r.err)


def test_train_refuses_to_overwrite_a_run(cli, demo_root: Path, trained_run: Path) -> None:
    r = cli("train", "--data-root", demo_root, *TINY_TRAIN, "--iters", "2", "--work-dir", trained_run)
    assert r.code != 0 and "vocseg resume" in r.err
    assert (trained_run / "iter_8.pth").is_file()  # nothing lost


def test_top_level_help_does_not_cut_summaries(cli) -> None:
    r = cli("--help")
    assert r.code == 0
    commands = r.out.split("Commands:", 1)[1]
    assert "..." not in commands and "run, and settings that differ from the official recipe." in " ".join(commands.split())


def test_most_confused_with_omits_shares_that_round_to_zero() -> None:
    from vocseg.commands.render import eval_report_table
    from vocseg.evaluation.eval_result import EvalResult

    per_class = {"background": {"IoU": 99.0, "Acc": 99.9}, "aeroplane": {"IoU": 50.0, "Acc": 60.0}, "bottle": {"IoU": 40.0, "Acc": 50.0}}
    confusion = [[9999, 0, 1], [300, 700, 0], [0, 0, 10]]
    result = EvalResult(mIoU=63.0, mAcc=70.0, aAcc=99.0, per_class=per_class, confusion=confusion)
    from rich.console import Console

    out = Console(width=200, record=True)
    out.print(eval_report_table(result))
    text = out.export_text()
    assert "background 30%" in text  # aeroplane: 30% of its pixels predicted background
    assert not re.search(r"\b0%", text)


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["config", "--iters", "abc"], "--iters abc is not a whole number"),
        (["config", "--crop=1.5"], "--crop 1.5 is not a whole number"),
        (["config", "--lr", "x"], "--lr x is not a number"),
        (["train", "-b", "x"], "-b x is not a whole number"),  # trial 2, item 8: a short flag, named as given, with its value
        (["train", "-bx"], "-b x is not a whole number"),
        (["train", "-b", "2", "--batch=1.5"], "--batch 1.5 is not a whole number"),  # the last one given is the one Click read
        (["config", "--model", "foo"], "'foo' is not one of 'r50', 'r101', 'r18', 'tiny'"),
    ],
)
def test_a_bad_flag_value_is_named_in_plain_words(cli, args: list[str], line: str) -> None:
    """Typer checks values with pydantic; its sentences ("Input should be a valid integer, unable
    to parse string as an integer", "Value error, ...") are reworded, with the value given."""
    r = cli(*args)
    assert r.code == 2 and line in r.err and "Input should" not in r.err and "Value error" not in r.err
    assert len(r.err.strip().splitlines()) == 1
