"""Evaluate a checkpoint on a split through MMEngine's test loop and mmseg's IoUMetric.

The numbers are IoUMetric's own (vocseg's metric subclasses it and only adds a confusion matrix
and, on request, the predicted label maps). Results go to a folder: `<tag>.json` (the foundation
schema plus extra keys), `<tag>.csv`, `<tag>_confusion.png` and `<tag>_iou.png`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vocseg.console import command
from vocseg.data.voc import IGNORE_INDEX, SPLITS_SUBDIR, VOC_SUBDIR
from vocseg.errors import VocsegError
from vocseg.evaluation.eval_result import METRIC_KEYS, EvalResult, Evaluation, two_decimals, write_csv, write_json
from vocseg.runs.folders import RUNS_ROOT
from vocseg.stack.threads import workers_value

FINE_MASKS = "SegmentationClass"  # VOC's own labels (with the 255 void band)
SBD_MASKS = "SegmentationClassAug"  # SBD labels converted by `vocseg prepare --aug`
SPLIT_NAMES = ("val", "train", "trainval", "aug", "trainaug")


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
            f"Fix the list or the data root (`{command('prepare', '--check', '--data-root', data_root)}` shows what is incomplete).",
        )
    return SplitSource(name=name, ids=ids, by_masks={k: v for k, v in by_masks.items() if v}, path=path)


def default_out_dir(target: str | Path, checkpoint: Path, run: Path | None) -> Path:
    """Where results go by default: the run folder's eval/, else runs/eval/<name>/."""
    from vocseg.recipe import official

    if run is not None:
        return run / "eval"
    name = official.ModelRef(str(target)).key or checkpoint.stem
    return RUNS_ROOT / "eval" / name


def result_tag(target: str | Path, checkpoint: Path, run: Path | None, split_name: str, tta: bool) -> str:
    """File stem of the results: `val`, `train_tta`, ... for a run folder; `<checkpoint>_val` for a named file."""
    tag = split_name + ("_tta" if tta else "")
    if run is not None and not Path(target).is_dir():
        tag = f"{checkpoint.stem}_{tag}"
    return tag


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
    from vocseg.files import owned_write_text

    lists: dict[str, Path] = {}
    for masks, ids in source.by_masks.items():
        if len(source.by_masks) == 1 and source.name in SPLIT_NAMES and source.path is not None:
            lists[masks] = source.path
            continue
        ann = (lists_dir / f"{source.name}_{masks}.txt").absolute()
        text = "\n".join(ids) + "\n"
        if not ann.is_file() or ann.read_text() != text:
            owned_write_text(ann, text)
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
) -> Evaluation:
    """Evaluate `target` (a run folder, a checkpoint or `official:NAME`) on `split`: the result and where its files go.

    With `galleries`, the same pass also records per-image counts and each class's worst images
    into `<tag>_images.json` beside the results (for `vocseg report`).
    """

    from vocseg.recipe import official
    from vocseg.runs.run_config import load_run_config

    checkpoint, run, cfg = load_run_config(target, config)
    from vocseg.data.dataset import dataset_of_config, use_dataset

    dataset_spec = dataset_of_config(cfg)
    use_dataset(dataset_spec)
    if not dataset_spec.is_voc:
        if data_root is not None:
            raise VocsegError(f"--data-root does not apply to a run of the own dataset {dataset_spec.name!r}: it reads the folders in its config.",
                              "Drop --data-root (evaluate another list of the same dataset with --split FILE).")
        return evaluate_own(target, checkpoint, run, cfg, split=split, tta=tta, verbose=verbose, out_dir=out_dir,
                            num_workers=num_workers, save_predictions=save_predictions, galleries=galleries)
    root = data_root
    ref = official.ModelRef(str(target))
    if root is None and ref.is_official:
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
    labels = {("voc" if k == FINE_MASKS else "sbd"): len(v) for k, v in source.by_masks.items()}
    return run_test(target, checkpoint, run, cfg, loader, source.name, root, labels, checked.warnings, tta=tta, verbose=verbose,
                    results_dir=results_dir, num_workers=num_workers, save_predictions=save_predictions, galleries=galleries)


def own_dataset_of(cfg: Any, split: str) -> tuple[dict[str, Any], str]:
    """An own-dataset run's test dataset for `--split`: val or train (the run's own lists), or a
    list file of ids of the same dataset. Returns (dataset dict, split name)."""
    def unwrap(d: Any) -> Any:
        while "dataset" in d or "datasets" in d:
            d = d.get("dataset") or d["datasets"][0]
        return d

    if split in ("val", "train"):
        key = "val_dataloader" if split == "val" else "train_dataloader"
        return dict(unwrap(cfg[key]["dataset"])), split
    path = Path(split).expanduser().resolve()
    if not path.is_file():
        raise VocsegError(f"--split {split!r} is neither val, train nor a list file ({path} does not exist).", "Pass val, train or a file of image ids.")
    dataset = dict(unwrap(cfg.val_dataloader.dataset))
    dataset["ann_file"] = str(path)
    return dataset, path.stem


def evaluate_own(target: str | Path, checkpoint: Path, run: Path | None, cfg: Any, *, split: str, tta: bool, verbose: bool, out_dir: Path | None,
                 num_workers: int | None, save_predictions: Path | None, galleries: bool) -> Evaluation:
    """`evaluate` for a run of an own dataset: its lists, folders and classes come from the run's config."""
    from vocseg.data.precheck import precheck, specs_from_dataset

    dataset, name = own_dataset_of(cfg, split)
    if tta and "tta_pipeline" not in cfg:
        from vocseg.recipe.mmconfig import tta_pipeline

        cfg.tta_pipeline = tta_pipeline()
    dataset["pipeline"] = with_vocseg_loading(cfg.tta_pipeline if tta else cfg.val_dataloader.dataset.pipeline)
    dataset["test_mode"] = True
    root = Path(str(dataset.get("data_root", "."))).expanduser().resolve()
    results_dir = (out_dir or default_out_dir(target, checkpoint, run)).expanduser().resolve()
    if save_predictions is not None:
        save_predictions = save_predictions.expanduser().resolve()
    specs = specs_from_dataset(dataset)
    checked = precheck(specs)
    loader = cfg.val_dataloader.copy()
    loader.dataset = dataset
    return run_test(target, checkpoint, run, cfg, loader, name, root, {"own": checked.pairs}, checked.warnings, tta=tta, verbose=verbose,
                    results_dir=results_dir, num_workers=num_workers, save_predictions=save_predictions, galleries=galleries)


def run_test(target: str | Path, checkpoint: Path, run: Path | None, cfg: Any, loader: Any, split_name: str, root: Path, labels: dict[str, int],
             data_warnings: list[str], *, tta: bool, verbose: bool, results_dir: Path, num_workers: int | None, save_predictions: Path | None,
             galleries: bool) -> Evaluation:
    """MMEngine's test loop over `loader` with vocseg's metrics; the result with its per-class table."""
    import warnings

    from vocseg.recipe.official import ModelRef

    ref = ModelRef(str(target))

    from vocseg.console import progress, quiet_stdout
    from vocseg.stack.checkpoints import load_state_dict_checked, state_dict_of

    workers = workers_value(loader.get("num_workers", 0)) if num_workers is None else num_workers
    loader.num_workers = workers
    loader.persistent_workers = workers > 0
    loader.batch_size = 1
    cfg.test_dataloader = loader
    cfg.test_evaluator = [
        dict(
            type="VocsegPerClassIoUMetric",
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
        def setup_env(self, env_cfg: Any) -> None:
            """MMEngine's, then its timestamped log folder noted in the results folder's record
            before MMEngine creates it (right after this): a kill in between leaves it vocseg's."""
            super().setup_env(env_cfg)
            from vocseg.files import record_folder_made_here

            record_folder_made_here(Path(self._work_dir) / self._timestamp)

        def dump_config(self) -> None:
            """MMEngine's copy of the config, written through `vocseg.files` (recorded before it is
            renamed into place: a kill never leaves a copy the next run calls the user's)."""
            from vocseg.files import owned_write_text

            name = Path(self.cfg.filename).name if self.cfg.filename else f"{self.timestamp}.py"
            owned_write_text(Path(self.work_dir) / name, self.cfg.pretty_text)

    import vocseg.evaluation.metric  # noqa: F401 - registers the metrics named above

    quiet = quiet_stdout(verbose)
    label = f"eval {split_name}{' + TTA' if tta else ''}"
    with quiet, warnings.catch_warnings(), progress(label, None, unit="images") as shown_progress:
        warnings.filterwarnings("ignore", message=".*instance named of visualizer has been created.*")
        runner = Runner.from_cfg(cfg)
        _record_mmengine_outputs(runner, cfg)
        model = runner.model.module if tta else runner.model
        ckpt = load_state_dict_checked(checkpoint, model)
        model.load_state_dict(state_dict_of(ckpt), strict=False)  # fit was checked: only BN counters may differ
        runner._has_loaded = True
        runner.register_hook(progress_hook(shown_progress), priority="VERY_LOW")
        metrics = runner.test()
    metric = runner.test_evaluator.metrics[0]
    per_class: dict[str, dict[str, Any]] = {}
    areas = metric.last_areas
    for i, name in enumerate(metric.dataset_meta["classes"]):
        # mmseg's rounded float32 value, written with the same two decimals it prints
        row: dict[str, Any] = {k: metric.per_class[name][k] for k in METRIC_KEYS if k in metric.per_class[name]}
        row["gt_pixels"] = int(areas["label"][i])
        row["pred_pixels"] = int(areas["pred"][i])
        per_class[name] = row
    confusion = metric.confusion.tolist() if metric.confusion is not None else None
    result = EvalResult(
        mIoU=two_decimals(metrics["mIoU"]),
        mAcc=two_decimals(metrics["mAcc"]),
        aAcc=two_decimals(metrics["aAcc"]),
        per_class=per_class,
        checkpoint=ref.text if ref.is_official else str(checkpoint),
        split=split_name,
        num_images=len(runner.test_dataloader.dataset),
        extra={
            "tta": tta,
            "data_root": str(root),
            "labels": labels,
            "means": {f"m{k}": two_decimals(metrics[f"m{k}"]) for k in ("Dice", "Precision", "Recall", "Fscore") if f"m{k}" in metrics},
        },
        confusion=confusion,
    )
    excluded = [name for name, row in per_class.items() if row.get("gt_pixels") == 0]
    if excluded:
        result.extra["excluded"] = excluded  # no pixel of theirs in the split: IoU undefined, not in mIoU unless predicted
    evaluation = Evaluation(result, results_dir, result_tag(target, checkpoint, run, split_name, tta), tuple(data_warnings or ()))
    if galleries:
        write_image_stats(runner.test_evaluator.metrics[1], result, results_dir / f"{evaluation.tag}{IMAGES_SUFFIX}")
    return evaluation


def progress_hook(display: Any) -> Any:
    """An MMEngine hook that advances `display` (`vocseg.console.ProgressDisplay`) after each test
    image (the loader's batch is 1; with TTA, after all of an image's scales and flips)."""
    from mmengine.hooks import Hook

    class EvalProgressHook(Hook):
        def before_test_epoch(self, runner: Any) -> None:
            display.start(len(runner.test_dataloader))

        def after_test_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
            display.advance(len(outputs) if outputs is not None else 1)

    return EvalProgressHook()


IMAGES_SUFFIX = "_images.json"  # per-image counts and the error galleries, beside <tag>.json


def write_image_stats(stats: Any, result: EvalResult, path: Path) -> Path:
    """`<tag>_images.json`: per-image counts and each class's worst images (vocseg.evaluation.galleries)."""
    import json

    from vocseg.evaluation.galleries import gallery_document
    from vocseg.files import owned_write_text

    classes = list(result.per_class)
    galleries = stats.tracker.galleries(classes) if stats.tracker is not None else {}
    doc = gallery_document(stats.per_image, stats.predictions, galleries, classes, stats.limit, checkpoint=result.checkpoint, split=result.split, data_root=result.extra.get("data_root"))
    owned_write_text(path, json.dumps(doc, separators=(",", ":")) + "\n")
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
    a regular file of the user's under those names is replaced (`vocseg.files` rule).

    The JSON is written last: `vocseg report` and `compare` take its presence as "this eval is
    complete", so a command stopped after the JSON but before the CSV or a chart would leave a set
    that no re-run completes (report reuses the JSON). Returns [JSON, CSV, charts...]."""
    from vocseg.files import owned_mkdir

    owned_mkdir(out_dir)
    written = [out_dir / f"{tag}.json", out_dir / f"{tag}.csv"]
    write_csv(result, written[1], force=force)
    if plots:
        from vocseg.evaluation.charts import confusion_heatmap, iou_bar_chart

        title = f"{Path(result.checkpoint).name} on {result.split} ({result.num_images} images){' + TTA' if result.extra.get('tta') else ''}"
        if result.confusion is not None:
            written.append(confusion_heatmap(result.confusion, list(result.per_class), out_dir / f"{tag}_confusion.png", title=title, force=force))
        written.append(iou_bar_chart(result, out_dir / f"{tag}_iou.png", title=title, force=force))
    write_json(result, written[0], force=force)
    return written


