"""The run health guard (`vocseg.training.health`): runs that cannot be right stop, say why in one
line, exit non-zero and leave no checkpoint of a non-finite model."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import TINY_TRAIN
from vocseg.training.health import fix_hint, loss_verdict, nan_metric_reason

BLOWS_UP = ("--lr", "1e4")  # the tiny model's loss reaches inf / NaN within a few iterations


def _all_finite(path: Path) -> bool:
    import torch

    from vocseg.stack.compat import load_checkpoint_file

    state = load_checkpoint_file(path)["state_dict"]
    return all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())


def _assert_no_nonfinite_checkpoint(run: Path) -> None:
    checkpoints = sorted(run.glob("*.pth"))
    assert checkpoints, "the first iterations were finite: their checkpoints are kept"
    for path in checkpoints:
        assert _all_finite(path), f"{path.name} holds non-finite weights"
    pointed = Path((run / "last_checkpoint").read_text().strip())
    assert pointed.is_file() and _all_finite(pointed)


@pytest.mark.slow
def test_a_nan_loss_stops_the_run_without_a_nan_checkpoint(cli, demo_root: Path, tmp_path: Path, one_thread) -> None:
    run = tmp_path / "nan"
    r = cli("train", "--data-root", demo_root, *TINY_TRAIN, "--iters", "12", *BLOWS_UP, "--work-dir", run)
    assert r.code == 3, r.err
    err = " ".join(r.err.split())
    assert len(r.err.strip().splitlines()) <= 2 and "Traceback" not in r.err  # one line (rich may wrap it)
    assert "Training stopped at iteration" in err and "(LR " in err
    assert any(what in err for what in ("weights became NaN/inf", "loss became inf", "loss became nan"))
    assert "--lr" in err and "--warmup-iters" in err and "is of a finite model and kept" in err
    assert "done:" not in r.out and "next:" not in r.out
    _assert_no_nonfinite_checkpoint(run)


@pytest.mark.slow
def test_every_process_stops_under_torchrun(cli, demo_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "nan2"
    r = cli("train", "--data-root", demo_root, *TINY_TRAIN, "--nproc", "2", "--iters", "12", *BLOWS_UP, "--work-dir", run)
    assert r.code == 3, r.out + r.err
    assert "Training stopped at iteration" in r.err and "Training failed" not in r.err and "Traceback" not in r.err
    assert "done:" not in r.out
    _assert_no_nonfinite_checkpoint(run)


def _void_masks(root: Path, list_name: str) -> None:
    """Every mask of a list rewritten as the ignore value 255 (an export that wrote only that layer)."""
    voc = root / "VOCdevkit" / "VOC2012"
    for image_id in (voc / "ImageSets" / "Segmentation" / list_name).read_text().split():
        for folder in ("SegmentationClass", "SegmentationClassAug"):
            mask = voc / folder / f"{image_id}.png"
            if mask.is_file():
                size = Image.open(mask).size
                Image.fromarray(np.full(size[::-1], 255, np.uint8), mode="L").save(mask)


def _config(root: Path, tmp_path: Path, *flags: str) -> Path:
    from vocseg.cli import run

    out = tmp_path / "run" / "config.py"
    out.parent.mkdir()
    assert run(["config", "--data-root", str(root), *TINY_TRAIN, *flags, "--work-dir", str(out.parent), "-o", str(out)]) == 0
    return out


def _run_worker_unchecked(config: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """The training process as `vocseg train` starts it, without the data pre-check (which refuses
    void splits by itself): the guard is the last line of defence."""
    from vocseg.data.precheck import CHECKED_ENV
    from vocseg.training.worker import run_worker

    monkeypatch.setenv(CHECKED_ENV, "1")
    return run_worker(config, resume=False, verbose=False)


@pytest.mark.slow
def test_batches_without_a_labelled_pixel_stop_as_nothing_to_learn(demo_copy: Path, tmp_path: Path, monkeypatch, one_thread) -> None:
    for name in ("train.txt", "aug.txt"):
        _void_masks(demo_copy, name)
    config = _config(demo_copy, tmp_path, "--iters", "4", "--no-aug")
    from vocseg.errors import VocsegError

    with pytest.raises(VocsegError) as caught:
        _run_worker_unchecked(config, monkeypatch)
    assert caught.value.exit_code == 3
    assert "had a labelled pixel" in caught.value.message and "nothing to learn" in caught.value.message
    assert "prepare --check" in caught.value.hint


@pytest.mark.slow
def test_a_nan_validation_says_why(demo_copy: Path, tmp_path: Path, monkeypatch, capfd, one_thread) -> None:
    _void_masks(demo_copy, "val.txt")
    config = _config(demo_copy, tmp_path, "--iters", "2", "--no-aug")
    capfd.readouterr()
    assert _run_worker_unchecked(config, monkeypatch) == 0
    err = " ".join(capfd.readouterr().err.split())
    assert "mIoU is undefined (NaN): the val split has no labelled pixel" in err
    assert not list((config.parent).glob("best_*.pth"))  # a NaN score is never the best


def test_hint_and_reason_words() -> None:
    assert fix_hint(0.1, amp=True, max_iters=2000) == "Start a new run with a lower --lr or --base-lr (e.g. --lr 0.01), --warmup-iters 100, or --no-amp."
    assert "--no-amp" not in fix_hint(0.1, amp=False, max_iters=10)
    assert "no labelled pixel" in nan_metric_reason({"label": np.zeros(21)})
    assert "absent" in nan_metric_reason({"label": np.ones(21)})
    assert not math.isnan(0.0)


def test_the_fp16_loss_scaler_may_skip_steps_but_not_forever() -> None:
    """fp32/bf16 (no scaler): the first non-finite loss stops. fp16: a skipped step is no failure,
    20 in a row or a scale below 1 is; non-finite weights always stop."""
    assert loss_verdict(bad_loss=True, bad_weights=False, scale=None, skipped=0) == ("stop", 0)
    assert loss_verdict(bad_loss=False, bad_weights=False, scale=None, skipped=0) == ("ok", 0)
    assert loss_verdict(bad_loss=True, bad_weights=False, scale=32768.0, skipped=0) == ("skip", 1)
    assert loss_verdict(bad_loss=False, bad_weights=False, scale=32768.0, skipped=5) == ("ok", 0)  # a finite step resets the count
    assert loss_verdict(bad_loss=True, bad_weights=False, scale=2.0**-3, skipped=18) == ("stop", 19)
    assert loss_verdict(bad_loss=True, bad_weights=False, scale=4.0, skipped=19) == ("stop", 20)
    assert loss_verdict(bad_loss=True, bad_weights=True, scale=4.0, skipped=0)[0] == "stop"
    assert loss_verdict(bad_loss=False, bad_weights=True, scale=None, skipped=0)[0] == "stop"
    # Dynamic loss scaling halves the scale at each skipped step: from 2**16 it falls below 1 after 17 skips.
    verdicts, skipped, scale = [], 0, 2.0**16
    while not verdicts or verdicts[-1] == "skip":
        scale /= 2
        verdict, skipped = loss_verdict(bad_loss=True, bad_weights=False, scale=scale, skipped=skipped)
        verdicts.append(verdict)
    assert verdicts.count("skip") == 16 and len(verdicts) == 17
