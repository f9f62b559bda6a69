"""`vocseg resume`: bitwise exact on the CPU, safe against SIGKILL while saving, clear about
process-count changes, finished runs and broken folders."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vocseg.compat import load_checkpoint_file
from vocseg.runs import latest_checkpoint

EXACT = ("--model", "tiny", "--device", "cpu", "--deterministic", "--keep", "20")


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread for in-process training: with the cores shared (CI, parallel jobs)
    OpenMP threads spin against each other and an iteration of the tiny model takes seconds."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint_file(path)["state_dict"]


def assert_bitwise_equal(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, f"{len(differ)} of {len(wa)} tensors differ, e.g. {differ[:3]}"


def copy_run_at(src: Path, dst: Path, iteration: int) -> Path:
    """A run folder as a run stopped at `iteration` leaves it: its config, recipe and that checkpoint."""
    dst.mkdir()
    for name in ("config.py", "recipe.json", f"iter_{iteration}.pth"):
        shutil.copy2(src / name, dst / name)
    (dst / "last_checkpoint").write_text(str(dst / f"iter_{iteration}.pth"))
    return dst


@pytest.mark.parametrize(
    "workers,schedule,stop_at,end",
    [
        # iteration-counted: the checkpoint of iteration 3 was written again after a validation
        # that found a new best (MMEngine does that), with validation in between.
        ("0", ("--batch", "2", "--iters", "6", "--val-interval", "3", "--ckpt-interval", "3"), 3, 6),
        ("2", ("--batch", "2", "--iters", "6", "--val-interval", "3", "--ckpt-interval", "3"), 3, 6),
        # epoch-counted (6 iterations per epoch: VOC train only at batch 4), resumed mid-epoch from
        # one of the periodic checkpoints (by default every tenth of the run, in iterations).
        ("0", ("--batch", "4", "--epochs", "1", "--no-aug", "--val-interval", "1"), 4, 6),
    ],
    ids=["iters-workers0", "iters-workers2", "epochs-mid-epoch"],
)
def test_resume_is_bitwise_exact(cli, demo_root: Path, tmp_path: Path, workers: str, schedule: tuple[str, ...], stop_at: int, end: int) -> None:
    straight = tmp_path / "straight"
    r = cli("train", "--data-root", demo_root, *EXACT, "--num-workers", workers, *schedule, "--work-dir", straight)
    assert r.code == 0, r.err
    resumed = copy_run_at(straight, tmp_path / "resumed", stop_at)
    r = cli("resume", resumed)
    assert r.code == 0, r.err
    assert f"at iteration {stop_at}/{end}" in r.out
    assert_bitwise_equal(straight / f"iter_{end}.pth", resumed / f"iter_{end}.pth")


VOCSEG = [sys.executable, "-m", "vocseg.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _kill_while_saving(proc: subprocess.Popen, work: Path, timeout: float = 180) -> bool:
    """Once the run has a complete checkpoint, SIGKILL it the moment a temporary file (a
    checkpoint or `last_checkpoint` being written) shows up. True if the kill landed mid-write."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        # `.NAME.PID.tmp`, written by this process (not one left by an earlier kill).
        writing = any(p.name.endswith(f".{proc.pid}.tmp") for p in os.scandir(work)) if work.is_dir() else False
        if writing and latest_checkpoint(work) is not None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.0005)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return False


def test_sigkill_while_saving_still_resumes(cli, demo_root: Path, tmp_path: Path) -> None:
    work = tmp_path / "killed"
    train = [*VOCSEG, "train", "--data-root", str(demo_root), "--model", "tiny", "--device", "cpu", "--batch", "2",
             "--num-workers", "0", "--iters", "16", "--ckpt-interval", "1", "--keep", "2", "--val-interval", "16",
             "--work-dir", str(work)]
    caught = 0
    for attempt in range(4):  # bounded: stop after two kills that landed mid-write
        cmd = train if attempt == 0 else [*VOCSEG, "resume", str(work)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV, start_new_session=True)
        caught += _kill_while_saving(proc, work)
        # Whatever the moment, the checkpoint a resume starts from is complete, and
        # `last_checkpoint` (absent only before its first write) names it.
        ckpt = latest_checkpoint(work)
        assert ckpt is not None and load_checkpoint_file(ckpt)["meta"]["iter"] >= 1
        if (work / "last_checkpoint").is_file():
            assert Path((work / "last_checkpoint").read_text().strip()) == ckpt
        if caught >= 2:
            break
    assert caught >= 1, "no kill landed while a checkpoint was being written"
    r = cli("resume", work)
    assert r.code == 0, r.err
    assert load_checkpoint_file(latest_checkpoint(work))["meta"]["iter"] == 16
    assert not list(work.glob(".*.tmp"))  # half-written files of the killed processes are gone


def _run_stopped_at(trained_run: Path, dst: Path, iteration: int) -> Path:
    shutil.copytree(trained_run, dst)
    (dst / "last_checkpoint").write_text(str(dst / f"iter_{iteration}.pth"))
    return dst


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_another_process_count_is_refused_unless_rescale_lr(cli, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    trained_run = request.getfixturevalue("trained_run")  # built under one_thread if first used here
    run = _run_stopped_at(trained_run, tmp_path / "run", 6)
    before = _files(run)
    r = cli("resume", run, "--nproc", "2")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1
    assert "trained with 1 process(es) (total batch 2)" in r.err and "--rescale-lr" in r.err
    assert _files(run) == before
    # With the flag: two processes through torchrun, LR schedule scaled by 4/2.
    r = cli("resume", run, "--nproc", "2", "--rescale-lr")
    assert r.code == 0, r.err
    assert "LR rescaled" in r.out
    old, new = load_checkpoint_file(trained_run / "iter_8.pth"), load_checkpoint_file(run / "iter_8.pth")
    assert new["meta"]["iter"] == 8 and new["vocseg_batch"]["total"] == 4
    old_group, new_group = old["optimizer"]["param_groups"][0], new["optimizer"]["param_groups"][0]
    assert new_group["initial_lr"] == pytest.approx(2 * old_group["initial_lr"])
    assert new["param_schedulers"][0]["base_values"] == pytest.approx([2 * v for v in old["param_schedulers"][0]["base_values"]])
    assert '"nproc": 2' in (run / "recipe.json").read_text()
    # The next resume of this run needs no flag: the checkpoint now says 2 processes.
    (run / "last_checkpoint").write_text(str(run / "iter_7.pth"))
    r = cli("resume", run, "--nproc", "1")
    assert r.code == 2 and "trained with 2 process(es)" in r.err


def test_a_finished_run_is_not_retrained(cli, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trained_run = request.getfixturevalue("trained_run")
    shutil.copytree(trained_run, tmp_path / "runs" / "tiny")
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in (tmp_path / "runs" / "tiny").iterdir())
    r = cli("resume")  # the newest run under runs/
    assert r.code == 0, r.err
    assert "already finished: 8/8 iterations" in r.out and str(tmp_path / "runs" / "tiny") in r.out
    assert sorted(p.name for p in (tmp_path / "runs" / "tiny").iterdir()) == before


def test_bad_run_folders_are_one_line_errors(cli, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trained_run = request.getfixturevalue("trained_run")
    monkeypatch.chdir(tmp_path)
    cases = []
    cases.append((None, "No run folder under runs/"))
    (tmp_path / "empty").mkdir()
    cases.append((tmp_path / "empty", "is not a vocseg run folder"))
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    for name in ("config.py", "recipe.json"):
        shutil.copy2(trained_run / name, fresh / name)
    cases.append((fresh, "has no checkpoint to resume from"))
    truncated = tmp_path / "truncated"
    shutil.copytree(trained_run, truncated)
    ckpt = truncated / "iter_8.pth"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    cases.append((truncated, "truncated"))
    for folder, needle in cases:
        before = _files(folder) if folder is not None else {}
        r = cli("resume", *([folder] if folder is not None else []))
        assert r.code == 2 and needle in r.err, r.err
        assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err
        if folder is not None:
            assert _files(folder) == before  # nothing lost, nothing changed
    r = cli("resume", truncated)
    assert "iter_7.pth" in r.err  # the hint names the previous checkpoint
