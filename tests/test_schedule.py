"""The schedule arithmetic: the official numbers, and properties that must hold for any input."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vocseg.recipe import schedule as sched


def test_official_recipe_numbers() -> None:
    # 4 GPUs x 4 images = 16 at LR 0.01, as mmseg's configs/upernet.
    assert sched.scaled_lr(0.01, 16, 4 * 4) == pytest.approx(0.01)
    # 40k x 16 samples over trainaug (10582) and VOC train (1464).
    assert sched.equivalent_epochs(40_000, 16, 10_582) == pytest.approx(60.48, abs=0.01)
    assert round(sched.equivalent_epochs(40_000, 16, 1_464), 1) == 437.2
    assert sched.official_schedule_iters("40k", 16) == 40_000
    assert sched.official_schedule_iters("20k", 16) == 20_000


def test_reference_runs_intent_at_2x4() -> None:
    # Both reference runs used 2 GPUs x 4 images: the linear rule gives 0.005, not 0.01.
    assert sched.scaled_lr(0.01, 16, 2 * 4) == pytest.approx(0.005)
    # The official 40k at batch 8 is 80k iterations, not 40k ("40k iterations ~ 30 epochs" was wrong).
    assert sched.official_schedule_iters("40k", 8) == 80_000
    # 200 epochs on trainaug = 3.3x the official samples; on VOC train only = 0.46x.
    ipe_aug = sched.iters_per_epoch(10_582, 4, 2)
    assert sched.ratio_to_official(200 * ipe_aug, 8) == pytest.approx(3.31, abs=0.01)
    ipe_voc = sched.iters_per_epoch(1_464, 4, 2)
    assert sched.ratio_to_official(200 * ipe_voc, 8) == pytest.approx(0.46, abs=0.01)


def test_iters_per_epoch_matches_default_sampler() -> None:
    # DefaultSampler(round_up) gives each rank ceil(N/world); the loader makes ceil(that/batch) batches.
    assert sched.iters_per_epoch(10, 4, 1) == 3
    assert sched.iters_per_epoch(10, 4, 2) == 2  # 5 per rank -> 2 batches
    assert sched.iters_per_epoch(1_464, 4, 2) == 183


@pytest.mark.parametrize("bad", [(0, 16, 8), (0.01, 0, 8), (0.01, 16, 0), (-1.0, 16, 8)])
def test_scaled_lr_rejects_non_positive(bad: tuple[float, int, int]) -> None:
    with pytest.raises(ValueError):
        sched.scaled_lr(*bad)


def test_unknown_schedule() -> None:
    with pytest.raises(ValueError, match="unknown schedule"):
        sched.official_schedule_iters("80k", 16)


@given(st.floats(1e-5, 1.0), st.integers(1, 256), st.integers(1, 256))
def test_scaled_lr_is_linear(base_lr: float, base_batch: int, total: int) -> None:
    lr = sched.scaled_lr(base_lr, base_batch, total)
    assert lr / total == pytest.approx(base_lr / base_batch)
    assert sched.scaled_lr(base_lr, base_batch, 2 * total) == pytest.approx(2 * lr)


@given(st.integers(1, 50_000), st.integers(1, 64), st.integers(1, 16))
def test_every_sample_fits_in_an_epoch(n: int, batch: int, world: int) -> None:
    ipe = sched.iters_per_epoch(n, batch, world)
    # The epoch covers every sample, and no full batch of padding is added.
    assert ipe * batch * world >= n
    assert (ipe - 1) * batch * world < n + world * batch


@given(st.sampled_from(list(sched.OFFICIAL_SCHEDULES)), st.integers(1, 512))
def test_official_schedule_keeps_samples_seen(name: str, total: int) -> None:
    iters = sched.official_schedule_iters(name, total)
    target = sched.OFFICIAL_SCHEDULES[name] * sched.OFFICIAL_BATCH
    assert iters * total >= target
    assert (iters - 1) * total < target
    assert sched.ratio_to_official(iters, total, name) == pytest.approx(1.0, abs=total / target + 1e-9)


@given(st.integers(1, 100_000), st.integers(1, 64), st.integers(100, 20_000))
def test_equivalent_epochs_round_trip(iters: int, batch: int, n: int) -> None:
    epochs = sched.equivalent_epochs(iters, batch, n)
    assert math.isclose(epochs * n, iters * batch)
