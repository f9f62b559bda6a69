"""Run a model written by `vocseg export` with onnxruntime: no torch, no mmseg on this path.

The ONNX graph (see `vocseg.export.onnx_export`) takes `image`, float32 (N, 3, H, W), RGB pixel values
0-255 (not normalised: mean and std are inside the graph), at any H and W, and returns `logits`,
float32 (N, C, H, W): class scores before softmax at the size of its input. What happens around it
is mmseg's whole-image inference, step for step, as `vocseg predict` runs it in PyTorch:

1. the image is resized as the config's test pipeline says (mmcv's `Resize`: `imrescale` with
   keep_ratio, else `imresize`; OpenCV bilinear on the uint8 image);
2. the graph gives the logits at that size;
3. they are resized back to the image's own size (bilinear, align_corners=False, as mmseg's
   `EncoderDecoder.postprocess_result`) and the class map is their argmax.

Everything the runner needs is in the model's metadata (`metadata_props["vocseg"]`, JSON), so the
`.onnx` file is enough; `vocseg export` also writes that JSON beside it. A `.onnx` that lacks it
(not written by vocseg) is refused with one line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vocseg.errors import VocsegError

METADATA_KEY = "vocseg"  # the metadata_props entry holding the JSON description
FORMAT = "vocseg-onnx-segmentation/1"
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
EXTRA = "export"  # pip install 'vocseg[export]'


def missing_extra(package: str, what: str) -> VocsegError:
    return VocsegError(f"{what} needs the {package} package, which is not installed.", f"Install it with: pip install 'vocseg[{EXTRA}]'")


def rescale_size(width: int, height: int, scale: tuple[int, int]) -> tuple[int, int]:
    """(width, height) after mmcv's `imrescale(img, scale)`: the largest size, aspect ratio kept,
    whose long side fits max(scale) and short side fits min(scale); rounded half up.

    Source: mmcv 2.x `mmcv/image/geometric.py` (`rescale_size` and `_scale_size`).
    """
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    # mmcv gives 0 for a side of an extreme aspect ratio (4000x3) and OpenCV then fails: keep 1 pixel
    return max(1, int(width * float(factor) + 0.5)), max(1, int(height * float(factor) + 0.5))


def network_size(width: int, height: int, resize: dict[str, Any] | None) -> tuple[int, int]:
    """(width, height) the model sees for an image of (width, height), as the test pipeline's Resize."""
    if not resize:
        return width, height
    scale = (int(resize["scale"][0]), int(resize["scale"][1]))
    if resize.get("keep_ratio", True):
        return rescale_size(width, height, scale)
    return scale  # mmcv Resize without keep_ratio: scale is (width, height)


def resize_bilinear(array: np.ndarray, width: int, height: int) -> np.ndarray:
    """OpenCV bilinear resize of an (H, W, C) array (uint8 image or float32 logits).

    For uint8 this is exactly mmcv's `imresize(..., 'bilinear', backend='cv2')`; for float32 it is
    torch's `interpolate(mode='bilinear', align_corners=False)` up to rounding (both sample at
    pixel centres, no antialiasing).
    """
    import cv2

    if array.shape[1] == width and array.shape[0] == height:
        return array
    channels = array.shape[2]
    if channels <= 512:  # OpenCV's channel limit (CV_CN_MAX)
        out = cv2.resize(array, (width, height), interpolation=cv2.INTER_LINEAR)
        return out.reshape(height, width, channels)
    return np.concatenate([resize_bilinear(array[:, :, i : i + 512], width, height) for i in range(0, channels, 512)], axis=2)


@dataclass
class OnnxSegmenter:
    """An exported vocseg model in an onnxruntime session; `predict_array` as `vocseg predict` uses it."""

    path: Path
    session: Any  # onnxruntime.InferenceSession
    metadata: dict[str, Any]
    mode: str = "whole"  # the graph is whole-image inference (vocseg.inference.segmenter.Segmenter)
    run: Path | None = None  # no run folder: predict writes to runs/predict*/ by default

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.metadata["classes"])

    @property
    def resize(self) -> dict[str, Any] | None:
        return self.metadata.get("resize")

    def logits(self, rgb: np.ndarray) -> np.ndarray:
        """Class scores (C, H, W), float32, of an RGB uint8 image (H, W, 3) at its own size."""
        height, width = rgb.shape[:2]
        net_w, net_h = network_size(width, height, self.resize)
        resized = resize_bilinear(np.ascontiguousarray(rgb), net_w, net_h)
        batch = np.ascontiguousarray(resized.transpose(2, 0, 1)[None], dtype=np.float32)
        (scores,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})
        back = resize_bilinear(np.ascontiguousarray(scores[0].transpose(1, 2, 0)), width, height)
        return back.transpose(2, 0, 1)

    def predict_array(self, rgb: np.ndarray) -> np.ndarray:
        """The class map (H, W), uint8, of an RGB uint8 image at its own resolution."""
        return self.logits(rgb).argmax(axis=0).astype(np.uint8)

    def predict_batch(self, images: Any) -> list[np.ndarray]:
        """Class maps (H, W) uint8 of RGB uint8 images (H, W, 3), each at its own size (the `Segmenter` interface)."""
        return [self.predict_array(rgb) for rgb in images]


def providers_for(device: str) -> list[str]:
    """onnxruntime execution providers for `--device` (auto: CUDA when onnxruntime has it, else CPU)."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "auto":
        return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in available:
            raise VocsegError(
                f"--device {device}: this onnxruntime has no CUDA provider (it has {', '.join(available)}).",
                "Use --device cpu, or install onnxruntime-gpu.",
            )
        return ["CUDAExecutionProvider"]
    raise VocsegError(f"Unknown --device {device!r}.", "Use auto, cpu, cuda or cuda:N.")


def session_options(threads: int | None = None) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: onnxruntime's warnings are not the user's business
    if threads:
        options.intra_op_num_threads = threads
    return options


def parse_metadata(raw: dict[str, str], source: str) -> dict[str, Any]:
    """The vocseg description from an ONNX model's metadata_props (a str -> str map)."""
    text = raw.get(METADATA_KEY)
    if text is None:
        raise VocsegError(
            f"{source} was not written by `vocseg export` (no '{METADATA_KEY}' metadata): its input size, normalisation and classes are unknown.",
            "Export the model with `vocseg export RUN -o model.onnx`, or pass the run folder or .pth checkpoint.",
        )
    try:
        meta = json.loads(text)
    except ValueError:
        raise VocsegError(f"{source}: its '{METADATA_KEY}' metadata is not JSON.", "Export it again with `vocseg export`.") from None
    if meta.get("format") != FORMAT:
        raise VocsegError(f"{source} is a {meta.get('format')!r} export; this vocseg reads {FORMAT!r}.", "Export it again with this vocseg.")
    return meta


def open_session(model: str | Path | bytes, *, providers: list[str], threads: int | None = None) -> Any:
    """An onnxruntime session on a file or serialized bytes; one-line errors for missing packages and bad files."""
    try:
        import onnxruntime
    except ImportError:
        raise missing_extra("onnxruntime", "Running an ONNX model") from None
    source = "the exported model" if isinstance(model, bytes) else str(model)
    try:
        return onnxruntime.InferenceSession(model if isinstance(model, bytes) else str(model), sess_options=session_options(threads), providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/InvalidProtobuf types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise VocsegError(f"onnxruntime cannot load {source}: {first}.", "Pass a model written by `vocseg export` (a damaged or truncated file: export it again).") from None


def load_onnx_model(path: str | Path, *, device: str = "auto", mode: str = "whole") -> OnnxSegmenter:
    """A `vocseg export` ONNX file, ready for `predict_array`. Errors: missing file, extra not
    installed, not a vocseg export, `--mode slide` (the graph runs whole images)."""
    path = Path(path).expanduser()
    if mode != "whole":
        raise VocsegError(f"--mode {mode}: an exported ONNX model runs whole images only.", "Drop --mode, or predict with the run folder or .pth checkpoint.")
    if not path.is_file():
        raise VocsegError(f"{path} does not exist." if not path.exists() else f"{path} is not a file.", "Pass the .onnx file written by `vocseg export`.")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise missing_extra("onnxruntime", f"Predicting with {path.name}") from None
    session = open_session(path, providers=providers_for(device))
    meta = parse_metadata(dict(session.get_modelmeta().custom_metadata_map), str(path))
    from vocseg.data.dataset import spec_from_meta, use_dataset

    use_dataset(spec_from_meta(meta["classes"], meta.get("palette")))  # overlays and legends in the model's own classes
    return OnnxSegmenter(path=path, session=session, metadata=meta)


__all__ = ["FORMAT", "INPUT_NAME", "METADATA_KEY", "OUTPUT_NAME", "OnnxSegmenter", "load_onnx_model", "network_size", "rescale_size"]
