"""Launching: flags -> exactly the GPUs asked for, one process each, through torchrun.

`plan_launch` checks everything that can be checked before a run folder is written (GPU ids
against nvidia-smi, CUDA on the machine, the master port, the launcher); `launch_training`
then runs it:

- one process: in this Python process (`vocseg.training.worker.run_worker`);
- several: `python -m vocseg.training.torchrun ... -m vocseg.training.worker CONFIG` (torchrun,
  minus its crash report), with CUDA_VISIBLE_DEVICES restricted to the chosen GPUs (PCI bus order, as nvidia-smi numbers
  them), or hidden for `--device cpu --nproc N`, which runs over gloo;
- `--launcher slurm`: srun started one task per GPU; each runs its worker in-process.

Stopping: torchrun is started in its own session, so a Ctrl-C in the terminal reaches only this
process, which forwards it (and SIGTERM) to the training processes once. They finish the
iteration, save, and exit 0; local rank 0 leaves a note in `VOCSEG_STOP_FILE` from which this
process prints the command that resumes and exits 130 (Ctrl-C) or 143 (SIGTERM).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vocseg.errors import VocsegError
from vocseg.recipe.recipe import Recipe
from vocseg.stack.threads import machine_cpu_count
from vocseg.training.protocol import (
    EXIT_SIGNAL,
    EXIT_UNHEALTHY,
    LAUNCHER_ENV,
    REQUEUE_ENV,
    REQUEUE_SIGNAL,
    STOP_FILE_ENV,
    check_requeue_possible,
    requeue_job,
    stop_message,
)

BUSY_MIB = 1024  # memory in use that means "someone else is on this GPU" when no process is listed
LAUNCHERS = ("auto", "slurm", "none")
UNSHARED_STORE_ENV = "TORCH_DISABLE_SHARE_RDZV_TCP_STORE"


@dataclass(frozen=True)
class LaunchOptions:
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int | None = None
    launcher: str = "auto"  # auto | slurm | none
    verbose: bool = False
    rescale_lr: bool = False
    max_restarts: int = 0  # torchrun's elastic agent restarts the processes this often (each resumes)
    requeue: bool = False  # Slurm: SIGUSR1 -> checkpoint, `scontrol requeue`, exit 0
    # How to train on the CPU instead, as this command can: `--device cpu` for flags; a config
    # file and a run folder fix the device, so their way is another config (`cpu_way_for`).
    cpu_way: str = "use --device cpu (with --nproc N for several processes)"


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    memory_used_mib: int
    memory_total_mib: int
    uuid: str = ""
    processes: tuple[tuple[int, int], ...] = ()  # (pid, MiB) of compute processes on it


@dataclass(frozen=True)
class LaunchPlan:
    mode: str  # "inprocess" | "torchrun" | "slurm"
    nproc: int  # processes on this node
    env: dict[str, str] = field(default_factory=dict)  # variables set for the training processes
    port: int | None = None
    gpu_ids: tuple[str, ...] | None = None
    warnings: tuple[str, ...] = ()

    @property
    def primary(self) -> bool:
        """True for the one launching process that writes the run folder (node 0 / Slurm task 0)."""
        if self.mode == "slurm":
            return os.environ.get("SLURM_PROCID", "0") == "0"
        return True


def parse_gpu_query(text: str) -> list[GpuInfo]:
    """Rows of `nvidia-smi --query-gpu=index,name,memory.used,memory.total,uuid`."""
    gpus = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 4 and parts[0].isdigit():
            try:
                used, total = int(float(parts[2])), int(float(parts[3]))
            except ValueError:  # "[N/A]" on some boards
                used, total = 0, 0
            gpus.append(GpuInfo(int(parts[0]), parts[1], used, total, parts[4] if len(parts) > 4 else ""))
    return gpus


def parse_compute_apps(text: str) -> dict[str, list[tuple[int, int]]]:
    """Rows of `nvidia-smi --query-compute-apps=gpu_uuid,pid,used_memory` -> {uuid: [(pid, MiB)]}."""
    apps: dict[str, list[tuple[int, int]]] = {}
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[1].isdigit():
            try:
                mib = int(float(parts[2]))
            except ValueError:
                mib = 0
            apps.setdefault(parts[0], []).append((int(parts[1]), mib))
    return apps


def _nvidia_smi(*args: str) -> str | None:
    try:
        return subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=20, check=True).stdout
    except (FileNotFoundError, subprocess.SubprocessError, OSError):
        return None


def query_gpus() -> list[GpuInfo] | None:
    """Physical GPUs from nvidia-smi (no CUDA context is created); None when there is no NVIDIA driver."""
    out = _nvidia_smi("--query-gpu=index,name,memory.used,memory.total,uuid", "--format=csv,noheader,nounits")
    if out is None:
        return None
    gpus = parse_gpu_query(out)
    apps = parse_compute_apps(_nvidia_smi("--query-compute-apps=gpu_uuid,pid,used_memory", "--format=csv,noheader,nounits") or "")
    return [GpuInfo(g.index, g.name, g.memory_used_mib, g.memory_total_mib, g.uuid, tuple(apps.get(g.uuid, ()))) for g in gpus]


def _busy_warning(g: GpuInfo) -> str | None:
    others = [(pid, mib) for pid, mib in g.processes if pid != os.getpid()]
    if others:
        pids = ", ".join(f"pid {pid} ({mib} MiB)" for pid, mib in others[:4])
        return f"GPU {g.index} ({g.name}) is already in use by another process: {pids}; {g.memory_used_mib} of {g.memory_total_mib} MiB taken."
    if g.memory_used_mib > BUSY_MIB:
        return f"GPU {g.index} ({g.name}) already has {g.memory_used_mib} of {g.memory_total_mib} MiB in use by another process."
    return None


def cpu_way_for(config_file: Path | None = None, run_dir: Path | None = None) -> str:
    """The hint for training on the CPU that this command accepts: a config file and a resumed run
    refuse --device, so they get a CPU config to write instead."""
    from vocseg.console import command

    if run_dir is not None:
        return (f"resume it on a machine with a GPU; on this one, start a CPU run instead: "
                f"`{command('train', '--device', 'cpu', '--work-dir', Path(str(run_dir) + '-cpu'))}` (with the run's other flags)")
    if config_file is not None:
        cpu = Path(config_file).with_name(Path(config_file).stem + "-cpu.py")
        return f"this config is planned for GPUs: write a CPU one, `{command('config', '--device', 'cpu', '-o', cpu)}` (with the flags it was made with), and train that"
    return LaunchOptions.cpu_way


def select_gpus(recipe: Recipe, available: list[GpuInfo] | None, visible: str | None = None, cpu_way: str = LaunchOptions.cpu_way) -> tuple[list[str], list[str]]:
    """CUDA_VISIBLE_DEVICES entries to use, and warnings (GPUs already busy). Raises when they do not exist.

    `--gpus 6,7` names nvidia-smi indices; `--gpus first:2` takes the first two. A CUDA_VISIBLE_DEVICES
    already set (a scheduler's allocation) limits the choice to its GPUs.
    """
    spec = recipe.gpu_spec
    if not available:
        raise VocsegError(
            f"No NVIDIA GPU on this machine (nvidia-smi found none) for --device cuda --gpus {recipe.gpus}.",
            cpu_way[:1].upper() + cpu_way[1:] + ".",
        )
    present = {g.index: g for g in available}
    listing = ", ".join(f"{g.index} ({g.name})" for g in available)
    allowed: list[str] = [str(i) for i in sorted(present)]
    if visible is not None:
        allowed = [t.strip() for t in visible.split(",") if t.strip()]
        if not allowed or allowed == ["-1"]:
            raise VocsegError("CUDA_VISIBLE_DEVICES is set and hides every GPU.", f"Unset it, or {cpu_way}.")
    if spec.ids is None:
        if len(allowed) < spec.count:
            where = f"CUDA_VISIBLE_DEVICES={visible} allows {len(allowed)}" if visible is not None else f"this machine has {len(allowed)}: {listing}"
            raise VocsegError(f"--gpus {spec} asks for {spec.count} GPU(s); {where}.", "Ask for fewer with --gpus first:N, or name ids like --gpus 0,1.")
        chosen = allowed[: spec.count]
    else:
        missing = [i for i in spec.ids if i not in present]
        if missing:
            raise VocsegError(f"GPU {','.join(map(str, missing))} not present; this machine has: {listing}.", "Pick ids from that list with --gpus.")
        if visible is not None:
            outside = [i for i in spec.ids if str(i) not in allowed]
            if outside:
                raise VocsegError(
                    f"GPU {','.join(map(str, outside))} is outside CUDA_VISIBLE_DEVICES={visible} set in this environment.",
                    "Pick GPUs from that list, or unset CUDA_VISIBLE_DEVICES.",
                )
        chosen = [str(i) for i in spec.ids]
    warnings = [w for w in (_busy_warning(present[int(t)]) for t in chosen if t.isdigit() and int(t) in present) if w]
    return chosen, warnings


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host if host in ("127.0.0.1", "localhost") else "", 0))
        return int(s.getsockname()[1])


def check_port_free(port: int) -> None:
    """The master port must be free on this machine (rank 0 listens on every interface)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # as the c10d store binds it: a port left in TIME_WAIT by the run just stopped is free
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", port))
        except OSError:
            raise VocsegError(f"--master-port {port} is already in use on this machine.", "Pick another port, or leave --master-port out to get a free one.") from None


def plan_launch(recipe: Recipe | None, options: LaunchOptions, visible: str | None = None) -> LaunchPlan:
    """Check the launch before anything is written. `visible`: CUDA_VISIBLE_DEVICES as set now."""
    if options.launcher not in LAUNCHERS:
        raise VocsegError(f"Unknown --launcher {options.launcher!r}.", f"Use one of: {', '.join(LAUNCHERS)}.")
    if options.node_rank >= options.nnodes:
        raise VocsegError(f"--node-rank {options.node_rank} must be below --nnodes {options.nnodes}.", "Number the machines 0 .. nnodes-1.")
    if options.master_port is not None and not 0 < options.master_port < 65536:
        raise VocsegError(f"--master-port {options.master_port} is not a port number.", "Use 1-65535.")
    if options.max_restarts < 0:
        raise VocsegError(f"--max-restarts {options.max_restarts} cannot be negative.", "Pass 0 (no restarts) or more.")
    if options.requeue:
        check_requeue_possible()
    plan = _plan_launch(recipe, options, visible)
    if options.requeue:
        plan = dataclasses.replace(plan, env={**plan.env, REQUEUE_ENV: "1"})
    return plan


def _plan_launch(recipe: Recipe | None, options: LaunchOptions, visible: str | None) -> LaunchPlan:
    if visible is None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    device = recipe.device if recipe is not None else "cuda"
    if options.launcher == "slurm":
        if "SLURM_PROCID" not in os.environ:
            raise VocsegError("--launcher slurm: this process was not started by srun (no SLURM_PROCID).", "Run it as `srun ... vocseg train ... --launcher slurm`, or drop --launcher.")
        if device != "cuda":
            raise VocsegError("--launcher slurm runs one task per GPU; it needs --device cuda.", "Use --device cpu --nproc N without Slurm for CPU processes.")
        if options.nnodes > 1:
            raise VocsegError("--nnodes is for torchrun; with --launcher slurm, srun decides the machines.", "Drop --nnodes/--node-rank.")
        if options.max_restarts:
            raise VocsegError("--max-restarts restarts torchrun's processes; with --launcher slurm, srun starts them.",
                              "Use --requeue (the job restarts and resumes), or drop --launcher slurm.")
        tasks = int(os.environ.get("SLURM_NTASKS", "1"))
        if recipe is not None:
            if recipe.gpu_spec.ids is not None:
                raise VocsegError(f"--gpus {recipe.gpus} names GPU ids, but under Slurm the GPUs are the ones Slurm gave each task.", f"Pass --gpus first:{tasks} (one srun task per GPU).")
            if tasks != recipe.world_size:
                raise VocsegError(
                    f"srun started {tasks} task(s), but this run is planned for {recipe.world_size} GPU process(es) (--gpus {recipe.gpus}): "
                    "the total batch and LR would be wrong.",
                    f"Pass --gpus first:{tasks}, or start srun with --ntasks={recipe.world_size}.",
                )
        env = {LAUNCHER_ENV: "slurm" if tasks > 1 else "none"}  # one task needs no process group
        if options.master_port:
            env["MASTER_PORT"] = str(options.master_port)
        return LaunchPlan("slurm", nproc=1, env=env)
    if recipe is not None and recipe.nnodes != options.nnodes:
        raise VocsegError(f"This run is planned for {recipe.nnodes} machine(s) (total batch and LR), not --nnodes {options.nnodes}.", "Pass the run's --nnodes, or plan a new run.")
    nproc = recipe.procs_per_node if recipe is not None else 1
    env: dict[str, str] = {}
    warnings: tuple[str, ...] = ()
    gpu_ids: tuple[str, ...] | None = None
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    elif recipe is not None:
        chosen, found = select_gpus(recipe, query_gpus(), visible, options.cpu_way)
        gpu_ids, warnings = tuple(chosen), tuple(found)
        _require_cuda_build()
        env["CUDA_VISIBLE_DEVICES"] = ",".join(chosen)
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # CUDA's own order is not nvidia-smi's
    if options.launcher == "none" and (nproc > 1 or options.nnodes > 1 or options.max_restarts):
        raise VocsegError(f"--launcher none runs one process inside vocseg, but this run needs {nproc} x {options.nnodes}"
                          f"{' and --max-restarts (torchrun)' if options.max_restarts else ''}.", "Drop --launcher (torchrun is used), or use one GPU/process.")
    if options.max_restarts and options.nnodes > 1:
        raise VocsegError("--max-restarts with --nnodes > 1: each machine's torchrun would restart its own processes only.",
                          "Use it on one machine, or let the scheduler restart the job (--requeue on Slurm).")
    if nproc == 1 and options.nnodes == 1 and not options.max_restarts:
        env[LAUNCHER_ENV] = "none"
        return LaunchPlan("inprocess", nproc=1, env=env, gpu_ids=gpu_ids, warnings=warnings)
    # one process under torchrun (only to be restarted) needs no process group
    env[LAUNCHER_ENV] = "pytorch" if nproc * options.nnodes > 1 else "none"
    if options.max_restarts:
        # A new store for each attempt: with the rendezvous store shared (torchrun's default), a
        # restarted process can read a dead one's gloo/NCCL address from the previous attempt's
        # keys and hang or fail to connect. Unshared, rank 0 hosts a store on a new port each time.
        env[UNSHARED_STORE_ENV] = "1"
    port = options.master_port
    if port is None:
        if options.nnodes > 1:
            raise VocsegError("--nnodes > 1 needs --master-port (the same on every machine).", "Pass --master-port PORT and --master-addr of the rank-0 machine.")
        port = free_port(options.master_addr)
    elif options.node_rank == 0:
        check_port_free(port)
    # Threads per process set here (torchrun would print a banner and pick 1 for CPU runs too).
    threads = str(max(1, machine_cpu_count() // nproc) if device == "cpu" else 1)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if var not in os.environ:
            env[var] = threads
    return LaunchPlan("torchrun", nproc=nproc, env=env, port=port, gpu_ids=gpu_ids, warnings=warnings)


def _require_cuda_build() -> None:
    """A CPU-only torch on a GPU machine would fail inside the training process, with a traceback."""
    import torch

    if not torch.backends.cuda.is_built():
        raise VocsegError(
            f"This PyTorch ({torch.__version__}) is a CPU-only build: it cannot train on the GPUs.",
            "Install a CUDA build of torch 2.13.0 (see pytorch.org), or use --device cpu.",
        )


def torchrun_command(config_path: Path, nproc: int, options: LaunchOptions, port: int, resume: bool) -> list[str]:
    cmd = [
        sys.executable, "-m", "vocseg.training.torchrun",
        f"--nproc-per-node={nproc}", f"--nnodes={options.nnodes}", f"--node-rank={options.node_rank}",
        *(
            # Restarts need a fresh store per attempt: the static rendezvous keeps one TCPStore for
            # every attempt, and a restarted process can read a dead process's address from it
            # (gloo "Connection refused", or a hang). c10d's rendezvous with its store unshared
            # (UNSHARED_STORE_ENV, see _plan_launch) gives each attempt a new one.
            ["--rdzv-backend=c10d", f"--rdzv-endpoint={options.master_addr}:{port}", f"--rdzv-id=vocseg-{port}",
             f"--max-restarts={options.max_restarts}"]
            if options.max_restarts
            else [f"--master-addr={options.master_addr}", f"--master-port={port}"]
        ),
        "-m", "vocseg.training.worker", str(config_path),
    ]
    if resume:
        cmd.append("--resume")
    if options.verbose:
        cmd.append("--verbose")
    if options.rescale_lr:
        cmd.append("--rescale-lr")
    return cmd


def worker_pids(parent: int) -> list[int]:
    """Processes whose parent is `parent` (torchrun's workers), from /proc; [] where there is none."""
    pids = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces; split after its closing parenthesis.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and fields[1] == str(parent):
            pids.append(int(entry))
    return pids


def _parent_death_signal() -> Callable[[], None] | None:
    """For torchrun's process: SIGTERM when vocseg dies (SIGKILL, closed terminal), so that its
    own session does not outlive the launcher and train on beside a later resume. The child
    only calls prctl (looked up here, before the fork: no imports in a forked child)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def set_in_child() -> None:
        prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # vocseg died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return set_in_child


def _run_torchrun(cmd: list[str], env: dict[str, str]) -> tuple[int, int]:
    """Run torchrun in its own session; forward Ctrl-C/SIGTERM to its workers. (exit code, signal forwarded)."""
    from vocseg.runs.folders import held_lock_fds

    # torchrun keeps the run folder's lock open too: it stays locked until its processes are gone
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, preexec_fn=_parent_death_signal(), pass_fds=held_lock_fds())
    forwarded = 0

    def forward(signum: int, frame: object) -> None:
        nonlocal forwarded
        forwarded = forwarded or signum
        targets = worker_pids(proc.pid)
        try:
            if targets:
                for pid in targets:
                    os.kill(pid, signum)
            else:  # workers not started yet (or no /proc): torchrun forwards it to them
                proc.send_signal(signum)
        except ProcessLookupError:
            pass

    signals = (signal.SIGINT, signal.SIGTERM, *((REQUEUE_SIGNAL,) if env.get(REQUEUE_ENV) == "1" else ()))
    previous = {sig: signal.signal(sig, forward) for sig in signals}
    try:
        code = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code, forwarded


def launch_training(config_path: Path, plan: LaunchPlan, options: LaunchOptions, *, resume: bool) -> int:
    """Run training as planned; returns the exit code (0 done, 130/143 stopped with a checkpoint)."""
    from vocseg.console import console

    for w in plan.warnings:
        console.print(f"[bold yellow]warning:[/] {w}", soft_wrap=True)
    work_dir = config_path.parent
    if plan.mode in ("inprocess", "slurm"):
        from vocseg.training.worker import run_worker

        saved = {k: os.environ.get(k) for k in plan.env}
        os.environ.update(plan.env)
        try:
            return run_worker(config_path, resume=resume, verbose=options.verbose, rescale_lr=options.rescale_lr)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    assert plan.port is not None
    cmd = torchrun_command(config_path, plan.nproc, options, plan.port, resume)
    nodes = f" x {options.nnodes} machines" if options.nnodes > 1 else ""
    console.print(f"launching {plan.nproc} process(es){nodes} with torchrun (port {plan.port})")
    with tempfile.TemporaryDirectory(prefix="vocseg-") as tmp:
        stop_file = Path(tmp) / "stopped.json"
        env = {**os.environ, **plan.env, STOP_FILE_ENV: str(stop_file)}
        code, forwarded = _run_torchrun(cmd, env)
        if stop_file.is_file():
            note = json.loads(stop_file.read_text())
            if note.get("error"):  # the run health guard stopped every process (vocseg.training.health)
                raise VocsegError(str(note["error"]), str(note.get("hint", "")), exit_code=EXIT_UNHEALTHY)
            if int(note.get("signal", 0)) == REQUEUE_SIGNAL:
                if options.node_rank == 0:  # one requeue per job
                    console.print(requeue_job(work_dir, note.get("iteration")), soft_wrap=True)
                return 0
            console.print(stop_message(work_dir, note.get("iteration")), soft_wrap=True)
            return EXIT_SIGNAL.get(int(note.get("signal", 0)), 130)
    if forwarded:
        raise VocsegError(f"Training was interrupted before a checkpoint could be saved (exit code {code}).", f"Resume from the last checkpoint: vocseg resume {work_dir}", exit_code=EXIT_SIGNAL.get(forwarded, 130))
    if code:
        raise VocsegError(f"Training failed (exit code {code}).", f"See the messages above and the log in {work_dir} (newest timestamped folder), or re-run with --log to see it here.", exit_code=code)
    return 0
