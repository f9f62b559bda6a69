"""`vocseg predict`: segment images and write overlays and VOC-palette label maps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vocseg.errors import VocsegError


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)


def predict(
    images: Annotated[list[str], typer.Argument(help="Image files, folders or globs (quote globs: 'photos/*.jpg').", show_default=False)],
    checkpoint: Annotated[str, typer.Option("--checkpoint", "-c", help="A run folder, a checkpoint .pth, official:upernet-r50-40k (also -r50-20k, -r101-20k, -r101-40k), or a .onnx from vocseg export.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("predictions"),
    config: Annotated[Optional[Path], typer.Option("--config", help="The config the checkpoint was trained with (default: the run folder's).")] = None,
    opacity: Annotated[float, typer.Option("--opacity", min=0.0, max=1.0, help="Overlay opacity of the class colours.")] = 0.5,
    device: Annotated[str, typer.Option("--device", help="auto (a GPU if there is one), cpu, cuda or cuda:N.")] = "auto",
    mode: Annotated[str, typer.Option("--mode", help="whole (the image at once) or slide (crop-size windows, for large images).")] = "whole",
) -> None:
    """Per image: OUT/NAME_overlay.png (with a legend of the classes present and their share) and
    OUT/NAME_label.png (VOC palette); OUT/predictions.json lists every input. Inputs that are not
    images are reported and skipped."""
    from vocseg.commands.render import predict_table
    from vocseg.console import console
    from vocseg.recipe import official
    from vocseg.results.inference import expand_inputs, load_model, write_report
    from vocseg.results.inference import predict as run_predict

    if mode not in ("whole", "slide"):
        raise VocsegError(f"Unknown --mode {mode!r}.", "Use whole or slide.")
    if official.is_official(checkpoint):
        official.lookup(checkpoint)  # a typo fails before anything is read or downloaded
    paths = expand_inputs(images)
    if not paths:
        raise VocsegError("No files found in the given paths.", "Pass image files, a folder of images, or a glob.")
    model = load_model(checkpoint, config=config, device=device, mode=mode)
    results = run_predict(paths, model, out, opacity=opacity)
    report = write_report(results, out, checkpoint=checkpoint, mode=mode)
    ok = [r for r in results if r.error is None]
    skipped = len(results) - len(ok)
    if len(results) <= 25:
        console.print(predict_table(results))
    elif skipped:  # many inputs: list only the problems; predictions.json has every image
        console.print(predict_table([r for r in results if r.error], title="Skipped inputs"))
    if not ok:
        raise VocsegError(f"None of the {len(results)} inputs could be segmented (see {report}).", "Pass readable image files.")
    console.print(f"[green]{len(ok)} image(s) segmented[/]{f', [yellow]{skipped} skipped[/]' if skipped else ''}; overlays and label maps in {out}, report {report}")
