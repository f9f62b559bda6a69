"""`--load-from CKPT|RUN|official:NAME`: fine-tune the whole model from earlier weights.

Before anything is written, the checkpoint is loaded safely (`vocseg.stack.compat`: weights only,
allow-listed) and compared with the recipe's model tensor by tensor: every tensor whose name and
shape match loads (MMEngine's `load_from`, non-strict, does exactly that at the start of training),
the rest start fresh and the plan says which (a decode head of another class count, for
instance). A checkpoint of which no tensor loads is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vocseg.errors import VocsegError
from vocseg.recipe.recipe import Recipe

LOAD_FROM_HINT = "Pass a checkpoint .pth, a run folder, or official:NAME (`vocseg eval --help` lists them)."


@dataclass(frozen=True)
class LoadReport:
    """How a state dict fits a model. Tensors are counted without BatchNorm's `num_batches_tracked`."""

    loaded: int  # tensors of the model that load (same name and shape)
    total: int  # tensors of the model
    fresh: tuple[str, ...]  # model tensors that start fresh: absent from the file or of another shape
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]  # (name, file shape, model shape)
    unused: int  # tensors of the file the model has no place for


def resolve_load_from(text: str, *, quiet: bool = False) -> Path:
    """`--load-from`: a checkpoint file, a run folder (its newest checkpoint) or `official:NAME`
    (downloaded once, hash-checked) -> the local checkpoint file."""
    from vocseg.recipe import official
    from vocseg.runs.folders import resolve_checkpoint

    ref = official.ModelRef.parse(text, onnx=False, command="train --load-from")
    if ref.is_official:
        return official.fetch(ref.official, quiet=quiet)
    path = Path(text).expanduser()
    if not path.exists():
        raise VocsegError(f"--load-from {text}: no such file or folder.", LOAD_FROM_HINT)
    return resolve_checkpoint(path)[0].resolve()


def fit_report(expected: dict[str, Any], given: dict[str, Any]) -> LoadReport:
    """Compare a model's state dict (`expected`) with a checkpoint's (`given`) by name and shape."""
    from vocseg.stack.checkpoints import compare_state_dicts

    report = compare_state_dicts(expected, given)
    names = [k for k in expected if not k.endswith("num_batches_tracked")]
    fresh = set(report.missing) | {k for k, _, _ in report.mismatched}
    return LoadReport(
        loaded=len(names) - len(fresh),
        total=len(names),
        fresh=tuple(k for k in names if k in fresh),
        mismatched=tuple(report.mismatched),
        unused=len(report.unexpected),
    )


def describe_fresh(report: LoadReport) -> str:
    """'decode_head.conv_seg.* (2, another class count: 19 in the file, 21 here)' and the like."""
    if not report.fresh:
        return ""
    groups: dict[str, list[str]] = {}
    for name in report.fresh:
        groups.setdefault(name.rsplit(".", 1)[0], []).append(name)
    shapes = {k: (got, exp) for k, got, exp in report.mismatched}
    parts = []
    for module, names in list(groups.items())[:3]:
        shape = next((shapes[n] for n in names if n in shapes), None)
        why = ""
        if shape is not None:
            got, exp = shape
            why = f", another class count: {got[0]} in the file, {exp[0]} here" if module.endswith("conv_seg") and got and exp else f", shape {got} in the file vs {exp}"
        parts.append(f"{module}.* ({len(names)}{why})")
    more = len(groups) - 3
    return ", ".join(parts) + (f" and {more} more modules" if more > 0 else "")


def model_state_dict(recipe: Recipe) -> dict[str, Any]:
    """The state dict of the recipe's model as training builds it (BN in place of SyncBN, no
    pretrained init): names and shapes only matter."""
    from vocseg.stack.compat import ensure_stack

    ensure_stack()
    from mmengine.registry import init_default_scope

    init_default_scope("mmseg")
    import mmseg.models  # noqa: F401  (registers the model classes)
    from mmseg.registry import MODELS

    from vocseg.recipe.mmconfig import training_model

    cfg = training_model(recipe, sync_bn=False)
    cfg["backbone"].pop("init_cfg", None)
    cfg["data_preprocessor"] = dict(type="SegDataPreProcessor")
    return MODELS.build(cfg).state_dict()


def check_load_from(recipe: Recipe, checkpoint: Path) -> tuple[LoadReport, str]:
    """Compare `checkpoint` with the recipe's model; (report, the plan's line). Zero tensors: refused."""
    from vocseg.stack.checkpoints import state_dict_of
    from vocseg.stack.compat import load_checkpoint_file

    weights = state_dict_of(load_checkpoint_file(checkpoint))
    report = fit_report(model_state_dict(recipe), weights)
    if report.loaded == 0:
        raise VocsegError(
            f"--load-from {checkpoint}: none of its {len(weights)} tensors fits the {recipe.model} model "
            f"(names or shapes differ everywhere); nothing would load.",
            "Pass a checkpoint of the same model preset (a vocseg run of --model "
            f"{recipe.model}, or official:NAME of its architecture), or --pretrained for a backbone file.",
        )
    line = f"--load-from {checkpoint.name}: {report.loaded} of {report.total} model tensors load"
    fresh = describe_fresh(report)
    line += f"; start fresh: {fresh}" if fresh else " (all)"
    if report.unused:
        line += f"; {report.unused} tensors of the file unused"
    return report, line


def runtime_load_line(model: Any, checkpoint: dict[str, Any], source: str) -> tuple[int, str]:
    """At the start of training (`VocsegHealthHook.after_load_checkpoint`): how many tensors of the
    checkpoint MMEngine's non-strict `load_from` loaded into `model`, in words."""
    from vocseg.stack.checkpoints import state_dict_of

    try:
        weights = state_dict_of(checkpoint)
    except VocsegError:
        weights = {}
    report = fit_report(model.state_dict(), weights)
    fresh = describe_fresh(report)
    return report.loaded, f"loaded {report.loaded} of {report.total} model tensors from {source}" + (f"; fresh: {fresh}" if fresh else "")
