"""Launching: flags -> exactly the GPUs asked for, one process each, through torchrun.

One process runs in this Python process. Several run as `python -m torch.distributed.run ...
-m vocseg.worker CONFIG`, with CUDA_VISIBLE_DEVICES restricted to the chosen GPUs (or hidden for
`--device cpu --nproc N`, which runs over gloo). Under srun (`--launcher slurm`) each task runs
the worker itself.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from vocseg.errors import VocsegError
from vocseg.recipe import Recipe

EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}


@dataclass(frozen=True)
class LaunchOptions:
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int | None = None
    launcher: str = "auto"  # auto | slurm | none
    verbose: bool = False


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    memory_used_mib: int
    memory_total_mib: int


def query_gpus() -> list[GpuInfo] | None:
    """Physical GPUs from nvidia-smi (no CUDA context is created); None when there is no NVIDIA driver."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,name,memory.used,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
    except (FileNotFoundError, subprocess.SubprocessError, OSError):
        return None
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4 and parts[0].isdigit():
            gpus.append(GpuInfo(int(parts[0]), parts[1], int(float(parts[2])), int(float(parts[3]))))
    return gpus


def select_gpus(recipe: Recipe, available: list[GpuInfo] | None) -> tuple[list[int], list[str]]:
    """The physical ids to use and warnings (GPUs already busy). Raises when they do not exist."""
    spec = recipe.gpu_spec
    if not available:
        raise VocsegError("--device cuda: this machine has no NVIDIA GPU (nvidia-smi found none).", "Use --device cpu (with --nproc N for several processes).")
    present = {g.index: g for g in available}
    ids = list(spec.ids) if spec.ids is not None else sorted(present)[: spec.count]
    missing = [i for i in ids if i not in present]
    if missing or len(ids) < spec.count:
        listing = ", ".join(f"{g.index} ({g.name})" for g in available)
        raise VocsegError(f"GPU {','.join(map(str, missing)) or spec.count} not present; this machine has: {listing}.", "Pick ids from that list with --gpus.")
    warnings = [
        f"GPU {i} already has {present[i].memory_used_mib} MiB of {present[i].memory_total_mib} MiB in use by another process."
        for i in ids
        if present[i].memory_used_mib > 1024
    ]
    return ids, warnings


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def check_port_free(port: int, host: str = "127.0.0.1") -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            raise VocsegError(f"--master-port {port} is already in use on this machine.", "Pick another port, or leave --master-port out to get a free one.") from None


def torchrun_command(config_path: Path, nproc: int, options: LaunchOptions, port: int, resume: bool) -> list[str]:
    cmd = [
        sys.executable, "-m", "torch.distributed.run",
        f"--nproc-per-node={nproc}", f"--nnodes={options.nnodes}", f"--node-rank={options.node_rank}",
        f"--master-addr={options.master_addr}", f"--master-port={port}",
        "-m", "vocseg.worker", str(config_path),
    ]
    if resume:
        cmd.append("--resume")
    if options.verbose:
        cmd.append("--verbose")
    return cmd


def launch_environment(recipe: Recipe | None, gpu_ids: list[int] | None) -> dict[str, str]:
    env = dict(os.environ)
    if recipe is not None and recipe.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    elif gpu_ids is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpu_ids))
    return env


def _report_interrupt(work_dir: Path, iteration: int | None, code: int) -> None:
    from vocseg.display import console

    at = f" at iteration {iteration}" if iteration is not None else ""
    console.print(f"[yellow]stopped{at}; checkpoint saved.[/] Continue with: vocseg resume {work_dir}")
    raise SystemExit(code)


def launch_training(config_path: Path, recipe: Recipe | None, options: LaunchOptions, *, resume: bool) -> None:
    """Run training with the recipe's processes; return when it finished, raise on failure."""
    from vocseg.display import console

    if options.launcher not in ("auto", "slurm", "none"):
        raise VocsegError(f"Unknown --launcher {options.launcher!r}.", "Use auto, slurm or none.")
    nproc = recipe.world_size if recipe is not None else 1
    gpu_ids: list[int] | None = None
    if recipe is not None and recipe.device == "cuda" and options.launcher != "slurm":
        gpu_ids, warnings = select_gpus(recipe, query_gpus())
        for w in warnings:
            console.print(f"[bold yellow]warning:[/] {w}")
    env = launch_environment(recipe, gpu_ids)
    work_dir = config_path.parent
    if options.launcher == "slurm" or (nproc == 1 and options.nnodes == 1):
        os.environ.update({k: v for k, v in env.items() if k == "CUDA_VISIBLE_DEVICES"})
        from vocseg.worker import run_worker

        code = run_worker(config_path, resume=resume, verbose=options.verbose)
        if code:
            raise SystemExit(code)
        return
    port = options.master_port
    if port is None:
        if options.nnodes > 1:
            raise VocsegError("--nnodes > 1 needs --master-port (the same on every machine).", "Pass --master-port PORT and --master-addr of the rank-0 machine.")
        port = free_port(options.master_addr)
    elif options.node_rank == 0:
        check_port_free(port)
    cmd = torchrun_command(config_path, nproc, options, port, resume)
    console.print(f"launching {nproc} process(es) per node x {options.nnodes} node(s) with torchrun (port {port})")
    # Ctrl-C reaches every process of the terminal's group: the workers save and stop; we wait.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        proc = subprocess.Popen(cmd, env=env)
        try:
            code = proc.wait()
        except BaseException:
            proc.terminate()
            code = proc.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
    if code in (130, 143):
        _report_interrupt(work_dir, None, code)
    if code:
        raise VocsegError(f"Training failed (exit code {code}).", f"See the log in {work_dir} (latest timestamped folder), or re-run with --verbose.", exit_code=code)
