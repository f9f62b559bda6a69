"""`vocseg eval`: per-class IoU/Acc of a checkpoint on a split, as a table, JSON and CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vocseg.display import console, eval_table


def register(app: typer.Typer) -> None:
    app.command("eval")(evaluate)


def evaluate(
    target: Annotated[Path, typer.Argument(help="A run folder (its newest checkpoint) or a checkpoint .pth.", show_default=False)],
    split: Annotated[str, typer.Option("--split", help="val, train, trainval, aug, trainaug, or a file of image ids.")] = "val",
    config: Annotated[Optional[Path], typer.Option("--config", help="The config the checkpoint was trained with (default: the run folder's).")] = None,
    data_root: Annotated[Optional[Path], typer.Option("--data-root", help="Dataset root (default: the config's).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the results as JSON here.")] = None,
    tta: Annotated[bool, typer.Option("--tta", help="Official multi-scale (0.5-1.75) + flip test-time augmentation.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also show MMEngine's log.")] = False,
) -> None:
    """Evaluate a checkpoint: per-class IoU and Acc, mIoU, mAcc, aAcc (percent, as mmseg reports them)."""
    from vocseg.evaluation import evaluate as run_eval
    from vocseg.evaluation import write_json

    result, _ = run_eval(target, split=split, config=config, data_root=data_root, tta=tta, verbose=verbose)
    console.print(eval_table(result, title=f"{Path(result.checkpoint).name} on {result.split} ({result.num_images} images)"))
    saved = []
    if json_out:
        write_json(result, json_out)
        saved.append(str(json_out))
    run = Path(result.checkpoint).parent
    if (run / "config.py").is_file():
        path = run / "eval" / f"{result.split}{'_tta' if tta else ''}.json"
        write_json(result, path)
        saved.append(str(path))
    if saved:
        console.print("results: " + ", ".join(saved))
