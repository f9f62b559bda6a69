"""vocseg compare: the reference runs file, eval results, run folders, flags, chart, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vocseg.data.voc import CLASSES

# A copy of ../shared/reference/seed_runs.json (the two reference runs), so that CI needs no
# folder beside the repo.
SEED_RUNS = Path(__file__).resolve().parent / "data" / "seed_runs.json"


@pytest.fixture
def seed_runs() -> Path:
    return SEED_RUNS


def flags_of(result: dict, kind: str) -> list[dict]:
    return [f for f in result["flags"] if f["kind"] == kind]


def test_reference_runs_flags(cli, seed_runs: Path, tmp_path: Path) -> None:
    chart, out = tmp_path / "compare.png", tmp_path / "compare.json"
    r = cli("compare", seed_runs, "--chart", chart, "--json", out)
    assert r.code == 0, r.err
    result = json.loads(out.read_text())
    runs = {run["label"]: run for run in result["runs"]}
    assert list(runs) == ["voc_only_200ep", "voc_aug_200ep"]
    assert runs["voc_only_200ep"]["mIoU"] == 67.91 and runs["voc_aug_200ep"]["mIoU"] == 75.24
    bicycle = runs["voc_aug_200ep"]["per_class"]["bicycle"]
    assert (bicycle["dIoU"], bicycle["dAcc"]) == (-21.36, 9.43)
    # over-filled: bicycle IoU 64.18 -> 42.82 while Acc 79.64 -> 89.07, predicted area ~2x the true area
    (over,) = flags_of(result, "over-filled")
    assert over["run"] == "voc_aug_200ep" and over["classes"] == ["bicycle"]
    assert over["evidence"]["bicycle"]["IoU"] == [64.18, 42.82] and over["evidence"]["bicycle"]["Acc"] == [79.64, 89.07]
    assert over["evidence"]["bicycle"]["pred_to_true_area"] == [1.04, 1.97]
    assert "its settings name SBD" in over["fix"]  # the cause the run's written settings support
    (weak,) = flags_of(result, "weak")
    assert {"chair", "sofa", "diningtable"} <= set(weak["classes"]) and "bicycle" not in weak["classes"]
    settings = " ".join(f["message"] for f in flags_of(result, "settings"))
    assert "voc_aug_200ep: torchvision weights" in settings and "stem started untrained" in settings
    assert "voc_only_200ep: LR 0.01 at total batch 8" in settings and "gives 0.005" in settings
    assert "voc_aug_200ep: LR" not in settings  # 0.005 at batch 8 is the scaled LR
    assert "292,800 samples = 0.46x" in settings and "2,116,400 samples = 3.31x" in settings
    assert "40k x 16 / 10,582 = 60.5 epochs" in settings
    assert "once per epoch" in settings and "1,464 training images was seen 200 times" in settings
    # the table shows the numbers and deltas; the chart is a real picture
    text = " ".join(r.out.split())
    assert "bicycle" in text and "-21.36" in text and "+9.43" in text
    with Image.open(chart) as im:
        assert im.size[0] > 1000 and len(np.unique(np.asarray(im.convert("L")))) > 20


def write_eval(path: Path, split: str, ious: dict[str, float], accs: dict[str, float] | None = None) -> Path:
    per_class = {c: {"IoU": ious.get(c, 60.0), "Acc": (accs or {}).get(c, 70.0)} for c in CLASSES}
    miou = round(sum(v["IoU"] for v in per_class.values()) / len(per_class), 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"mIoU": miou, "mAcc": 70.0, "aAcc": 90.0, "per_class": per_class, "split": split, "checkpoint": "x.pth"}))
    return path


def test_run_folder_train_vs_val_gap_is_memorisation(cli, tmp_path: Path) -> None:
    run = tmp_path / "voc-only"
    write_eval(run / "eval" / "val.json", "val", {"chair": 20.0}, {"chair": 22.0})
    write_eval(run / "eval" / "train.json", "train", {c: 90.0 for c in CLASSES}, {c: 95.0 for c in CLASSES})
    other = write_eval(tmp_path / "other.json", "val", {"chair": 25.0, "bicycle": 40.0}, {"chair": 27.0, "bicycle": 85.0})
    out = tmp_path / "c.json"
    r = cli("compare", run, other, "--json", out, "--chart", tmp_path / "c.png")
    assert r.code == 0, r.err
    result = json.loads(out.read_text())
    assert [x["label"] for x in result["runs"]] == ["voc-only", "voc-only (train split)", "other"]
    (memo,) = flags_of(result, "memorisation")
    assert memo["run"] == "voc-only" and memo["evidence"]["train_mIoU"] == 90.0
    assert "chair" in memo["classes"] and memo["evidence"]["class_gaps"]["chair"] == 70.0
    (weak,) = flags_of(result, "weak")
    assert weak["classes"] == ["chair"]  # weak in both val results; the train result is not a val result
    (over,) = flags_of(result, "over-filled")
    assert over["run"] == "other" and over["classes"] == ["bicycle"]


def test_real_eval_results(cli, trained_run: Path, demo_root: Path, tmp_path: Path) -> None:
    """Two real `vocseg eval` outputs (val and train of one checkpoint) compare; derived area ratios are exact."""
    for split in ("val", "train"):
        assert cli("eval", trained_run, "--data-root", demo_root, "--split", split, "--json", tmp_path / f"{split}.json", "--out", tmp_path / "o", "--no-plots").code == 0
    out = tmp_path / "c.json"
    r = cli("compare", tmp_path / "val.json", tmp_path / "train.json", "--json", out, "--chart", tmp_path / "c.png")
    assert r.code == 0, r.err
    result = json.loads(out.read_text())
    assert [x["split"] for x in result["runs"]] == ["val", "train"]
    val = json.loads((tmp_path / "val.json").read_text())
    background = val["per_class"]["background"]
    ratio = result["runs"][0]["per_class"]["background"]["pred_to_true_area"]
    assert ratio == round(background["pred_pixels"] / background["gt_pixels"], 2)
    # the IoU/Acc formula gives the same ratio as the pixel counts
    from vocseg.reports.compare import RunResult, area_ratio

    numbers_only = RunResult("x", "", "val", 0, 0, {"background": {"IoU": background["IoU"], "Acc": background["Acc"]}})
    assert area_ratio(numbers_only, "background") == pytest.approx(ratio, abs=0.02)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"foo": 1}', "not an eval result"),
        ("not json at all", "invalid JSON"),
        ('{"mIoU": 1, "per_class": {"cat": {"IoU": "high", "Acc": 3}}}', "cat IoU is 'high'"),
        ('{"runs": []}', "runs list is empty"),
        ("[1, 2]", "not a JSON object"),
    ],
)
def test_files_that_are_not_eval_results(cli, tmp_path: Path, content: str, message: str) -> None:
    good = write_eval(tmp_path / "good.json", "val", {})
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    r = cli("compare", good, bad, "--chart", tmp_path / "c.png")
    assert r.code != 0 and message in r.err and "Traceback" not in r.err
    assert len(r.err.strip().splitlines()) == 1
    assert not (tmp_path / "c.png").exists()


def test_too_few_results_and_a_run_without_eval(cli, tmp_path: Path) -> None:
    good = write_eval(tmp_path / "good.json", "val", {})
    r = cli("compare", good)
    assert r.code != 0 and "two or more results" in r.err
    empty_run = tmp_path / "run"
    empty_run.mkdir()
    r = cli("compare", good, empty_run)
    assert r.code != 0 and "has no eval results" in r.err and "vocseg eval" in r.err


def test_cli_stays_light_at_import() -> None:
    code = "import sys, vocseg.cli; heavy = [m for m in ('torch', 'mmengine', 'mmseg', 'matplotlib') if m in sys.modules]; print(heavy)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_labels_are_distinct_for_generic_names(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`runs/demo/train` (a run folder named like a split) and `eval.json` files get labels that say which model."""
    run = tmp_path / "runs" / "demo" / "train"
    (run / "config.py").parent.mkdir(parents=True)
    (run / "config.py").write_text("# a run\n")
    write_eval(run / "eval" / "val.json", "val", {})
    write_eval(run / "eval" / "train.json", "train", {c: 80.0 for c in CLASSES})
    one = write_eval(tmp_path / "a" / "eval.json", "val", {"cat": 10.0})
    two = write_eval(tmp_path / "b" / "eval.json", "val", {"cat": 20.0})
    out = tmp_path / "c.json"
    r = cli("compare", run, one, two, "--json", out, "--chart", tmp_path / "c.png")
    assert r.code == 0, r.err
    labels = [x["label"] for x in json.loads(out.read_text())["runs"]]
    assert labels[:2] == ["demo/train", "demo/train (train split)"]
    assert len(set(labels)) == len(labels) and "eval" not in labels
    assert labels[2:] == ["a/x", "b/x"]  # both measured a checkpoint named x.pth: told apart by their folders
    text = " ".join(r.out.split())
    assert "1 = demo/train; 2 = demo/train (train split);" in text


def test_eval_json_is_labelled_by_its_checkpoint(tmp_path: Path) -> None:
    from vocseg.reports.compare import load_results

    path = write_eval(tmp_path / "eval.json", "val", {})
    data = json.loads(path.read_text())
    data["checkpoint"] = str(tmp_path / "runs" / "demo" / "train" / "iter_3000.pth")
    path.write_text(json.dumps(data))
    (result,) = load_results(path)
    assert result.label == "demo/train iter_3000"


def test_chart_title_without_flags(tmp_path: Path) -> None:
    from vocseg.reports.compare import compare_results, load_results
    from vocseg.reports.compare_chart import compare_chart_title

    a, b = write_eval(tmp_path / "a.json", "val", {}), write_eval(tmp_path / "b.json", "val", {})
    comparison = compare_results(load_results(a) + load_results(b))
    assert not comparison.flags
    assert compare_chart_title(comparison) == "Per-class IoU; no class flagged"


def test_compare_keeps_the_working_folder_clean(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --chart the chart goes to runs/compare/, then runs/compare2/: never into the current folder."""
    inputs = tmp_path / "inputs"
    a, b = write_eval(inputs / "a.json", "val", {}), write_eval(inputs / "b.json", "val", {"cat": 30.0})
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for _ in range(2):
        assert cli("compare", a, b).code == 0
    written = sorted(p.relative_to(work).as_posix() for p in work.rglob("*") if p.is_file() and not p.name.startswith(".vocseg-"))  # not its records
    assert written == ["runs/compare/compare.png", "runs/compare2/compare.png"]
