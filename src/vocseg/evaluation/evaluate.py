"""Evaluate a checkpoint on a split through MMEngine's test loop and mmseg's IoUMetric.

The numbers are IoUMetric's own (vocseg's metric subclasses it and only adds a confusion matrix
and, on request, the predicted label maps). Results go to a folder: `<tag>.json` (the foundation
schema plus extra keys), `<tag>.csv`, `<tag>_confusion.png` and `<tag>_iou.png`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vocseg.data.voc import IGNORE_INDEX, SPLITS_SUBDIR, VOC_SUBDIR
from vocseg.errors import VocsegError
from vocseg.evaluation.eval_result import METRIC_KEYS, EvalResult, write_csv, write_json
from vocseg.runs.folders import RUNS_ROOT
from vocseg.stack.threads import workers_value

FINE_MASKS = "SegmentationClass"  # VOC's own labels (with the 255 void band)
SBD_MASKS = "SegmentationClassAug"  # SBD labels converted by `vocseg prepare --aug`
SPLIT_NAMES = ("val", "train", "trainval", "aug", "trainaug")
# Kept for callers of the first version: the mask folder each named split mostly uses.
SPLIT_MASKS = {"val": FINE_MASKS, "train": FINE_MASKS, "trainval": FINE_MASKS, "aug": SBD_MASKS, "trainaug": SBD_MASKS}


@dataclass(frozen=True)
class SplitSource:
    """The images of a split, grouped by the folder their labels come from."""

    name: str  # split name, or the list file's stem
    ids: list[str]
    by_masks: dict[str, list[str]]  # mask folder -> ids (fine VOC labels preferred)
    path: Path | None = None  # the list file the ids were read from


def read_id_list(path: Path) -> list[str]:
    """The ids of a list file, read as everywhere else (`vocseg.data.lists`); an empty list is refused."""
    from vocseg.data.lists import read_id_list as read_ids

    ids = read_ids(path)
    if not ids:
        raise VocsegError(f"Split list {path} is empty.", "Pass a list with image ids.")
    return ids


def split_source(data_root: Path, split: str) -> SplitSource:
    """The ids of a split name or list file, each with the mask folder its label is read from.

    Fine VOC labels are used where an id has them, SBD labels otherwise (trainaug, aug, lists mixing
    both): exactly the labels mmseg's pascal_voc12_aug training set uses for those ids. A list file
    is taken relative to the current folder; `.JPG`/`.jpeg` images and `.PNG` masks are found as
    the check and the loader find them.
    """
    from vocseg.data.images import IMAGE_SUFFIXES, MASK_SUFFIXES, FolderIndex

    data_root = data_root.expanduser().resolve()
    voc = data_root / VOC_SUBDIR
    if split in SPLIT_NAMES:
        path = voc / SPLITS_SUBDIR / f"{split}.txt"
        if not path.is_file():
            fix = "vocseg prepare --aug" if split in ("aug", "trainaug") else "vocseg prepare"
            raise VocsegError(f"Split list {path} is missing.", f"Run `{fix} --data-root {data_root}`.")
        name = split
    else:
        path = Path(split).expanduser().resolve()
        if not path.is_file():
            raise VocsegError(f"--split {split!r} is neither one of {'/'.join(SPLIT_NAMES)} nor a list file ({path} does not exist).", "Pass a split name or a file of image ids.")
        name = path.stem
    ids = read_id_list(path)
    images = FolderIndex(voc / "JPEGImages")
    masks = {folder: FolderIndex(voc / folder) for folder in (FINE_MASKS, SBD_MASKS)}
    by_masks: dict[str, list[str]] = {FINE_MASKS: [], SBD_MASKS: []}
    missing: list[str] = []
    for i in ids:
        if images.find(i, IMAGE_SUFFIXES) is None:
            missing.append(str(voc / "JPEGImages" / f"{i}.jpg"))
        if masks[FINE_MASKS].find(i, MASK_SUFFIXES) is not None:
            by_masks[FINE_MASKS].append(i)
        elif masks[SBD_MASKS].find(i, MASK_SUFFIXES) is not None:
            by_masks[SBD_MASKS].append(i)
        else:
            missing.append(str(voc / FINE_MASKS / f"{i}.png"))
    if missing:
        raise VocsegError(
            f"{len(missing)} files named by {path} are missing (first: {missing[0]}).",
            f"Fix the list or the data root (`vocseg prepare --check --data-root {data_root}` shows what is incomplete).",
        )
    return SplitSource(name=name, ids=ids, by_masks={k: v for k, v in by_masks.items() if v}, path=path)


def default_out_dir(target: str | Path, checkpoint: Path, run: Path | None) -> Path:
    """Where results go by default: the run folder's eval/, else runs/eval/<name>/."""
    from vocseg.recipe import official

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

    from vocseg.evaluation.metric import PerClassIoUMetric

    if _METRIC_NAME in METRICS.module_dict:
        return _METRIC_NAME

    class EvalMetric(PerClassIoUMetric):
        """The metric values are IoUMetric's; this only records more about the same predictions."""

        def __init__(self, save_dir: str | None = None, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.save_dir = Path(save_dir) if save_dir else None
            self.save_force = False  # --save-predictions never replaces a file of the user's (--force included)
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
                    from vocseg.files import owned_mkdir
                    from vocseg.visualization.overlays import save_label_png

                    owned_mkdir(self.save_dir)
                    stem = Path(sample["img_path"]).stem
                    masks = tuple(Path(p).parent for p in (sample.get("seg_map_path"), sample.get("img_path")) if p)  # the dataset's own files
                    save_label_png(pred.cpu().numpy().astype(np.uint8), self.save_dir / f"{stem}.png", protect=masks, force=self.save_force)

        def compute_metrics(self, results: list) -> dict[str, float]:
            # mmseg's own per-class rounding (np.round of its float32 arrays), kept for the report
            areas = [sum(column) for column in zip(*results)]
            ret = self.total_area_to_metrics(*areas, self.metrics, self.nan_to_num, self.beta)
            ret.pop("aAcc", None)
            self.mmseg_per_class = {key: np.round(values * 100, 2) for key, values in ret.items()}
            return super().compute_metrics(results)

    METRICS.register_module(name=_METRIC_NAME, module=EvalMetric)
    return _METRIC_NAME


# Configs written before vocseg registered its loader (and mmseg's own) name mmseg's types: eval
# reads their data the way the check does too (same pixels; lists and file names read as the check reads them).
_VOCSEG_TYPES = {"LoadImageFromFile": "VocsegLoadImageFromFile", "LoadAnnotations": "VocsegLoadAnnotations", "PascalVOCDataset": "VocsegVOCDataset"}


def with_vocseg_loading(step: Any) -> Any:
    """A pipeline (nested lists and dicts, as TestTimeAug holds) with mmseg's loading steps
    replaced by vocseg's (`vocseg.data.loading`); anything else is kept as it is."""
    if isinstance(step, list):
        return [with_vocseg_loading(s) for s in step]
    if isinstance(step, dict):
        out = {k: with_vocseg_loading(v) for k, v in step.items()}
        if out.get("type") in _VOCSEG_TYPES and set(out) <= {"type", "reduce_zero_label", "imdecode_backend", "to_float32"}:
            out["type"] = _VOCSEG_TYPES[out["type"]]
        return out
    return step


def test_lists(root: Path, source: SplitSource, lists_dir: Path) -> dict[str, Path]:
    """Mask folder -> the absolute list file of its ids: the split's own list when it is one
    named split with one label folder, else a list written under `lists_dir` (rewritten only
    when its content changes, so the pre-check's cache keeps holding)."""
    from vocseg.files import write_text_atomic

    lists: dict[str, Path] = {}
    for masks, ids in source.by_masks.items():
        if len(source.by_masks) == 1 and source.name in SPLIT_NAMES and source.path is not None:
            lists[masks] = source.path
            continue
        ann = (lists_dir / f"{source.name}_{masks}.txt").absolute()
        text = "\n".join(ids) + "\n"
        if not ann.is_file() or ann.read_text() != text:
            write_text_atomic(ann, text)
        lists[masks] = ann
    return lists


def _test_dataset(cfg: Any, root: Path, lists: dict[str, Path], tta: bool) -> dict[str, Any]:
    """The config's val dataset pointed at the split; a ConcatDataset when labels come from both folders."""
    base = cfg.val_dataloader.dataset
    if base.get("type") == "ConcatDataset":
        base = base.datasets[0]
    pipeline = with_vocseg_loading(cfg.tta_pipeline if tta else base.pipeline)
    dataset_type = base.get("type", "PascalVOCDataset")
    parts = [
        dict(
            type=_VOCSEG_TYPES.get(dataset_type, dataset_type),
            data_root=str(root / VOC_SUBDIR),
            data_prefix=dict(img_path="JPEGImages", seg_map_path=masks),
            ann_file=str(ann),
            pipeline=pipeline,
        )
        for masks, ann in lists.items()
    ]
    return parts[0] if len(parts) == 1 else dict(type="ConcatDataset", datasets=parts)


def config_data_root(cfg: Any) -> Path | None:
    """The data root (the folder holding VOCdevkit/) a config's val dataset points at."""
    dataset = cfg.val_dataloader.dataset
    if dataset.get("type") == "ConcatDataset":
        dataset = dataset.datasets[0]
    voc = dataset.get("data_root") or ""
    if not voc:
        return None
    path = Path(voc).expanduser().absolute()  # a relative data root is the current folder's, as mmengine reads it
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
    galleries: bool = True,
) -> tuple[EvalResult, Any]:
    """Evaluate; return the result and the runner's metric object (raw areas, confusion matrix).

    With `galleries`, the same pass also records per-image counts and each class's worst images
    into `<tag>_images.json` beside the results (for `vocseg report`).
    """
    import warnings

    from vocseg.console import quiet_stdout
    from vocseg.recipe import official
    from vocseg.runs.run_config import load_run_config
    from vocseg.stack.checkpoints import load_state_dict_checked, state_dict_of

    checkpoint, run, cfg = load_run_config(target, config)
    root = data_root
    if root is None and official.is_official(target):
        from vocseg.recipe.recipe import default_data_root

        root = default_data_root()  # the official config names no data root
    root = root or config_data_root(cfg)
    if root is not None:
        root = root.expanduser().resolve()  # resolved before it goes into a config or a list
    if root is None or not (root / VOC_SUBDIR).is_dir():
        raise VocsegError(f"Data root {root or '(none in the config)'} has no {VOC_SUBDIR}.", "Pass --data-root (the folder `vocseg prepare` wrote).")
    source = split_source(root, split)
    results_dir = (out_dir or default_out_dir(target, checkpoint, run)).expanduser().resolve()
    if save_predictions is not None:
        save_predictions = save_predictions.expanduser().resolve()
    if tta and "tta_pipeline" not in cfg:
        from vocseg.recipe.mmconfig import tta_pipeline

        cfg.tta_pipeline = tta_pipeline()

    # Broken data never reaches the Runner: the same pair check as `prepare --check`.
    from vocseg.data.precheck import ListSpec, precheck

    lists = test_lists(root, source, results_dir / "lists")
    checked = precheck([ListSpec(ann, root / VOC_SUBDIR / "JPEGImages", root / VOC_SUBDIR / masks) for masks, ann in lists.items()])
    loader = cfg.val_dataloader.copy()
    loader.dataset = _test_dataset(cfg, root, lists, tta)
    workers = workers_value(loader.get("num_workers", 0)) if num_workers is None else num_workers
    loader.num_workers = workers
    loader.persistent_workers = workers > 0
    loader.batch_size = 1
    cfg.test_dataloader = loader
    cfg.test_evaluator = [
        dict(
            type=_METRIC_NAME,
            iou_metrics=["mIoU", "mDice", "mFscore"],
            ignore_index=IGNORE_INDEX,
            save_dir=str(save_predictions) if save_predictions else None,
        )
    ]
    if galleries:  # per-image counts for the error galleries of `vocseg report` (results/galleries.py)
        cfg.test_evaluator.append(dict(type="VocsegImageStats", ignore_index=IGNORE_INDEX))
    cfg.test_cfg = dict(type="TestLoop")
    cfg.load_from = None
    cfg.resume = False
    cfg.launcher = "none"
    cfg.work_dir = str(results_dir)
    from vocseg.stack.instance_names import unique_instance_names

    unique_instance_names(cfg, "eval")
    cfg.custom_hooks = []
    cfg.default_hooks = {k: v for k, v in cfg.get("default_hooks", {}).items() if k in ("timer", "logger")}
    if tta:
        cfg.model = dict(type="SegTTAModel", module=cfg.model)

    from mmengine.runner import Runner as MMEngineRunner

    class Runner(MMEngineRunner):
        def dump_config(self) -> None:
            """MMEngine's copy of the config, written through `vocseg.files` (recorded before it is
            renamed into place: a kill never leaves a copy the next run calls the user's)."""
            from vocseg.files import owned_write_text

            name = Path(self.cfg.filename).name if self.cfg.filename else f"{self.timestamp}.py"
            owned_write_text(Path(self.work_dir) / name, self.cfg.pretty_text)

    register_eval_metric()
    quiet = quiet_stdout(verbose)
    with quiet, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*instance named of visualizer has been created.*")
        runner = Runner.from_cfg(cfg)
        _record_mmengine_outputs(runner, cfg)
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
    if checked.warnings:
        result.extra["data_warnings"] = checked.warnings
    result.extra["tag"] = result_tag(target, checkpoint, run, source.name, tta)
    if galleries:
        write_image_stats(runner.test_evaluator.metrics[1], result, results_dir / f"{result.extra['tag']}{IMAGES_SUFFIX}")
    return result, metric


IMAGES_SUFFIX = "_images.json"  # per-image counts and the error galleries, beside <tag>.json


def write_image_stats(stats: Any, result: EvalResult, path: Path) -> Path:
    """`<tag>_images.json`: per-image counts and each class's worst images (vocseg.evaluation.galleries)."""
    import json

    from vocseg.evaluation.galleries import gallery_document
    from vocseg.files import write_text_atomic

    classes = list(result.per_class)
    galleries = stats.tracker.galleries(classes) if stats.tracker is not None else {}
    doc = gallery_document(stats.per_image, stats.predictions, galleries, classes, stats.limit, checkpoint=result.checkpoint, split=result.split, data_root=result.extra.get("data_root"))
    write_text_atomic(path, json.dumps(doc, separators=(",", ":")) + "\n")
    return path


def _record_mmengine_outputs(runner: Any, cfg: Any) -> None:
    """Record MMEngine's timestamped log folder in the results folder as vocseg's (`vocseg.files`);
    its copy of the config is written through `vocseg.files` (`Runner.dump_config` above)."""
    from vocseg.files import record_folder

    work_dir = Path(cfg.work_dir)
    log_dir = Path(getattr(runner, "log_dir", "") or "")
    if log_dir.parent == work_dir and log_dir.is_dir():
        record_folder(log_dir)


def save_outputs(result: EvalResult, out_dir: Path, tag: str, *, plots: bool = True, force: bool = False) -> list[Path]:
    """JSON, CSV and (unless told not to) the confusion heatmap and the IoU bar chart; `force`:
    a regular file of the user's under those names is replaced (`vocseg.files` rule)."""
    from vocseg.files import owned_mkdir

    owned_mkdir(out_dir)
    written = [out_dir / f"{tag}.json", out_dir / f"{tag}.csv"]
    write_json(result, written[0], force=force)
    write_csv(result, written[1], force=force)
    if plots:
        from vocseg.evaluation.charts import confusion_heatmap, iou_bar_chart

        title = f"{Path(result.checkpoint).name} on {result.split} ({result.num_images} images){' + TTA' if result.extra.get('tta') else ''}"
        if result.confusion is not None:
            written.append(confusion_heatmap(result.confusion, list(result.per_class), out_dir / f"{tag}_confusion.png", title=title, force=force))
        written.append(iou_bar_chart(result, out_dir / f"{tag}_iou.png", title=title, force=force))
    return written


