"""The training data path per CPU core: vocseg's written config against MMSeg's stock VOC pipeline.

Both are built from configs, not from hand-picked functions:

- vocseg: the r50 config `vocseg config` writes (`vocseg.recipe.mmconfig.build_config_text`, the
  golden `r50_2gpu_40k` recipe), its VOC-train dataset with its `train_pipeline`, and its
  `model.data_preprocessor`;
- MMSeg: the stock `configs/_base_/datasets/pascal_voc12.py` shipped in the mmseg wheel (its
  train and test pipelines, as `PascalVOCDataset` over the same images), with the data
  preprocessor of the stock `configs/upernet/upernet_r50_4xb4-40k_voc12aug-512x512.py`.

What is timed, per sample: the dataset's `__getitem__` (list lookup, decode, augmentation,
packing), and the data preprocessor on batches of 4 (`SegDataPreProcessor` on the CPU: stack,
BGR->RGB, normalise, pad), one thread (torch, OpenCV, OpenMP, BLAS), in CPU seconds of the
process (`CLOCK`), in rounds within which the paths alternate every `CHUNK` samples (vocseg,
stock, stock, vocseg, ...), each chunk from the same NumPy seed for both, so both draw the same
scales, crops and photometric choices. vocseg's training figures include the per-sample seeding
its config wraps the dataset in (`VocsegSeededDataset`, for exact resume: `seeding_ms`, timed
apart so that the draws stay the same). The figure is the median over rounds of stock time /
vocseg time. The per-stage breakdown times each pipeline transform separately (a wrapper
around each `transform` call, in a separate pass after the timed rounds).

Images: no real VOC here, so VOC-like pairs are written deterministically to a temporary folder
(`make_voc_like`): 500x375 and 375x500 JPEGs (quality 75-90) of smooth gradients, textured
regions and noise (~75 KB each, VOC's JPEGs average ~110 KB), palette PNG masks with 1-3
large class regions and 255 borders, 30% dominated by one class (so `cat_max_ratio` retries).

Run: python benchmarks/pipeline_speed.py [--samples 320] [--rounds 5] [--keep DIR] [--profile] [--fidelity N]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

GPU_IMAGES_PER_S = 250.0  # UPerNet-R50 512x512 bf16 on one H100: 200-280 img/s (issue 22)
BATCH = 4
STOCK_DATA = "_base_/datasets/pascal_voc12.py"
STOCK_CONFIG = "upernet/upernet_r50_4xb4-40k_voc12aug-512x512.py"


# ---------------------------------------------------------------- VOC-like data


def make_voc_like(root: Path, n: int, seed: int = 0) -> list[str]:
    """Write `n` VOC-like image/mask pairs under root/VOCdevkit/VOC2012 (JPEGImages,
    SegmentationClass, ImageSets/Segmentation/train.txt and val.txt); returns the ids.

    Deterministic for a seed. 70% landscape 500x375, 30% portrait 375x500; JPEG quality 75-90;
    masks: palette PNGs (VOC palette), 1-3 elliptic class regions with 5-pixel 255 borders, 30%
    of them one large region (a single class over most of any 512 crop: cat_max_ratio retries).
    """
    import cv2
    from PIL import Image

    from vocseg.data.voc import PALETTE

    voc = root / "VOCdevkit" / "VOC2012"
    img_dir, seg_dir, lists = voc / "JPEGImages", voc / "SegmentationClass", voc / "ImageSets" / "Segmentation"
    for d in (img_dir, seg_dir, lists):
        d.mkdir(parents=True, exist_ok=True)
    palette = [c for rgb in PALETTE for c in rgb]
    palette += [0] * (768 - len(palette))
    palette[765:768] = [224, 224, 192]
    rng = np.random.default_rng(seed)
    ids = []
    for i in range(n):
        w, h = (500, 375) if rng.random() < 0.7 else (375, 500)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = np.stack(
            [rng.uniform(40, 200) + rng.uniform(-60, 60) * (xx / w) + rng.uniform(-60, 60) * (yy / h) for _ in range(3)], -1
        )
        texture = cv2.GaussianBlur(rng.normal(0, 40, (h, w, 3)).astype(np.float32), (0, 0), rng.uniform(0.8, 2.5))
        mask = np.zeros((h, w), np.uint8)
        dominant = rng.random() < 0.3
        for _ in range(1 if dominant else int(rng.integers(1, 4))):
            cls = int(rng.integers(1, 21))
            cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
            lo, hi = (0.35, 0.6) if dominant else (0.1, 0.35)
            ax, ay = rng.uniform(lo, hi) * w, rng.uniform(lo, hi) * h
            region = ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1
            mask[region] = cls
            base[region] = 0.4 * base[region] + 0.6 * rng.uniform(0, 255, 3).astype(np.float32)
        mask[cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((5, 5), np.uint8)) > 0] = 255
        img = np.clip(base + texture + rng.normal(0, 22, (h, w, 3)), 0, 255).astype(np.uint8)
        image_id = f"2012_{i:06d}"
        Image.fromarray(img).save(img_dir / f"{image_id}.jpg", quality=int(rng.integers(75, 91)))
        label = Image.fromarray(mask, "P")
        label.putpalette(palette)
        label.save(seg_dir / f"{image_id}.png")
        ids.append(image_id)
    for split in ("train", "val"):
        (lists / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return ids


# ---------------------------------------------------------------- both pipelines, from configs


def vocseg_config(data_root: Path) -> Any:
    """The r50 config `vocseg config --data-root DATA --gpus 6,7 --batch 4 --schedule 40k` writes."""
    from mmengine.config import Config

    from vocseg.recipe.mmconfig import build_config_text
    from vocseg.recipe.recipe import Recipe, plan

    recipe = Recipe(data_root=str(data_root), gpus="6,7", batch=4, schedule="40k", aug=False)
    text = build_config_text(recipe, plan(recipe, 1464), str(data_root / "work"))
    return Config.fromstring(text, ".py")


def stock_config() -> Any:
    """MMSeg's stock VOC data settings (`_base_/datasets/pascal_voc12.py`: its train and test
    pipelines) with the data preprocessor of its UPerNet-R50 VOC config (`STOCK_CONFIG`)."""
    import mmseg
    from mmengine.config import Config

    configs = Path(mmseg.__file__).parent / ".mim" / "configs"
    cfg = Config.fromfile(str(configs / STOCK_DATA))
    cfg["model"] = dict(data_preprocessor=Config.fromfile(str(configs / STOCK_CONFIG))["model"]["data_preprocessor"])
    return cfg


def build_path(cfg: Any, data_root: Path, split: str, stock: bool) -> tuple[Any, Any]:
    """(dataset, data preprocessor) of a config's `split` ("train" or "val") dataloader, over data_root."""
    import copy

    from mmseg.registry import DATASETS, MODELS
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    import vocseg.mmseg_plugin  # noqa: F401  (vocseg's transforms)

    loader = cfg[f"{split}_dataloader"]
    ds_cfg = copy.deepcopy(loader["dataset"])
    while ds_cfg.get("type") in ("VocsegSeededDataset", "ConcatDataset", "RepeatDataset"):
        ds_cfg = ds_cfg["dataset"] if "dataset" in ds_cfg else ds_cfg["datasets"][0]
    voc = data_root / "VOCdevkit" / "VOC2012"
    ds_cfg.update(
        data_root=str(voc),
        data_prefix=dict(img_path="JPEGImages", seg_map_path="SegmentationClass"),
        ann_file=f"ImageSets/Segmentation/{split}.txt",
    )
    if stock:
        ds_cfg["type"] = "PascalVOCDataset"
    dataset = DATASETS.build(ds_cfg)
    preprocessor = MODELS.build(copy.deepcopy(cfg["model"]["data_preprocessor"]))
    return dataset, preprocessor


# ---------------------------------------------------------------- timing


def batch_of(training: bool) -> int:
    """Batches of 4 for training (the recipe's per-GPU batch); 1 for eval (val_dataloader's, as
    images keep their own sizes there)."""
    return BATCH if training else 1


CLOCK = time.process_time
"""CPU seconds of this process (all its threads), not wall time: the figure is CPU work per core,
and a shared machine's other jobs then slow neither path's clock (what they still change, cache
and memory bandwidth, the interleaving spreads over both)."""


def one_thread() -> None:
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def time_path(dataset: Any, preprocessor: Any, indices: list[int], batch: int, training: bool) -> float:
    """Seconds for every sample of `indices`: __getitem__, then the preprocessor per batch."""
    from mmengine.dataset import pseudo_collate

    start = CLOCK()
    for first in range(0, len(indices), batch):
        items = [dataset[i] for i in indices[first : first + batch]]
        preprocessor(pseudo_collate(items), training=training)
    return CLOCK() - start


class StageTimer:
    """Wraps each transform of a dataset's pipeline to add its seconds to `self.seconds[name]`."""

    def __init__(self, dataset: Any) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.dataset = dataset
        self.originals = list(dataset.pipeline.transforms)
        wrapped = []
        for position, transform in enumerate(self.originals):
            wrapped.append(self._wrap(f"{position}. {type(transform).__name__}", transform))
        dataset.pipeline.transforms = wrapped

    def _wrap(self, name: str, transform: Any) -> Any:
        def call(results: dict) -> Any:
            start = CLOCK()
            out = transform(results)
            self.seconds[name] += CLOCK() - start
            return out

        return call

    def restore(self) -> None:
        self.dataset.pipeline.transforms = self.originals


def breakdown(dataset: Any, preprocessor: Any, indices: list[int], training: bool, seed: int) -> dict[str, float]:
    """Milliseconds per image by stage: each transform, the preprocessor, and the rest of __getitem__."""
    from mmengine.dataset import pseudo_collate

    timer = StageTimer(dataset)
    np.random.seed(seed)
    pre = getitem = 0.0
    try:
        for first in range(0, len(indices), batch_of(training)):
            start = CLOCK()
            items = [dataset[i] for i in indices[first : first + batch_of(training)]]
            middle = CLOCK()
            preprocessor(pseudo_collate(items), training=training)
            getitem += middle - start
            pre += CLOCK() - middle
    finally:
        timer.restore()
    n = len(indices)
    stages = {name: 1e3 * s / n for name, s in timer.seconds.items()}
    stages["dataset overhead (list, copy)"] = 1e3 * (getitem - sum(timer.seconds.values())) / n
    stages[f"data preprocessor (batch of {batch_of(training)})"] = 1e3 * pre / n
    return stages


CHUNK = 32  # samples: both paths alternate every CHUNK samples (ABBA), so a slower spell of a shared machine hits both


def compare(paths: dict[str, tuple[Any, Any]], indices: list[int], rounds: int, training: bool) -> dict[str, list[float]]:
    """Per-image milliseconds of each path per round. Within a round the paths alternate every
    CHUNK samples (ABBA...), each chunk from the same seed for both, so both draw the same scales,
    crops, flips and photometric choices, and a change of the machine's speed (other jobs, CPU
    frequency) lands on both: the per-round ratio is what is compared."""
    names = list(paths)
    ms: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        seconds = dict.fromkeys(names, 0.0)
        for c, first in enumerate(range(0, len(indices), CHUNK)):
            chunk = indices[first : first + CHUNK]
            for name in names if (r + c) % 2 == 0 else names[::-1]:
                np.random.seed(100_000 * (r + 1) + c)
                seconds[name] += time_path(*paths[name], chunk, batch_of(training), training)
        for name in names:
            ms[name].append(1e3 * seconds[name] / len(indices))
    return ms


def seeding_ms(samples: int) -> float:
    """Milliseconds per sample that vocseg's written config adds around each training sample:
    `VocsegSeededDataset` seeds `random`, NumPy and torch from (seed, position) and restores them
    after (exact resume). `build_path` unwraps it so that both paths draw the same numbers; its
    cost is timed here on the real class over a dataset that does nothing, and added to vocseg's
    training figures (the stock pipeline has no such step)."""
    from vocseg.training.sampler import SeededDataset

    seeded = SeededDataset([None] * samples, seed=0)
    for i in range(8):
        seeded[i]
    start = CLOCK()
    for i in range(samples):
        seeded[i]
    return 1e3 * (CLOCK() - start) / samples


def fidelity(vocseg_dataset: Any, stock_dataset: Any, indices: list[int]) -> None:
    """How far vocseg's packed training samples are from MMSeg's for the same draws (the same
    NumPy seed per sample): the image's mean and largest absolute difference in levels, the
    images differing anywhere by more than one level, and whether the label maps are identical;
    with vocseg's defaults, with `exact_hsv=True` (the resize inside the crop and the distortion
    before it differ), with `exact_resize=True` (MMSeg's order: the HSV merge alone differs), and
    with both (expected: identical)."""
    import torch

    steps = {}
    for step in vocseg_dataset.pipeline.transforms:  # the fused step's parts too (vocseg.data.fused)
        for part in (step, *(getattr(step, name) for name in ("resize_crop", "flip", "photometric") if hasattr(step, name))):
            steps[type(part).__name__] = part
    resize_crop, photometric = steps["VocsegRandomResizeCrop"], steps["VocsegPhotoMetricDistortion"]
    print("\n== fidelity: vocseg's packed training samples against MMSeg's, same draws ==")
    for label, exact_resize, exact_hsv in (("defaults", False, False), ("exact_hsv=True", False, True), ("exact_resize=True", True, False), ("both exact", True, True)):
        resize_crop.exact_resize, photometric.exact_hsv = exact_resize, exact_hsv
        means, worst, over_one, labels_same = [], 0, 0, True
        for i in indices:
            np.random.seed(7000 + i)
            a = stock_dataset[i]
            np.random.seed(7000 + i)
            b = vocseg_dataset[i]
            diff = (a["inputs"].int() - b["inputs"].int()).abs()
            means.append(float(diff.float().mean()))
            worst = max(worst, int(diff.max()))
            over_one += int(diff.max()) > 1
            labels_same &= torch.equal(a["data_samples"].gt_sem_seg.data, b["data_samples"].gt_sem_seg.data)
        print(f"  {label:18s} mean {np.mean(means):.3f} levels, max {worst}, {over_one} of {len(indices)} images above 1 level somewhere, labels {'identical' if labels_same else 'DIFFER'}")
    resize_crop.exact_resize, photometric.exact_hsv = False, False
    distorted_first(vocseg_dataset, indices)


def distorted_first(dataset: Any, indices: list[int]) -> None:
    """How many of the same draws the fused step (vocseg.data.fused) distorts before interpolating
    (the crop window covers fewer source pixels than its own), and those source pixels as a share
    of the window's: its own rule, on the steps before it, from the same seeds."""
    import copy

    transforms = dataset.pipeline.transforms
    position = next((k for k, t in enumerate(transforms) if hasattr(t, "resize_crop")), None)
    if position is None:
        print("  (no fused step in this pipeline)")
        return
    shares = []
    for i in indices:
        np.random.seed(7000 + i)
        results = copy.deepcopy(dataset.get_data_info(i))
        for step in transforms[:position]:
            results = step(results)
        img = results["img"]
        window = transforms[position].resize_crop.choose_window(results)
        x0, y0, x1, y1 = window.source_box(img.shape[1], img.shape[0])
        out_w, out_h = window.size
        if (x1 - x0) * (y1 - y0) < out_w * out_h:
            shares.append((x1 - x0) * (y1 - y0) / (out_w * out_h))
    print(f"  fused step: {len(shares)} of {len(indices)} draws distort the source pixels first, "
          f"{np.mean(shares) if shares else 0:.2f} of the window's pixels on average")


def report(title: str, ms: dict[str, list[float]], stages: dict[str, dict[str, float]]) -> dict[str, float]:
    """Print one path's figures; returns the median ratio (mmseg / X) of each other path."""
    print(f"\n== {title} ==")
    for name in ms:
        med = statistics.median(ms[name])
        print(
            f"{name:14s} {med:6.2f} ms/image (median of rounds)  {1e3 / med:6.1f} images/s per core  "
            f"{GPU_IMAGES_PER_S * med / 1e3:4.1f} cores per GPU at {GPU_IMAGES_PER_S:.0f} images/s"
        )
    ratios = {}
    for name in ms:
        if name == "mmseg":
            continue
        per_round = [s / v for s, v in zip(ms["mmseg"], ms[name])]
        ratios[name] = statistics.median(per_round)
        print(f"RATIO mmseg / {name}: {ratios[name]:.2f} (median over rounds; per round " + ", ".join(f"{r:.2f}" for r in per_round) + ")")
    for name in ms:
        print(f"  {name} per stage, ms/image:")
        for stage, value in stages[name].items():
            print(f"    {stage:42s} {value:6.2f}")
        print(f"    {'sum':42s} {sum(stages[name].values()):6.2f}")
    return ratios


def profile(dataset: Any, preprocessor: Any, indices: list[int], training: bool, top: int = 15) -> None:
    """Print the `top` calls by own time (cProfile) of one pass over `indices`, in ms per image.
    Python-level calls carry the profiler's own overhead; the C calls (decoders, OpenCV) do not."""
    import cProfile
    import pstats

    np.random.seed(1000)
    prof = cProfile.Profile()
    prof.enable()
    time_path(dataset, preprocessor, indices, batch_of(training), training)
    prof.disable()
    stats = pstats.Stats(prof).stats  # (file, line, name) -> (calls, primitive calls, own s, cumulative s, callers)
    rows = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    print(f"  profile of vocseg's path, top {top} by own time, ms/image:")
    for (file, line, name), (calls, _, own, _, _) in rows:
        where = name if file == "~" else f"{Path(file).name}:{line}({name})"
        print(f"    {where:60s} {1e3 * own / len(indices):6.2f}  ({calls / len(indices):.1f} calls/image)")


def decoders(root: Path, n: int) -> None:
    """JPEG decode of the same files, ms/image: vocseg's reader, OpenCV's (MMSeg's), Pillow's."""
    import cv2
    from PIL import Image

    from vocseg.data.images import read_image_bgr

    files = sorted((root / "VOCdevkit" / "VOC2012" / "JPEGImages").glob("*.jpg"))[:n]

    def pillow(path: Path) -> Any:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))

    for name, fn in (("vocseg read_image_bgr", read_image_bgr), ("cv2.imread (MMSeg)", lambda p: cv2.imread(str(p))), ("Pillow", pillow)):
        fn(files[0])
        start = CLOCK()
        for path in files:
            fn(path)
        print(f"  decode {name:24s} {1e3 * (CLOCK() - start) / len(files):6.2f} ms/image")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=320)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--keep", type=Path, help="write the images there and keep them (default: a temporary folder)")
    ap.add_argument("--profile", action="store_true", help="also profile vocseg's training path and compare JPEG decoders")
    ap.add_argument("--fidelity", type=int, default=0, metavar="N", help="also compare N packed training samples with MMSeg's, same draws (pixel differences)")
    args = ap.parse_args()
    one_thread()
    with tempfile.TemporaryDirectory(prefix="vocseg-pipeline-") as tmp:
        root = args.keep or Path(tmp)
        if not (root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / "train.txt").exists():
            make_voc_like(root, args.samples)
        try:
            import simplejpeg

            decoder = f"simplejpeg {simplejpeg.__version__}"
        except ImportError:
            decoder = "Pillow (simplejpeg not installed)"
        print(f"{args.samples} VOC-like pairs in {root}; one thread; {args.rounds} interleaved rounds; vocseg decodes JPEG with {decoder}")
        print(f"load before: {Path('/proc/loadavg').read_text().strip() if Path('/proc/loadavg').exists() else '?'}")
        ours, theirs = vocseg_config(root), stock_config()
        indices = list(range(args.samples))
        results = {}
        for split, training in (("train", True), ("val", False)):
            paths = {"vocseg": build_path(ours, root, split, stock=False), "mmseg": build_path(theirs, root, split, stock=True)}
            for dataset, preprocessor in paths.values():  # warm-up: imports, first-call caches
                time_path(dataset, preprocessor, indices[:8], batch_of(training), training)
            ms = compare(paths, indices, args.rounds, training)
            stages = {name: breakdown(*paths[name], indices, training, seed=1000) for name in paths}
            if training:  # vocseg's per-sample seeding, which build_path unwrapped (seeding_ms)
                seeding = seeding_ms(len(indices))
                ms["vocseg"] = [t + seeding for t in ms["vocseg"]]
                stages["vocseg"]["per-sample seeding (VocsegSeededDataset)"] = seeding
            results[split] = report(f"{'training' if training else 'eval/test'} path ({split}_dataloader)", ms, stages)
            if args.fidelity and training:
                fidelity(paths["vocseg"][0], paths["mmseg"][0], indices[: args.fidelity])
            if args.profile and training:
                profile(*paths["vocseg"], indices, training)
                decoders(root, args.samples)
        print(f"load after: {Path('/proc/loadavg').read_text().strip() if Path('/proc/loadavg').exists() else '?'}")


if __name__ == "__main__":
    main()
