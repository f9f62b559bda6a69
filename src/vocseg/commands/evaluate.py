"""`vocseg eval`: per-class IoU/Acc of a checkpoint on a split, as a table, JSON, CSV and charts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("eval")(evaluate)


def evaluate(
    target: Annotated[str, typer.Argument(help="A run folder (its newest checkpoint), a checkpoint .pth, or official:upernet-r50-40k (also -r50-20k, -r101-20k, -r101-40k).", show_default=False)],
    split: Annotated[str, typer.Option("--split", help="val, train, trainval, aug, trainaug, or a file of image ids (one per line).")] = "val",
    config: Annotated[Optional[Path], typer.Option("--config", help="The config the checkpoint was trained with (default: the run folder's).")] = None,
    data_root: Annotated[Optional[Path], typer.Option("--data-root", help="Dataset root holding VOCdevkit/ (default: the config's).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the results as JSON here.")] = None,
    csv_out: Annotated[Optional[Path], typer.Option("--csv", help="Also write the per-class table as CSV here.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Results folder (default: RUN/eval, else runs/eval/NAME).")] = None,
    tta: Annotated[bool, typer.Option("--tta", help="Official multi-scale (0.5-1.75) + flip test-time augmentation.")] = False,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write the confusion heatmap and IoU bar chart PNGs.")] = True,
    save_predictions: Annotated[Optional[Path], typer.Option("--save-predictions", help="Also write each predicted label map (VOC palette PNG) into this folder.")] = None,
    num_workers: Annotated[Optional[int], typer.Option("--num-workers", min=0, help="Data loader workers (default: the config's).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also show MMEngine's log.")] = False,
) -> None:
    """Evaluate a checkpoint: per-class IoU, Acc, Dice, Precision; mIoU, mAcc, aAcc (percent, mmseg's IoUMetric).

    Results go to RUN/eval/ (or --out): SPLIT.json, SPLIT.csv, SPLIT_confusion.png, SPLIT_iou.png.
    """
    from vocseg.commands.render import eval_report_table
    from vocseg.console import console
    from vocseg.results.eval_result import write_csv, write_json
    from vocseg.results.evaluation import evaluate as run_eval
    from vocseg.results.evaluation import save_outputs

    result, _ = run_eval(target, split=split, config=config, data_root=data_root, tta=tta, verbose=verbose, out_dir=out, num_workers=num_workers, save_predictions=save_predictions)
    name = target if target.startswith("official:") else Path(result.checkpoint).name
    from vocseg.data.precheck import warning_line

    if line := warning_line(result.extra.get("data_warnings", [])):
        from rich.markup import escape

        console.print(f"[bold yellow]warning:[/] {escape(line)}", soft_wrap=True)
    console.print(eval_report_table(result, title=f"{name} on {result.split} ({result.num_images} images){' + TTA' if tta else ''}"))
    saved = save_outputs(result, Path(result.extra["out_dir"]), result.extra["tag"], plots=plots)
    if json_out:
        write_json(result, json_out)
        saved.append(json_out)
    if csv_out:
        write_csv(result, csv_out)
        saved.append(csv_out)
    if save_predictions:
        saved.append(save_predictions)
    console.print("results: " + ", ".join(str(p) for p in saved))
