"""Recipe + Plan -> one standalone, commented MMSeg config file (no `_base_`).

The file loads with `mmengine.Config.fromfile` and trains with mmseg's own `tools/train.py`:
`custom_imports` names `vocseg.mmseg_plugin`, which applies the stack fixes and registers
vocseg's loop, sampler, hooks and metric in any process that reads the config.
"""

from __future__ import annotations

import json
import pprint
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vocseg.data.dataset import DatasetSpec
from vocseg.data.voc import SPLITS_SUBDIR, VOC_SUBDIR
from vocseg.recipe.models import PRESETS, model_config
from vocseg.recipe.recipe import Plan, Recipe, dataset_spec
from vocseg.recipe.trackers import TRACKER_HOOK, backend_configs


@dataclass(frozen=True)
class Entry:
    name: str
    value: Any
    comment: str = ""


# vocseg's loader steps (vocseg.data.loading): the image as `prepare --check` reads it (EXIF
# orientation applied: the pixels of mmcv's LoadImageFromFile), the mask checked as the check checks it.
LOAD_IMAGE = "VocsegLoadImageFromFile"
LOAD_MASK = "VocsegLoadAnnotations"
VOC_DATASET = "VocsegVOCDataset"  # PascalVOCDataset reading its list as the check does


def train_pipeline(crop: int, scale: tuple[int, int]) -> list[dict[str, Any]]:
    """The official VOC augmentation (mmseg's pascal_voc12.py) with vocseg's faster transforms
    (vocseg.data.transforms): the same options and draws; MMSeg's labels bit for bit; the image
    interpolated only where the crop keeps it (within 1 level of MMSeg's resize) and converted to
    HSV once where MMSeg converts twice (both HSV steps drawn). The dataset runs the resize-crop,
    flip and distortion as one step (vocseg.data.fused) that distorts an enlarged crop's source
    pixels before interpolating them: over 200 draws on VOC-like photos the packed image differs
    from MMSeg's by 0.53 levels on average, at most 38 (docs/performance.md,
    `benchmarks/pipeline_speed.py --fidelity`). `exact_resize=True` (MMSeg's resize and order) and
    `exact_hsv=True` make it bit for bit."""
    return [
        dict(type=LOAD_IMAGE),
        dict(type=LOAD_MASK),
        # RandomResize(scale, ratio_range=(0.5, 2.0), keep_ratio=True) + RandomCrop(crop, cat_max_ratio=0.75)
        dict(type="VocsegRandomResizeCrop", scale=scale, ratio_range=(0.5, 2.0), keep_ratio=True, crop_size=(crop, crop), cat_max_ratio=0.75),
        dict(type="VocsegRandomFlip", prob=0.5),
        dict(type="VocsegPhotoMetricDistortion"),
        dict(type="VocsegPackSegInputs"),
    ]


def test_pipeline(scale: tuple[int, int]) -> list[dict[str, Any]]:
    return [
        dict(type=LOAD_IMAGE),
        dict(type="Resize", scale=scale, keep_ratio=True),
        # labels load after Resize: metrics are computed at the original resolution
        dict(type=LOAD_MASK),
        dict(type="PackSegInputs"),
    ]


def tta_pipeline() -> list[dict[str, Any]]:
    """The official multi-scale + flip test-time augmentation."""
    ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
    return [
        dict(type=LOAD_IMAGE),
        dict(
            type="TestTimeAug",
            transforms=[
                [dict(type="Resize", scale_factor=r, keep_ratio=True) for r in ratios],
                [dict(type="RandomFlip", prob=0.0, direction="horizontal"), dict(type="RandomFlip", prob=1.0, direction="horizontal")],
                [dict(type=LOAD_MASK)],
                [dict(type="PackSegInputs")],
            ],
        ),
    ]


def voc_dataset(data_root: str, ann_file: str, seg_dir: str, pipeline: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(
        type=VOC_DATASET,
        data_root=str(Path(data_root) / VOC_SUBDIR),
        data_prefix=dict(img_path="JPEGImages", seg_map_path=seg_dir),
        ann_file=f"{SPLITS_SUBDIR}/{ann_file}",
        pipeline=pipeline,
    )


def own_dataset(spec: DatasetSpec, split: str, pipeline: list[dict[str, Any]]) -> dict[str, Any]:
    """An own dataset's split: its folder, its class-id masks, its list, its classes and palette
    (metainfo, so that mmseg's own tools/train.py and every vocseg command read them from the config)."""
    assert spec.base is not None
    return dict(
        type=VOC_DATASET,
        data_root=str(spec.base),
        data_prefix=dict(img_path="JPEGImages", seg_map_path=str(spec.mask_dir)),
        ann_file=str(spec.lists[split]),
        metainfo=spec.metainfo(),
        pipeline=pipeline,
    )


def train_dataset(recipe: Recipe) -> dict[str, Any]:
    pipeline = train_pipeline(recipe.crop_size, PRESETS[recipe.model].scale)
    if not recipe.is_voc:
        return own_dataset(dataset_spec(recipe), "train", pipeline)
    voc_train = voc_dataset(recipe.data_root, "train.txt", "SegmentationClass", pipeline)
    if not recipe.aug:
        return voc_train
    # mmseg 1.x's pascal_voc12_aug: fine VOC labels for VOC train, SBD labels for the rest.
    sbd_aug = voc_dataset(recipe.data_root, "aug.txt", "SegmentationClassAug", pipeline)
    return dict(type="ConcatDataset", datasets=[voc_train, sbd_aug])


def persistent(recipe: Recipe) -> bool | str:
    """persistent_workers: with workers, 'auto' when their number is decided where it runs."""
    workers = recipe.config_workers
    return workers if isinstance(workers, str) else workers > 0


def val_dataloader(recipe: Recipe, ann_file: str = "val.txt", seg_dir: str = "SegmentationClass") -> dict[str, Any]:
    pipeline = test_pipeline(PRESETS[recipe.model].scale)
    dataset = voc_dataset(recipe.data_root, ann_file, seg_dir, pipeline) if recipe.is_voc else own_dataset(dataset_spec(recipe), "val", pipeline)
    return dict(
        batch_size=1,
        num_workers=recipe.config_workers,
        persistent_workers=persistent(recipe),
        pin_memory=recipe.use_pin_memory,
        sampler=dict(type="DefaultSampler", shuffle=False),
        dataset=dataset,
    )


def training_model(recipe: Recipe, *, sync_bn: bool, pretrained_prefix: str | None = None) -> dict[str, Any]:
    """The model of a recipe: the preset, its pretrained backbone (`pretrained_prefix` 'backbone.'
    when the file is a whole segmentor checkpoint), class weights in both losses."""
    model = model_config(PRESETS[recipe.model], sync_bn=sync_bn, pretrained_checkpoint=recipe.pretrained_checkpoint,
                         channels_last=recipe.use_channels_last)
    if pretrained_prefix and "init_cfg" in model["backbone"]:
        model["backbone"]["init_cfg"]["prefix"] = pretrained_prefix
    weights = recipe.class_weights
    if weights:
        for head in ("decode_head", "auxiliary_head"):
            model[head]["loss_decode"]["class_weight"] = list(weights)
    return model


def config_entries(recipe: Recipe, plan: Plan, work_dir: str, pretrained_prefix: str | None = None) -> list[Entry]:
    """The config, top-level name by top-level name, with why each computed value is what it is.

    `pretrained_prefix`: 'backbone.' when --pretrained is a whole segmentor checkpoint
    (`vocseg.recipe.pretrained.checkpoint_prefix`)."""
    preset = PRESETS[recipe.model]
    distributed_gpu = recipe.device == "cuda" and plan.world_size > 1
    warmup = recipe.warmup_iters
    schedulers: list[dict[str, Any]] = []
    if warmup:
        schedulers.append(dict(type="LinearLR", start_factor=1e-3, by_epoch=False, begin=0, end=warmup))
    schedulers.append(dict(type="PolyLR", eta_min=1e-4, power=0.9, begin=warmup, end=plan.max_iters, by_epoch=False))
    optim_wrapper: dict[str, Any] = dict(
        type="OptimWrapper",
        optimizer=dict(type="SGD", lr=plan.lr, momentum=0.9, weight_decay=0.0005),
        clip_grad=None,
    )
    if recipe.use_amp:
        # bf16 where the training GPU has it, else fp16 with loss scaling: chosen where it runs.
        optim_wrapper = dict(type="VocsegAmpOptimWrapper", dtype="auto", **{k: v for k, v in optim_wrapper.items() if k != "type"})
    custom_hooks: list[dict[str, Any]] = [dict(type="VocsegRngStateHook"), dict(type="VocsegThreadsHook"), dict(type="VocsegHealthHook")]
    if recipe.use_channels_last:
        custom_hooks.append(dict(type="VocsegChannelsLastHook"))
    if recipe.log_to:
        custom_hooks.append(dict(type=TRACKER_HOOK))
    schedule_text = (
        f"{recipe.epochs} epochs x {plan.iters_per_epoch} iterations/epoch"
        if recipe.epochs is not None
        else (f"{recipe.iters} iterations as given" if recipe.iters is not None else f"official {recipe.schedule or '40k'} x 16 samples at batch {plan.total_batch}")
    )
    model = training_model(recipe, sync_bn=distributed_gpu, pretrained_prefix=pretrained_prefix)
    data_text = ('VOC train + SBD aug' if recipe.aug else 'VOC train only')
    dataset_entries: list[Entry] = []
    if not recipe.is_voc:
        spec = dataset_spec(recipe)
        for head in ("decode_head", "auxiliary_head"):
            model[head]["num_classes"] = spec.num_classes
        data_text = f"dataset {spec.name!r}, its train list"
        dataset_entries.append(Entry("vocseg_dataset", json.dumps(spec.to_json(), sort_keys=True),
                                     f"{spec.describe()}; split: {spec.split_note} (vocseg reads it back)"))
    return [
        Entry("default_scope", "mmseg"),
        Entry("custom_imports", dict(imports=["vocseg.mmseg_plugin"], allow_failed_imports=False),
              "stack fixes (mmcv-lite ops, safe checkpoint loading) and vocseg's loop/sampler/hooks"),
        Entry("work_dir", work_dir),
        Entry("vocseg_recipe", recipe.to_json(), "the recipe this file was written from (vocseg reads it back)"),
        *dataset_entries,
        Entry("crop_size", (recipe.crop_size, recipe.crop_size), f"model preset {preset.name!r}" + (", --crop" if recipe.crop else "")),
        Entry("model", model,
              f"{preset.description}; SyncBN only when several GPUs share the batch; "
              f"pretrained: {recipe.pretrained_checkpoint or 'none'}"
              + (" (the backbone part of a whole segmentor checkpoint)" if pretrained_prefix else "")
              + (f"; class weights ({'median-frequency balancing of the training split' if recipe.class_weight == 'auto' else '--class-weight'}) "
                 "in both losses" if recipe.class_weights else "")),
        Entry("train_pipeline", train_pipeline(recipe.crop_size, preset.scale), f"the official VOC augmentation: resize to {preset.scale} x 0.5-2.0, crop, flip, photometric"),
        Entry("test_pipeline", test_pipeline(preset.scale), "used by `vocseg predict` (mmseg's inference_model)"),
        Entry("train_dataloader", dict(
            batch_size=recipe.batch,
            num_workers=recipe.config_workers,
            persistent_workers=persistent(recipe),
            pin_memory=recipe.use_pin_memory,
            sampler=dict(type="VocsegResumableSampler", batch_size=recipe.batch, shuffle=True, seed=recipe.seed),
            dataset=dict(type="VocsegSeededDataset", seed=recipe.seed, dataset=train_dataset(recipe)),
        ), f"{plan.train_size} training images ({data_text}); "
           f"{recipe.batch} per process x {plan.world_size} = batch {plan.total_batch}; the sampler "
           "reshuffles each epoch and skips trained batches on resume without loading them"
           + ("; num_workers 'auto': decided on the machine that trains (its cores shared by its processes, "
              "one left for training, at most 8)" if recipe.num_workers is None else "")),
        Entry("val_dataloader", val_dataloader(recipe)),
        Entry("test_dataloader", val_dataloader(recipe)),
        Entry("val_evaluator", iou_metric(work_dir), "several processes gather their results in collect_dir (inside the run folder)"),
        Entry("test_evaluator", iou_metric(work_dir)),
        Entry("optim_wrapper", optim_wrapper, f"LR {plan.lr:g} = {plan.lr_rule}" + ("; mixed precision" if recipe.use_amp else "")),
        Entry("param_scheduler", schedulers, "poly decay every iteration (never once per epoch)"
              + (f" after {warmup} warmup iterations" if warmup else "")),
        Entry("train_cfg", dict(type="VocsegResumableIterLoop", max_iters=plan.max_iters, val_interval=plan.val_interval_iters),
              f"{plan.max_iters} iterations = {schedule_text}; {plan.epochs:.1f} epochs, {plan.samples} samples, "
              f"{plan.ratio_to_official:.2f}x the official 40k x 16 schedule"),
        Entry("val_cfg", dict(type="ValLoop")),
        Entry("test_cfg", dict(type="TestLoop")),
        Entry("default_hooks", dict(
            timer=dict(type="IterTimerHook"),
            logger=dict(type="LoggerHook", interval=max(1, min(50, plan.max_iters // 20)), log_metric_by_epoch=False),
            param_scheduler=dict(type="ParamSchedulerHook"),
            checkpoint=dict(type="VocsegCheckpointHook", by_epoch=False, interval=plan.ckpt_interval_iters,
                            max_keep_ckpts=recipe.keep, save_last=True, save_best="mIoU", rule="greater"),
            sampler_seed=dict(type="DistSamplerSeedHook"),
            visualization=dict(type="SegVisualizationHook"),
        ), f"checkpoint every {plan.ckpt_interval_iters} iterations, keeping {recipe.keep} and the best by mIoU"),
        Entry("custom_hooks", custom_hooks, "RNG states saved with each checkpoint: a resumed run continues the same random stream; "
              "training stops at a non-finite loss or model before anything of it is saved (VocsegHealthHook); "
              "torch threads sized to the cores left by the loader workers (unless OMP_NUM_THREADS is set)"
              + ("; weights in channels_last" if recipe.use_channels_last else "")
              + ("; per-class IoU to the experiment trackers" if recipe.log_to else "")),
        *([Entry("model_wrapper_cfg", dict(type="VocsegDistributedDataParallel", channels_last=True),
                 "channels_last before DDP wraps the model, so its gradient buckets match")] if recipe.use_channels_last and plan.world_size > 1 else []),
        Entry("env_cfg", dict(
            cudnn_benchmark=recipe.use_cudnn_benchmark,
            mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
            dist_cfg=dict(backend="nccl" if recipe.device == "cuda" else "gloo"),
        ), "OpenCV single-threaded; VocsegThreadsHook gives torch's intra-op threads the cores the loader workers leave"),
        Entry("randomness", dict(seed=recipe.seed, deterministic=recipe.deterministic),
              "fixed up front: the sampler's order must not depend on a seed restored later"),
        *runtime_entries(tta_note="used by `vocseg eval --tta`", trackers=recipe.log_to, load_from=recipe.load_from),
    ]


def runtime_entries(tta_note: str, trackers: tuple[str, ...] = (), load_from: str | None = None) -> list[Entry]:
    """The end every vocseg-written config shares (training and official test configs).

    `trackers` (`--log-to`) adds their MMEngine visualization backends after LocalVisBackend
    (which writes scalars.json); they write to the run folder and start at the first scalar, so
    `vocseg eval` on the run never opens a tracker run.
    """
    backends = [dict(type="LocalVisBackend"), *backend_configs(trackers)]
    note = f"experiment trackers: {', '.join(trackers)} (--log-to; see docs/tracking.md)" if trackers else ""
    return [
        Entry("vis_backends", backends, note),
        Entry("visualizer", dict(type="SegLocalVisualizer", vis_backends=backends, name="visualizer")),
        Entry("log_processor", dict(by_epoch=False)),
        Entry("log_level", "INFO"),
        Entry("load_from", load_from, "--load-from: the whole model starts from these weights (tensors whose name and shape "
              "match; the rest start fresh)" if load_from else ""),
        Entry("resume", False),
        Entry("tta_model", dict(type="SegTTAModel")),
        Entry("tta_pipeline", tta_pipeline(), f"official multi-scale (0.5-1.75) + flip, {tta_note}"),
    ]


def render_config(entries: list[Entry], header: str) -> str:
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    for entry in entries:
        lines.append("")
        if entry.comment:
            lines.append(f"# {entry.comment}")
        lines.append(f"{entry.name} = {pprint.pformat(entry.value, width=110, sort_dicts=False)}")
    return "\n".join(lines) + "\n"


COLLECT_DIR = ".dist_test"  # MMEngine's name; in the run folder instead of the current folder, and deleted after each validation


def iou_metric(work_dir: str) -> dict[str, Any]:
    """vocseg's metric (`VocsegPerClassIoUMetric`): the processes of a multi-process validation
    gather their results in `<work_dir>/.dist_test/` (MMEngine's default is the current folder)."""
    return dict(type="VocsegPerClassIoUMetric", iou_metrics=["mIoU", "mDice", "mFscore"], collect_dir=f"{work_dir.rstrip('/')}/{COLLECT_DIR}")


def build_config_text(recipe: Recipe, plan: Plan, work_dir: str | Path, pretrained_prefix: str | None = None) -> str:
    header = (
        "MMSegmentation config written by `vocseg config`; standalone (no _base_).\n"
        f"Model {recipe.model}, {('VOC 2012 + SBD (aug)' if recipe.aug else 'VOC 2012 train only') if recipe.is_voc else f'dataset {recipe.dataset!r}'}, "
        f"{plan.world_size} process(es) x batch {recipe.batch}, {plan.max_iters} iterations.\n"
        "Train with `vocseg train THIS_FILE` or mmseg's tools/train.py."
    )
    return render_config(config_entries(recipe, plan, str(work_dir), pretrained_prefix), header)


