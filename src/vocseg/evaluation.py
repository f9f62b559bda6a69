"""Evaluate a checkpoint on a split through MMEngine's test loop and mmseg's IoUMetric."""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vocseg.errors import VocsegError
from vocseg.runs import CONFIG_NAME, resolve_checkpoint
from vocseg.voc import SBD_SUBDIR, SPLITS_SUBDIR, VOC_SUBDIR

SPLIT_MASKS = {"val": "SegmentationClass", "train": "SegmentationClass", "trainval": "SegmentationClass", "aug": "SegmentationClassAug", "trainaug": "SegmentationClassAug"}


@dataclass
class EvalResult:
    """Percentages, as mmseg prints them. `per_class[name]` has IoU and Acc (and Dice, Precision, ...)."""

    mIoU: float
    mAcc: float
    aAcc: float
    per_class: dict[str, dict[str, float]]
    checkpoint: str = ""
    split: str = "val"
    num_images: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        def clean(v: float) -> float | None:
            return None if v is None or (isinstance(v, float) and math.isnan(v)) else v

        return {
            "mIoU": self.mIoU,
            "mAcc": self.mAcc,
            "aAcc": self.aAcc,
            "per_class": {c: {k: clean(v) for k, v in m.items()} for c, m in self.per_class.items()},
            "checkpoint": self.checkpoint,
            "split": self.split,
            "num_images": self.num_images,
            **self.extra,
        }


def split_source(data_root: Path, split: str) -> tuple[str, str]:
    """(ann_file, mask folder) for a split name or a list file."""
    voc = data_root / VOC_SUBDIR
    if split in SPLIT_MASKS:
        ann = voc / SPLITS_SUBDIR / f"{split}.txt"
        if not ann.is_file():
            fix = "vocseg prepare --aug" if split in ("aug", "trainaug") else "vocseg prepare"
            raise VocsegError(f"Split list {ann} is missing.", f"Run `{fix} --data-root {data_root}`.")
        return str(ann), SPLIT_MASKS[split]
    path = Path(split)
    if not path.is_file():
        raise VocsegError(f"--split {split!r} is neither val/train/trainval/aug/trainaug nor a list file.", "Pass a split name or a file of image ids.")
    return str(path.resolve()), "SegmentationClass"


def _missing_files(data_root: Path, ann_file: str, mask_dir: str) -> list[str]:
    voc = data_root / VOC_SUBDIR
    ids = [line.strip() for line in Path(ann_file).read_text().splitlines() if line.strip()]
    if not ids:
        raise VocsegError(f"Split list {ann_file} is empty.", "Pass a list with image ids.")
    missing = []
    for i in ids:
        for p in (voc / "JPEGImages" / f"{i}.jpg", voc / mask_dir / f"{i}.png"):
            if not p.is_file():
                missing.append(str(p))
    return missing


def load_run_config(target: Path, config: Path | None) -> tuple[Path, Path | None, Any]:
    """(checkpoint, run folder, mmengine Config) for a run folder or checkpoint file."""
    from vocseg.compat import ensure_stack

    checkpoint, run = resolve_checkpoint(target)
    cfg_path = config or (run / CONFIG_NAME if run else None)
    if cfg_path is None or not cfg_path.is_file():
        raise VocsegError(f"No config found for {checkpoint}.", "Pass the config it was trained with: --config CFG.py.")
    ensure_stack()
    from mmengine.config import Config

    try:
        cfg = Config.fromfile(str(cfg_path))
    except Exception as exc:
        raise VocsegError(f"Cannot read config {cfg_path}: {exc}.", "Pass a config written by vocseg or mmseg.") from None
    return checkpoint, run, cfg


def evaluate(
    target: Path,
    *,
    split: str = "val",
    config: Path | None = None,
    data_root: Path | None = None,
    tta: bool = False,
    verbose: bool = False,
) -> tuple[EvalResult, Any]:
    """Evaluate; return the result and the runner's metric object (raw areas for plots)."""
    from vocseg.checkpoints import load_state_dict_checked, state_dict_of
    from vocseg.training import _Discard

    checkpoint, run, cfg = load_run_config(target, config)
    root = data_root or Path(cfg.val_dataloader.dataset.data_root).parent.parent
    if not (root / VOC_SUBDIR).is_dir():
        raise VocsegError(f"Data root {root} has no {VOC_SUBDIR}.", "Pass --data-root.")
    ann_file, mask_dir = split_source(root, split)
    missing = _missing_files(root, ann_file, mask_dir)
    if missing:
        raise VocsegError(f"{len(missing)} files named by {ann_file} are missing (first: {missing[0]}).", "Run `vocseg prepare --check` and fix the data root.")

    test_loader = cfg.val_dataloader.copy()
    test_loader.dataset = cfg.val_dataloader.dataset.copy()
    test_loader.dataset.data_root = str(root / VOC_SUBDIR)
    test_loader.dataset.ann_file = ann_file
    test_loader.dataset.data_prefix = dict(img_path="JPEGImages", seg_map_path=mask_dir)
    test_loader.num_workers = 0
    test_loader.persistent_workers = False
    if tta:
        test_loader.dataset.pipeline = cfg.tta_pipeline
    cfg.test_dataloader = test_loader
    cfg.test_evaluator = dict(type="VocsegPerClassIoUMetric", iou_metrics=["mIoU", "mDice", "mFscore"])
    cfg.test_cfg = dict(type="TestLoop")
    cfg.load_from = None
    cfg.resume = False
    cfg.launcher = "none"
    cfg.work_dir = str((run / "eval") if run else Path("runs") / "eval")
    cfg.custom_hooks = []
    cfg.default_hooks.pop("visualization", None)
    if tta:
        cfg.model = dict(type="SegTTAModel", module=cfg.model)

    from mmengine.runner import Runner

    with contextlib.nullcontext() if verbose else contextlib.redirect_stdout(_Discard()):
        runner = Runner.from_cfg(cfg)
        model = runner.model.module if tta else runner.model
        ckpt = load_state_dict_checked(checkpoint, model)
        model.load_state_dict(state_dict_of(ckpt), strict=False)  # fit was checked: only BN counters may differ
        runner._has_loaded = True
        metrics = runner.test()
    metric = runner.test_evaluator.metrics[0]
    per_class = {name: {k: v for k, v in vals.items()} for name, vals in metric.last_per_class.items()}
    result = EvalResult(
        mIoU=round(float(metrics["mIoU"]), 2),
        mAcc=round(float(metrics["mAcc"]), 2),
        aAcc=round(float(metrics["aAcc"]), 2),
        per_class=per_class,
        checkpoint=str(checkpoint),
        split=split if split in SPLIT_MASKS else Path(split).name,
        num_images=len(runner.test_dataloader.dataset),
        extra={"tta": tta},
    )
    return result, metric


def write_json(result: EvalResult, path: Path) -> None:
    from vocseg.mmconfig import write_text_atomic

    write_text_atomic(path, json.dumps(result.to_json(), indent=1) + "\n")


__all__ = ["EvalResult", "evaluate", "write_json", "split_source", "SBD_SUBDIR"]
