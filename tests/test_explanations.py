"""The explanations in `report` and `compare` come from the run's own files (schedule, val curve,
data), and a demo-trained model is labelled as such where its predictions are shown."""

from __future__ import annotations

import json
from html import unescape
from pathlib import Path

import pytest

from tests.helpers import copy_run
from vocseg.reports.compare import compare_paths
from vocseg.reports.explain import RunFacts, facts_from_run, overfill_cause, recipe_differences, schedule_note, val_trend, weak_cause
from vocseg.runs.provenance import DataSource, data_source, is_demo_root

CLASSES = ("background", "aeroplane", "bicycle", "bird", "chair")
RISING = {60 * k: 10.0 + 6 * k for k in range(1, 11)}  # 16 -> 70 mIoU, +24 over the last quarter
PLATEAU = {300 * k: min(90.0, 30.0 + 12 * k) for k in range(1, 11)}  # 90 from iteration 1500 on


def make_run(folder: Path, *, data_root: Path, iters: int, curve: dict[int, float], aug: bool = True, batch: int = 8, miou: float = 60.0) -> Path:
    """A run folder as `vocseg train` leaves it, written by hand: recipe.json, config.py, one
    vis_data/scalars.json segment (loss every 10 iterations, val mIoU per `curve`), eval/val.json."""
    folder.mkdir(parents=True)
    recipe = {"data_root": str(data_root), "model": "tiny", "aug": aug, "device": "cpu", "batch": batch, "iters": iters, "seed": 0}
    (folder / "recipe.json").write_text(json.dumps(recipe))
    (folder / "config.py").write_text(f"data_root = {str(data_root)!r}\n")
    log = folder / "20260101_000000" / "vis_data"
    log.mkdir(parents=True)
    rows = [{"step": s, "loss": 1.0, "lr": 0.01} for s in range(10, iters + 1, 10)] + [{"step": s, "mIoU": v} for s, v in curve.items()]
    (log / "scalars.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (folder / "eval").mkdir()
    per_class = {c: {"IoU": miou + (25.0 if c == "background" else -25.0 if c == "chair" else 0.0), "Acc": 80.0} for c in CLASSES}
    (folder / "eval" / "val.json").write_text(json.dumps({"mIoU": miou, "mAcc": 80.0, "aAcc": 90.0, "split": "val", "per_class": per_class, "checkpoint": str(folder / f"iter_{iters}.pth")}))
    return folder


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    root = tmp_path / "voc"
    (root / "VOCdevkit" / "VOC2012").mkdir(parents=True)
    return root


def test_val_trend_rising_plateau_and_too_short() -> None:
    rising = val_trend(RISING)
    assert rising.state == "rising" and (rising.from_step, rising.to_step) == (420, 600) and rising.gain == 18.0
    plateau = val_trend(PLATEAU)
    assert plateau.state == "plateau" and plateau.gain == 0.0
    assert val_trend({100: 10.0, 200: 50.0}).state == "unknown"
    flat = val_trend({4: 3.49, 8: 3.49, 28: 3.5, 40: 3.49})  # a 40-iteration demo run: not a plateau, not started
    assert flat.state == "flat" and "had not started learning" in flat.text()
    assert "train longer" in weak_cause(RunFacts("r", iters=40, total_batch=8, val_miou={4: 3.49, 8: 3.49, 28: 3.5, 40: 3.49}))


def test_a_still_rising_run_blames_its_schedule_not_the_classes(tmp_path: Path, demo_root: Path) -> None:
    run = make_run(tmp_path / "short", data_root=demo_root, iters=600, curve=RISING)
    facts = facts_from_run(run)
    assert facts.iters == 600 and facts.total_batch == 8 and facts.samples == 4800 and facts.data is not None and facts.data.kind == "demo"
    weak = weak_cause(facts)
    assert "still rising" in weak and "train longer" in weak and "not a schedule problem" not in weak and "VOC" not in weak
    note = schedule_note(facts)
    assert "600 iterations at batch 8 = 4,800 samples" in note and "--iters 1,200" in note
    overfill = overfill_cause(facts)
    assert "demo's masks are exact" in overfill and "SBD" not in overfill and "under-trained" in overfill


def test_a_plateaued_voc_run_rules_the_schedule_out(tmp_path: Path, voc_root: Path) -> None:
    facts = facts_from_run(make_run(tmp_path / "long", data_root=voc_root, iters=3000, curve=PLATEAU, aug=False))
    assert facts.trend.state == "plateau" and facts.data == DataSource("voc", None)
    assert "not the schedule length" in weak_cause(facts)
    assert "VOC's fine masks only" in overfill_cause(facts) and "SBD" not in overfill_cause(facts)
    sbd = RunFacts("aug", iters=3000, total_batch=8, data=DataSource("voc+sbd"), val_miou=PLATEAU)
    assert "SBD" in overfill_cause(sbd)


def test_no_cause_without_facts() -> None:
    assert "no cause is stated" in weak_cause(None) and "no cause is stated" in overfill_cause(None)


def test_data_source_from_marker_and_list_sizes(tmp_path: Path, demo_root: Path) -> None:
    assert is_demo_root(demo_root) and is_demo_root(demo_root / "VOCdevkit" / "VOC2012")
    assert not is_demo_root(tmp_path)
    assert data_source(str(demo_root), True, 48).kind == "demo"
    assert data_source(str(tmp_path), True, 10582).kind == "voc+sbd"
    assert data_source(str(tmp_path), False, 1464).kind == "voc"
    assert data_source(str(tmp_path), False, 4).kind == "own"


def test_compare_names_a_5x_longer_schedule_first(tmp_path: Path, demo_root: Path) -> None:
    short = make_run(tmp_path / "demo-600", data_root=demo_root, iters=600, curve=RISING, miou=47.0)
    long = make_run(tmp_path / "demo-3000", data_root=demo_root, iters=3000, curve=PLATEAU, miou=90.0)
    comparison = compare_paths([short, long])
    first = comparison.flags[0]
    assert first.kind == "recipe" and first.run == "demo-3000"
    assert first.message.startswith("demo-3000 vs demo-600: demo-3000 trained 5.0x the iterations of demo-600 (3,000 vs 600), 5.0x the samples (24,000 vs 4,800)")
    assert "demo-600: validation was still rising" in first.message
    training = [r["training"] for r in comparison.to_json()["runs"]]
    assert [(t["iterations"], t["samples"], t["data"], t["val_trend"]["state"]) for t in training] == [(600, 4800, "demo", "rising"), (3000, 24000, "demo", "plateau")]
    weak = next(f for f in comparison.flags if f.kind == "weak")
    assert weak.classes == ["chair"] and "still rising" in weak.fix  # the short run's schedule is the likelier cause


def test_recipe_differences_name_data_lr_and_batch() -> None:
    a = RunFacts("a", iters=1000, total_batch=8, lr=0.05, data=DataSource("demo", 160))
    b = RunFacts("b", iters=1000, total_batch=16, lr=0.1, data=DataSource("voc+sbd", 10582))
    diffs = recipe_differences(a, b)
    assert diffs[0].startswith("b saw 2.0x the training samples of a")
    assert any(d.startswith("data: a trained on vocseg's synthetic demo data") for d in diffs)
    assert "LR 0.1 vs 0.05 (2.0x)" in diffs and "total batch 16 vs 8" in diffs
    assert recipe_differences(a, a) == []


@pytest.mark.slow
def test_predict_and_report_say_demo(cli, trained_run: Path, demo_root: Path, tmp_path: Path, one_thread: None) -> None:
    image = next((demo_root / "VOCdevkit" / "VOC2012" / "JPEGImages").glob("*.jpg"))
    out = tmp_path / "pred"
    r = cli("predict", image, "-c", trained_run, "-o", out)
    assert r.code == 0, r.err
    assert "demo model" in " ".join(r.out.split())
    assert json.loads((out / "predictions.json").read_text())["images"][0]["model_caveat"].startswith("trained on vocseg's synthetic demo")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / image.name).write_bytes(image.read_bytes())
    report = tmp_path / "report.html"
    r = cli("report", copy_run(trained_run, tmp_path / "run"), "--photos", photos, "-o", report)  # it evaluates into RUN/eval/
    assert r.code == 0, r.err
    html = unescape(report.read_text())
    assert html.count("Demo model: trained on vocseg's synthetic demo shapes") == 2  # top of the page and the photos section
    assert "vocseg's synthetic demo data" in html and "VOC train + SBD aug" not in html
