"""The recipe flags, declared once and shared by `vocseg config` and `vocseg train`.

Every flag defaults to None here; `recipe_from_flags` fills what was not given from the
`Recipe` dataclass, the one place where defaults live.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer

from vocseg.commands.options import DEVICE_HELP, HARDWARE, OUTPUT, RECIPE, ClassesOpt, DataRootOpt, WorkersOpt, resolve_device
from vocseg.recipe.models import PRESETS
from vocseg.recipe.recipe import Recipe, default_data_root
from vocseg.recipe.trackers import parse_log_to

_D = Recipe()


def _opt(*names: str, help: str, panel: str = RECIPE, **kw: Any) -> Any:
    return typer.Option(*names, help=help, rich_help_panel=panel, **kw)


# (parameter name, annotation). Names equal Recipe field names, except data_root/work_dir.
RECIPE_PARAMS: list[tuple[str, Any]] = [
    ("data_root", DataRootOpt),
    ("model", Annotated[Optional[Literal[tuple(PRESETS)]], _opt("--model", "-m", help=f"Model preset (default: {_D.model}).")]),
    ("aug", Annotated[Optional[bool], _opt("--aug/--no-aug", help="Train on VOC train + SBD aug (10582 images) or VOC train only (1464) (default: --aug).", show_default=False)]),
    ("device", Annotated[Optional[str], _opt("--device", panel=HARDWARE, metavar="auto|cpu|cuda|cuda:N", help=DEVICE_HELP, show_default=False)]),
    ("gpus", Annotated[Optional[str], _opt("--gpus", panel=HARDWARE, help="GPU ids (nvidia-smi numbering): 6,7 or 7 or 0-3, exactly those; or first:N, the first N visible (default: first:1). Implies --device cuda.")]),
    ("nproc", Annotated[Optional[int], _opt("--nproc", panel=HARDWARE, help="Processes for --device cpu (distributed over gloo) (default: 1).")]),
    ("batch", Annotated[Optional[int], _opt("--batch", "-b", panel=HARDWARE, help=f"Images per GPU/process (default: {_D.batch}).")]),
    ("epochs", Annotated[Optional[int], _opt("--epochs", help="Train this many epochs (converted to iterations, poly LR per iteration).")]),
    ("iters", Annotated[Optional[int], _opt("--iters", help="Train this many iterations.")]),
    ("schedule", Annotated[Optional[Literal["20k", "40k"]], _opt("--schedule", help="The official schedule, equal in samples seen at your batch (default: 40k).")]),
    ("lr", Annotated[Optional[float], _opt("--lr", help="Use exactly this LR (no scaling) (default: base LR scaled to the total batch).")]),
    ("base_lr", Annotated[Optional[float], _opt("--base-lr", help="LR at --base-batch (default: the model preset's: 0.01, the official recipe; 0.1 for tiny).")]),
    ("base_batch", Annotated[Optional[int], _opt("--base-batch", help=f"Total batch that --base-lr belongs to (default: {_D.base_batch}).")]),
    ("warmup_iters", Annotated[Optional[int], _opt("--warmup-iters", help="Linear LR warmup iterations (default: 0).")]),
    ("crop", Annotated[Optional[int], _opt("--crop", help="Training crop size (default: the model preset's).")]),
    ("pretrained", Annotated[Optional[str], _opt("--pretrained", help="auto (weights matching the backbone), none, a .pth path or a URL (default: auto).")]),
    ("amp", Annotated[Optional[bool], _opt("--amp/--no-amp", panel=HARDWARE, help="Mixed precision: bf16 autocast, fp16 + loss scaling where the GPU lacks bf16 (default: on with CUDA, off on CPU).", show_default=False)]),
    ("channels_last", Annotated[Optional[bool], _opt("--channels-last/--no-channels-last", panel=HARDWARE, help="NHWC memory layout for tensor cores (default: on with CUDA).", show_default=False)]),
    ("cudnn_benchmark", Annotated[Optional[bool], _opt("--cudnn-benchmark/--no-cudnn-benchmark", panel=HARDWARE, help="Let cuDNN pick the fastest kernels (default: on with CUDA unless --deterministic).", show_default=False)]),
    ("pin_memory", Annotated[Optional[bool], _opt("--pin-memory/--no-pin-memory", panel=HARDWARE, help="Pinned host memory for faster copies to the GPU (default: on with CUDA).", show_default=False)]),
    ("val_interval", Annotated[Optional[int], _opt("--val-interval", help="Validate every N epochs (with --epochs) or iterations (default: a tenth of the run).")]),
    ("ckpt_interval", Annotated[Optional[int], _opt("--ckpt-interval", help="Checkpoint every N epochs (with --epochs) or iterations (default: a tenth of the run).")]),
    ("keep", Annotated[Optional[int], _opt("--keep", help=f"Periodic checkpoints to keep (default: {_D.keep}).")]),
    ("seed", Annotated[Optional[int], _opt("--seed", help=f"Random seed (default: {_D.seed}).")]),
    ("deterministic", Annotated[Optional[bool], _opt("--deterministic/--no-deterministic", help="Deterministic kernels (slower) (default: off).", show_default=False)]),
    ("num_workers", WorkersOpt),
    ("name", Annotated[Optional[str], _opt("--name", panel=OUTPUT, help="Run name (default: model-data-schedule).")]),
    ("log_to", Annotated[Optional[str], _opt("--log-to", panel=OUTPUT, help="Experiment trackers besides vocseg's own files: any of tensorboard,wandb,mlflow (comma-separated), or none (default: none). Each needs its extra: pip install \"vocseg[wandb]\".")]),
    ("class_weight", Annotated[Optional[str], _opt("--class-weight", panel=RECIPE, help="Loss weight per class: auto (median-frequency balancing of the training split's pixels, computed once and cached), none, or one comma-separated number per class in class-id order (21 for PASCAL VOC: w0,...,w20) (default: none).")]),
    ("load_from", Annotated[Optional[str], _opt("--load-from", panel=RECIPE, help="Fine-tune the whole model from a checkpoint .pth, a run folder (its newest checkpoint) or official:NAME: tensors whose name and shape match load, the rest (a head of another class count) start fresh (default: none).")]),
    ("work_dir", Annotated[Optional[Path], _opt("--work-dir", "-w", panel=OUTPUT, help="Run folder (default: runs/NAME, never reusing one).")]),
    ("classes", ClassesOpt),
]
RECIPE_PARAM_NAMES = [name for name, _ in RECIPE_PARAMS]


def with_recipe_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the recipe flags to a command; the command receives them as `flags: dict`."""
    sig = inspect.signature(func)
    hints = typing.get_type_hints(func, include_extras=True)  # resolves `from __future__` strings
    own = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in sig.parameters.values() if p.name != "flags"]
    extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ann) for name, ann in RECIPE_PARAMS]

    @functools.wraps(func)
    def wrapper(**kwargs: Any) -> Any:
        flags = {name: kwargs.pop(name) for name in RECIPE_PARAM_NAMES}
        return func(flags=flags, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=own + extra)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in own + extra}
    return wrapper


def recipe_from_flags(flags: dict[str, Any], base: Recipe | None = None) -> Recipe:
    """Flags given on the command line override `base` (default: vocseg's defaults)."""
    fresh = base is None  # a new recipe: --device's default (auto) applies; otherwise `base` keeps its device
    base = base or Recipe()
    given = {k: v for k, v in flags.items() if v is not None and k not in ("work_dir", "data_root", "classes")}
    if "device" in given or (flags.get("device", "") is None and fresh):
        given.update(device_flags(given.get("device"), given.get("gpus")))
    if "log_to" in given:
        given["log_to"] = parse_log_to(given["log_to"])
    if "class_weight" in given:
        choice = given["class_weight"].strip()
        given["class_weight"] = choice.lower() if choice.lower() in ("auto", "none") else choice
        given["class_weight_values"] = ()  # derived again from the new choice
    if given.get("load_from", "").strip().lower() == "none":
        given["load_from"] = None
    # One training-length flag on the command line replaces the one in `base`.
    if any(k in given for k in ("epochs", "iters", "schedule")):
        base = dataclasses.replace(base, epochs=None, iters=None, schedule=None)
    data_root = flags.get("data_root") or (Path(base.data_root) if base.data_root else default_data_root())
    root = Path(data_root).expanduser().resolve()
    classes = flags.get("classes")
    classes_file = str(Path(classes).expanduser().resolve()) if classes else base.classes_file
    given.update(dataset_fields(root, classes_file, aug_given=given.get("aug")))
    return dataclasses.replace(base, data_root=str(root), **given)



def dataset_fields(root: Path, classes_file: str, aug_given: bool | None) -> dict[str, Any]:
    """Recipe fields of the dataset under `root`: an own dataset (class file found or given)
    trains without SBD (--aug is VOC's) unless --aug was asked for (then `validate` refuses it)."""
    from vocseg.data.dataset import detect

    spec = detect(root, Path(classes_file) if classes_file else None)
    if spec.is_voc:
        return {"dataset": "", "classes_file": ""}
    return {"dataset": spec.name, "classes_file": classes_file, "aug": bool(aug_given)}


def device_flags(device: str | None, gpus: str | None) -> dict[str, str]:
    """`--device` as the recipe's fields: auto -> cuda where a GPU is visible, else cpu; cuda:N -> cuda on GPU N
    (the same as --gpus N). Errors: cuda:N together with another --gpus."""
    if device in (None, "auto") and gpus is not None:
        return {"device": "cuda"}  # GPUs named: a GPU run, even written on a machine without them
    device = resolve_device(device)
    if not device.startswith("cuda:"):
        return {"device": device}
    index = device.partition(":")[2]
    if gpus is not None and gpus != index:
        from vocseg.errors import VocsegError

        raise VocsegError(f"--device {device} and --gpus {gpus} name different GPUs.", f"Pass one of them: --device {device}, or --device cuda --gpus {gpus}.")
    return {"device": "cuda", "gpus": index}
