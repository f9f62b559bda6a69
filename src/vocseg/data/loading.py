"""The training/eval loader reads the data exactly as `prepare --check` does (MMSeg registrations).

Imported by `vocseg.mmseg_plugin` (every config vocseg writes names it), never at `vocseg --help`.

- `VocsegVOCDataset`: mmseg's `PascalVOCDataset`, but its list is read by
  `vocseg.data.lists.read_id_list` (blank lines, spaces, CRLF, a BOM: the same ids as the check)
  and `<id>.JPG` / `<id>.jpeg` are found as the check finds them; its built pipeline runs the
  resize-crop, flip and distortion as one step (`vocseg.data.fused`).
- `VocsegLoadImageFromFile`: the image through `vocseg.data.images.read_image_bgr` (EXIF
  orientation applied, as `LoadImageFromFile`'s cv2 decoding does too: the same pixels; decoded
  straight into BGR by simplejpeg where installed).
- `VocsegLoadAnnotations`: the mask as stored (as mmseg's `LoadAnnotations` reads it), checked with
  `vocseg.data.images.mask_problem` and against the image's size.

A file that cannot be used (changed after the check) raises `DataFileError`: one line naming the
file and `vocseg prepare --check`, also when it happens inside a data-loader worker process (where
torch re-raises it with the worker's traceback as its message: the last line is kept).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from mmcv.transforms import LoadImageFromFile
from mmseg.datasets import PascalVOCDataset
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.registry import DATASETS, TRANSFORMS

from vocseg.data.fused import fuse_steps
from vocseg.data.images import IMAGE_SUFFIXES, MASK_SUFFIXES, FolderIndex, mask_problem, read_image_bgr, read_mask
from vocseg.data.lists import read_id_list
from vocseg.data.transforms import SEG_LABELS_KEY, label_counts
from vocseg.data.voc import IGNORE_INDEX, NUM_CLASSES
from vocseg.errors import VocsegError

_WORKER_TRACEBACK = "Original Traceback"


def _root_of(path: str) -> str:
    p = Path(path).absolute()
    for parent in p.parents:
        if parent.name == "VOCdevkit":
            return str(parent.parent)
    return str(p.parent)


class DataFileError(VocsegError):
    """A data file the loader cannot use. Constructed from one message (torch's DataLoader
    re-raises a worker's exception as `type(exc)(text with the worker's traceback)`)."""

    def __init__(self, message: str, hint: str = "") -> None:
        if _WORKER_TRACEBACK in message:
            last = [line for line in message.strip().splitlines() if line.strip()][-1]
            message = last.split(f"{type(self).__name__}: ", 1)[-1]
            hint = ""
        super().__init__(message, hint)


def data_file_error(path: str, what: str) -> DataFileError:
    from vocseg.console import command

    return DataFileError(
        f"Data file {path} {what}.",
        f"It changed after the check: `{command('prepare', '--check', '--data-root', _root_of(path))}` lists every problem.",
    )


def valid_labels_held(mask: np.ndarray, num_classes: int = NUM_CLASSES) -> tuple[int, ...] | None:
    """The values a 2-D uint8 mask holds (sorted), when all are 0..num_classes-1 or IGNORE_INDEX;
    None otherwise: one count of its values (`cv2.calcHist`, ~0.1 ms for a VOC mask), against
    `mask_problem`'s boolean masks (~0.5 ms when the mask holds 255 borders, as VOC's do); the
    crop's `cat_max_ratio` test reuses the values. None: ask `mask_problem` what is wrong."""
    if mask.ndim != 2 or mask.dtype != np.uint8 or not mask.size:
        return None
    held = tuple(int(v) for v in np.flatnonzero(label_counts(mask)))
    return held if all(v < num_classes or v == IGNORE_INDEX for v in held) else None


@DATASETS.register_module()
class VocsegVOCDataset(PascalVOCDataset):
    """PascalVOCDataset reading its list and finding its files the way `prepare --check` does.

    With `metainfo=dict(classes=..., palette=...)` naming classes that are not VOC's (an own
    dataset, `vocseg.data.dataset`), the masks' ids are taken as they are: class i is classes[i].
    mmseg's PascalVOCDataset would refuse them ("not a subset of classes in METAINFO").
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # the resize-crop, flip and distortion as one step, distorting the fewer pixels (vocseg.data.fused)
        self.pipeline.transforms = fuse_steps(self.pipeline.transforms)

    @classmethod
    def get_label_map(cls, new_classes: Any = None) -> dict | None:
        if new_classes is not None and not set(new_classes).issubset(cls.METAINFO["classes"]):
            return None  # an own dataset's classes: ids as stored
        return super().get_label_map(new_classes)

    def load_data_list(self) -> list[dict]:
        img_dir = self.data_prefix.get("img_path", "")
        ann_dir = self.data_prefix.get("seg_map_path")
        images = FolderIndex(img_dir)
        masks = FolderIndex(ann_dir) if ann_dir is not None else None
        data_list = []
        for image_id in read_id_list(Path(self.ann_file)):
            found = images.find(image_id, IMAGE_SUFFIXES)
            info: dict[str, Any] = dict(img_path=str(found) if found else str(Path(img_dir) / f"{image_id}{self.img_suffix}"))
            if masks is not None:
                mask = masks.find(image_id, MASK_SUFFIXES)
                info["seg_map_path"] = str(mask) if mask else str(Path(ann_dir) / f"{image_id}{self.seg_map_suffix}")
            info["label_map"] = self.label_map
            info["reduce_zero_label"] = self.reduce_zero_label
            info["num_classes"] = len(self.metainfo["classes"])
            info["seg_fields"] = []
            data_list.append(info)
        return data_list


@TRANSFORMS.register_module()
class VocsegLoadImageFromFile(LoadImageFromFile):
    """LoadImageFromFile through vocseg's one image reader: (H, W, 3) uint8 BGR, as viewers show it.

    Takes no options beyond LoadImageFromFile's (mmseg's `inference_model` swaps the first step
    of a test pipeline for LoadImageFromNDArray by position)."""

    def transform(self, results: dict) -> dict | None:
        path = results["img_path"]
        try:
            img = read_image_bgr(Path(path))
        except FileNotFoundError:
            raise data_file_error(path, "is missing") from None
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types for damaged files
            raise data_file_error(path, f"cannot be decoded ({type(exc).__name__}: {exc})") from None
        if self.to_float32:
            img = img.astype(np.float32)
        results["img"] = img
        results["img_shape"] = img.shape[:2]
        results["ori_shape"] = img.shape[:2]
        return results


@TRANSFORMS.register_module()
class VocsegLoadAnnotations(LoadAnnotations):
    """LoadAnnotations with the mask checked as `prepare --check` checks it (a bad label would
    otherwise surface as "Target 38 is out of bounds" or a CUDA device-side assert).

    Without a `seg_map_path` (inference on an array) it does nothing."""

    def _load_seg_map(self, results: dict) -> None:
        path = results["seg_map_path"]
        try:
            mask = read_mask(Path(path))
        except FileNotFoundError:
            raise data_file_error(path, "is missing") from None
        except Exception as exc:  # noqa: BLE001
            raise data_file_error(path, f"cannot be decoded ({type(exc).__name__}: {exc})") from None
        if mask.ndim == 3 and mask.shape[2] == 1:
            mask = mask[..., 0]
        num_classes = results.get("num_classes", NUM_CLASSES)
        held = valid_labels_held(mask, num_classes)
        why = None if held is not None else mask_problem(mask, num_classes, IGNORE_INDEX)
        if why:
            raise data_file_error(path, why)
        shape = results.get("ori_shape")
        if shape is not None and tuple(shape[:2]) != mask.shape:
            image = results.get("img_path", "its image")
            raise data_file_error(path, f"is {mask.shape[1]}x{mask.shape[0]}, but {image} is {shape[1]}x{shape[0]} as a viewer shows it")
        seg = mask.astype(np.uint8)
        if self.reduce_zero_label is None:
            self.reduce_zero_label = results["reduce_zero_label"]
        if self.reduce_zero_label:
            seg[seg == 0] = 255
            seg = seg - 1
            seg[seg == 254] = 255
        if results.get("label_map") is not None:
            original = seg.copy()
            for old_id, new_id in results["label_map"].items():
                seg[original == old_id] = new_id
        results["gt_seg_map"] = seg
        results["seg_fields"].append("gt_seg_map")
        if held is not None and not self.reduce_zero_label and results.get("label_map") is None:
            results[SEG_LABELS_KEY] = (seg, held)  # the crop's cat_max_ratio test counts only these

    def transform(self, results: dict) -> dict:
        if self.with_seg and not results.get("seg_map_path"):
            return results
        return super().transform(results)
