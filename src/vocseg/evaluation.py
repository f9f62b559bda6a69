"""Evaluate a checkpoint on a split through MMEngine's test loop and mmseg's IoUMetric.

The numbers are IoUMetric's own (vocseg's metric subclasses it and only adds a confusion matrix
and, on request, the predicted label maps). Results go to a folder: `<tag>.json` (the foundation
schema plus extra keys), `<tag>.csv`, `<tag>_confusion.png` and `<tag>_iou.png`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vocseg.errors import VocsegError
from vocseg.runs import CONFIG_NAME, RUNS_ROOT, resolve_checkpoint
from vocseg.voc import CLASSES, IGNORE_INDEX, SBD_SUBDIR, SPLITS_SUBDIR, VOC_SUBDIR

FINE_MASKS = "SegmentationClass"  # VOC's own labels (with the 255 void band)
SBD_MASKS = "SegmentationClassAug"  # SBD labels converted by `vocseg prepare --aug`
SPLIT_NAMES = ("val", "train", "trainval", "aug", "trainaug")
# Kept for callers of the first version: the mask folder each named split mostly uses.
SPLIT_MASKS = {"val": FINE_MASKS, "train": FINE_MASKS, "trainval": FINE_MASKS, "aug": SBD_MASKS, "trainaug": SBD_MASKS}
METRIC_KEYS = ("IoU", "Acc", "Dice", "Precision", "Recall", "Fscore")


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
    confusion: list[list[int]] | None = None  # rows: true class, columns: predicted class (pixels)

    def to_json(self) -> dict[str, Any]:
        def clean(v: Any) -> Any:
            return None if v is None or (isinstance(v, float) and math.isnan(v)) else v

        data: dict[str, Any] = {
            "mIoU": self.mIoU,
            "mAcc": self.mAcc,
            "aAcc": self.aAcc,
            "per_class": {c: {k: clean(v) for k, v in m.items()} for c, m in self.per_class.items()},
            "checkpoint": self.checkpoint,
            "split": self.split,
            "num_images": self.num_images,
            **self.extra,
        }
        if self.confusion is not None:
            data["confusion"] = {"rows": "true class", "columns": "predicted class", "classes": list(self.per_class), "pixels": self.confusion}
        return data


@dataclass(frozen=True)
class SplitSource:
    """The images of a split, grouped by the folder their labels come from."""

    name: str  # split name, or the list file's stem
    ids: list[str]
    by_masks: dict[str, list[str]]  # mask folder -> ids (fine VOC labels preferred)


def read_id_list(path: Path) -> list[str]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise VocsegError(f"Cannot read split list {path}: {exc}.", "Pass a text file with one image id per line.") from None
    ids = [line.split()[0] for line in text.splitlines() if line.strip()]
    if not ids:
        raise VocsegError(f"Split list {path} is empty.", "Pass a list with image ids.")
    return ids


def split_source(data_root: Path, split: str) -> SplitSource:
    """The ids of a split name or list file, each with the mask folder its label is read from.

    Fine VOC labels are used where an id has them, SBD labels otherwise (trainaug, aug, lists mixing
    both): exactly the labels mmseg's pascal_voc12_aug training set uses for those ids.
    """
    voc = data_root / VOC_SUBDIR
    if split in SPLIT_NAMES:
        path = voc / SPLITS_SUBDIR / f"{split}.txt"
        if not path.is_file():
            fix = "vocseg prepare --aug" if split in ("aug", "trainaug") else "vocseg prepare"
            raise VocsegError(f"Split list {path} is missing.", f"Run `{fix} --data-root {data_root}`.")
        name = split
    else:
        path = Path(split)
        if not path.is_file():
            raise VocsegError(f"--split {split!r} is neither one of {'/'.join(SPLIT_NAMES)} nor a list file.", "Pass a split name or a file of image ids.")
        name = path.stem
    ids = read_id_list(path)
    by_masks: dict[str, list[str]] = {FINE_MASKS: [], SBD_MASKS: []}
    missing: list[str] = []
    for i in ids:
        if not (voc / "JPEGImages" / f"{i}.jpg").is_file():
            missing.append(str(voc / "JPEGImages" / f"{i}.jpg"))
        if (voc / FINE_MASKS / f"{i}.png").is_file():
            by_masks[FINE_MASKS].append(i)
        elif (voc / SBD_MASKS / f"{i}.png").is_file():
            by_masks[SBD_MASKS].append(i)
        else:
            missing.append(str(voc / FINE_MASKS / f"{i}.png"))
    if missing:
        raise VocsegError(
            f"{len(missing)} files named by {path} are missing (first: {missing[0]}).",
            "Fix the list or the data root (`vocseg prepare --check` shows what is incomplete).",
        )
    return SplitSource(name=name, ids=ids, by_masks={k: v for k, v in by_masks.items() if v})


def load_run_config(target: str | Path, config: Path | None, *, quiet: bool = False) -> tuple[Path, Path | None, Any]:
    """(checkpoint, run folder, mmengine Config) for a run folder, a checkpoint file or `official:NAME`."""
    from vocseg import official
    from vocseg.compat import ensure_stack

    if official.is_official(target):
        checkpoint, official_cfg = official.resolve(target, quiet=quiet)
        run, cfg_path = None, config or official_cfg
    else:
        checkpoint, run = resolve_checkpoint(Path(target))
        cfg_path = config or (run / CONFIG_NAME if run else None)
    if cfg_path is None or not cfg_path.is_file():
        raise VocsegError(f"No config found for {checkpoint}.", "Pass the config it was trained with: --config CFG.py.")
    ensure_stack()
    from mmengine.config import Config

    try:
        cfg = Config.fromfile(str(cfg_path))
    except Exception as exc:
        raise VocsegError(f"Cannot read config {cfg_path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}.", "Pass a config written by vocseg or mmseg.") from None
    # The Runner yapf-formats the config text four times (log, dump): seconds of CPU for nothing here.
    # fromfile(format_python_code=False) only reaches lazy-import configs in mmengine 0.10.7.
    object.__setattr__(cfg, "_format_python_code", False)
    return checkpoint, run, cfg


def default_out_dir(target: str | Path, checkpoint: Path, run: Path | None) -> Path:
    """Where results go by default: the run folder's eval/, else runs/eval/<name>/."""
    from vocseg import official

    if run is not None:
        return run / "eval"
    name = str(target)[len(official.PREFIX) :] if official.is_official(target) else checkpoint.stem
    return RUNS_ROOT / "eval" / name


def result_tag(target: str | Path, checkpoint: Path, run: Path | None, split_name: str, tta: bool) -> str:
    """File stem of the results: `val`, `train_tta`, ... for a run folder; `<checkpoint>_val` for a named file."""
    tag = split_name + ("_tta" if tta else "")
    if run is not None and not Path(target).is_dir():
        tag = f"{checkpoint.stem}_{tag}"
    return tag


_METRIC_NAME = "VocsegEvalMetric"


def register_eval_metric() -> str:
    """Register (once) mmseg's IoUMetric + vocseg's per-class table + a confusion matrix and label maps."""
    import numpy as np
    import torch
    from mmseg.registry import METRICS

    from vocseg.engine import PerClassIoUMetric

    if _METRIC_NAME in METRICS.module_dict:
        return _METRIC_NAME

    class EvalMetric(PerClassIoUMetric):
        """The metric values are IoUMetric's; this only records more about the same predictions."""

        def __init__(self, save_dir: str | None = None, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.save_dir = Path(save_dir) if save_dir else None
            self.confusion: Any = None

        def process(self, data_batch: dict, data_samples: Any) -> None:
            super().process(data_batch, data_samples)
            n = len(self.dataset_meta["classes"])
            if self.confusion is None:
                self.confusion = torch.zeros((n, n), dtype=torch.int64)
            for sample in data_samples:
                pred = sample["pred_sem_seg"]["data"].squeeze()
                label = sample["gt_sem_seg"]["data"].squeeze().to(pred)
                keep = (label != self.ignore_index) & (label >= 0) & (label < n)
                index = label[keep].long() * n + pred[keep].long()
                self.confusion += torch.bincount(index, minlength=n * n).reshape(n, n).cpu()
                if self.save_dir is not None:
                    from vocseg.inference import save_label_png

                    self.save_dir.mkdir(parents=True, exist_ok=True)
                    stem = Path(sample["img_path"]).stem
                    save_label_png(pred.cpu().numpy().astype(np.uint8), self.save_dir / f"{stem}.png")

        def compute_metrics(self, results: list) -> dict[str, float]:
            # mmseg's own per-class rounding (np.round of its float32 arrays), kept for the report
            areas = [sum(column) for column in zip(*results)]
            ret = self.total_area_to_metrics(*areas, self.metrics, self.nan_to_num, self.beta)
            ret.pop("aAcc", None)
            self.mmseg_per_class = {key: np.round(values * 100, 2) for key, values in ret.items()}
            return super().compute_metrics(results)

    METRICS.register_module(name=_METRIC_NAME, module=EvalMetric)
    return _METRIC_NAME


def _test_dataset(cfg: Any, root: Path, source: SplitSource, lists_dir: Path, tta: bool) -> dict[str, Any]:
    """The config's val dataset pointed at the split; a ConcatDataset when labels come from both folders."""
    base = cfg.val_dataloader.dataset
    if base.get("type") == "ConcatDataset":
        base = base.datasets[0]
    pipeline = cfg.tta_pipeline if tta else base.pipeline
    parts = []
    for masks, ids in source.by_masks.items():
        if len(source.by_masks) == 1 and source.name in SPLIT_NAMES:
            ann = str(root / VOC_SUBDIR / SPLITS_SUBDIR / f"{source.name}.txt")
        else:
            lists_dir.mkdir(parents=True, exist_ok=True)
            ann = str(lists_dir / f"{source.name}_{masks}.txt")
            Path(ann).write_text("\n".join(ids) + "\n")
        parts.append(
            dict(
                type=base.get("type", "PascalVOCDataset"),
                data_root=str(root / VOC_SUBDIR),
                data_prefix=dict(img_path="JPEGImages", seg_map_path=masks),
                ann_file=ann,
                pipeline=pipeline,
            )
        )
    return parts[0] if len(parts) == 1 else dict(type="ConcatDataset", datasets=parts)


def config_data_root(cfg: Any) -> Path | None:
    """The data root (the folder holding VOCdevkit/) a config's val dataset points at."""
    dataset = cfg.val_dataloader.dataset
    if dataset.get("type") == "ConcatDataset":
        dataset = dataset.datasets[0]
    voc = dataset.get("data_root") or ""
    if not voc:
        return None
    path = Path(voc)
    return path.parent.parent if path.as_posix().endswith(VOC_SUBDIR) else path


def _two_decimals(value: Any) -> float:
    """mmseg rounds in float32 (0.11 is stored as 0.10999999940395355): the same number, as printed."""
    v = float(value)
    return v if math.isnan(v) else round(v, 2)


def evaluate(
    target: str | Path,
    *,
    split: str = "val",
    config: Path | None = None,
    data_root: Path | None = None,
    tta: bool = False,
    verbose: bool = False,
    out_dir: Path | None = None,
    num_workers: int | None = None,
    save_predictions: Path | None = None,
) -> tuple[EvalResult, Any]:
    """Evaluate; return the result and the runner's metric object (raw areas, confusion matrix)."""
    import warnings

    from vocseg import official
    from vocseg.checkpoints import load_state_dict_checked, state_dict_of
    from vocseg.training import _Discard

    checkpoint, run, cfg = load_run_config(target, config)
    root = data_root
    if root is None and official.is_official(target):
        from vocseg.recipe import default_data_root

        root = default_data_root()  # the official config names no data root
    root = root or config_data_root(cfg)
    if root is None or not (root / VOC_SUBDIR).is_dir():
        raise VocsegError(f"Data root {root or '(none in the config)'} has no {VOC_SUBDIR}.", "Pass --data-root (the folder `vocseg prepare` wrote).")
    source = split_source(root, split)
    results_dir = out_dir or default_out_dir(target, checkpoint, run)
    if tta and "tta_pipeline" not in cfg:
        from vocseg.mmconfig import tta_pipeline

        cfg.tta_pipeline = tta_pipeline()

    loader = cfg.val_dataloader.copy()
    loader.dataset = _test_dataset(cfg, root, source, results_dir / "lists", tta)
    workers = loader.get("num_workers", 0) if num_workers is None else num_workers
    loader.num_workers = workers
    loader.persistent_workers = workers > 0
    loader.batch_size = 1
    cfg.test_dataloader = loader
    cfg.test_evaluator = dict(
        type=_METRIC_NAME,
        iou_metrics=["mIoU", "mDice", "mFscore"],
        ignore_index=IGNORE_INDEX,
        save_dir=str(save_predictions) if save_predictions else None,
    )
    cfg.test_cfg = dict(type="TestLoop")
    cfg.load_from = None
    cfg.resume = False
    cfg.launcher = "none"
    cfg.work_dir = str(results_dir)
    from vocseg.training import unique_instance_names

    unique_instance_names(cfg, "eval")
    cfg.custom_hooks = []
    cfg.default_hooks = {k: v for k, v in cfg.get("default_hooks", {}).items() if k in ("timer", "logger")}
    if tta:
        cfg.model = dict(type="SegTTAModel", module=cfg.model)

    from mmengine.runner import Runner

    register_eval_metric()
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(_Discard())
    with quiet, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*instance named of visualizer has been created.*")
        runner = Runner.from_cfg(cfg)
        model = runner.model.module if tta else runner.model
        ckpt = load_state_dict_checked(checkpoint, model)
        model.load_state_dict(state_dict_of(ckpt), strict=False)  # fit was checked: only BN counters may differ
        runner._has_loaded = True
        metrics = runner.test()
    metric = runner.test_evaluator.metrics[0]
    per_class: dict[str, dict[str, Any]] = {}
    areas = metric.last_areas
    for i, name in enumerate(metric.dataset_meta["classes"]):
        # mmseg's rounded float32 value, written with the same two decimals it prints
        row: dict[str, Any] = {k: _two_decimals(metric.mmseg_per_class[k][i]) for k in METRIC_KEYS if k in metric.mmseg_per_class}
        row["gt_pixels"] = int(areas["label"][i])
        row["pred_pixels"] = int(areas["pred"][i])
        per_class[name] = row
    confusion = metric.confusion.tolist() if metric.confusion is not None else None
    result = EvalResult(
        mIoU=_two_decimals(metrics["mIoU"]),
        mAcc=_two_decimals(metrics["mAcc"]),
        aAcc=_two_decimals(metrics["aAcc"]),
        per_class=per_class,
        checkpoint=str(target) if official.is_official(target) else str(checkpoint),
        split=source.name,
        num_images=len(runner.test_dataloader.dataset),
        extra={
            "tta": tta,
            "data_root": str(root),
            "labels": {("voc" if k == FINE_MASKS else "sbd"): len(v) for k, v in source.by_masks.items()},
            "means": {f"m{k}": _two_decimals(metrics[f"m{k}"]) for k in ("Dice", "Precision", "Recall", "Fscore") if f"m{k}" in metrics},
        },
        confusion=confusion,
    )
    result.extra["out_dir"] = str(results_dir)
    result.extra["tag"] = result_tag(target, checkpoint, run, source.name, tta)
    return result, metric


def write_json(result: EvalResult, path: Path) -> None:
    from vocseg.mmconfig import write_text_atomic

    write_text_atomic(path, json.dumps(result.to_json(), indent=1) + "\n")


def csv_text(result: EvalResult) -> str:
    """One row per class (percent; empty where mmseg's value is NaN: the class is in neither map), then the means."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["class", *METRIC_KEYS, "gt_pixels", "pred_pixels"])

    def cell(v: Any) -> str:
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else (f"{v:.2f}" if isinstance(v, float) else str(v))

    for name, vals in result.per_class.items():
        writer.writerow([name, *(cell(vals.get(k)) for k in METRIC_KEYS), cell(vals.get("gt_pixels")), cell(vals.get("pred_pixels"))])
    means = result.extra.get("means", {})
    writer.writerow(["mean", cell(result.mIoU), cell(result.mAcc), *(cell(means.get(f"m{k}")) for k in METRIC_KEYS[2:]), "", ""])
    writer.writerow(["aAcc", cell(result.aAcc), "", "", "", "", "", "", ""])
    return buf.getvalue()


def write_csv(result: EvalResult, path: Path) -> None:
    from vocseg.mmconfig import write_text_atomic

    write_text_atomic(path, csv_text(result))


def save_outputs(result: EvalResult, out_dir: Path, tag: str, *, plots: bool = True) -> list[Path]:
    """JSON, CSV and (unless told not to) the confusion heatmap and the IoU bar chart."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / f"{tag}.json", out_dir / f"{tag}.csv"]
    write_json(result, written[0])
    write_csv(result, written[1])
    if plots:
        from vocseg.plots import confusion_heatmap, iou_bar_chart

        title = f"{Path(result.checkpoint).name} on {result.split} ({result.num_images} images){' + TTA' if result.extra.get('tta') else ''}"
        if result.confusion is not None:
            written.append(confusion_heatmap(result.confusion, list(result.per_class), out_dir / f"{tag}_confusion.png", title=title))
        written.append(iou_bar_chart(result, out_dir / f"{tag}_iou.png", title=title))
    return written


def load_result(path: Path) -> EvalResult:
    """An eval JSON back into an EvalResult (a one-line error if it is not one)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VocsegError(f"{path} is not readable JSON ({exc}).", "Pass a file written by `vocseg eval --json`.") from None
    if not isinstance(data, dict) or not isinstance(data.get("per_class"), dict) or not all(k in data for k in ("mIoU", "mAcc")):
        raise VocsegError(f"{path} is not an eval result (no mIoU/mAcc/per_class).", "Pass a file written by `vocseg eval --json`.")
    known = {"mIoU", "mAcc", "aAcc", "per_class", "checkpoint", "split", "num_images", "confusion"}
    confusion = data.get("confusion", {}).get("pixels") if isinstance(data.get("confusion"), dict) else None
    return EvalResult(
        mIoU=float(data["mIoU"]),
        mAcc=float(data["mAcc"]),
        aAcc=float(data.get("aAcc") or float("nan")),
        per_class=data["per_class"],
        checkpoint=str(data.get("checkpoint", "")),
        split=str(data.get("split", "val")),
        num_images=int(data.get("num_images") or 0),
        extra={k: v for k, v in data.items() if k not in known},
        confusion=confusion,
    )


__all__ = [
    "CLASSES",
    "EvalResult",
    "SBD_SUBDIR",
    "csv_text",
    "evaluate",
    "load_result",
    "save_outputs",
    "split_source",
    "write_csv",
    "write_json",
]
