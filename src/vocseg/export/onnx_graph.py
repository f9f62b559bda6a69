"""The ONNX graph of `vocseg export`: mmseg's whole-image segmentor with the normalisation in
front, traced by torch's TorchScript-based exporter (`torch.onnx.export(..., dynamo=False)`:
offline, no onnxscript) at opset 17 with dynamic batch, height and width.

UPerHead's pyramid pooling (`nn.AdaptiveAvgPool2d` at 1, 2, 3, 6 bins) has no ONNX form for a
dynamic input size: the exporter stops with "Unsupported: ONNX export of operator
adaptive_avg_pool2d, input size not accessible" (mmdeploy rewrites it for the same reason). In
the exported copy each such pool is the same average written as two matrix products,
`P_rows @ x @ P_cols^T`, row i of `P` averaging PyTorch's adaptive-pooling bin i (start
floor(i*H/n), end ceil((i+1)*H/n)), built from the traced size: equal up to float rounding. The
model that is trained and evaluated is not changed. Heavy imports (torch, onnx) inside the functions.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from typing import Any

from vocseg.errors import VocsegError
from vocseg.inference.onnx_model import INPUT_NAME, METADATA_KEY, OUTPUT_NAME

OPSET = 17  # ONNX opset: onnxruntime >= 1.12, TensorRT >= 8.6, OpenVINO 2022+ read it


def exportable(segmentor: Any, pre: dict[str, Any]) -> Any:
    """A copy of the mmseg segmentor with the normalisation in front and ONNX-friendly pooling (see the module docs)."""
    import copy

    import torch
    from torch import nn

    def pool_matrix(size: Any, bins: int, like: torch.Tensor) -> torch.Tensor:
        """(bins, size): row i averages PyTorch's adaptive-pooling bin i. `size` is traced when exporting."""
        j = torch.arange(size, device=like.device).unsqueeze(0)
        i = torch.arange(bins, device=like.device).unsqueeze(1)
        start = torch.div(i * size, bins, rounding_mode="floor")
        end = torch.div((i + 1) * size + bins - 1, bins, rounding_mode="floor")
        mask = ((j >= start) & (j < end)).to(like.dtype)
        return mask / mask.sum(dim=1, keepdim=True)

    class MatrixAdaptiveAvgPool2d(nn.Module):
        """`nn.AdaptiveAvgPool2d(output_size)` as matrix products: exportable with a dynamic input size."""

        def __init__(self, output_size: Any) -> None:
            super().__init__()
            self.output_size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            rows, cols = self.output_size
            if rows is not None:
                x = pool_matrix(x.shape[2], rows, x) @ x
            if cols is not None:
                x = x @ pool_matrix(x.shape[3], cols, x).transpose(0, 1)
            return x

    class ExportedSegmentor(nn.Module):
        """RGB 0-255 (N, 3, H, W) -> logits (N, C, H, W), mmseg's whole-image `encode_decode`."""

        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model
            self.register_buffer("mean", torch.tensor(pre["mean"], dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(pre["std"], dtype=torch.float32).view(1, 3, 1, 1))
            self.to_bgr = pre["model_channels"] == "BGR"

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            if self.to_bgr:  # a model trained on BGR: mean and std are in its order (as in mmseg's preprocessor)
                image = image[:, [2, 1, 0]]
            x = (image - self.mean) / self.std
            return self.model.encode_decode(x, [dict(img_shape=x.shape[2:])])

    model = copy.deepcopy(segmentor).cpu().eval()
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.AdaptiveAvgPool2d):
                setattr(module, name, MatrixAdaptiveAvgPool2d(child.output_size))
    return ExportedSegmentor(model).eval()


def trace_to_onnx(module: Any, sample_hw: tuple[int, int]) -> bytes:
    """torch.onnx.export (TorchScript-based, dynamo=False) of `module` into bytes; dynamic N, H, W."""
    import torch

    buffer = io.BytesIO()
    sample = torch.zeros(1, 3, *sample_hw)
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # the exporter's deprecation note and mmseg's tracer warnings
        torch.onnx.export(
            module,
            (sample,),
            buffer,
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
            opset_version=OPSET,
            do_constant_folding=True,
        )
    return buffer.getvalue()


def with_metadata(onnx_bytes: bytes, metadata: dict[str, Any]) -> bytes:
    """The model with `metadata` as JSON in metadata_props["vocseg"], checked by onnx.checker (full check)."""
    import onnx

    proto = onnx.load_from_string(onnx_bytes)
    for prop in [p for p in proto.metadata_props if p.key == METADATA_KEY]:
        proto.metadata_props.remove(prop)
    onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps(metadata, separators=(",", ":"))})
    proto.producer_name = "vocseg"
    proto.doc_string = "Semantic segmentation (PASCAL VOC 2012) exported by vocseg: input 'image' RGB 0-255 NCHW float32, output 'logits'. See the 'vocseg' metadata."
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0]
        raise VocsegError(f"onnx.checker rejects the exported model: {first}.", "Report this as a vocseg bug, with the config.") from None
    return proto.SerializeToString()
