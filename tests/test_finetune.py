"""Weights that load, or a stop: `--load-from CKPT|RUN|official:NAME` (whole model, tensor counts,
another class count starts fresh) and `--pretrained` with a whole segmentor checkpoint (prefix backbone.)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.helpers import TINY_TRAIN


def words(text: str) -> str:
    """Printed text without table borders, as one line (rich wraps table cells)."""
    return " ".join(re.sub("[\u2500-\u257f]", " ", text).split())


def _eval_miou(cli, target: Path, out: Path) -> float:
    r = cli("eval", target, "--json", out, "-o", out.parent / f"{out.stem}-outputs")  # never into the shared run's eval/
    assert r.code == 0, r.err
    return float(json.loads(out.read_text())["mIoU"])


@pytest.mark.slow
def test_fine_tuning_starts_where_the_loaded_model_ended(cli, request: pytest.FixtureRequest, demo_root: Path, tmp_path: Path) -> None:
    trained_run = request.getfixturevalue("trained_run")
    run = tmp_path / "ft"
    r = cli("config", "--data-root", demo_root, *TINY_TRAIN, "--iters", "2", "--load-from", trained_run, "--work-dir", run, "-o", tmp_path / "ft.py")
    assert r.code == 0, r.err
    plan = words(r.out)
    assert "--load-from iter_8.pth: 179 of 179 model tensors load (all)" in plan
    # Iteration 0 of the fine-tuning run: MMEngine's load_from through vocseg's runner, then its validation.
    from vocseg.training.runner import build_runner

    runner = build_runner(tmp_path / "ft.py", resume=False, verbose=False)
    metrics = runner.test()  # the test loop reads the val split here, without the checkpoint hook
    assert metrics["mIoU"] == pytest.approx(_eval_miou(cli, trained_run / "iter_8.pth", tmp_path / "eval.json"), abs=0.01)


@pytest.mark.slow
def test_another_class_count_starts_fresh_and_nothing_fitting_is_refused(cli, request: pytest.FixtureRequest, demo_root: Path, tmp_path: Path, one_thread) -> None:
    import torch

    from vocseg.stack.compat import load_checkpoint_file

    trained_run = request.getfixturevalue("trained_run")
    state = load_checkpoint_file(trained_run / "iter_8.pth")["state_dict"]
    nineteen = {k: (v[:19] if k.startswith("decode_head.conv_seg.") else v) for k, v in state.items()}
    torch.save({"state_dict": nineteen}, tmp_path / "city.pth")
    run = tmp_path / "ft19"
    r = cli("train", "--data-root", demo_root, *TINY_TRAIN, "--iters", "1", "--load-from", tmp_path / "city.pth", "--work-dir", run)
    assert r.code == 0, r.err
    out = words(r.out)
    assert "177 of 179 model tensors load; start fresh: decode_head.conv_seg.* (2, another class count: 19 in the file, 21 here)" in out
    log = next(run.glob("*/*.log")).read_text()
    assert "loaded 177 of 179 model tensors from city.pth" in log  # the run's own count, after MMEngine loaded it
    assert json.loads((run / "recipe.json").read_text())["load_from"] == str((tmp_path / "city.pth").resolve())

    torch.save({"state_dict": {"other.weight": torch.zeros(3)}}, tmp_path / "other.pth")
    r = cli("train", "--data-root", demo_root, *TINY_TRAIN, "--iters", "1", "--load-from", tmp_path / "other.pth", "--work-dir", tmp_path / "no")
    assert r.code == 2 and "none of its 1 tensors fits the tiny model" in r.err
    assert not (tmp_path / "no").exists()


@pytest.mark.slow
def test_pretrained_whole_segmentor_checkpoint_loads_its_backbone(cli, request: pytest.FixtureRequest, demo_root: Path, tmp_path: Path) -> None:
    trained_run = request.getfixturevalue("trained_run")
    r = cli("config", "--data-root", demo_root, *TINY_TRAIN, "--iters", "2", "--pretrained", trained_run / "iter_8.pth", "-o", tmp_path / "p.py")
    assert r.code == 0, r.err
    assert "--pretrained iter_8.pth: 110 backbone tensors load (the backbone part of a whole segmentor checkpoint; decode and auxiliary heads start fresh)" in words(r.out)
    from mmengine.config import Config

    init = Config.fromfile(str(tmp_path / "p.py"), import_custom_modules=False).model.backbone.init_cfg
    assert init.prefix == "backbone." and Path(init.checkpoint).is_absolute()
    # What MMEngine loads with that init_cfg: the run's backbone, bit for bit.
    from vocseg.stack.compat import load_checkpoint_file
    from vocseg.training.runner import build_runner

    runner = build_runner(tmp_path / "p.py", resume=False, verbose=False)
    runner.model.init_weights()
    saved = load_checkpoint_file(trained_run / "iter_8.pth")["state_dict"]
    for name, value in runner.model.backbone.state_dict().items():
        assert bool((value == saved["backbone." + name]).all()), name
