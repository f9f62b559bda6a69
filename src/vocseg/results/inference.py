"""Predict: segment images with a checkpoint and write pictures a person can look at.

Per image, in the output folder: `<stem>_overlay.png` (the photo with the classes painted over it
and a legend of the classes present with their share of the image) and `<stem>_label.png` (the
class map in the VOC palette, readable by any VOC tool). Two inputs with the same stem get their
parent folder's name in front (`<parent>_<stem>_...`). `predictions.json` lists every input: what
was written, the class shares, or why it was skipped.
"""

from __future__ import annotations

import contextlib
import glob
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vocseg.data.voc import CLASSES, PALETTE
from vocseg.errors import VocsegError
from vocseg.results.visualize import class_shares, overlay_image, save_label_png

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
REPORT_NAME = "predictions.json"


@dataclass
class Prediction:
    image: Path
    overlay: Path | None = None
    label: Path | None = None
    shares: dict[str, float] = field(default_factory=dict)  # class -> percent of the image
    size: tuple[int, int] | None = None  # width, height
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "image": str(self.image),
            "overlay": str(self.overlay) if self.overlay else None,
            "label": str(self.label) if self.label else None,
            "size": list(self.size) if self.size else None,
            "shares": self.shares,
            "error": self.error,
        }


def expand_inputs(inputs: Iterable[str]) -> list[Path]:
    """Files, folders (their files, not hidden) and globs -> paths in the given order, each once.

    Paths that do not exist and files that are not images stay in the list: they are reported
    and skipped, one line each, while the rest is processed.
    """
    paths: list[Path] = []
    for raw in inputs:
        p = Path(raw).expanduser()
        if p.is_dir():
            paths.extend(sorted(q for q in p.iterdir() if q.is_file() and not q.name.startswith(".")))
        elif not p.exists() and any(ch in raw for ch in "*?["):
            matches = sorted(Path(q) for q in glob.glob(str(p), recursive=True) if Path(q).is_file())
            paths.extend(matches or [p])  # a glob matching nothing is reported like a missing file
        else:
            paths.append(p)
    seen: set[Path] = set()
    unique = []
    for p in paths:
        key = p.resolve() if p.exists() else p
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def output_stems(paths: list[Path]) -> list[str]:
    """Predictable, distinct output names: the file stem; `<parent>_<stem>` where stems collide; then `-N`."""
    counts: dict[str, int] = {}
    for p in paths:
        counts[p.stem] = counts.get(p.stem, 0) + 1
    stems, used = [], set()
    for p in paths:
        stem = p.stem if counts[p.stem] == 1 else f"{p.parent.name or 'root'}_{p.stem}"
        candidate, n = stem, 2
        while candidate in used:
            candidate = f"{stem}-{n}"
            n += 1
        used.add(candidate)
        stems.append(candidate)
    return stems


def read_rgb(path: Path) -> np.ndarray:
    """An image file as an RGB uint8 array (EXIF rotation applied, as viewers show it), or a one-line error."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not path.exists():
        what = "matches no file" if any(ch in str(path) for ch in "*?[") else "does not exist"
        raise VocsegError(f"{path} {what}.", "Check the path.")
    if not path.is_file():
        raise VocsegError(f"{path} is not a file.", "Pass image files, folders or globs.")
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            rgb = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        kind = "not an image" if path.suffix.lower() not in IMAGE_SUFFIXES else "a damaged or unreadable image"
        raise VocsegError(f"{path} is {kind}.", "Pass JPEG/PNG images.") from None
    if rgb.ndim != 3 or min(rgb.shape[:2]) < 2:
        raise VocsegError(f"{path} is too small to segment ({rgb.shape[1]}x{rgb.shape[0]}).", "Pass a real photo.")
    return rgb


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise VocsegError("--device cuda was asked for, but this machine has no usable CUDA GPU.", "Use --device cpu (or auto).")
    if device != "cpu" and not device.startswith("cuda"):
        raise VocsegError(f"Unknown --device {device!r}.", "Use auto, cpu, cuda or cuda:N.")
    return device


def load_model(target: str | Path, *, config: Path | None = None, device: str = "auto", mode: str = "whole") -> Any:
    """mmseg's model from a run folder, a checkpoint or `official:NAME`, weights checked and loaded safely.

    A `.onnx` file (from `vocseg export`) gives an onnxruntime model instead: no torch, no mmseg.
    """
    from vocseg.results import onnx_model

    if onnx_model.is_onnx_path(target):
        if config is not None:
            raise VocsegError("--config does not apply to an exported .onnx model (its preprocessing is in its metadata).", "Drop --config.")
        return onnx_model.load_onnx_model(target, device=device, mode=mode)
    from vocseg.results.run_config import load_run_config
    from vocseg.stack.checkpoints import load_state_dict_checked, state_dict_of

    if mode not in ("whole", "slide"):
        raise VocsegError(f"Unknown --mode {mode!r}.", "Use whole or slide.")
    target_device = pick_device(device)
    checkpoint, _, cfg = load_run_config(target, config)
    from mmengine.registry import init_default_scope

    init_default_scope("mmseg")
    import mmseg.models  # noqa: F401  (registers the model classes)
    from mmseg.registry import MODELS

    cfg.model.pretrained = None
    cfg.model.train_cfg = None
    cfg.model.backbone.pop("init_cfg", None)
    for key in ("backbone", "decode_head", "auxiliary_head"):
        part = cfg.model.get(key)
        if part is not None and part.get("norm_cfg", {}).get("type") == "SyncBN":
            part.norm_cfg = dict(type="BN", requires_grad=True)  # one process: SyncBN has nothing to sync
    if mode == "slide":
        crop = tuple(cfg.get("crop_size", (512, 512)))
        cfg.model.test_cfg = dict(mode="slide", crop_size=crop, stride=(crop[0] * 2 // 3, crop[1] * 2 // 3))
    model = MODELS.build(cfg.model)
    ckpt = load_state_dict_checked(checkpoint, model)
    model.load_state_dict(state_dict_of(ckpt), strict=False)
    model.cfg = cfg
    model.dataset_meta = {"classes": CLASSES, "palette": PALETTE[: len(CLASSES)]}
    model.to(target_device)
    model.eval()
    return model


def predict_array(model: Any, rgb: np.ndarray) -> np.ndarray:
    """The class map (H, W) of an RGB image at its own resolution."""
    from vocseg.results.onnx_model import OnnxSegmenter

    if isinstance(model, OnnxSegmenter):  # `vocseg export`'s model, in onnxruntime
        return model.predict_array(rgb)
    from mmseg.apis import inference_model

    with contextlib.redirect_stdout(None):
        result = inference_model(model, np.ascontiguousarray(rgb[:, :, ::-1]))  # mmseg expects BGR
    return result.pred_sem_seg.data[0].cpu().numpy().astype(np.uint8)


def predict_one(model: Any, path: Path) -> np.ndarray:
    return predict_array(model, read_rgb(path))


def predict(paths: list[Path], model: Any, out_dir: Path, *, opacity: float = 0.5) -> list[Prediction]:
    """Predict each image; an input that cannot be read is reported in its Prediction and skipped."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[Prediction] = []
    for path, stem in zip(paths, output_stems(paths)):
        item = Prediction(image=path)
        try:
            rgb = read_rgb(path)
        except VocsegError as exc:
            item.error = exc.message
            results.append(item)
            continue
        label_map = predict_array(model, rgb)
        item.size = (rgb.shape[1], rgb.shape[0])
        item.shares = class_shares(label_map)
        item.label = out_dir / f"{stem}_label.png"
        item.overlay = out_dir / f"{stem}_overlay.png"
        save_label_png(label_map, item.label)
        overlay_image(rgb, label_map, opacity, item.shares).save(item.overlay)
        results.append(item)
    return results


def write_report(results: list[Prediction], out_dir: Path, *, checkpoint: str, mode: str) -> Path:
    from vocseg.files import write_text_atomic

    path = out_dir / REPORT_NAME
    data = {"checkpoint": checkpoint, "mode": mode, "images": [r.to_json() for r in results]}
    write_text_atomic(path, json.dumps(data, indent=1) + "\n")
    return path
