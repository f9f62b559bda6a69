"""Predict: segment images with a checkpoint and write pictures a person can look at.

Per image, in the output folder: `<stem>_overlay.png` (the photo with the classes painted over it
and a legend of the classes present with their share of the image) and `<stem>_label.png` (the
class map in the VOC palette, readable by any VOC tool).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vocseg.errors import VocsegError
from vocseg.voc import CLASSES, PALETTE

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


@dataclass
class Prediction:
    image: Path
    overlay: Path | None = None
    label: Path | None = None
    shares: dict[str, float] = field(default_factory=dict)  # class -> percent of the image
    error: str | None = None


def expand_inputs(inputs: Iterable[str]) -> list[Path]:
    """Files, folders (their images) and globs -> a sorted list of paths (missing ones kept, reported later)."""
    import glob

    paths: list[Path] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            paths.extend(sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES))
        elif any(ch in raw for ch in "*?["):
            paths.extend(sorted(Path(q) for q in glob.glob(raw, recursive=True) if Path(q).is_file()))
        else:
            paths.append(p)
    return paths


def read_rgb(path: Path) -> np.ndarray:
    """An image file as an RGB uint8 array, or a one-line error."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise VocsegError(f"{path} does not exist.", "Check the path.")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise VocsegError(f"{path} is not an image PIL can read.", "Pass JPEG/PNG images.") from None


def colourise(label_map: np.ndarray) -> np.ndarray:
    lut = np.array(PALETTE, dtype=np.uint8)
    return lut[label_map]


def class_shares(label_map: np.ndarray, classes: tuple[str, ...] = CLASSES) -> dict[str, float]:
    counts = np.bincount(label_map.ravel(), minlength=len(classes))[: len(classes)]
    total = max(1, int(counts.sum()))
    return {classes[i]: round(100.0 * int(counts[i]) / total, 2) for i in np.argsort(-counts, kind="stable") if counts[i] > 0}


def overlay_image(rgb: np.ndarray, label_map: np.ndarray, opacity: float, shares: dict[str, float]) -> Any:
    """The photo with non-background classes blended in, and a legend strip on the right."""
    from PIL import Image, ImageDraw

    colours = colourise(label_map).astype(np.float32)
    blend = rgb.astype(np.float32)
    painted = label_map > 0
    blend[painted] = (1 - opacity) * blend[painted] + opacity * colours[painted]
    photo = Image.fromarray(blend.clip(0, 255).astype(np.uint8))
    row = 16
    width = 170
    height = max(photo.height, row * (len(shares) + 1) + 8)
    canvas = Image.new("RGB", (photo.width + width, height), (255, 255, 255))
    canvas.paste(photo, (0, 0))
    draw = ImageDraw.Draw(canvas)
    x = photo.width + 6
    draw.text((x, 4), "class      share", fill=(0, 0, 0))
    for k, (name, share) in enumerate(shares.items(), start=1):
        y = 4 + k * row
        draw.rectangle([x, y + 2, x + 10, y + 12], fill=PALETTE[CLASSES.index(name)], outline=(0, 0, 0))
        draw.text((x + 16, y), f"{name:<12} {share:5.1f}%", fill=(0, 0, 0))
    return canvas


def save_label_png(label_map: np.ndarray, path: Path) -> None:
    from PIL import Image

    image = Image.fromarray(label_map.astype(np.uint8), mode="P")
    image.putpalette([c for rgb in PALETTE for c in rgb])
    image.save(path)


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise VocsegError("--device cuda was asked for, but this machine has no usable CUDA GPU.", "Use --device cpu (or auto).")
    return device


def load_model(target: Path, *, config: Path | None = None, device: str = "auto", mode: str = "whole") -> Any:
    """mmseg's model from a run folder or checkpoint, weights checked and loaded safely."""
    from vocseg.checkpoints import load_state_dict_checked, state_dict_of
    from vocseg.evaluation import load_run_config

    checkpoint, _, cfg = load_run_config(target, config)
    from mmengine.registry import init_default_scope

    init_default_scope("mmseg")
    import mmseg.models  # noqa: F401  (registers the model classes)
    from mmseg.registry import MODELS

    cfg.model.pretrained = None
    cfg.model.train_cfg = None
    cfg.model.backbone.pop("init_cfg", None)
    if mode == "slide":
        crop = tuple(cfg.get("crop_size", (512, 512)))
        cfg.model.test_cfg = dict(mode="slide", crop_size=crop, stride=(crop[0] * 2 // 3, crop[1] * 2 // 3))
    model = MODELS.build(cfg.model)
    ckpt = load_state_dict_checked(checkpoint, model)
    model.load_state_dict(state_dict_of(ckpt), strict=False)
    model.cfg = cfg
    model.dataset_meta = {"classes": CLASSES, "palette": PALETTE[: len(CLASSES)]}
    model.to(pick_device(device))
    model.eval()
    return model


def predict_one(model: Any, path: Path) -> np.ndarray:
    """The class map (H, W) of one image at its own resolution."""
    from mmseg.apis import inference_model

    rgb = read_rgb(path)
    with contextlib.redirect_stdout(None):
        result = inference_model(model, np.ascontiguousarray(rgb[:, :, ::-1]))  # mmseg expects BGR
    return result.pred_sem_seg.data[0].cpu().numpy().astype(np.uint8)


def predict(paths: list[Path], model: Any, out_dir: Path, *, opacity: float = 0.5) -> list[Prediction]:
    """Predict each image; a file that is not an image is reported in its Prediction and skipped."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[Prediction] = []
    for path in paths:
        item = Prediction(image=path)
        try:
            rgb = read_rgb(path)
            label_map = predict_one(model, path)
        except VocsegError as exc:
            item.error = exc.message
            results.append(item)
            continue
        item.shares = class_shares(label_map)
        item.label = out_dir / f"{path.stem}_label.png"
        item.overlay = out_dir / f"{path.stem}_overlay.png"
        save_label_png(label_map, item.label)
        overlay_image(rgb, label_map, opacity, item.shares).save(item.overlay)
        results.append(item)
    return results
