"""`vocseg export`: a trained model as ONNX (onnxruntime-checked against vocseg's PyTorch inference)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from vocseg.commands.options import OUTPUT, CheckpointOpt, ConfigOpt, ForceOpt, ModelArg, command, model_of, out_option
from vocseg.errors import VocsegError

CHECK = "Check"


def register(app: typer.Typer) -> None:
    command(app, "export")(export)


def export(
    model: ModelArg = None,
    checkpoint: CheckpointOpt = None,
    out: Annotated[Optional[Path], out_option("The .onnx file to write (default: RUN/<checkpoint>.onnx).")] = None,
    fmt: Annotated[Literal["onnx"], typer.Option("--format", help="The export format (ONNX only: TorchScript is deprecated in PyTorch).", rich_help_panel=OUTPUT)] = "onnx",
    config: ConfigOpt = None,
    check_images: Annotated[Optional[list[str]], typer.Option("--check-images", metavar="IMAGE", help="Images to check the export on (files, folders, globs; repeatable). Default: the config's val images.", rich_help_panel=CHECK)] = None,
    check_count: Annotated[int, typer.Option("--check-count", min=0, help="How many check images at most (0: all given).", rich_help_panel=CHECK)] = 10,
    force: ForceOpt = False,
) -> None:
    """Export the model as ONNX for onnxruntime, TensorRT, OpenVINO: input `image` (N, 3, H, W)
    float32 RGB 0-255 at any size (normalisation inside), output `logits` (N, classes, H, W).

    The export is checked with onnx.checker and by running it in onnxruntime on the val images:
    at least 99.9% of pixels must get the class vocseg's PyTorch inference gives, else nothing is
    written. Writes MODEL.onnx and MODEL.onnx.json (preprocessing, classes, palette, the check's
    figures). Use it with: vocseg predict IMG -c MODEL.onnx (onnxruntime only, no mmseg).
    Needs: pip install 'vocseg[export]'.
    """
    target = model_of(model, checkpoint, "export")
    from rich.markup import escape

    from vocseg.console import command, console, shown
    from vocseg.export.onnx_export import MIN_AGREEMENT, export_model
    from vocseg.recipe import official

    if fmt.lower() != "onnx":
        raise VocsegError(f"--format {fmt}: vocseg exports onnx only.", "Drop --format (or pass --format onnx); TorchScript is not offered (deprecated in PyTorch).")
    official.ModelRef.parse(target, onnx=False, command="export")  # a typo fails before anything is read or downloaded
    result, notes = export_model(target, output=out, config=config, force=force, check_images=check_images, check_count=check_count)
    for note in notes:
        console.print(f"[yellow]check image skipped:[/] {escape(note)}")
    p = result.parity
    console.print(
        f"onnx.checker: ok; onnxruntime vs PyTorch on {p.images} images ({p.pixels:,} pixels): "
        f"[bold]{100 * p.agreement:.3f}%[/] of pixels the same class (needed {100 * MIN_AGREEMENT:.1f}%), "
        f"max |logit difference| {p.max_logit_diff:.2g} (logits up to {p.max_abs_logit:.1f})"
    )
    action = "replaced" if result.replaced else "wrote"
    console.print(f"[green]{action}[/] {escape(str(result.path))} ({result.size_bytes / 1e6:.1f} MB) and {escape(str(result.sidecar))}")
    console.print(f"next: {shown(command('predict', 'IMAGE', '-c', result.path))}", soft_wrap=True)
