"""`vocseg eval`: per-class IoU/Acc of a checkpoint on a split, as a table, JSON, CSV and charts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer

from vocseg.commands.options import DATA, OUTPUT, CheckpointOpt, ConfigOpt, DataRootOpt, ForceOpt, LogOpt, ModelArg, WorkersOpt, command, model_of, out_option

# Folders eval makes in its results folder: the split lists it evaluates and MMEngine's log folders.
EVAL_DIRS = r"lists|\d{8}_\d{6}"


def register(app: typer.Typer) -> None:
    command(app, "eval")(evaluate)


def evaluate(
    model: ModelArg = None,
    checkpoint: CheckpointOpt = None,
    split: Annotated[str, typer.Option("--split", metavar="val|train|trainval|aug|trainaug|FILE", help="A split of the data root, or a file of image ids (one per line).", rich_help_panel=DATA)] = "val",
    config: ConfigOpt = None,
    data_root: DataRootOpt = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the results as JSON here.", rich_help_panel=OUTPUT)] = None,
    csv_out: Annotated[Optional[Path], typer.Option("--csv", help="Also write the per-class table as CSV here.", rich_help_panel=OUTPUT)] = None,
    out: Annotated[Optional[Path], out_option("Results folder (default: RUN/eval, else runs/eval/NAME).")] = None,
    tta: Annotated[bool, typer.Option("--tta", help="Official multi-scale (0.5-1.75) + flip test-time augmentation.")] = False,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write the confusion heatmap and IoU bar chart PNGs.", rich_help_panel=OUTPUT)] = True,
    save_predictions: Annotated[Optional[Path], typer.Option("--save-predictions", help="Also write each predicted label map (VOC palette PNG) into this folder.", rich_help_panel=OUTPUT)] = None,
    workers: WorkersOpt = None,
    log: LogOpt = False,
    force: ForceOpt = False,
) -> None:
    """Evaluate a checkpoint: per-class IoU, Acc, Dice, Precision; mIoU, mAcc, aAcc (percent, mmseg's IoUMetric).

    Results go to RUN/eval/ (or --out): SPLIT.json, SPLIT.csv, SPLIT_confusion.png, SPLIT_iou.png.
    """
    target = model_of(model, checkpoint, "eval")
    num_workers, verbose = workers, log
    from vocseg.commands.render import eval_report_table
    from vocseg.console import console, shown
    from vocseg.evaluation.eval_result import write_csv, write_json
    from vocseg.evaluation.evaluate import evaluate as run_eval
    from vocseg.evaluation.evaluate import save_outputs
    from vocseg.files import check_may_write, check_output_folder

    # Outputs the user named are checked before the (long) evaluation: never an input, never a
    # file vocseg did not write unless --force.
    from vocseg.recipe.official import ModelRef

    ref = ModelRef.parse(target, onnx=False, command="eval")  # a typo fails before anything is read or downloaded
    inputs = [p for p in (ref.path, config) if p is not None]
    for option, path in (("--json", json_out), ("--csv", csv_out)):
        if path is not None:
            check_may_write(path, force=force, inputs=inputs, option=option)
    if out is not None:  # a folder the user named: results, lists/ and MMEngine's timestamped logs go there
        check_output_folder(out, force=force, option="-o", own_dirs=EVAL_DIRS, may_write=eval_writes(split))
    if save_predictions is not None:  # label maps named after image ids: never over the data's own masks or a user's files
        check_output_folder(save_predictions, option="--save-predictions", role="output", force_option=None)  # --force included: PNGs of the user's (or the dataset's masks) are never replaced
    evaluation = run_eval(target, split=split, config=config, data_root=data_root, tta=tta, verbose=verbose, out_dir=out, num_workers=num_workers, save_predictions=save_predictions)
    result = evaluation.result
    name = target if ref.is_official else Path(result.checkpoint).name
    from vocseg.data.precheck import warning_line

    if line := warning_line(list(evaluation.data_warnings)):
        from rich.markup import escape

        console.print(f"[bold yellow]warning:[/] {escape(line)}", soft_wrap=True)
    console.print(eval_report_table(result, title=f"{shown(name)} on {shown(result.split)} ({result.num_images} images){' + TTA' if tta else ''}"))
    out_dir, tag = evaluation.out_dir, evaluation.tag
    if out is not None:  # a folder the user named (RUN/eval and runs/eval/NAME are vocseg's own)
        names = [f"{tag}.json", f"{tag}.csv"] + ([f"{tag}_confusion.png", f"{tag}_iou.png"] if plots else [])
        for name in names:
            check_may_write(out_dir / name, force=force, inputs=inputs, option="-o")
    saved = save_outputs(result, out_dir, tag, plots=plots, force=force and out is not None)
    if json_out:
        write_json(result, json_out, force=force)
        saved.append(json_out)
    if csv_out:
        write_csv(result, csv_out, force=force)
        saved.append(csv_out)
    # Everything this evaluation wrote was recorded as it was written (vocseg.files; MMEngine's log
    # folder and config copy by vocseg.evaluation.evaluate): a re-run may replace it, nothing else.
    if save_predictions:  # each PNG was recorded as it was written (vocseg.visualization.overlays.save_label_png)
        saved.append(save_predictions)
    console.print("results: " + ", ".join(shown(p) for p in saved), soft_wrap=True)


def eval_writes(split: str) -> Callable[[str], bool]:
    """Whether eval could write a file of this name into its results folder: the results of the
    split (`<tag>.json/.csv`, `<tag>_iou.png`, `<tag>_images.json`, ...) and MMEngine's copy of the
    config (`*.py`). Other files of the user's in that folder are left alone."""
    stem = Path(split).stem if (Path(split).suffix or "/" in split) else split

    def writes(name: str) -> bool:
        path = Path(name)
        return path.suffix == ".py" or (stem in path.stem and path.suffix in (".json", ".csv", ".png"))

    return writes
