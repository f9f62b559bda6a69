"""vocseg's MMEngine pieces on their own: the resumable sampler, per-sample seeding, RNG
preservation, stop requests, LR rescaling, curves, and run-folder helpers. No training here."""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vocseg.stack.compat import ensure_stack

ensure_stack()

from vocseg.runs.curves import read_curves, write_curves  # noqa: E402
from vocseg.runs.folders import latest_checkpoint, remove_stale_temp_files  # noqa: E402
from vocseg.training.batch_guard import scale_lr_state  # noqa: E402
from vocseg.training.rng import preserved_rng, training_rng_state  # noqa: E402
from vocseg.training.sampler import ResumableSampler, SeededDataset  # noqa: E402
from vocseg.training.stop import StopRequest  # noqa: E402


def take(it, n: int) -> list[int]:
    return list(itertools.islice(it, n))


@pytest.mark.parametrize("world", [1, 2, 3])
def test_sampler_starts_anywhere_without_replaying(world: int) -> None:
    n, batch = 10, 2
    samplers = [ResumableSampler(list(range(n)), batch, seed=7, rank=r, world_size=world) for r in range(world)]
    ipe = samplers[0].iters_per_epoch
    assert ipe == math.ceil(math.ceil(n / world) / batch)  # the same count as DefaultSampler + DataLoader
    streams = [take(iter(s), 8 * ipe * batch) for s in samplers]
    for r, s in enumerate(samplers):
        for k in (1, ipe - 1, ipe, 3 * ipe + 1):
            s.set_start_iter(k)
            assert take(iter(s), 4 * batch) == streams[r][k * batch : k * batch + 4 * batch]
    # Each epoch, the ranks together see every image; positions never repeat.
    for epoch in range(5):
        seen = {key % n for stream in streams for key in stream[epoch * ipe * batch : (epoch + 1) * ipe * batch]}
        assert seen == set(range(n))
    positions = [key // n for stream in streams for key in stream]
    assert len(positions) == len(set(positions))
    # Epochs are shuffled differently.
    assert streams[0][: ipe * batch] != streams[0][ipe * batch : 2 * ipe * batch]


def test_sampler_start_cost_does_not_grow() -> None:
    s = ResumableSampler(list(range(10_582)), 4, seed=0)
    s.set_start_iter(10**9)  # an iteration no run reaches: still one permutation, not a replay
    first = next(iter(s))
    assert first // 10_582 == 10**9 * 4


class RandomDataset:
    """Each item draws from python, numpy and torch RNGs, as augmentation does."""

    def __len__(self) -> int:
        return 5

    def __getitem__(self, index: int) -> tuple[int, float, float, float]:
        return index, random.random(), float(np.random.rand()), float(torch.rand(1))


def test_seeded_dataset_depends_on_position_only() -> None:
    ds = SeededDataset(RandomDataset(), seed=3)
    a = ds[17]
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    before = (random.random(), np.random.rand(), float(torch.rand(1)))
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    b = ds[17]
    after = (random.random(), np.random.rand(), float(torch.rand(1)))
    assert a == b and a[0] == 17 % 5
    assert ds[22][0] == ds[17][0] and ds[22] != ds[17]  # same image, other position: other augmentation
    assert before == after  # the caller's streams did not move


def test_preserved_rng_and_training_state() -> None:
    torch.manual_seed(1)
    outer = training_rng_state()
    with preserved_rng():
        torch.rand(100)
        np.random.rand(3)
        inside = training_rng_state()
    assert torch.equal(inside["torch"], outer["torch"])  # what a checkpoint saved inside stores
    assert torch.equal(torch.get_rng_state(), outer["torch"])


def test_stop_request_counts_one_signal_and_restores_handlers() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)  # a launcher forwarding the same Ctrl-C: no abort
        assert stop.agreed() == signal.SIGTERM
        stop._first_at -= 5  # a second Ctrl-C, later, aborts
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) == previous


def test_scale_lr_state() -> None:
    ckpt = {
        "optimizer": {"param_groups": [{"lr": 0.01, "initial_lr": 0.02, "momentum": 0.9}]},
        "param_schedulers": [
            {"param_name": "lr", "base_values": [0.02], "_last_value": [0.01], "eta_min": 1e-4},
            {"param_name": "momentum", "base_values": [0.9]},
        ],
    }
    scale_lr_state(ckpt, 2.0)
    group = ckpt["optimizer"]["param_groups"][0]
    assert (group["lr"], group["initial_lr"], group["momentum"]) == (0.02, 0.04, 0.9)
    assert ckpt["param_schedulers"][0]["base_values"] == [0.04] and ckpt["param_schedulers"][0]["_last_value"] == [0.02]
    assert ckpt["param_schedulers"][0]["eta_min"] == 1e-4 and ckpt["param_schedulers"][1]["base_values"] == [0.9]


def _scalars(folder: Path, rows: list[dict], tail: str = "") -> None:
    path = folder / "vis_data" / "scalars.json"
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)


def test_curves_merge_resumed_segments(tmp_path: Path) -> None:
    # First segment trained to 5 (killed mid-line); the resume restarted from checkpoint 3.
    _scalars(tmp_path / "20250101_000000",
             [{"loss": 4.0 - i * 0.1, "lr": 0.01, "step": i} for i in range(1, 6)] + [{"mIoU": 10.0, "step": 3}],
             tail='{"loss": 3.')
    _scalars(tmp_path / "20250101_010000", [{"loss": 1.0, "lr": 0.005, "step": i} for i in range(4, 7)] + [{"mIoU": 20.0, "step": 6}])
    curves = read_curves(tmp_path)
    assert sorted(curves.loss) == [1, 2, 3, 4, 5, 6]
    assert curves.loss[3] == pytest.approx(3.7) and curves.loss[4] == 1.0 and curves.lr[6] == 0.005
    assert curves.miou == {3: 10.0, 6: 20.0}
    png = write_curves(tmp_path)
    assert png == tmp_path / "curves.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert write_curves(tmp_path / "nothing") is None


def test_latest_checkpoint_of_a_moved_run(tmp_path: Path) -> None:
    run = tmp_path / "moved"
    run.mkdir()
    (run / "iter_4.pth").write_bytes(b"x")
    (run / "iter_2.pth").write_bytes(b"x")
    (run / "last_checkpoint").write_text("/somewhere/else/old-run/iter_2.pth")
    assert latest_checkpoint(run) == run / "iter_2.pth"  # the pointer, found by name
    (run / "last_checkpoint").write_text("")
    assert latest_checkpoint(run) == run / "iter_4.pth"


def test_stale_temp_files_of_dead_processes_only(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f".iter_5.pth.{dead}.tmp"
    live = tmp_path / f".iter_6.pth.{os.getpid()}.tmp"
    users = tmp_path / f".notes.{dead}.tmp"  # not in the record: the user's, kept
    for p in (stale, live, users):
        p.write_bytes(b"partial")
    with open(tmp_path / ".vocseg-written.jsonl", "a") as record:  # as vocseg records a temporary file before creating it
        record.write(f'{{"t": "{stale.name}", "pid": {dead}}}\n{{"t": "{live.name}", "pid": {os.getpid()}}}\n')
    assert remove_stale_temp_files(tmp_path) == [stale]
    assert live.exists() and not stale.exists() and users.exists()
