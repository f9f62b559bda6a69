"""A model that turns RGB arrays into class maps: whole-image and sliding-window inference at bounded memory.

`load_model` returns a `Segmenter`: anything with `predict_batch(images) -> label maps`, a `mode`
and the `run` folder it came from. `vocseg predict` (images and video) only uses that interface,
so another back end (an exported ONNX model) plugs in with its own class.

Whole mode is mmseg's `inference_model` made explicit: the config's test pipeline (`Resize` to the
test scale, keep ratio), the model's data preprocessor and `model.inference`, then the logits are
cropped of padding, resized bilinearly to the image size and arg-maxed, as mmseg's
`postprocess_result` does, but in row chunks (`logits_to_label`), so the full-size logits
(classes x H x W float32: 5.4 GB for an 8000 x 8000 image) never exist at once. Images whose
short side the test resize would shrink below `MIN_SIDE` pixels (4000 x 2 -> 384 x 0 with the
tiny model: OpenCV refuses) are resized by vocseg, padded by edge replication to `MIN_SIDE`,
segmented, cropped and resized back (nearest).

Slide mode runs the model on crop-size windows of the image at its own resolution (no
full-image resize first, unlike mmseg's `slide_inference` after the test pipeline), stride 2/3
of the crop, with mmseg's window arithmetic. Logits are summed in a band of one window's height
across the image and rows are arg-maxed as soon as no later window covers them, so memory is the
image, its label map and classes x crop height x width floats.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vocseg.errors import VocsegError

MIN_SIDE = 32  # pixels: the output stride of the ResNet backbones; thinner inputs are padded to it
LOGIT_CHUNK_ELEMENTS = 1 << 24  # floats per chunk of full-resolution logits (64 MB)
WINDOW_BATCH = 8  # slide windows per forward pass


class Segmenter(Protocol):
    """What `vocseg predict` needs of a model."""

    mode: str  # "whole" or "slide"
    run: Path | None  # the run folder it was loaded from (outputs go there by default), else None

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Class maps (H, W) uint8 for RGB images (H, W, 3) uint8, each at its own size."""
        ...


def predict_array(segmenter: Segmenter, rgb: np.ndarray) -> np.ndarray:
    """The class map (H, W) uint8 of one RGB image (H, W, 3) uint8, at its own resolution."""
    return segmenter.predict_batch([rgb])[0]


def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise VocsegError("--device cuda was asked for, but this machine has no usable CUDA GPU.", "Use --device cpu (or auto).")
    if device != "cpu" and not device.startswith("cuda"):
        raise VocsegError(f"Unknown --device {device!r}.", "Use auto, cpu, cuda or cuda:N.")
    return device


def load_model(target: str | Path, *, config: Path | None = None, device: str = "auto", mode: str = "whole") -> MMSegSegmenter:
    """mmseg's model from a run folder, a checkpoint or `official:NAME`, weights checked and loaded safely."""
    from vocseg.runs.run_config import load_run_config
    from vocseg.stack.checkpoints import load_state_dict_checked, state_dict_of

    if mode not in ("whole", "slide"):
        raise VocsegError(f"Unknown --mode {mode!r}.", "Use whole or slide.")
    target_device = pick_device(device)
    checkpoint, run, cfg = load_run_config(target, config)
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
    test_cfg = cfg.model.get("test_cfg") or {}
    crop = tuple(test_cfg.get("crop_size") or cfg.get("crop_size", (512, 512)))
    cfg.model.test_cfg = dict(mode="whole")  # vocseg slides itself, at the image's own resolution
    model = MODELS.build(cfg.model)
    ckpt = load_state_dict_checked(checkpoint, model)
    model.load_state_dict(state_dict_of(ckpt), strict=False)
    model.cfg = cfg
    from vocseg.data.dataset import dataset_of_config, use_dataset

    spec = dataset_of_config(cfg)  # the run's classes (its config's metainfo), VOC's for VOC runs
    use_dataset(spec)  # overlays, legends and label PNGs of this process use its names and colours
    model.dataset_meta = {"classes": spec.classes, "palette": list(spec.palette)}
    model.to(target_device)
    model.eval()
    stride = (max(1, crop[0] * 2 // 3), max(1, crop[1] * 2 // 3))
    return MMSegSegmenter(model, mode, run, checkpoint, _test_pipeline(cfg), _keep_ratio_scale(cfg), (int(crop[0]), int(crop[1])), stride)


@dataclass
class MMSegSegmenter:
    """An mmseg `EncoderDecoder` in eval mode behind the `Segmenter` interface."""

    model: Any
    mode: str
    run: Path | None
    checkpoint: Path
    pipeline: Any  # mmengine Compose of the test pipeline, loading from an array
    resize_scale: tuple[int, int] | None  # the test pipeline's keep-ratio Resize scale, if it has one
    crop: tuple[int, int]  # (h, w) of a slide window
    stride: tuple[int, int]  # (h, w)

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        import torch

        with torch.no_grad():
            if self.mode == "slide":
                return [self.slide(rgb) for rgb in images]
            return self.whole(images)

    def whole(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """mmseg's whole-image inference; images of one size share a forward pass."""
        prepared = []
        for rgb in images:
            work, content = self.fit(rgb)
            data = self.pipeline(dict(img=np.ascontiguousarray(work[:, :, ::-1])))  # mmseg expects BGR
            prepared.append((data, rgb.shape[:2], content))
        labels: list[np.ndarray | None] = [None] * len(images)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (data, _, _) in enumerate(prepared):
            groups.setdefault(tuple(data["inputs"].shape), []).append(i)
        align = bool(getattr(self.model, "align_corners", False))
        for indices in groups.values():
            batch = self.model.data_preprocessor(
                {"inputs": [prepared[i][0]["inputs"] for i in indices], "data_samples": [prepared[i][0]["data_samples"] for i in indices]}, False
            )
            metas = [sample.metainfo for sample in batch["data_samples"]]
            logits = self.model.inference(batch["inputs"], metas)
            for j, i in enumerate(indices):
                _, (h, w), content = prepared[i]
                meta = metas[j]
                left, right, top, bottom = meta.get("img_padding_size", meta.get("padding_size", [0, 0, 0, 0]))
                one = logits[j, :, top : logits.shape[2] - bottom, left : logits.shape[3] - right]
                ori = tuple(int(v) for v in meta["ori_shape"][:2])
                if content is None:
                    labels[i] = logits_to_label(one, (h, w), align)
                else:  # a thin image, resized and padded by `fit`: crop the padding, back to its size
                    import cv2

                    small = logits_to_label(one, ori, align)[: content[0], : content[1]]
                    labels[i] = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
        return [label for label in labels if label is not None]

    def fit(self, rgb: np.ndarray) -> tuple[np.ndarray, tuple[int, int] | None]:
        """The image the pipeline can take: itself, or (when the test resize would leave a side below
        MIN_SIDE) resized as the pipeline would and edge-padded to MIN_SIDE, with the (h, w) of its content."""
        h, w = rgb.shape[:2]
        if self.resize_scale is not None:
            factor = min(max(self.resize_scale) / max(h, w), min(self.resize_scale) / min(h, w))
            new_w, new_h = int(w * factor + 0.5), int(h * factor + 0.5)
        else:
            new_w, new_h = w, h
        if min(new_w, new_h) >= MIN_SIDE:
            return rgb, None
        import cv2

        new_w, new_h = max(new_w, 1), max(new_h, 1)
        small = rgb if (new_w, new_h) == (w, h) else cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        if small.ndim == 2:
            small = small[:, :, None]
        padded = np.pad(small, ((0, max(0, MIN_SIDE - new_h)), (0, max(0, MIN_SIDE - new_w)), (0, 0)), mode="edge")
        return padded, (new_h, new_w)

    def slide(self, rgb: np.ndarray) -> np.ndarray:
        """Windows of the crop size at the image's own resolution; memory: one band of logits."""
        import torch

        h, w = rgb.shape[:2]
        ph, pw = max(h, MIN_SIDE), max(w, MIN_SIDE)
        image = rgb if (ph, pw) == (h, w) else np.pad(rgb, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
        rows = window_starts(ph, self.crop[0], self.stride[0])
        cols = window_starts(pw, self.crop[1], self.stride[1])
        wh, ww = min(self.crop[0], ph), min(self.crop[1], pw)
        device = next(self.model.parameters()).device
        pre = self.model.data_preprocessor
        mean, std = pre.mean.to(device), pre.std.to(device)
        normalize = bool(getattr(pre, "_enable_normalize", True))
        to_bgr = not bool(getattr(pre, "channel_conversion", False))  # a model fed BGR as given
        label = np.empty((h, w), dtype=np.uint8)
        band: Any = None
        for r, y1 in enumerate(rows):
            for k in range(0, len(cols), WINDOW_BATCH):
                xs = cols[k : k + WINDOW_BATCH]
                windows = np.stack([image[y1 : y1 + wh, x1 : x1 + ww] for x1 in xs])
                x = torch.from_numpy(windows).to(device).permute(0, 3, 1, 2).float()
                if to_bgr:
                    x = x[:, [2, 1, 0]]
                if normalize:
                    x = (x - mean) / std
                logits = self.model.encode_decode(x, [dict(img_shape=torch.Size((wh, ww)))] * len(xs))
                if band is None:
                    band = logits.new_zeros((logits.shape[1], wh, pw))
                for j, x1 in enumerate(xs):
                    band[:, :, x1 : x1 + ww] += logits[j]
            done = (rows[r + 1] if r + 1 < len(rows) else y1 + wh) - y1  # rows no later window covers
            top, bottom = y1, min(y1 + done, h)
            if bottom > top:
                label[top:bottom] = band[:, : bottom - top, :w].argmax(0).to(torch.uint8).cpu().numpy()
            band = torch.cat([band[:, done:], band.new_zeros((band.shape[0], done, pw))], dim=1)
        return label


def window_starts(size: int, crop: int, stride: int) -> list[int]:
    """Window starts along one axis, as mmseg's `slide_inference` places them: every `stride`,
    the last one moved back to end at the border, one window when the image is smaller than it."""
    grids = max(size - crop + stride - 1, 0) // stride + 1
    return [max(min(i * stride + crop, size) - crop, 0) for i in range(grids)]


def logits_to_label(logits: Any, size: tuple[int, int], align_corners: bool) -> np.ndarray:
    """argmax over classes of `logits` (C, h, w) resized bilinearly to `size` (H, W), as mmseg's
    `postprocess_result`, computed in row chunks of at most LOGIT_CHUNK_ELEMENTS floats.

    Bilinear resizing is separable: each chunk's source rows are resized in width by
    `F.interpolate` (exactly), then combined in height with the weights PyTorch uses
    (`area_pixel_compute_source_index`). Returns (H, W) uint8.
    """
    import torch
    import torch.nn.functional as F

    c, h, w = logits.shape
    out_h, out_w = size
    if c * out_h * out_w <= LOGIT_CHUNK_ELEMENTS:
        full = F.interpolate(logits[None], size=(out_h, out_w), mode="bilinear", align_corners=align_corners)[0]
        return full.argmax(0).to(torch.uint8).cpu().numpy()
    dst = torch.arange(out_h, dtype=torch.float32, device=logits.device)
    if align_corners:
        src = dst * ((h - 1) / (out_h - 1) if out_h > 1 else 0.0)
    else:
        src = ((dst + 0.5) * (h / out_h) - 0.5).clamp(min=0)
    y0 = src.floor().long().clamp(max=h - 1)
    y1 = (y0 + 1).clamp(max=h - 1)
    lam = (src - y0.float()).clamp(0, 1)
    step = max(1, LOGIT_CHUNK_ELEMENTS // (3 * c * out_w))
    label = np.empty((out_h, out_w), dtype=np.uint8)
    for s in range(0, out_h, step):
        e = min(out_h, s + step)
        first, last = int(y0[s]), int(y1[e - 1])
        slab = F.interpolate(logits[None, :, first : last + 1], size=(last + 1 - first, out_w), mode="bilinear", align_corners=align_corners)[0]
        weight = lam[s:e].view(1, -1, 1)
        rows = (1 - weight) * slab[:, y0[s:e] - first] + weight * slab[:, y1[s:e] - first]
        label[s:e] = rows.argmax(0).to(torch.uint8).cpu().numpy()
    return label


def _test_pipeline(cfg: Any) -> Any:
    """The config's test pipeline loading from an array, without annotations (as mmseg's inference_model)."""
    import copy

    from mmengine.dataset import Compose

    steps = [copy.deepcopy(dict(t)) for t in cfg.test_pipeline if t.get("type") != "LoadAnnotations"]
    if steps and "Load" in str(steps[0].get("type", "")):
        steps[0] = dict(type="LoadImageFromNDArray")
    else:
        steps.insert(0, dict(type="LoadImageFromNDArray"))
    return Compose(steps)


def _keep_ratio_scale(cfg: Any) -> tuple[int, int] | None:
    for step in cfg.test_pipeline:
        if step.get("type") == "Resize" and step.get("keep_ratio") and isinstance(step.get("scale"), (tuple, list)):
            return (int(step["scale"][0]), int(step["scale"][1]))
    return None
