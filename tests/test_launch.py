"""Launching: GPU selection from nvidia-smi's answers, torchrun commands, ports, launchers, and
the one-line errors for bad input. The real 2-process launch is in test_train.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import TINY_TRAIN
from vocseg.errors import VocsegError
from vocseg.recipe.recipe import Recipe, parse_gpus
from vocseg.training.launch import (
    LAUNCHER_ENV,
    LaunchOptions,
    free_port,
    parse_compute_apps,
    parse_gpu_query,
    plan_launch,
    query_gpus,
    select_gpus,
    torchrun_command,
    worker_pids,
)

SMI_GPUS = """0, NVIDIA H100 80GB HBM3, 1, 81559, GPU-aaa
1, NVIDIA H100 80GB HBM3, 40000, 81559, GPU-bbb
6, NVIDIA H100 80GB HBM3, 3, 81559, GPU-ggg
7, NVIDIA H100 80GB HBM3, 2000, 81559, GPU-hhh
"""
SMI_APPS = "GPU-bbb, 4242, 39990\nGPU-bbb, 4243, [N/A]\n"


def machine():
    apps = parse_compute_apps(SMI_APPS)
    from vocseg.training.launch import GpuInfo

    return [GpuInfo(g.index, g.name, g.memory_used_mib, g.memory_total_mib, g.uuid, tuple(apps.get(g.uuid, ()))) for g in parse_gpu_query(SMI_GPUS)]


def test_parse_nvidia_smi() -> None:
    gpus = machine()
    assert [g.index for g in gpus] == [0, 1, 6, 7]
    assert gpus[1].processes == ((4242, 39990), (4243, 0)) and gpus[1].memory_used_mib == 40000
    assert parse_gpu_query("No devices were found\n") == []


@pytest.mark.parametrize(
    "text,count,ids",
    [("6,7", 2, (6, 7)), ("7", 1, (7,)), ("3,", 1, (3,)), ("0-3", 4, (0, 1, 2, 3)), ("0-1, 6", 3, (0, 1, 6)), ("first:4", 4, None), ("FIRST:1", 1, None)],
)
def test_gpus_grammar(text: str, count: int, ids: tuple[int, ...] | None) -> None:
    spec = parse_gpus(text)
    assert (spec.count, spec.ids) == (count, ids)
    assert parse_gpus(str(spec)) == spec  # what recipe.json stores reads back the same


def test_exact_gpu_ids_and_busy_warnings() -> None:
    chosen, warnings = select_gpus(Recipe(gpus="6,7"), machine())
    assert chosen == ["6", "7"]
    assert len(warnings) == 1 and "GPU 7" in warnings[0] and "2000" in warnings[0]  # memory taken, no process listed
    chosen, warnings = select_gpus(Recipe(gpus="1"), machine())
    assert chosen == ["1"] and "pid 4242" in warnings[0]  # a bare number is that GPU, not a count
    assert select_gpus(Recipe(gpus="7"), machine())[0] == ["7"]
    assert select_gpus(Recipe(gpus="0-1,7"), machine())[0] == ["0", "1", "7"]
    assert select_gpus(Recipe(gpus="first:2"), machine())[0] == ["0", "1"]  # a count: the first ones


@pytest.mark.parametrize(
    "gpus,visible,needle",
    [
        ("3,7", None, "GPU 3 not present; this machine has: 0 (NVIDIA H100 80GB HBM3), 1"),
        ("first:5", None, "--gpus first:5 asks for 5 GPU(s); this machine has 4"),
        ("5", None, "GPU 5 not present"),
        ("6-9", None, "GPU 8,9 not present"),
        ("0,1", "6,7", "GPU 0,1 is outside CUDA_VISIBLE_DEVICES=6,7"),
        ("first:3", "6,7", "CUDA_VISIBLE_DEVICES=6,7 allows 2"),
        ("first:1", "", "hides every GPU"),
    ],
)
def test_gpu_errors_are_one_line(gpus: str, visible: str | None, needle: str) -> None:
    with pytest.raises(VocsegError) as err:
        select_gpus(Recipe(gpus=gpus), machine(), visible)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_visible_devices_limit_a_count() -> None:
    assert select_gpus(Recipe(gpus="first:1"), machine(), "7,6")[0] == ["7"]


def test_no_gpu_machine() -> None:
    for available in (None, []):
        with pytest.raises(VocsegError, match="No NVIDIA GPU on this machine.*--device cpu"):
            select_gpus(Recipe(gpus="7"), available)


def test_plans(tmp_path: Path) -> None:
    cpu2 = plan_launch(Recipe(device="cpu", nproc=2), LaunchOptions())
    assert cpu2.mode == "torchrun" and cpu2.nproc == 2 and cpu2.env["CUDA_VISIBLE_DEVICES"] == "" and cpu2.port
    assert plan_launch(Recipe(device="cpu", nproc=1), LaunchOptions()).mode == "inprocess"
    bad = [
        (Recipe(device="cpu", nproc=2, nnodes=2), LaunchOptions(nnodes=2), "--nnodes > 1 needs --master-port"),
        (Recipe(device="cpu"), LaunchOptions(nnodes=2, node_rank=2, master_port=29999), "--node-rank 2 must be below --nnodes 2"),
        (Recipe(device="cpu", nnodes=2), LaunchOptions(nnodes=1), "planned for 2 machine"),
        (Recipe(device="cpu"), LaunchOptions(launcher="mpi"), "Unknown --launcher"),
        (Recipe(device="cpu"), LaunchOptions(launcher="slurm"), "not started by srun"),
        (Recipe(device="cpu", nproc=2), LaunchOptions(launcher="none"), "--launcher none runs one process"),
    ]
    for recipe, options, needle in bad:
        with pytest.raises(VocsegError, match=needle):
            plan_launch(recipe, options)


def test_port_in_use_is_refused() -> None:
    with socket.socket() as s:
        s.bind(("", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(VocsegError, match=f"--master-port {port} is already in use"):
            plan_launch(Recipe(device="cpu", nproc=2), LaunchOptions(master_port=port))
        # Another machine's rank-0 port is not checked here.
        node1 = plan_launch(Recipe(device="cpu", nproc=2, nnodes=2), LaunchOptions(nnodes=2, node_rank=1, master_port=port))
        assert node1.port == port and node1.nproc == 2  # --nproc counts per machine


def test_torchrun_command_multi_node(tmp_path: Path) -> None:
    opts = LaunchOptions(nnodes=2, node_rank=1, master_addr="10.0.0.1", master_port=29400, rescale_lr=True)
    cmd = torchrun_command(tmp_path / "config.py", 8, opts, 29400, resume=True)
    assert cmd[:3] == [sys.executable, "-m", "vocseg.training.torchrun"]
    for arg in ("--nproc-per-node=8", "--nnodes=2", "--node-rank=1", "--master-addr=10.0.0.1", "--master-port=29400"):
        assert arg in cmd
    assert cmd[cmd.index("-m", 3) + 1] == "vocseg.training.worker" and cmd[-2:] == ["--resume", "--rescale-lr"]


def test_worker_pids_finds_children() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in worker_pids(os.getpid())
    finally:
        child.kill()
        child.wait()


@pytest.mark.skipif(query_gpus() is not None, reason="this machine has NVIDIA GPUs")
def test_gpus_without_cuda_is_one_line_and_writes_nothing(cli, demo_root: Path, tmp_path: Path) -> None:
    work = tmp_path / "run"
    result = cli("train", "--data-root", demo_root, "--model", "tiny", "--device", "cuda", "--gpus", "6,7", "--iters", "2", "--work-dir", work)
    assert result.code == 2
    assert "No NVIDIA GPU on this machine" in result.err and len(result.err.strip().splitlines()) == 1
    assert "Traceback" not in result.err and not work.exists()


def test_busy_port_from_the_cli_writes_nothing(cli, demo_root: Path, tmp_path: Path) -> None:
    work = tmp_path / "run"
    with socket.socket() as s:
        s.bind(("", 0))
        s.listen()
        port = s.getsockname()[1]
        result = cli("train", "--data-root", demo_root, *TINY_TRAIN, "--nproc", "2", "--iters", "2", "--master-port", port, "--work-dir", work)
    assert result.code == 2 and f"--master-port {port} is already in use" in result.err
    assert len(result.err.strip().splitlines()) == 1 and not work.exists()


def test_multi_node_needs_a_work_dir(cli, demo_root: Path) -> None:
    result = cli("train", "--data-root", demo_root, *TINY_TRAIN, "--nnodes", "2", "--master-port", "29555")
    assert result.code == 2 and "--work-dir is required" in result.err


def test_slurm_tasks_must_match_the_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    slurm = LaunchOptions(launcher="slurm")
    with pytest.raises(VocsegError, match=r"srun started 4 task\(s\), but this run is planned for 2 .*--gpus first:4"):
        plan_launch(Recipe(device="cuda", gpus="first:2"), slurm)
    with pytest.raises(VocsegError, match="names GPU ids, but under Slurm"):
        plan_launch(Recipe(device="cuda", gpus="0-3"), slurm)
    ok = plan_launch(Recipe(device="cuda", gpus="first:4"), slurm)
    assert ok.mode == "slurm" and ok.env[LAUNCHER_ENV] == "slurm"


def test_the_launcher_tells_the_processes_how_they_were_started(monkeypatch: pytest.MonkeyPatch) -> None:
    """A one-process run inside an sbatch job (SLURM_NTASKS=4) or an outer torchrun must not wait for peers."""
    from vocseg.training.protocol import launcher_from_env

    assert plan_launch(Recipe(device="cpu"), LaunchOptions()).env[LAUNCHER_ENV] == "none"
    assert plan_launch(Recipe(device="cpu", nproc=2), LaunchOptions()).env[LAUNCHER_ENV] == "pytorch"
    for var, value in (("SLURM_PROCID", "0"), ("SLURM_NTASKS", "4"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(var, value)
    monkeypatch.setenv(LAUNCHER_ENV, "none")
    assert launcher_from_env() == "none"
    monkeypatch.delenv(LAUNCHER_ENV)
    assert launcher_from_env() == "pytorch"  # the worker started by hand under torchrun


def test_a_cpu_only_torch_cannot_train_on_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import vocseg.training.launch as launch

    monkeypatch.setattr(launch, "query_gpus", machine)
    if torch.backends.cuda.is_built():
        pytest.skip("this torch is a CUDA build")
    with pytest.raises(VocsegError, match="CPU-only build"):
        plan_launch(Recipe(device="cuda", gpus="6"), LaunchOptions())


def test_a_failed_process_under_torchrun_gives_no_torchrun_traceback() -> None:
    """torchrun's own crash report (ChildFailedError, "Root Cause") is dropped; the exit code is the process's."""
    port = free_port()
    cmd = [sys.executable, "-m", "vocseg.training.torchrun", "--nproc-per-node=2", f"--master-port={port}", "-m", "vocseg.training.worker", "--no-such-flag"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 2  # argparse's exit code in the worker
    assert "python -m vocseg.training.worker: error:" in result.stderr
    assert "ChildFailedError" not in result.stderr and "Root Cause" not in result.stderr and "Traceback" not in result.stderr


def test_one_training_per_run_folder(tmp_path: Path) -> None:
    from vocseg.runs.folders import run_lock

    with run_lock(tmp_path):
        with pytest.raises(VocsegError, match=f"being trained by another process \\(pid {os.getpid()}\\)"):
            with run_lock(tmp_path):
                pass
    with run_lock(tmp_path):  # released when the holder is done
        pass


def test_killing_the_launcher_stops_torchrun_which_saves(demo_root: Path, tmp_path: Path) -> None:
    """`vocseg train` SIGKILLed (a closed terminal, an OOM kill): torchrun, in a session of its own,
    gets SIGTERM, so its processes stop at a checkpoint instead of training on unguarded."""
    import time

    from vocseg.runs.folders import latest_checkpoint, run_lock
    from vocseg.stack.compat import load_checkpoint_file

    work = tmp_path / "run"
    cmd = [sys.executable, "-m", "vocseg.cli", "train", "--data-root", str(demo_root), *TINY_TRAIN, "--nproc", "2",
           "--iters", "5000", "--ckpt-interval", "10", "--val-interval", "100000", "--work-dir", str(work)]
    launcher = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 600  # a bound for failure only (a loaded machine is slow to start torchrun)
        while not (work / "iter_10.pth").is_file():
            assert launcher.poll() is None and time.monotonic() < deadline, "training did not reach a checkpoint"
            time.sleep(0.5)
        torchrun = worker_pids(launcher.pid)
        workers = [pid for parent in torchrun for pid in worker_pids(parent)]
        assert len(torchrun) == 1 and len(workers) == 2
        launcher.kill()
        launcher.wait()
        deadline = time.monotonic() + 90
        while any(_alive(pid) for pid in [*torchrun, *workers]):
            assert time.monotonic() < deadline, "torchrun's processes outlived the launcher"
            time.sleep(0.5)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    newest = latest_checkpoint(work)
    assert newest is not None and load_checkpoint_file(newest)["meta"]["iter"] >= 10
    with run_lock(work):  # nobody trains there any more
        pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"  # a zombie has exited
    except (OSError, IndexError):
        return False


def test_the_lock_outlives_a_killed_launcher_while_torchrun_runs(tmp_path: Path) -> None:
    """The launcher passes the lock to torchrun: a resume cannot start while torchrun's processes still save."""
    import time

    from vocseg.runs.folders import run_lock

    # The child keeps the lock until the test says so (a file appears), not for a fixed time: a
    # loaded machine must not let it go before the test has looked.
    release = tmp_path / "release"
    child = (
        "import os, sys, time\n"
        "end = time.monotonic() + 120\n"
        "while not os.path.exists(sys.argv[1]) and time.monotonic() < end:\n"
        "    time.sleep(0.05)\n"
    )
    script = (
        "import os, subprocess, sys\n"
        "from pathlib import Path\n"
        "from vocseg.runs.folders import held_lock_fds, run_lock\n"
        "with run_lock(Path(sys.argv[1])):\n"
        f"    subprocess.Popen([sys.executable, '-c', {child!r}, sys.argv[2]], pass_fds=held_lock_fds())\n"
        "    os._exit(0)  # as if SIGKILLed: no unlock\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path), str(release)], check=True, timeout=60)
    with pytest.raises(VocsegError, match="being trained by another process"):
        with run_lock(tmp_path):
            pass
    release.touch()
    deadline = time.monotonic() + 120
    while True:  # free once the child that kept it has exited
        try:
            with run_lock(tmp_path):
                break
        except VocsegError:
            assert time.monotonic() < deadline
            time.sleep(0.2)


def test_train_takes_the_lock_before_writing(cli, demo_root: Path, tmp_path: Path) -> None:
    from vocseg.runs.folders import run_lock

    work = tmp_path / "busy"
    work.mkdir()
    with run_lock(work):
        result = cli("train", "--data-root", demo_root, *TINY_TRAIN, "--iters", "2", "--work-dir", work)
    assert result.code == 2 and "being trained by another process" in result.err
    assert not (work / "config.py").exists() and not (work / "recipe.json").exists()


def test_gpus_input_that_is_not_ascii_digits_or_absurd(monkeypatch: pytest.MonkeyPatch) -> None:
    for bad in ("\u00b2", "0-99999999", "first:\u00b2", "first:100000", "1-", "-1"):
        with pytest.raises(VocsegError):
            parse_gpus(bad)
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    one_task = plan_launch(Recipe(device="cuda", gpus="first:1"), LaunchOptions(launcher="slurm"))
    assert one_task.env[LAUNCHER_ENV] == "none"  # one task needs no process group (nor a fixed port)


def test_recipes_written_when_a_bare_number_was_a_count() -> None:
    import json

    legacy = json.loads(Recipe(gpus="first:2").to_json())
    del legacy["gpus_grammar"]
    legacy["gpus"] = "2"
    assert Recipe.from_json(json.dumps(legacy)).gpus == "first:2"
    assert Recipe.from_json(Recipe(gpus="7").to_json()).gpus == "7"  # today's: GPU 7


def test_sigterm_to_vocseg_under_torchrun_stops_every_process_at_a_checkpoint(demo_root: Path, tmp_path: Path) -> None:
    """`kill PID` of the launcher (torchrun runs in its own session): forwarded once to the
    training processes, which agree on the iteration, save, and leave a note; exit 143."""
    import re
    import signal
    import time

    from vocseg.runs.folders import latest_checkpoint
    from vocseg.stack.compat import load_checkpoint_file

    work = tmp_path / "run"
    cmd = [sys.executable, "-m", "vocseg.cli", "train", "--data-root", str(demo_root), *TINY_TRAIN, "--nproc", "2",
           "--iters", "5000", "--ckpt-interval", "10", "--val-interval", "100000", "--work-dir", str(work)]
    launcher = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"})
    try:
        deadline = time.monotonic() + 600  # a bound for failure only (a loaded machine is slow to start torchrun)
        while not (work / "iter_10.pth").is_file():
            assert launcher.poll() is None and time.monotonic() < deadline, "training did not reach a checkpoint"
            time.sleep(0.5)
        launcher.send_signal(signal.SIGTERM)
        out, err = launcher.communicate(timeout=180)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 143, out + err
    m = re.search(r"stopped at iteration (\d+); checkpoint saved\. Continue with: vocseg resume (\S+)", out)
    assert m and Path(m.group(2)) == work, out + err
    assert "Traceback" not in err and "ChildFailedError" not in err
    newest = latest_checkpoint(work)
    assert newest == work / f"iter_{m.group(1)}.pth" and load_checkpoint_file(newest)["meta"]["iter"] == int(m.group(1))


def test_a_config_with_mmengines_own_loop_trains_with_a_warning(cli, demo_root: Path, tmp_path: Path) -> None:
    import re

    cfg = tmp_path / "cfg.py"
    assert cli("config", "--data-root", demo_root, *TINY_TRAIN, "--iters", "2", "--val-interval", "2", "-o", cfg).code == 0
    text = cfg.read_text().replace("VocsegResumableIterLoop", "IterBasedTrainLoop").replace("VocsegResumableSampler", "InfiniteSampler")
    text = re.sub(r"^vocseg_recipe = \(.*?\)\n", "", text, flags=re.M | re.S)  # as if written by hand
    assert "vocseg_recipe" not in text
    # A hand edit MMEngine cannot build: InfiniteSampler takes no batch_size. One line, nothing trained.
    broken = tmp_path / "broken.py"
    broken.write_text(text)
    result = cli("train", broken, "--work-dir", tmp_path / "broken-run")
    assert result.code == 2 and "Cannot build the training run" in result.err and "batch_size" in result.err
    assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err
    foreign = tmp_path / "foreign.py"
    foreign.write_text(re.sub(r"'batch_size': \d+, ", "", text, count=1))
    result = cli("train", foreign, "--work-dir", tmp_path / "run")
    assert result.code == 0, result.err
    assert "uses MMEngine's own training loop" in result.out and (tmp_path / "run" / "iter_2.pth").is_file()
