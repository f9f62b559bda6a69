"""Launch flags shared by `vocseg train` and `vocseg resume` (how processes start and restart)."""

from __future__ import annotations

from typing import Annotated, Literal, Optional

import typer

from vocseg.commands.options import LAUNCH

NnodesOpt = Annotated[int, typer.Option("--nnodes", min=1, help="Machines taking part; run the same command on each (torchrun).", rich_help_panel=LAUNCH)]
NodeRankOpt = Annotated[int, typer.Option("--node-rank", min=0, help="This machine's rank among --nnodes (0 = the one at --master-addr).", rich_help_panel=LAUNCH)]
MasterAddrOpt = Annotated[str, typer.Option("--master-addr", help="Address of the rank-0 machine.", rich_help_panel=LAUNCH)]
MasterPortOpt = Annotated[Optional[int], typer.Option("--master-port", help="Port on the rank-0 machine (default: a free port; required with --nnodes > 1).", rich_help_panel=LAUNCH)]
LauncherOpt = Annotated[Literal["auto", "slurm", "none"], typer.Option("--launcher", help="auto (torchrun when more than one process), slurm (each srun task runs this command; one task per GPU), none (one process).", rich_help_panel=LAUNCH)]
MaxRestartsOpt = Annotated[int, typer.Option(
    "--max-restarts", min=0,
    help="When a training process dies (killed, a transient NCCL/gloo error), restart all of them up to N times (torchrun's "
         "elastic agent); each restart resumes from the last checkpoint, as `vocseg resume` does (default: 0).",
    rich_help_panel=LAUNCH)]
RequeueOpt = Annotated[bool, typer.Option(
    "--requeue",
    help="Slurm: on SIGUSR1 (#SBATCH --signal=USR1@120) save a checkpoint, `scontrol requeue` the job and exit 0; the requeued "
         "job's same command resumes the run (needs --work-dir). See docs/restarts.md.",
    rich_help_panel=LAUNCH)]
