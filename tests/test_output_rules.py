"""What vocseg reads and writes around its outputs: re-runs, run discovery, read-only data roots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vocseg.runs.folders import find_run_dirs, latest_run_dir

REFERENCE = Path(__file__).parent / "data" / "seed_runs.json"


def test_compare_with_json_and_no_chart_flag(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = cli("compare", str(REFERENCE), "--json", "cmp.json")
    code, err = r.code, r.err
    assert code == 0, err
    assert "Traceback" not in err
    assert json.loads((tmp_path / "cmp.json").read_text())
    # the chart went under runs/compare*/; beside cmp.json only vocseg's record of what it wrote
    assert sorted(p.name for p in tmp_path.iterdir()) == [".vocseg-written.jsonl", "cmp.json", "runs"]


def test_an_eval_results_folder_is_not_a_run_to_resume(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "demo" / "train"
    run.mkdir(parents=True)
    (run / "config.py").write_text("x = 1\n")
    (run / "recipe.json").write_text("{}\n")
    evaluated = tmp_path / "runs" / "eval" / "upernet-r50-40k"  # MMEngine dumps the evaluated config here
    evaluated.mkdir(parents=True)
    (evaluated / "config.py").write_text("x = 1\n")
    assert find_run_dirs(tmp_path / "runs") == [run]
    assert latest_run_dir(tmp_path / "runs") == run


def test_prepare_check_alone_writes_nothing_in_the_data_root(cli, demo_copy: Path) -> None:
    before = sorted(str(p.relative_to(demo_copy)) for p in demo_copy.rglob("*"))
    r = cli("prepare", "--check", "--data-root", str(demo_copy))
    code, err = r.code, r.err
    assert code == 0, err
    after = sorted(str(p.relative_to(demo_copy)) for p in demo_copy.rglob("*"))
    assert after == before  # no lock file: a read-only shared data root can be checked


def test_save_predictions_into_the_data_masks_is_refused_before_evaluating(cli, demo_copy: Path, tmp_path: Path) -> None:
    masks = demo_copy / "VOCdevkit" / "VOC2012" / "SegmentationClass"
    before = {p.name: p.read_bytes() for p in masks.iterdir()}
    r = cli("eval", str(tmp_path / "no-run-needed"), "--save-predictions", str(masks))
    code, err = r.code, r.err
    assert code != 0
    assert "--save-predictions" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in masks.iterdir()} == before
