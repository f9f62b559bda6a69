"""`vocseg predict`: segment images and write overlays and VOC-palette label maps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from vocseg.display import console
from vocseg.errors import VocsegError


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)


def predict(
    images: Annotated[list[str], typer.Argument(help="Image files, folders or globs.", show_default=False)],
    checkpoint: Annotated[Path, typer.Option("--checkpoint", "-c", help="A run folder or a checkpoint .pth.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("predictions"),
    config: Annotated[Optional[Path], typer.Option("--config", help="The config the checkpoint was trained with (default: the run folder's).")] = None,
    opacity: Annotated[float, typer.Option("--opacity", min=0.0, max=1.0, help="Overlay opacity of the class colours.")] = 0.5,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    mode: Annotated[str, typer.Option("--mode", help="whole (the image at once) or slide (crop windows, for large images).")] = "whole",
) -> None:
    """Per image: OUT/<name>_overlay.png (with a legend of the classes present) and OUT/<name>_label.png."""
    from vocseg.inference import expand_inputs, load_model
    from vocseg.inference import predict as run_predict

    if mode not in ("whole", "slide"):
        raise VocsegError(f"Unknown --mode {mode!r}.", "Use whole or slide.")
    paths = expand_inputs(images)
    if not paths:
        raise VocsegError("No images found in the given paths.", "Pass image files, a folder of images, or a glob.")
    model = load_model(checkpoint, config=config, device=device, mode=mode)
    results = run_predict(paths, model, out, opacity=opacity)
    ok = [r for r in results if r.error is None]
    for r in results:
        if r.error:
            console.print(f"[yellow]skipped[/] {r.image}: {r.error}")
        else:
            top = ", ".join(f"{c} {s:.0f}%" for c, s in list(r.shares.items())[:3])
            console.print(f"{r.image.name}: {top}  -> {r.overlay}")
    if not ok:
        raise VocsegError(f"None of the {len(results)} inputs could be segmented.", "Pass readable image files.")
    console.print(f"[green]{len(ok)} image(s) segmented[/]; overlays and label maps in {out}")
