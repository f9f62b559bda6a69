"""`vocseg export`: a trained model as ONNX, checked against vocseg's own PyTorch inference.

What is exported: mmseg's whole-image inference of the segmentor (`EncoderDecoder.encode_decode`)
with the data preprocessor's normalisation in front of it, traced by torch's TorchScript-based
ONNX exporter (`torch.onnx.export(..., dynamo=False)`: offline, no onnxscript) at opset 17, with
the batch, height and width left dynamic.

- Input `image`: float32 (N, 3, H, W), RGB, pixel values 0-255. The mean/std subtraction (and the
  RGB -> BGR swap for a model trained on BGR) is inside the graph, so a caller only resizes.
- Output `logits`: float32 (N, C, H, W) for the run's C classes (21 for VOC), class scores before softmax at the input's size. Logits
  rather than the argmax map: mmseg resizes the *logits* to the image's own size and takes the
  argmax there (an argmax map resized afterwards moves class borders), and logits keep the
  confidence (softmax) that the argmax throws away. `vocseg.inference.onnx_model` does the resize
  and the argmax.
- The graph itself (and why UPerHead's pyramid pooling is rewritten for it):
  `vocseg.export.onnx_graph`.

After the export: `onnx.checker.check_model(full_check=True)`, then onnxruntime runs the graph on
the run's val images (or `--check-images`), through the same resize-in / resize-back path as
`vocseg predict --checkpoint model.onnx`, and the class maps are compared with vocseg's PyTorch
inference (`mmseg.apis.inference_model`, as `vocseg predict` with the checkpoint). Below 99.9% of
pixels in agreement nothing is written. The figures (pixel agreement, max |logit difference|) go
into the model's metadata and `MODEL.onnx.json` beside it.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vocseg.data.dataset import active_dataset
from vocseg.errors import VocsegError
from vocseg.export.onnx_graph import OPSET, exportable, trace_to_onnx, with_metadata
from vocseg.inference.onnx_model import FORMAT, INPUT_NAME, OUTPUT_NAME, OnnxSegmenter, missing_extra, open_session
from vocseg.runs.folders import RUNS_ROOT

MIN_AGREEMENT = 0.999  # share of pixels whose ONNX class must equal PyTorch's: float differences between the runtimes may flip near-ties, nothing more (docs/export.md)
DEFAULT_CHECK_COUNT = 10  # val images the export is checked on
SIDECAR_SUFFIX = ".json"  # MODEL.onnx -> MODEL.onnx.json
# Loading steps (mmcv's and vocseg's own, data/loading.py: the same pixels) and packing leave the pixels as they are.
PIPELINE_STEPS = {"LoadImageFromFile", "LoadImageFromNDArray", "LoadAnnotations", "VocsegLoadImageFromFile", "VocsegLoadAnnotations", "PackSegInputs", "Resize"}


@dataclass
class Parity:
    """How the ONNX model's output compares with vocseg's PyTorch inference on `images` images."""

    images: int
    pixels: int
    agreeing: int  # pixels where both give the same class
    max_logit_diff: float  # max |ONNX logit - PyTorch logit|, over classes and pixels, at the images' own size
    max_abs_logit: float  # max |PyTorch logit|: the scale the difference is measured against

    @property
    def agreement(self) -> float:
        return self.agreeing / self.pixels if self.pixels else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "pixels": self.pixels,
            "agreeing_pixels": self.agreeing,
            "pixel_agreement_percent": round(100.0 * self.agreement, 4),
            "max_logit_diff": float(f"{self.max_logit_diff:.3g}"),
            "max_abs_logit": round(self.max_abs_logit, 3),
            "reference": "vocseg's PyTorch inference (mmseg.apis.inference_model, whole image) on the same images",
        }


@dataclass
class ExportResult:
    path: Path
    sidecar: Path
    metadata: dict[str, Any]
    parity: Parity
    size_bytes: int
    replaced: bool


# ---------------------------------------------------------------- where it goes


def default_output(target: str | Path, checkpoint: Path, run: Path | None) -> Path:
    """RUN/<checkpoint stem>.onnx for a run folder or a checkpoint in one; beside a loose checkpoint;
    runs/export/<name>.onnx for `official:NAME`."""
    from vocseg.recipe import official

    ref = official.ModelRef(str(target))
    if ref.is_official:
        return RUNS_ROOT / "export" / f"{ref.official.key}.onnx"  # never the current folder itself
    return (run or checkpoint.parent) / f"{checkpoint.stem}.onnx"


def sidecar_of(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def check_output(path: Path, *, force: bool, given: bool = True) -> bool:
    """Refuse to write over a file vocseg did not write (unless `force`); return whether one is
    replaced. `given`: the path came with -o (else it is the default, RUN/<checkpoint>.onnx)."""
    if path.suffix.lower() != ".onnx":
        raise VocsegError(f"-o {path}: an ONNX model's file name ends in .onnx.", f"Pass -o {path.with_suffix('.onnx').name} (vocseg predict recognises models by it).")
    if path.is_dir():
        raise VocsegError(f"-o {path} is a folder.", "Pass a file name, e.g. -o model.onnx.")
    from vocseg.files import check_may_write, output_named_by

    for file in (path, sidecar_of(path)):  # the one rule: new, or vocseg's and unchanged, or --force on a user's regular file
        check_may_write(file, force=force, **output_named_by("-o" if given else None))
    return path.exists()


# ---------------------------------------------------------------- what the graph needs to know


def preprocessing_of(cfg: Any) -> dict[str, Any]:
    """Resize, normalisation and channel order of the config's whole-image inference, as the ONNX
    runner reproduces them; a one-line error for what it does not (other transforms, test-time padding)."""
    resize = None
    for step in cfg.get("test_pipeline", []):
        kind = step.get("type")
        if kind not in PIPELINE_STEPS:
            raise VocsegError(f"The config's test_pipeline has a {kind} step, which the ONNX runner does not reproduce.", "Export a model trained with a vocseg config (Resize only).")
        if kind == "Resize":
            if step.get("scale") is None or step.get("scale_factor") is not None:
                raise VocsegError("The config's test Resize uses scale_factor, not scale: not supported by the export.", "Export a model trained with a vocseg config.")
            resize = {"scale": [int(v) for v in step["scale"]], "keep_ratio": bool(step.get("keep_ratio", False)), "interpolation": step.get("interpolation", "bilinear")}
            if resize["interpolation"] != "bilinear":
                raise VocsegError(f"The config's test Resize uses {resize['interpolation']} interpolation; the ONNX runner resizes bilinearly.", "Export a model trained with a vocseg config.")
    pre = cfg.model.get("data_preprocessor", {}) or {}
    if (pre.get("test_cfg") or {}).get("size") or (pre.get("test_cfg") or {}).get("size_divisor"):
        raise VocsegError("The config pads test images (data_preprocessor.test_cfg): not supported by the export.", "Export a model trained with a vocseg config.")
    head = cfg.model.get("decode_head", {})
    if head.get("align_corners", False):
        raise VocsegError("The config's decode head uses align_corners=True; the ONNX runner resizes with align_corners=False.", "Export a model trained with a vocseg config.")
    model_sees_bgr = not pre.get("bgr_to_rgb", False) and not pre.get("rgb_to_bgr", False)
    return {
        "resize": resize,
        "mean": [float(v) for v in pre.get("mean", [0.0, 0.0, 0.0])],
        "std": [float(v) for v in pre.get("std", [1.0, 1.0, 1.0])],
        "model_channels": "BGR" if model_sees_bgr else "RGB",
    }


def describe(pre: dict[str, Any], *, num_classes: int, source: dict[str, Any], demo: bool = False) -> dict[str, Any]:
    """The metadata stored in the model (metadata_props["vocseg"]) and, with the parity figures, beside it.

    `demo`: the model was trained on vocseg's synthetic demo data (`vocseg.runs.provenance.trained_on_demo`);
    then `model_caveat` says so (`DEMO_CAVEAT`), and `vocseg predict` with the `.onnx` shows the same
    note as with the run (table title, overlay legend, predictions.json)."""
    from vocseg import __version__
    from vocseg.runs.provenance import DEMO_CAVEAT

    spec = active_dataset()  # the run's dataset: set when its model was loaded
    classes = list(spec.classes) if num_classes == spec.num_classes else [f"class_{i}" for i in range(num_classes)]
    return {
        "format": FORMAT,
        "written_by": f"vocseg {__version__} (vocseg export)",
        "input": {
            "name": INPUT_NAME,
            "shape": ["N", 3, "H", "W"],
            "dtype": "float32",
            "channels": "RGB",
            "values": "0-255 pixel values; do NOT normalise: the model subtracts mean and divides by std itself",
            "size": "any; resize the image as `resize` says (what the model was tested at)",
        },
        "normalisation": {"inside_model": True, "mean": pre["mean"], "std": pre["std"], "model_channels": pre["model_channels"], "order": "mean and std in model_channels order, as in the config"},
        "resize": pre["resize"]
        and {**pre["resize"], "rule": "mmcv Resize: keep_ratio -> imrescale (long side <= max(scale), short side <= min(scale), size rounded half up); OpenCV bilinear on the uint8 image"},
        "output": {
            "name": OUTPUT_NAME,
            "shape": ["N", num_classes, "H", "W"],
            "dtype": "float32",
            "meaning": "class scores before softmax at the input's size; resize them bilinearly (align_corners=False) to the image's own size, then argmax over classes",
        },
        "classes": classes,
        "palette": [list(c) for c in spec.full_palette[:num_classes]],
        "ignore_index": 255,
        "opset": OPSET,
        "inference": "whole image (mmseg EncoderDecoder.encode_decode)",
        "source": source,
        **({"model_caveat": DEMO_CAVEAT} if demo else {}),
    }


# ---------------------------------------------------------------- the check


def check_images_of(cfg: Any, explicit: list[str], count: int) -> list[Path]:
    """The images the export is checked on: `explicit` (files, folders, globs), else the first
    `count` of the config's test (val) list that exist."""
    from vocseg.data.images import FolderIndex
    from vocseg.data.lists import read_id_list
    from vocseg.inference.inputs import expand_inputs

    if explicit:
        paths = [i.path for i in expand_inputs(explicit) if i.path.is_file()]
        if not paths:
            raise VocsegError(f"--check-images {' '.join(explicit)}: no files there.", "Pass image files, a folder of images or a glob.")
        return paths[:count] if count else paths
    dataset = cfg.get("test_dataloader", cfg.get("val_dataloader", {})).get("dataset", {})
    if dataset.get("type") == "ConcatDataset":
        dataset = dataset["datasets"][0]
    root = Path(str(dataset.get("data_root", ""))).expanduser()
    images = root / str((dataset.get("data_prefix") or {}).get("img_path", "JPEGImages"))
    suffix = dataset.get("img_suffix", ".jpg")
    hint = "Pass a few photos with --check-images DIR (or files, or a glob)."
    ann = root / str(dataset.get("ann_file", ""))
    if not ann.is_file():
        raise VocsegError(f"No images to check the export on: the config's val list {ann} is not here.", hint)
    # The val list and its images as the loader finds them (blank lines, BOM, CRLF, `.JPG`).
    index = FolderIndex(images)
    found = [p for i in read_id_list(ann) if (p := index.find(i, (str(suffix).lower(),))) is not None][: count or None]
    if not found:
        raise VocsegError(f"No images to check the export on: none of the val images named in the config are in {images}.", hint)
    return found


def compare(model: Any, segmenter: OnnxSegmenter, images: list[Path]) -> tuple[Parity, list[str]]:
    """Class maps and logits of PyTorch (vocseg predict's path) and ONNX on each image; unreadable images are skipped and named."""
    import torch
    from mmseg.apis import inference_model

    from vocseg.inference.predict import read_rgb

    pixels = agreeing = used = 0
    max_diff = max_abs = 0.0
    skipped: list[str] = []
    for path in images:
        try:
            rgb = read_rgb(path)
        except VocsegError as exc:
            skipped.append(exc.message)
            continue
        with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
            result = inference_model(model, np.ascontiguousarray(rgb[:, :, ::-1]))  # mmseg expects BGR, as vocseg predict
        ref_logits = result.seg_logits.data.float().cpu().numpy()
        ref_label = result.pred_sem_seg.data[0].cpu().numpy()
        logits = segmenter.logits(rgb)
        pixels += ref_label.size
        agreeing += int((logits.argmax(axis=0) == ref_label).sum())
        max_diff = max(max_diff, float(np.abs(logits - ref_logits).max()))
        max_abs = max(max_abs, float(np.abs(ref_logits).max()))
        used += 1
    if not used:
        raise VocsegError(f"None of the {len(images)} check images could be read ({skipped[0] if skipped else ''}).", "Pass readable photos with --check-images.")
    return Parity(used, pixels, agreeing, max_diff, max_abs), skipped


# ---------------------------------------------------------------- the command's work


def export_model(
    target: str | Path,
    *,
    output: Path | None = None,
    config: Path | None = None,
    force: bool = False,
    check_images: list[str] | None = None,
    check_count: int = DEFAULT_CHECK_COUNT,
) -> tuple[ExportResult, list[str]]:
    """Export `target` (a run folder, a checkpoint, `official:NAME`) to ONNX, check it, write it and
    its JSON; return the result and the notes (skipped check images). Nothing is written unless the
    check passes; the files are written atomically."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise missing_extra("onnx", "vocseg export") from None
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise missing_extra("onnxruntime", "vocseg export (its check)") from None
    from vocseg.data.download import hash_of
    from vocseg.files import owned_write_bytes, owned_write_text
    from vocseg.inference.segmenter import load_model
    from vocseg.runs.run_config import load_run_config

    checkpoint, run, cfg = load_run_config(target, config)
    path = (output or default_output(target, checkpoint, run)).expanduser()
    replaced = check_output(path, force=force, given=output is not None)
    pre = preprocessing_of(cfg)
    images = check_images_of(cfg, check_images or [], check_count)

    model = load_model(target, config=config, device="cpu", mode="whole").model  # the mmseg EncoderDecoder
    from mmengine.config import ConfigDict

    model.test_cfg = ConfigDict(mode="whole")  # the graph is whole-image inference; so is its reference
    num_classes = int(model.decode_head.num_classes)
    source = {"target": str(target), "checkpoint": str(checkpoint), "checkpoint_sha256": hash_of(checkpoint, "sha256"), "config": str(config or (run / "config.py" if run else ""))}
    from vocseg.runs.provenance import trained_on_demo

    metadata = describe(pre, num_classes=num_classes, source=source, demo=trained_on_demo(run, cfg))

    scale = pre["resize"]["scale"] if pre["resize"] else [512, 512]
    sample_hw = (min(scale), min(scale)) if pre["resize"] else (512, 512)
    onnx_bytes = with_metadata(trace_to_onnx(exportable(model, pre), sample_hw), metadata)
    session = open_session(onnx_bytes, providers=["CPUExecutionProvider"])
    segmenter = OnnxSegmenter(path=path, session=session, metadata=metadata)
    parity, notes = compare(model, segmenter, images)
    if parity.agreement < MIN_AGREEMENT:
        raise VocsegError(
            f"The ONNX model agrees with PyTorch on only {100 * parity.agreement:.3f}% of the pixels of {parity.images} images "
            f"(max logit difference {parity.max_logit_diff:.3g}; needed: {100 * MIN_AGREEMENT:.1f}%): nothing written.",
            "Report this as a vocseg bug, with the config.",
        )
    metadata = {**metadata, "parity": parity.to_json()}
    final = with_metadata(onnx_bytes, metadata)
    try:
        owned_write_bytes(path, final, force=force)
        owned_write_text(sidecar_of(path), force=force, text=json.dumps({**metadata, "file": path.name, "size_bytes": len(final)}, indent=1) + "\n")
    except OSError as exc:
        raise VocsegError(f"Could not write {path}: {exc.strerror or exc}.", "Pass -o on a writable disk with free space.") from None
    return ExportResult(path, sidecar_of(path), metadata, parity, len(final), replaced), notes
