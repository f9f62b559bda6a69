"""Restarts without a person: `--max-restarts` (torchrun's elastic agent restarts the processes,
which resume from the last checkpoint) and Slurm's `--requeue` (SIGUSR1 -> checkpoint,
`scontrol requeue`, exit 0; the same command in the requeued job resumes). Both bitwise equal
to an uninterrupted run on the CPU."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import assert_bitwise_equal
from vocseg.errors import VocsegError
from vocseg.recipe.recipe import Recipe
from vocseg.runs.folders import latest_checkpoint
from vocseg.stack.compat import load_checkpoint_file
from vocseg.training.launch import LAUNCHER_ENV, LaunchOptions, plan_launch, torchrun_command, worker_pids
from vocseg.training.protocol import REQUEUE_ENV

pytestmark = pytest.mark.usefixtures("one_thread")  # in-process runs as the subprocesses: one thread
VOCSEG = [sys.executable, "-m", "vocseg.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
EXACT = ("--model", "tiny", "--device", "cpu", "--deterministic", "--batch", "2", "--workers", "0", "--keep", "20")


def stub_scontrol(folder: Path) -> tuple[dict[str, str], Path]:
    """An `scontrol` on PATH that records its arguments; the environment of a Slurm job."""
    folder.mkdir()
    log = folder / "calls.txt"
    script = folder / "scontrol"
    script.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    script.chmod(0o755)
    return {**ENV, "PATH": f"{folder}{os.pathsep}{ENV['PATH']}", "SLURM_JOB_ID": "4242"}, log


def test_launch_plans_for_restarts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    one = plan_launch(Recipe(device="cpu", nproc=1), LaunchOptions(max_restarts=3))
    assert one.mode == "torchrun" and one.env[LAUNCHER_ENV] == "none"  # restartable, but no process group
    assert one.env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] == "1"  # a new store for each attempt
    restartable = torchrun_command(tmp_path / "config.py", 1, LaunchOptions(max_restarts=3), 29500, resume=False)
    assert "--max-restarts=3" in restartable and "--rdzv-backend=c10d" in restartable  # a new store per attempt
    assert not any("max-restarts" in a for a in torchrun_command(tmp_path / "config.py", 2, LaunchOptions(), 29500, resume=False))
    for recipe, options, needle in (
        (Recipe(device="cpu", nproc=2, nnodes=2), LaunchOptions(nnodes=2, master_port=29500, max_restarts=1), "--max-restarts with --nnodes > 1"),
        (Recipe(device="cpu", nproc=1), LaunchOptions(launcher="none", max_restarts=1), "--launcher none"),
    ):
        with pytest.raises(VocsegError, match=needle):
            plan_launch(recipe, options)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with pytest.raises(VocsegError, match="not a Slurm job"):
        plan_launch(Recipe(device="cpu"), LaunchOptions(requeue=True))
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("PATH", str(tmp_path))  # no scontrol
    with pytest.raises(VocsegError, match="`scontrol` is not on PATH"):
        plan_launch(Recipe(device="cpu"), LaunchOptions(requeue=True))
    env, _ = stub_scontrol(tmp_path / "bin")
    monkeypatch.setenv("PATH", env["PATH"])
    assert plan_launch(Recipe(device="cpu"), LaunchOptions(requeue=True)).env[REQUEUE_ENV] == "1"


def test_requeue_needs_a_work_dir(cli, demo_root: Path) -> None:
    r = cli("train", "--data-root", demo_root, *EXACT, "--iters", "2", "--requeue")
    assert r.code == 2 and "--work-dir is required" in r.err


def test_a_killed_process_is_restarted_and_the_run_is_bitwise_exact(demo_root: Path, tmp_path: Path) -> None:
    """2 CPU processes over gloo; one is SIGKILLed mid-run; torchrun's agent restarts both, they
    resume from the last checkpoint, and the final weights equal those of a run never killed."""
    flags = [*EXACT, "--nproc", "2", "--iters", "10", "--ckpt-interval", "2", "--val-interval", "5"]
    straight, restarted = tmp_path / "straight", tmp_path / "restarted"
    done = subprocess.run([*VOCSEG, "train", "--data-root", str(demo_root), *flags, "--work-dir", str(straight)],
                          capture_output=True, text=True, env=ENV, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    proc = subprocess.Popen([*VOCSEG, "train", "--data-root", str(demo_root), *flags, "--max-restarts", "2", "--work-dir", str(restarted)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        deadline = time.monotonic() + 600  # a bound for failure only
        while not (restarted / "iter_4.pth").is_file():
            assert proc.poll() is None and time.monotonic() < deadline, "training did not reach iteration 4"
            time.sleep(0.2)
        workers = [pid for parent in worker_pids(proc.pid) for pid in worker_pids(parent)]
        assert len(workers) == 2
        os.kill(max(workers), signal.SIGKILL)  # one of them (rank order does not matter)
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out + err
    assert "restart 1 after a failed process: resuming from iter_" in out, out
    assert load_checkpoint_file(latest_checkpoint(restarted))["meta"]["iter"] == 10
    assert_bitwise_equal(straight / "iter_10.pth", restarted / "iter_10.pth")


def test_slurm_requeue_saves_requeues_and_the_same_command_resumes(cli, demo_root: Path, tmp_path: Path) -> None:
    """SIGUSR1 (`#SBATCH --signal=USR1@120`): checkpoint, `scontrol requeue $SLURM_JOB_ID` (a stub
    that records its arguments), exit 0. The requeued job runs the same command: it resumes, and
    the result is bitwise that of an uninterrupted run."""
    env, calls = stub_scontrol(tmp_path / "bin")
    flags = [*EXACT, "--iters", "6", "--val-interval", "3", "--ckpt-interval", "6"]
    run = tmp_path / "run"
    cmd = [*VOCSEG, "train", "--data-root", str(demo_root), *flags, "--requeue", "--work-dir", str(run)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    out = ""
    for line in proc.stdout:
        out += line
        if line.startswith("iter 2/6"):
            proc.send_signal(signal.SIGUSR1)
            break
    out += proc.stdout.read()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, out + err
    assert "Traceback" not in err, err
    assert calls.read_text().split() == ["requeue", "4242"]
    assert "job 4242 requeued" in out, out
    stopped_at = load_checkpoint_file(latest_checkpoint(run))["meta"]["iter"]
    assert stopped_at in (2, 3)
    again = subprocess.run(cmd, capture_output=True, text=True, env={**env, "SLURM_RESTART_COUNT": "1"}, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"resuming {run} at iteration {stopped_at}/6" in again.stdout, again.stdout
    assert calls.read_text().split() == ["requeue", "4242"]  # not requeued again: it finished
    straight = tmp_path / "straight"
    assert cli("train", "--data-root", demo_root, *flags, "--work-dir", straight).code == 0
    assert_bitwise_equal(straight / "iter_6.pth", run / "iter_6.pth")
