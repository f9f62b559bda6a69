"""`vocseg train` for real: two CPU processes through torchrun on the demo data, the live display
on a terminal and plain lines elsewhere, and a SIGTERM that leaves a resumable checkpoint."""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import TINY_TRAIN
from vocseg.runs.folders import latest_checkpoint
from vocseg.stack.compat import load_checkpoint_file

VOCSEG = [sys.executable, "-m", "vocseg.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "120"}


pytestmark = pytest.mark.usefixtures("one_thread")  # in-process training: see conftest


def run_in_terminal(args: list[str], timeout: float = 240) -> tuple[int, str]:
    """Run vocseg with a pseudo-terminal as stdout/stderr (as a person at a terminal would)."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([*VOCSEG, *args], stdin=slave, stdout=slave, stderr=slave, env=ENV, start_new_session=True)
    os.close(slave)
    chunks: list[bytes] = []
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the terminal closed: every process has exited
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=timeout)
    finally:
        os.close(master)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return code, b"".join(chunks).decode(errors="replace")


def plain(text: str) -> str:
    """Terminal output without its control sequences."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def test_two_cpu_processes_through_torchrun(demo_root: Path, tmp_path: Path) -> None:
    work = tmp_path / "ddp"
    code, out = run_in_terminal(
        ["train", "--data-root", str(demo_root), *TINY_TRAIN, "--nproc", "2", "--iters", "4",
         "--val-interval", "2", "--ckpt-interval", "2", "--work-dir", str(work)]
    )
    assert code == 0, out[-3000:]
    assert "launching 2 process(es) with torchrun" in out
    # The live display (rank 0 only): a progress bar, ETA, the last validation.
    assert "━" in out and "ETA" in out and "val mIoU" in out and "\x1b[" in out
    assert "done: 4 iterations" in plain(out) and "Traceback" not in out
    ckpt = latest_checkpoint(work)
    assert ckpt == work / "iter_4.pth"
    state = load_checkpoint_file(ckpt)
    assert state["meta"]["iter"] == 4
    assert state["vocseg_batch"] == {"world_size": 2, "batch": 2, "total": 4}
    assert len(state["vocseg_rng"]) == 2  # every rank's RNG streams
    log = next(work.glob("*/*.log")).read_text()
    assert "Distributed training: True" in log and "GPU number: 2" in log
    scalars = next(work.glob("*/vis_data/scalars.json")).read_text()
    assert [int(m) for m in re.findall(r'"mIoU": [^,]+, .*?"step": (\d+)', scalars)] == [2, 4]
    assert (work / "curves.png").read_bytes()[:4] == b"\x89PNG"
    # vocseg's commented config stays as written (MMEngine would overwrite it with runtime settings).
    assert (work / "config.py").read_text().startswith("# MMSegmentation config written by `vocseg config`")


def test_sigterm_saves_and_prints_the_resume_command(cli, demo_root: Path, tmp_path: Path) -> None:
    """Not a terminal (a CI log): plain progress lines. SIGTERM reaches the whole process group,
    data-loader workers included; the run finishes its iteration, saves and says how to go on."""
    work = tmp_path / "preempted"
    proc = subprocess.Popen(
        [*VOCSEG, "train", "--data-root", str(demo_root), "--model", "tiny", "--device", "cpu", "--batch", "2",
         "--workers", "2", "--iters", "10", "--val-interval", "100", "--ckpt-interval", "100", "--work-dir", str(work)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, start_new_session=True,
    )
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("iter 3/10"):
            os.killpg(proc.pid, signal.SIGTERM)
            break
    out = "".join(lines) + proc.stdout.read()
    err = proc.stderr.read() if proc.stderr else ""
    code = proc.wait(timeout=120)
    assert code == 143, out + err
    m = re.search(r"stopped at iteration (\d+); checkpoint saved\. Continue with: vocseg resume (\S+)\n", out)
    assert m, out
    stopped = int(m.group(1))
    assert 3 <= stopped < 10 and Path(m.group(2)) == work
    assert "Traceback" not in err
    # Plain lines, no terminal control codes; MMEngine's log went to the run folder, not here.
    assert re.search(r"^iter 2/10  epoch \S+  loss \S+  lr \S+  (\S+ img/s|\S+ s/img|-)  ETA \S+$", out, re.M), out
    assert "\x1b[" not in out and "mmengine - INFO" not in out
    assert "mmengine - INFO" in next(work.glob("*/*.log")).read_text()
    ckpt = latest_checkpoint(work)
    assert ckpt == work / f"iter_{stopped}.pth" and load_checkpoint_file(ckpt)["meta"]["iter"] == stopped
    # ... and it resumes to the end.
    result = cli("resume", work)
    assert result.code == 0, result.err
    assert f"at iteration {stopped}/10" in result.out
    assert load_checkpoint_file(latest_checkpoint(work))["meta"]["iter"] == 10


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="needs a machine without NVIDIA GPUs")
def test_missing_gpus_are_reported_before_the_weights_are_fetched(cli, demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import vocseg.recipe.pretrained as pretrained

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("the pretrained weights were fetched before the GPUs were checked")

    monkeypatch.setattr(pretrained, "resolve_for_training", no_download)
    monkeypatch.chdir(tmp_path)
    r = cli("train", "--data-root", demo_root, "--gpus", "6,7", "--batch", "4", "--schedule", "40k")
    assert r.code != 0 and "GPU" in r.err and "6,7" in r.err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_displayed_loss_is_the_logged_loss(demo_root: Path, tmp_path: Path) -> None:
    """The progress line's loss at iteration N equals MMEngine's logged loss at N (the same window mean)."""
    import json

    work = tmp_path / "run"
    r = subprocess.run([*VOCSEG, "train", "--data-root", str(demo_root), *TINY_TRAIN, "--iters", "14", "--val-interval", "14",
                        "--work-dir", str(work)], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "loss: mean of the last 10 iterations (as MMEngine's log)" in r.stdout
    shown = {int(m.group(1)): float(m.group(2)) for m in re.finditer(r"^iter (\d+)/14 .*?loss (\S+)", r.stdout, re.M)}
    logged = {}
    for line in next(work.glob("*/vis_data/scalars.json")).read_text().splitlines():
        row = json.loads(line)
        if "loss" in row and "step" in row:
            logged[row["step"]] = row["loss"]
    assert len(shown) == 14 and set(shown) <= set(logged)  # both every iteration for a 14-iteration run
    losses = [round(logged[i], 4) for i in sorted(shown)]
    assert [shown[i] for i in sorted(shown)] == losses
    assert len(set(losses)) > 1
