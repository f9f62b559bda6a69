"""The model `predict`, `eval`, `report` and `export` use when none is named: the newest trained
run under runs/ (as Ultralytics' `yolo predict` uses its default model), said in one line."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vocseg.console import command, console, shown
from vocseg.errors import VocsegError
from vocseg.runs.folders import RUNS_ROOT, latest_checkpoint, latest_trained_run

OFFICIAL_EXAMPLE = "official:upernet-r50-40k"


def default_run(verb: str, *, option: str | None = "-c", official: bool = True, args: Sequence[object] = ()) -> Path:
    """The run folder under runs/ (nested ones included) that trained last and holds a checkpoint;
    prints which. `verb` and `option` word the way out when there is none: `-c RUN` for predict,
    a positional RUN for eval; `args` are the command's other arguments, kept in the commands
    it suggests (the images of predict). Raises VocsegError (one line) when runs/ holds no trained run."""
    run = latest_trained_run(RUNS_ROOT)
    if run is None:
        pick = [option, "RUN"] if option else ["RUN"]
        ways = [f"`{command(verb, *args, *pick)}` (a run folder{' or checkpoint .pth' if official else ''})"]
        if official:
            ways.append(f"`{command(verb, *args, *(pick[:-1]), OFFICIAL_EXAMPLE)}` (downloads MMSeg's trained model)")
        raise VocsegError(
            f"No model named and no trained run under {RUNS_ROOT.absolute()}/.",
            f"Name one: {', or '.join(ways)}; or train one first: `{command('train')}`.",
        )
    checkpoint = latest_checkpoint(run)
    console.print(f"no model named: using the newest trained run, {shown(run)} ({shown(checkpoint.name if checkpoint else '')}); "
                  f"pick another with {option + ' ' if option else ''}RUN", soft_wrap=True)
    return run
