"""Make the released stack (torch >= 2.6, mmcv-lite, mmengine 0.10.7, mmseg 1.2.2) work together.

Two problems, both measured (see docs/stack.md):

1. mmcv-lite ships no compiled ``mmcv._ext``, yet mmseg imports a few names from ``mmcv.ops``
   at import time. When the compiled ops are missing we put a small pure-PyTorch ``mmcv.ops``
   in ``sys.modules``: ``point_sample`` works (it is ``grid_sample``), every other op raises a
   clear error when used. With full mmcv installed nothing is replaced.
2. torch >= 2.6 loads checkpoints with ``weights_only=True``; mmengine pickles a few of its own
   types into every checkpoint. We allow-list exactly those types and route mmengine's local
   checkpoint loading through ``load_checkpoint_file``, which never passes ``weights_only=False``:
   a checkpoint carrying any other pickled object is refused before its code can run.

3. mmseg 1.2.2's ``cross_entropy`` with ``class_weight`` averages by the weights of every label,
   indexing the weight list with the label map: an ignored pixel (255) raises ``IndexError: index
   255``. ``fix_class_weight_loss`` replaces it with the same loss whose average counts ignored
   pixels with weight 0 (PyTorch's weighted mean), for vocseg's and users' configs alike.

Call ``ensure_stack()`` before importing mmseg. Configs written by vocseg also name this module
in ``custom_imports``, so mmseg's own ``tools/train.py`` gets the same fixes.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import types
from pathlib import Path
from typing import Any

from vocseg.errors import VocsegError
from vocseg.files import owned_write_bytes

_applied = False


def compiled_mmcv_ops_available() -> bool:
    """True when a full mmcv with its compiled extension is installed."""
    try:
        return importlib.util.find_spec("mmcv._ext") is not None
    except (ImportError, ValueError):
        return False


def _point_sample(input: Any, points: Any, align_corners: bool = False, **kwargs: Any) -> Any:
    """mmcv.ops.point_sample in plain PyTorch: sample `input` at normalised [0, 1] `points`."""
    import torch.nn.functional as F

    add_dim = False
    if points.dim() == 3:
        add_dim = True
        points = points.unsqueeze(2)
    output = F.grid_sample(input, 2.0 * points - 1.0, align_corners=align_corners, **kwargs)
    if add_dim:
        output = output.squeeze(3)
    return output


class _MissingOp:
    """Stands in for a compiled mmcv op: importing works, using it explains what to install."""

    def __init__(self, name: str) -> None:
        self._name = name

    def _fail(self, *args: Any, **kwargs: Any) -> Any:
        raise VocsegError(
            f"mmcv.ops.{self._name} needs mmcv's compiled ops, which mmcv-lite does not have.",
            "Install them with: pip install 'vocseg[mmcv-full]' (builds mmcv, ~10 min), "
            "or use a model that needs no compiled op (the UPerNet presets).",
        )

    __call__ = _fail

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return self._fail


def _install_mmcv_ops_shim() -> None:
    module = types.ModuleType("mmcv.ops")
    module.__doc__ = "vocseg's pure-PyTorch stand-in for mmcv.ops (mmcv-lite has no compiled ops)."
    module.point_sample = _point_sample  # type: ignore[attr-defined]

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _MissingOp(name)

    module.__getattr__ = __getattr__  # type: ignore[attr-defined]
    sys.modules["mmcv.ops"] = module
    import mmcv

    mmcv.ops = module  # type: ignore[attr-defined]


HISTORY_BUFFER_METHODS = frozenset({"min", "max", "current", "mean"})


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """Stands in for `builtins.getattr` while unpickling: mmengine's HistoryBuffer pickles its
    statistics methods as `getattr(HistoryBuffer, 'min')`. Anything else is refused, so the
    allow-list never grants general attribute access (the road to arbitrary code)."""
    import pickle

    from mmengine.logging import HistoryBuffer

    if (obj is HistoryBuffer or isinstance(obj, HistoryBuffer)) and name in HISTORY_BUFFER_METHODS:
        return getattr(obj, name)
    raise pickle.UnpicklingError(f"GLOBAL builtins.getattr({type(obj).__name__}, {name!r}) is not allowed in a checkpoint")


def checkpoint_safe_globals() -> list[Any]:
    """Exactly the non-tensor objects mmengine 0.10.7 pickles into a checkpoint (numpy 1 and 2 names)."""
    import numpy as np
    from mmengine.logging import HistoryBuffer

    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    safe: list[Any] = [
        HistoryBuffer,
        np.dtype,
        np.ndarray,
        multiarray._reconstruct,
        multiarray.scalar,
        (_history_buffer_getattr, "builtins.getattr"),
        # checkpoints written under numpy 1.x name numpy.core.*
        (multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
        (multiarray.scalar, "numpy.core.multiarray.scalar"),
    ]
    # numpy 2 pickles dtypes of scalars by their DType classes (np.dtypes.Float64DType, ...).
    for name in dir(np.dtypes):
        obj = getattr(np.dtypes, name)
        if isinstance(obj, type) and issubclass(obj, np.dtype):
            safe.append(obj)
    return safe


def load_checkpoint_file(filename: str | Path, map_location: Any = "cpu") -> Any:
    """torch.load with weights_only=True and mmengine's types allow-listed; a clear error otherwise."""
    import pickle

    import torch

    path = Path(filename)
    if not path.is_file():
        raise VocsegError(f"Checkpoint {path} does not exist.", "Check the path.")
    try:
        with torch.serialization.safe_globals(checkpoint_safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # garbage makes the unpickler raise almost anything (KeyError, IndexError, ...)
        message = _ANSI.sub("", str(exc))
        refused = re.search(r"GLOBAL ([\w.]+(\([^)]*\))?)", message)  # torch's words, and ours above
        if isinstance(exc, pickle.UnpicklingError) and refused:
            raise VocsegError(
                f"Refused to load {path}: it contains a pickled object ({refused.group(1)}) outside the "
                "checkpoint allow-list, and loading it could run code.",
                "Only load checkpoints you trust; vocseg never unpickles arbitrary objects.",
            ) from None
        raise VocsegError(
            f"Cannot read checkpoint {path}: {_first_sentence(message) or f'not a PyTorch checkpoint ({type(exc).__name__})'}.",
            "The file is truncated or not a PyTorch checkpoint; use another checkpoint.",
        ) from None


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _first_sentence(message: str) -> str:
    """The cause in torch's messages comes first; the rest is advice that does not apply here."""
    if message.startswith("Weights only load failed"):
        # the unpickler's own reason follows its long preamble
        reason = message.split("WeightsUnpickler error:", 1)[-1] if "WeightsUnpickler error:" in message else ""
        message = reason.strip() or "not a PyTorch checkpoint"
    first = message.strip().splitlines()[0] if message.strip() else ""
    first = first.split(". ", 1)[0].rstrip(".")
    return first[:200] if len(first) > 3 else ""


def _route_mmengine_checkpoint_loading() -> None:
    from mmengine.runner.checkpoint import CheckpointLoader

    def load_from_local(filename: str, map_location: Any) -> Any:
        return load_checkpoint_file(filename, map_location)

    CheckpointLoader.register_scheme(prefixes="", loader=load_from_local, force=True)


def _atomic_local_writes() -> None:
    """mmengine writes checkpoints with open(path, 'wb'): a kill mid-write leaves a truncated file."""
    from mmengine.fileio.backends import LocalBackend

    def put(self: Any, obj: bytes, filepath: str | Path) -> None:
        owned_write_bytes(filepath, obj)

    LocalBackend.put = put  # type: ignore[method-assign]


def _quiet_known_warnings() -> None:
    """Import-time warnings of mmcv-lite/mmseg that say nothing actionable to a vocseg user."""
    import warnings

    for pattern in (".*MultiScaleDeformableAttention.*", ".*build_loss.*deprecated.*", ".*avg_non_ignore.*", ".*mmcv-lite.*"):
        warnings.filterwarnings("ignore", message=pattern)


def ensure_stack() -> None:
    """Apply every fix once, before mmseg is imported. Idempotent and cheap after the first call."""
    global _applied
    if _applied:
        return
    _quiet_known_warnings()
    if not compiled_mmcv_ops_available() and not isinstance(sys.modules.get("mmcv.ops"), types.ModuleType):
        _install_mmcv_ops_shim()
    _route_mmengine_checkpoint_loading()
    _atomic_local_writes()
    _applied = True


def weighted_cross_entropy(
    pred: Any,
    label: Any,
    weight: Any = None,
    class_weight: Any = None,
    reduction: str = "mean",
    avg_factor: Any = None,
    ignore_index: int = -100,
    avg_non_ignore: bool = False,
) -> Any:
    """mmseg's `cross_entropy` (models/losses/cross_entropy_loss.py, 1.2.2), except that with
    `class_weight` and the default mean the average is over the class weights of the labelled
    pixels only: sum_i w[y_i] * ce_i / sum_i w[y_i], i over pixels whose label is not
    `ignore_index` (F.cross_entropy(weight=w, ignore_index=...)'s mean). mmseg indexes `w` with the
    ignore value too (IndexError: index 255). Without class weights it is mmseg's function.

    pred: (N, C, H, W) logits; label: (N, H, W) class ids; class_weight: (C,) tensor.
    """
    from mmseg.models.losses import cross_entropy_loss as mmseg_ce
    from mmseg.models.losses.utils import weight_reduce_loss

    original = getattr(mmseg_ce, "vocseg_original_cross_entropy", mmseg_ce.cross_entropy)
    if class_weight is None or avg_factor is not None or reduction != "mean":
        return original(pred, label, weight=weight, class_weight=class_weight, reduction=reduction,
                        avg_factor=avg_factor, ignore_index=ignore_index, avg_non_ignore=avg_non_ignore)
    import torch
    import torch.nn.functional as F

    loss = F.cross_entropy(pred, label, weight=class_weight, reduction="none", ignore_index=ignore_index)
    labelled = label != ignore_index
    label_weights = torch.where(labelled, class_weight[torch.where(labelled, label, torch.zeros_like(label))], torch.zeros((), dtype=class_weight.dtype, device=class_weight.device))
    if weight is not None:
        weight = weight.float()
    return weight_reduce_loss(loss, weight=weight, reduction=reduction, avg_factor=label_weights.sum())


def fix_class_weight_loss() -> None:
    """Route mmseg's CrossEntropyLoss through `weighted_cross_entropy` (idempotent). Call before
    the model is built: CrossEntropyLoss picks its function when it is constructed."""
    ensure_stack()
    from mmseg.models import losses
    from mmseg.models.losses import cross_entropy_loss as mmseg_ce

    if getattr(mmseg_ce, "vocseg_original_cross_entropy", None) is not None:
        return
    mmseg_ce.vocseg_original_cross_entropy = mmseg_ce.cross_entropy  # type: ignore[attr-defined]
    mmseg_ce.cross_entropy = weighted_cross_entropy
    losses.cross_entropy = weighted_cross_entropy  # type: ignore[attr-defined]
