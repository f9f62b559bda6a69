"""vocseg eval: numbers equal to mmseg's IoUMetric, outputs, splits, TTA, and bad input."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from vocseg.data.voc import CLASSES, SPLITS_SUBDIR, VOC_SUBDIR


def make_varied_run(trained_run: Path, target: Path, *, num_classes: int | None = None, seed: int = 0) -> Path:
    """A copy of the trained run whose classifier weights are random: predictions spread over many
    classes (the 8-iteration model predicts background everywhere, which would test nothing)."""
    import torch

    from vocseg.runs.folders import latest_checkpoint
    from vocseg.stack.compat import ensure_stack, load_checkpoint_file

    ensure_stack()
    target.mkdir(parents=True)
    shutil.copy(trained_run / "config.py", target / "config.py")
    checkpoint = load_checkpoint_file(latest_checkpoint(trained_run))
    weights = checkpoint["state_dict"]
    g = torch.Generator().manual_seed(seed)
    for key in ("decode_head.conv_seg.weight", "decode_head.conv_seg.bias"):
        shape = list(weights[key].shape)
        if num_classes is not None:
            shape[0] = num_classes
        weights[key] = torch.randn(shape, generator=g) * 3
    torch.save(checkpoint, target / "iter_8.pth")
    return target


@pytest.fixture(scope="module")
def varied_run(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_varied_run(trained_run, tmp_path_factory.mktemp("varied") / "run")


@pytest.fixture(scope="module")
def varied_eval(varied_run: Path, demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, Path]:
    """One `vocseg eval` of the varied run on val: (its JSON, the saved predictions, extra outputs folder)."""
    from vocseg.cli import run

    extra = tmp_path_factory.mktemp("eval_out")
    preds = extra / "preds"
    code = run(["eval", str(varied_run), "--data-root", str(demo_root), "--save-predictions", str(preds), "--json", str(extra / "r.json"), "--csv", str(extra / "r.csv")])
    assert code == 0
    return json.loads((extra / "r.json").read_text()), preds, extra


def _same(ours: float | None, theirs: float) -> bool:
    return (ours is None and math.isnan(theirs)) or (ours is not None and not math.isnan(theirs) and ours == theirs)


def test_numbers_equal_mmseg_iou_metric_on_the_same_predictions(varied_eval: tuple[dict, Path, Path], demo_root: Path) -> None:
    """Feed the saved predictions and the label files straight to mmseg's IoUMetric: every number matches."""
    import torch
    from mmseg.evaluation import IoUMetric
    from PIL import Image

    result, preds, _ = varied_eval
    voc = demo_root / VOC_SUBDIR
    ids = (voc / SPLITS_SUBDIR / "val.txt").read_text().split()
    metric = IoUMetric(iou_metrics=["mIoU", "mDice", "mFscore"])
    metric.dataset_meta = {"classes": CLASSES}
    predicted: set[int] = set()
    for image_id in ids:
        pred = np.asarray(Image.open(preds / f"{image_id}.png"))
        label = np.asarray(Image.open(voc / "SegmentationClass" / f"{image_id}.png"))
        assert pred.shape == label.shape  # predictions are at the label's resolution
        predicted.update(np.unique(pred).tolist())
        sample = {"pred_sem_seg": {"data": torch.from_numpy(pred.astype(np.int64))[None]}, "gt_sem_seg": {"data": torch.from_numpy(label.astype(np.int64))[None]}}
        metric.process({}, [sample])
    assert len(predicted) >= 5, "the check needs predictions spread over several classes"
    summary = metric.compute_metrics(metric.results)
    for key in ("mIoU", "mAcc", "aAcc"):  # mmseg's float32 values, as it prints them (two decimals)
        assert result[key] == round(float(summary[key]), 2), key
    areas = [sum(col) for col in zip(*metric.results)]
    per_metric = IoUMetric.total_area_to_metrics(*areas, ["mIoU", "mDice", "mFscore"])
    for i, name in enumerate(CLASSES):
        ours = result["per_class"][name]
        for key in ("IoU", "Acc", "Dice", "Precision", "Recall"):
            theirs = round(float(np.round(per_metric[key] * 100, 2)[i]), 2)  # IoUMetric's per-class table
            assert _same(ours[key], theirs), (name, key, ours[key], theirs)
        assert ours["gt_pixels"] == int(areas[3][i]) and ours["pred_pixels"] == int(areas[2][i])
    # the confusion matrix describes the same pixels: diagonal = intersections, rows = label areas
    confusion = np.array(result["confusion"]["pixels"])
    assert confusion.diagonal().tolist() == [int(v) for v in areas[0]]
    assert confusion.sum(axis=1).tolist() == [int(v) for v in areas[3]]
    assert confusion.sum(axis=0).tolist() == [int(v) for v in areas[2]]


def test_outputs_json_csv_and_charts_in_the_run_folder(varied_eval: tuple[dict, Path, Path], varied_run: Path) -> None:
    from PIL import Image

    result, _, extra = varied_eval
    assert set(result["per_class"]) == set(CLASSES)
    assert all(isinstance(result[k], float) for k in ("mIoU", "mAcc", "aAcc"))
    assert all({"IoU", "Acc"} <= set(v) for v in result["per_class"].values())
    assert result["split"] == "val" and result["num_images"] == 12 and result["tta"] is False
    saved = json.loads((varied_run / "eval" / "val.json").read_text())
    assert saved["mIoU"] == result["mIoU"] and saved["per_class"] == result["per_class"]
    rows = list(csv.DictReader((extra / "r.csv").open()))
    assert [r["class"] for r in rows] == [*CLASSES, "mean", "aAcc"]
    assert float(rows[-2]["IoU"]) == result["mIoU"] and float(rows[-1]["IoU"]) == result["aAcc"]
    bicycle = rows[CLASSES.index("bicycle")]
    expected = result["per_class"]["bicycle"]["IoU"]
    assert (bicycle["IoU"] == "" and expected is None) or float(bicycle["IoU"]) == expected
    assert (varied_run / "eval" / "val.csv").read_text() == (extra / "r.csv").read_text()
    for name, min_size in (("val_confusion.png", (800, 700)), ("val_iou.png", (600, 500))):
        with Image.open(varied_run / "eval" / name) as im:
            assert im.size[0] >= min_size[0] and im.size[1] >= min_size[1]
            assert len(set(np.asarray(im.convert("L")).ravel().tolist())) > 10  # drawn, not blank


def test_train_split_and_a_list_mixing_voc_and_sbd_labels(cli, varied_run: Path, demo_root: Path, tmp_path: Path) -> None:
    voc = demo_root / VOC_SUBDIR
    out = tmp_path / "out"
    r = cli("eval", varied_run, "--data-root", demo_root, "--split", "train", "--out", out, "--no-plots")
    assert r.code == 0, r.err
    train = json.loads((out / "train.json").read_text())
    assert train["split"] == "train" and train["num_images"] == 24 and train["labels"] == {"voc": 24}
    # two VOC ids (fine labels) + two SBD-only ids (converted SBD labels): one ConcatDataset
    aug_ids = (voc / SPLITS_SUBDIR / "aug.txt").read_text().split()[:2]
    ids = (voc / SPLITS_SUBDIR / "val.txt").read_text().split()[:2] + aug_ids
    listing = tmp_path / "mine.txt"
    listing.write_text("\n".join(ids) + "\n")
    r = cli("eval", varied_run, "--data-root", demo_root, "--split", listing, "--out", out, "--no-plots")
    assert r.code == 0, r.err
    mine = json.loads((out / "mine.json").read_text())
    assert mine["num_images"] == 4 and mine["labels"] == {"voc": 2, "sbd": 2}


def test_tta_runs_the_official_multiscale_flip(cli, varied_run: Path, demo_root: Path, tmp_path: Path) -> None:
    voc = demo_root / VOC_SUBDIR
    listing = tmp_path / "two.txt"
    listing.write_text("\n".join((voc / SPLITS_SUBDIR / "val.txt").read_text().split()[:2]) + "\n")
    plain = cli("eval", varied_run, "--data-root", demo_root, "--split", listing, "--out", tmp_path, "--no-plots")
    tta = cli("eval", varied_run, "--data-root", demo_root, "--split", listing, "--out", tmp_path, "--no-plots", "--tta")
    assert plain.code == 0 and tta.code == 0, tta.err
    a, b = json.loads((tmp_path / "two.json").read_text()), json.loads((tmp_path / "two_tta.json").read_text())
    assert b["tta"] is True and b["num_images"] == 2
    assert a["per_class"] != b["per_class"]  # 6 scales x 2 flips averaged: different predictions


def test_missing_files_in_a_split_list(cli, varied_run: Path, demo_copy: Path, tmp_path: Path) -> None:
    voc = demo_copy / VOC_SUBDIR
    ids = (voc / SPLITS_SUBDIR / "val.txt").read_text().split()
    (voc / "JPEGImages" / f"{ids[3]}.jpg").unlink()
    r = cli("eval", varied_run, "--data-root", demo_copy, "--out", tmp_path)
    assert r.code != 0
    assert "1 files named by" in r.err and ids[3] in r.err and "Traceback" not in r.err
    listing = tmp_path / "bad.txt"
    listing.write_text("no_such_image\n")
    r = cli("eval", varied_run, "--data-root", demo_copy, "--split", listing, "--out", tmp_path)
    assert r.code != 0 and "no_such_image" in r.err
    r = cli("eval", varied_run, "--data-root", demo_copy, "--split", "tset")
    assert r.code != 0 and "neither one of" in r.err


def test_checkpoint_for_another_number_of_classes(cli, trained_run: Path, demo_root: Path, tmp_path: Path) -> None:
    other = make_varied_run(trained_run, tmp_path / "five", num_classes=5)
    r = cli("eval", other, "--data-root", demo_root, "--out", tmp_path / "o")
    assert r.code != 0
    assert "does not fit this model" in r.err and "decode_head.conv_seg" in r.err and "21 classes" in r.err
    assert len(r.err.strip().splitlines()) <= 3  # one message (wrapped), no traceback
    r = cli("eval", tmp_path / "nothing_here", "--data-root", demo_root)
    assert r.code != 0 and "does not exist" in r.err


def test_eval_keeps_the_working_folder_clean(cli, trained_run: Path, demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Default outputs go under the run folder (RUN/eval/), never into the current folder."""
    run = tmp_path / "runs" / "tiny"
    shutil.copytree(trained_run, run)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    r = cli("eval", run, "--data-root", demo_root, "--no-plots")
    assert r.code == 0, r.err
    assert list(work.iterdir()) == []
    assert (run / "eval" / "val.json").is_file() and (run / "eval" / "val.csv").is_file()


def test_one_metric_class_registered_under_its_own_name() -> None:
    from mmseg.registry import METRICS

    from vocseg.evaluation.metric import VocsegImageStats, VocsegPerClassIoUMetric

    assert METRICS.get("VocsegPerClassIoUMetric") is VocsegPerClassIoUMetric
    assert METRICS.get("VocsegImageStats") is VocsegImageStats
    assert "VocsegEvalMetric" not in METRICS.module_dict
    assert VocsegPerClassIoUMetric(collect_dir="/run/.dist_test").collect_dir == "/run/.dist_test"  # IoUMetric drops it


def test_the_published_json_holds_only_results() -> None:
    from vocseg.evaluation.eval_result import EvalResult

    data = EvalResult(mIoU=1.0, mAcc=2.0, aAcc=3.0, per_class={"background": {"IoU": 1.0}}, extra={"tta": False}).to_json()
    assert not {"out_dir", "tag", "data_warnings"} & set(data)


@pytest.mark.parametrize("kind", ["fifo", "symlink"])
def test_an_output_folder_holding_a_fifo_or_a_link_names_it_and_offers_no_force(cli, trained_run: Path, tmp_path: Path, kind: str) -> None:
    """Trial 2, item 6: `eval -o DIR` with a FIFO (or a link) of a result's name in DIR: one line
    naming it for what it is, in the single-file options' wording, without offering --force (which
    never replaces one); nothing is written there, the FIFO or link stays."""
    import os

    out = tmp_path / "eout"
    out.mkdir()
    if kind == "fifo":
        os.mkfifo(out / "val.json")
        said = "val.json is a FIFO; vocseg never replaces one (--force included)"
    else:
        (tmp_path / "mine.png").write_bytes(b"mine")
        (out / "val_iou.png").symlink_to(tmp_path / "mine.png")
        said = "val_iou.png is a symbolic link; vocseg never replaces one (--force included)"
    for force in ([], ["--force"]):
        r = cli("eval", trained_run, "-o", out, "--workers", "0", *force)
        line = " ".join(r.err.split())
        assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r.err
        assert said in line and "--force to replace" not in line and f"Move {out / said.split(' ')[0]} away" in line, line
    assert sorted(p.name for p in out.iterdir()) == ["val.json" if kind == "fifo" else "val_iou.png"]
