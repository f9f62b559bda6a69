"""Launching: GPU selection from nvidia-smi's answers, torchrun commands, ports, launchers, and
the one-line errors for bad input. The real 2-process launch is in test_train.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY_TRAIN
from vocseg.errors import VocsegError
from vocseg.launch import (
    LaunchOptions,
    parse_compute_apps,
    parse_gpu_query,
    plan_launch,
    query_gpus,
    select_gpus,
    torchrun_command,
    worker_pids,
)
from vocseg.recipe import Recipe

SMI_GPUS = """0, NVIDIA H100 80GB HBM3, 1, 81559, GPU-aaa
1, NVIDIA H100 80GB HBM3, 40000, 81559, GPU-bbb
6, NVIDIA H100 80GB HBM3, 3, 81559, GPU-ggg
7, NVIDIA H100 80GB HBM3, 2000, 81559, GPU-hhh
"""
SMI_APPS = "GPU-bbb, 4242, 39990\nGPU-bbb, 4243, [N/A]\n"


def machine():
    apps = parse_compute_apps(SMI_APPS)
    from vocseg.launch import GpuInfo

    return [GpuInfo(g.index, g.name, g.memory_used_mib, g.memory_total_mib, g.uuid, tuple(apps.get(g.uuid, ()))) for g in parse_gpu_query(SMI_GPUS)]


def test_parse_nvidia_smi() -> None:
    gpus = machine()
    assert [g.index for g in gpus] == [0, 1, 6, 7]
    assert gpus[1].processes == ((4242, 39990), (4243, 0)) and gpus[1].memory_used_mib == 40000
    assert parse_gpu_query("No devices were found\n") == []


def test_exact_gpu_ids_and_busy_warnings() -> None:
    chosen, warnings = select_gpus(Recipe(gpus="6,7"), machine())
    assert chosen == ["6", "7"]
    assert len(warnings) == 1 and "GPU 7" in warnings[0] and "2000" in warnings[0]  # memory taken, no process listed
    chosen, warnings = select_gpus(Recipe(gpus="1,"), machine())
    assert chosen == ["1"] and "pid 4242" in warnings[0]
    assert select_gpus(Recipe(gpus="2"), machine())[0] == ["0", "1"]  # a count: the first ones


@pytest.mark.parametrize(
    "gpus,visible,needle",
    [
        ("3,7", None, "GPU 3 not present; this machine has: 0 (NVIDIA H100 80GB HBM3), 1"),
        ("5", None, "--gpus 5 asks for 5 GPU(s); this machine has 4"),
        ("0,1", "6,7", "GPU 0,1 is outside CUDA_VISIBLE_DEVICES=6,7"),
        ("3", "6,7", "CUDA_VISIBLE_DEVICES=6,7 allows 2"),
        ("1", "", "hides every GPU"),
    ],
)
def test_gpu_errors_are_one_line(gpus: str, visible: str | None, needle: str) -> None:
    with pytest.raises(VocsegError) as err:
        select_gpus(Recipe(gpus=gpus), machine(), visible)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_visible_devices_limit_a_count() -> None:
    assert select_gpus(Recipe(gpus="1"), machine(), "7,6")[0] == ["7"]


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
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    for arg in ("--nproc-per-node=8", "--nnodes=2", "--node-rank=1", "--master-addr=10.0.0.1", "--master-port=29400"):
        assert arg in cmd
    assert cmd[cmd.index("-m", 3) + 1] == "vocseg.worker" and cmd[-2:] == ["--resume", "--rescale-lr"]


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
