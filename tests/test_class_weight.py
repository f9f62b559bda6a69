"""Class weights: mmseg's loss with weights and the ignore index (vocseg.stack.compat), median-frequency
balancing (vocseg.data.class_pixels), `--class-weight` through config, train, recipe.json and compare."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import TINY_TRAIN
from vocseg.data.class_pixels import ClassPixels, count_mask, median_frequency_weights
from vocseg.errors import VocsegError
from vocseg.recipe.recipe import Recipe, validate


def words(text: str) -> str:
    """Printed text without table borders, as one line (rich wraps table cells)."""
    return " ".join(re.sub("[\u2500-\u257f]", " ", text).split())


def test_mmseg_loss_with_class_weights_and_255_matches_a_hand_computed_value() -> None:
    import torch

    from vocseg.stack.compat import ensure_stack, fix_class_weight_loss

    ensure_stack()
    fix_class_weight_loss()
    from mmseg.models.losses import CrossEntropyLoss

    # 2 classes, 1 x 1 x 3 pixels: labels 0, 1 and 255 (ignored).
    logits = torch.tensor([[[[2.0, 0.0, 5.0]], [[0.0, 1.0, -5.0]]]])  # (N=1, C=2, H=1, W=3)
    label = torch.tensor([[[0, 1, 255]]])
    weights = [0.5, 2.0]
    # By hand: ce_0 = log(1 + e^-2), ce_1 = log(1 + e^-1); mean weighted by the labelled pixels only.
    ce0, ce1 = math.log(1 + math.exp(-2)), math.log(1 + math.exp(-1))
    expected = (0.5 * ce0 + 2.0 * ce1) / (0.5 + 2.0)
    for avg_non_ignore in (False, True):
        loss = CrossEntropyLoss(class_weight=weights, avg_non_ignore=avg_non_ignore)
        value = loss(logits, label, ignore_index=255)
        assert float(value) == pytest.approx(expected, rel=1e-5)
    # PyTorch's own weighted mean agrees; without 255 the result is mmseg's original one.
    assert float(torch.nn.functional.cross_entropy(logits, label, weight=torch.tensor(weights), ignore_index=255)) == pytest.approx(expected, rel=1e-5)
    from mmseg.models.losses import cross_entropy_loss as mmseg_ce

    clean = torch.tensor([[[0, 1, 1]]])
    original = mmseg_ce.vocseg_original_cross_entropy(logits, clean, class_weight=torch.tensor(weights), ignore_index=255)
    assert float(CrossEntropyLoss(class_weight=weights)(logits, clean, ignore_index=255)) == pytest.approx(float(original), rel=1e-6)


def test_median_frequency_balancing_by_hand() -> None:
    # Two masks: class 0 everywhere in both (4 + 4 labelled pixels), class 1 one pixel in the second.
    a = np.array([[0, 0], [0, 0]], np.uint8)
    b = np.array([[0, 0], [0, 1]], np.uint8)
    assert count_mask(np.array([[255, 3], [3, 21]], np.uint8), num_classes=4).tolist() == [0, 0, 0, 2]
    rows = [count_mask(a, 3), count_mask(b, 3)]
    counts = ClassPixels(
        pixels=tuple(int(x) for x in sum(rows)),
        present_pixels=(8, 4, 0),
        images=(2, 1, 0),
        masks=2,
    )
    # freq_0 = 7/8, freq_1 = 1/4; median of the present = 9/16; class 2 is absent: weight 0.
    assert median_frequency_weights(counts) == (round(9 / 16 / (7 / 8), 4), round(9 / 16 / (1 / 4), 4), 0.0)


def test_class_weight_values_are_checked() -> None:
    for bad, needle in (("1,2", "21 weights"), ("x" + ",1" * 20, "not a number"), (",".join(["0"] * 21), "at least one"), ("-1" + ",1" * 20, "not a finite")):
        with pytest.raises(VocsegError, match=needle):
            validate(Recipe(model="tiny", device="cpu", class_weight=bad))
    validate(Recipe(model="tiny", device="cpu", class_weight=",".join(["1"] * 21)))


@pytest.mark.slow
def test_class_weight_auto_trains_and_is_recorded(cli, demo_root: Path, tmp_path: Path, one_thread) -> None:
    run = tmp_path / "cw"
    r = cli("train", "--data-root", demo_root, *TINY_TRAIN, "--iters", "2", "--no-aug", "--class-weight", "auto", "--work-dir", run)
    assert r.code == 0, r.err
    out = words(r.out)
    assert "class weights" in out and "median-frequency" in out
    recipe = json.loads((run / "recipe.json").read_text())
    assert recipe["class_weight"] == "auto" and len(recipe["class_weight_values"]) == 21
    assert all(w >= 0 for w in recipe["class_weight_values"]) and max(recipe["class_weight_values"]) > 0
    from mmengine.config import Config

    cfg = Config.fromfile(str(run / "config.py"), import_custom_modules=False)
    assert list(cfg.model.decode_head.loss_decode.class_weight) == recipe["class_weight_values"]
    assert list(cfg.model.auxiliary_head.loss_decode.class_weight) == recipe["class_weight_values"]
    # Counted once: the cache sits beside the pre-check's.
    cache = demo_root / "VOCdevkit" / "VOC2012" / ".vocseg-cache"
    assert list(cache.glob("class-pixels-*.json"))
    # compare flags the difference with a run without weights.
    plain = tmp_path / "plain"
    assert cli("train", "--data-root", demo_root, *TINY_TRAIN, "--iters", "2", "--no-aug", "--work-dir", plain).code == 0
    assert cli("eval", run).code == 0 and cli("eval", plain).code == 0
    r = cli("compare", run, plain)
    assert r.code == 0, r.err
    assert "class weights differ" in words(r.out)
