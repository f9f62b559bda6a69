"""`vocseg predict`: segment images and videos; write overlays and VOC-palette label maps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from vocseg.errors import VocsegError


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)


def predict(
    images: Annotated[list[str], typer.Argument(help="Image or video files, folders or globs (quote globs: 'photos/**/*.jpg').", show_default=False)],
    checkpoint: Annotated[str, typer.Option("--checkpoint", "-c", help="A run folder, a checkpoint .pth, official:upernet-r50-40k (also -r50-20k, -r101-20k, -r101-40k), or a .onnx from vocseg export.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder (default: a new RUN/predict*/ for a run folder, else runs/predict*/).", show_default=False)] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="The config the checkpoint was trained with (default: the run folder's).")] = None,
    opacity: Annotated[float, typer.Option("--opacity", min=0.0, max=1.0, help="Overlay opacity of the class colours.")] = 0.5,
    device: Annotated[str, typer.Option("--device", help="auto (a GPU if there is one), cpu, cuda or cuda:N.")] = "auto",
    mode: Annotated[str, typer.Option("--mode", help="whole (the image at once, at the test scale) or slide (crop-size windows at the image's own resolution: for large images).")] = "whole",
    every: Annotated[int, typer.Option("--every", min=1, help="Videos: segment every N-th frame (the frames between keep the last classes).")] = 1,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Videos: frames per forward pass.")] = 8,
) -> None:
    """Per image: OUT/NAME_overlay.png (with a legend of the classes present and their share) and
    OUT/NAME_label.png (VOC palette); per video: OUT/NAME_overlay.mp4 (same frames and frame
    rate; needs vocseg[video]). OUT/predictions.json lists every input. Inputs that cannot be
    read are reported and skipped; files in OUT that vocseg did not write are never replaced."""
    from vocseg.inference.inputs import expand_inputs
    from vocseg.recipe import official

    if mode not in ("whole", "slide"):
        raise VocsegError(f"Unknown --mode {mode!r}.", "Use whole or slide.")
    if official.is_official(checkpoint):
        official.lookup(checkpoint)  # a typo fails before anything is read or downloaded
    inputs = expand_inputs(images)
    if not inputs:
        raise VocsegError("No files found in the given paths.", "Pass image or video files, a folder of images, or a glob.")
    if out is not None and out.expanduser().exists() and not out.expanduser().is_dir():
        raise VocsegError(f"--out {out} is a file, not a folder.", "Pass a folder (it is created if needed).")
    _require_video_reader(inputs)
    model = load_segmenter(checkpoint, config=config, device=device, mode=mode)
    run_predict(inputs, model, out, checkpoint=checkpoint, mode=mode, opacity=opacity, every=every, batch=batch)


def load_segmenter(checkpoint: str, *, config: Path | None, device: str, mode: str) -> Any:
    """The model behind `--checkpoint`, as an object with `predict_batch`, `mode` and `run`
    (`vocseg.inference.segmenter.Segmenter`): the place for other back ends (e.g. an ONNX file)."""
    from vocseg.inference import onnx_model

    if onnx_model.is_onnx_path(checkpoint):  # `vocseg export`'s model, in onnxruntime: no torch, no mmseg
        if config is not None:
            raise VocsegError("--config does not apply to an exported .onnx model (its preprocessing is in its metadata).", "Drop --config.")
        return onnx_model.load_onnx_model(checkpoint, device=device, mode=mode)
    from vocseg.inference.segmenter import load_model

    return load_model(checkpoint, config=config, device=device, mode=mode)


def run_predict(inputs: list[Any], model: Any, out: Path | None, *, checkpoint: str, mode: str, opacity: float, every: int, batch: int) -> None:
    """Segment, write the report, print the table and where everything went."""
    from rich.markup import escape

    from vocseg.commands.render import predict_table
    from vocseg.console import console, err_console
    from vocseg.inference.predict import predict as predict_files
    from vocseg.inference.predict import write_report
    from vocseg.runs.folders import RUNS_ROOT, numbered_output_dir

    # Without -o: a new RUN/predict, RUN/predict2, ... (runs/predict* for a model from no run folder).
    out_dir = (out.expanduser() if out is not None else numbered_output_dir("predict", getattr(model, "run", None) or RUNS_ROOT)).absolute()
    with _video_progress(err_console) as progress:
        results = predict_files(inputs, model, out_dir, opacity=opacity, every=every, batch=batch, progress=progress)
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
            console.print(f"note: {escape(r.image.name)}: {escape(note)}")
    left_out = len(inputs) - len(results)
    if left_out:
        console.print(f"note: {left_out} file(s) that vocseg wrote to {escape(str(out_dir))} earlier were not segmented again.")
    if not ok:
        raise VocsegError(f"None of the {len(results)} inputs could be segmented (see {report}).", "Pass readable image or video files.")
    console.print(
        f"[green]{len(ok)} input(s) segmented[/]{f', [yellow]{skipped} skipped[/]' if skipped else ''}; "
        f"written to {escape(str(out_dir))} (report {escape(report.name)})"
    )


def _require_video_reader(inputs: list[Any]) -> None:
    from vocseg.inference.predict import VIDEO_SUFFIXES

    if any(i.path.suffix.lower() in VIDEO_SUFFIXES and i.path.is_file() for i in inputs):
        from vocseg.inference.video import require_av

        require_av()  # before the model is loaded: one line naming the extra


class _video_progress:  # noqa: N801 - a context manager
    """A progress bar on stderr for video frames; `__enter__` returns the callback (done, total)."""

    def __init__(self, console: Any) -> None:
        self.console = console
        self.bar: Any = None
        self.task: Any = None

    def __enter__(self) -> Any:
        return self.update

    def update(self, done: int, total: int | None) -> None:
        if self.bar is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("frames"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=self.console, transient=True)
            self.bar.start()
            self.task = self.bar.add_task("frames", total=total)
        self.bar.update(self.task, completed=done, total=total)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()
