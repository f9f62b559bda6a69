"""`vocseg predict`: segment images and videos; write overlays and VOC-palette label maps."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from vocseg.commands.options import OUTPUT, CheckpointOpt, ConfigOpt, DeviceOpt, ModeOpt, command, model_of, out_option
from vocseg.errors import VocsegError

if TYPE_CHECKING:
    from vocseg.recipe.official import ModelRef

VIDEO = "Video"


def register(app: typer.Typer) -> None:
    command(app, "predict")(predict)


def predict(
    images: Annotated[list[str], typer.Argument(metavar="IMAGE", help="Image or video files, folders or globs (quote globs: 'photos/**/*.jpg').", show_default=False)],
    checkpoint: CheckpointOpt = None,
    out: Annotated[Optional[Path], out_option("Output folder (default: a new RUN/predict*/ for a run folder, else runs/predict*/).")] = None,
    config: ConfigOpt = None,
    opacity: Annotated[float, typer.Option("--opacity", min=0.0, max=1.0, help="Overlay opacity of the class colours.", rich_help_panel=OUTPUT)] = 0.5,
    device: DeviceOpt = "auto",
    mode: ModeOpt = "whole",
    every: Annotated[int, typer.Option("--every", min=1, help="Videos: segment every N-th frame (the frames between keep the last classes).", rich_help_panel=VIDEO)] = 1,
    batch: Annotated[int, typer.Option("--frames-per-batch", min=1, help="Videos: frames per forward pass.", rich_help_panel=VIDEO)] = 8,
) -> None:
    """Per image: OUT/NAME_overlay.png (with a legend of the classes present and their share) and
    OUT/NAME_label.png (VOC palette); per video: OUT/NAME_overlay.mp4 (same frames and frame
    rate; needs vocseg[video]). OUT/predictions.json lists every input. Inputs that cannot be
    read are reported and skipped; files in OUT that vocseg did not write are never replaced."""
    checkpoint = model_of(None, checkpoint, "predict", args=images)
    from vocseg.inference.inputs import expand_inputs
    from vocseg.recipe import official

    model_ref = official.ModelRef.parse(checkpoint)  # a typo fails before anything is read or downloaded
    inputs = expand_inputs(images)
    if not inputs:
        raise VocsegError("No files found in the given paths.", "Pass image or video files, a folder of images, or a glob.")
    if out is not None and out.expanduser().exists() and not out.expanduser().is_dir():
        raise VocsegError(f"--out {out} is a file, not a folder.", "Pass a folder (it is created if needed).")
    _require_video_reader(inputs)
    model = load_segmenter(model_ref, config=config, device=device, mode=mode)
    run_predict(inputs, model, out, checkpoint=checkpoint, mode=mode, opacity=opacity, every=every, batch=batch)


def load_segmenter(model: ModelRef, *, config: Path | None, device: str, mode: str) -> Any:
    """The model behind `--checkpoint`, as an object with `predict_batch`, `mode` and `run`
    (`vocseg.inference.segmenter.Segmenter`): the place for other back ends (e.g. an ONNX file)."""
    from vocseg.inference import onnx_model

    if model.is_onnx:  # `vocseg export`'s model, in onnxruntime: no torch, no mmseg
        if config is not None:
            raise VocsegError("--config does not apply to an exported .onnx model (its preprocessing is in its metadata).", "Drop --config.")
        return onnx_model.load_onnx_model(model.text, device=device, mode=mode)
    from vocseg.inference.segmenter import load_model

    return load_model(model.text, config=config, device=device, mode=mode)


def run_predict(inputs: list[Any], model: Any, out: Path | None, *, checkpoint: str, mode: str, opacity: float, every: int, batch: int) -> None:
    """Segment, write the report, print the table and where everything went."""
    from vocseg.commands.render import predict_table
    from vocseg.console import console, progress, shown
    from vocseg.inference.predict import predict as predict_files
    from vocseg.inference.predict import write_report
    from vocseg.runs.folders import RUNS_ROOT, numbered_output_dir

    # Without -o: a new RUN/predict, RUN/predict2, ... (runs/predict* for a model from no run folder).
    out_dir = (out.expanduser() if out is not None else numbered_output_dir("predict", getattr(model, "run", None) or RUNS_ROOT)).absolute()
    with progress("predict", len(inputs), unit="inputs") as shown_progress:  # a bar on a terminal, plain lines in a pipe
        results = predict_files(inputs, model, out_dir, opacity=opacity, every=every, batch=batch, progress=shown_progress)
    if out is None and not any(r.label or r.overlay for r in results):
        from vocseg.files import owned_rmtree

        owned_rmtree(out_dir)  # nothing segmented: no predict*/ folder left holding only a report
        raise VocsegError(f"None of the {len(results)} inputs could be segmented: {'; '.join(str(r.error) for r in results[:2] if r.error)}.", "Pass readable image or video files.")
    try:
        report = write_report(results, out_dir, checkpoint=checkpoint, mode=mode)
    except OSError as exc:
        done = sum(r.error is None for r in results)
        raise VocsegError(f"Cannot write {exc.filename or out_dir}: {exc.strerror or exc}.", f"{done} input(s) were segmented into {out_dir}; free space or pass another -o.") from None
    ok = [r for r in results if r.error is None]
    skipped = len(results) - len(ok)
    if len(results) <= 25:
        console.print(predict_table(results))
    elif skipped:  # many inputs: list only the problems; predictions.json has every image
        console.print(predict_table([r for r in results if r.error], title="Skipped inputs"))
    for r in results[:25]:
        for note in r.notes:
            console.print(f"note: {shown(r.image.name)}: {shown(note)}", soft_wrap=True)
    left_out = len(inputs) - len(results)
    if left_out:
        console.print(f"note: {left_out} file(s) that vocseg wrote to {shown(out_dir)} earlier were not segmented again.")
    if not ok:
        first = results[0].error or ""
        more = f" ({len(results) - 1} more in {report})" if len(results) > 1 else ""
        raise VocsegError(f"None of the {len(results)} inputs could be segmented{more}. The first: {first}")
    console.print(
        f"[green]{len(ok)} input(s) segmented[/]{f', [yellow]{skipped} skipped[/]' if skipped else ''}; "
        f"written to {shown(out_dir)} (list: {shown(report.name)})", soft_wrap=True,
    )


def _require_video_reader(inputs: list[Any]) -> None:
    from vocseg.inference.predict import VIDEO_SUFFIXES

    if any(i.path.suffix.lower() in VIDEO_SUFFIXES and i.path.is_file() for i in inputs):
        from vocseg.inference.video import require_av

        require_av()  # before the model is loaded: one line naming the extra
