"""Cost of the data pre-check `vocseg train` runs before the Runner, next to one training epoch.

The tree: a generated VOC + SBD data root the size of the real one (VOC train 1464 + SBD aug
9118 = trainaug 10582, and VOC val 1449: the 12031 pairs a `--aug` run checks), images of VOC's
sizes (500x375, 375x500, 500x333) as JPEG quality 90 with polygons and noise (about VOC's bytes
per image), masks as palette PNGs (VOC) and grayscale PNGs (SBD, as `vocseg prepare --aug` writes
them). Generated once into --cache.

Measured in one script, on the same machine and moment:
1. the pre-check on a cold cache (`vocseg.data.precheck.precheck`, every pair decoded, all cores);
2. the same call with its cache warm (the second `vocseg train` on the same lists);
3. the tiny model's CPU training iteration (batch 8, 2 loader workers, as the demo trains), from
   MMEngine's own per-iteration `time` after a warm-up, over --iters iterations of
   `vocseg train --aug` on the same tree; one epoch = ceil(10582 / 8) iterations.

Run: python benchmarks/precheck_cost.py [--cache /tmp/vocseg-bench-precheck] [--iters 40] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

SIZES = [(500, 375), (375, 500), (500, 333), (500, 400), (333, 500)]
N_TRAIN, N_VAL, N_AUG = 1464, 1449, 9118
VOC = "VOCdevkit/VOC2012"


def make_pair(args: tuple[str, str, int, bool]) -> None:
    from PIL import Image, ImageDraw, ImageFilter

    root, image_id, seed, fine = args
    rng = np.random.default_rng(seed)
    w, h = SIZES[seed % len(SIZES)]
    labels = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(labels)
    for _ in range(int(rng.integers(1, 4))):
        points = [(int(rng.integers(0, w)), int(rng.integers(0, h))) for _ in range(6)]
        draw.polygon(points, fill=int(rng.integers(1, 21)))
    mask = np.asarray(labels).copy()
    colours = rng.integers(0, 256, size=(256, 3), dtype=np.uint8)
    pixels = colours[mask].astype(np.int16) + rng.normal(0, 18, size=(h, w, 3)).astype(np.int16)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(f"{root}/{VOC}/JPEGImages/{image_id}.jpg", quality=90)
    if fine:
        from vocseg.data.voc import PALETTE

        edge = np.asarray(labels.filter(ImageFilter.FIND_EDGES)) > 0
        mask[edge] = 255  # VOC's void band
        out = Image.fromarray(mask, mode="P")
        out.putpalette([c for colour in PALETTE for c in colour])
        out.save(f"{root}/{VOC}/SegmentationClass/{image_id}.png")
    else:
        Image.fromarray(mask, mode="L").save(f"{root}/{VOC}/SegmentationClassAug/{image_id}.png")


def build_tree(root: Path, workers: int) -> None:
    if (root / "complete").is_file():
        return
    shutil.rmtree(root, ignore_errors=True)
    for sub in ("JPEGImages", "SegmentationClass", "SegmentationClassAug", "ImageSets/Segmentation"):
        (root / VOC / sub).mkdir(parents=True)
    train = [f"2007_{i:06d}" for i in range(N_TRAIN)]
    val = [f"2008_{i:06d}" for i in range(N_VAL)]
    aug = [f"2010_{i:06d}" for i in range(N_AUG)]
    jobs = [(str(root), i, k, True) for k, i in enumerate(train + val)] + [(str(root), i, 100000 + k, False) for k, i in enumerate(aug)]
    start = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(make_pair, jobs, chunksize=64))
    lists = root / VOC / "ImageSets/Segmentation"
    for name, ids in (("train", train), ("val", val), ("trainval", train + val), ("aug", aug), ("trainaug", sorted(train + aug))):
        (lists / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    (root / "complete").write_text("")
    print(f"generated {len(jobs)} pairs in {time.perf_counter() - start:.0f} s into {root}")


def tiny_iteration_time(root: Path, iters: int, warmup: int) -> float:
    work = Path(tempfile.mkdtemp(prefix="vocseg-bench-train-"))
    try:
        cmd = [sys.executable, "-m", "vocseg.cli", "train", "--data-root", str(root), "--aug", "--model", "tiny", "--device", "cpu",
               "--batch", "8", "--workers", "2", "--iters", str(iters), "--val-interval", str(iters * 10), "--work-dir", str(work / "run")]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        times = []
        for path in (work / "run").glob("*/vis_data/scalars.json"):
            for line in path.read_text().splitlines():
                row = json.loads(line)
                if "loss" in row and "time" in row and row["step"] > warmup:
                    times.append(row["time"])
        return statistics.mean(times)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "vocseg-bench-precheck")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--iters", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()

    from vocseg.data.precheck import ListSpec, precheck
    from vocseg.recipe.schedule import iters_per_epoch

    build_tree(args.cache, args.workers)
    voc = args.cache / VOC
    lists = voc / "ImageSets/Segmentation"
    specs = [
        ListSpec(lists / "train.txt", voc / "JPEGImages", voc / "SegmentationClass"),
        ListSpec(lists / "aug.txt", voc / "JPEGImages", voc / "SegmentationClassAug"),
        ListSpec(lists / "val.txt", voc / "JPEGImages", voc / "SegmentationClass"),
    ]
    shutil.rmtree(voc / ".vocseg-cache", ignore_errors=True)
    start = time.perf_counter()
    cpu0 = os.times()
    cold = precheck(specs, workers=args.workers)
    cold_s = time.perf_counter() - start
    cpu1 = os.times()
    start = time.perf_counter()
    warm = precheck(specs, workers=args.workers)
    warm_s = time.perf_counter() - start
    assert warm.checked == 0 and cold.checked == cold.pairs == N_TRAIN + N_VAL + N_AUG
    per_iter = tiny_iteration_time(args.cache, args.iters, args.warmup)
    epoch_iters = iters_per_epoch(N_TRAIN + N_AUG, 8, 1)
    epoch_s = per_iter * epoch_iters
    child_cpu = (cpu1.children_user + cpu1.children_system) - (cpu0.children_user + cpu0.children_system)
    print(f"pairs checked: {cold.pairs} (train {N_TRAIN} + aug {N_AUG} + val {N_VAL}); {args.workers} processes")
    print(f"pre-check, cold cache: {cold_s:.1f} s wall ({cold_s / cold.pairs * 1000:.2f} ms/pair; {child_cpu:.1f} s CPU in the workers)")
    print(f"pre-check, warm cache: {warm_s * 1000:.0f} ms")
    print(f"tiny model, CPU, batch 8: {per_iter:.3f} s/iteration -> one epoch of {epoch_iters} iterations = {epoch_s / 60:.1f} min")
    print(f"pre-check cost: {cold_s / epoch_s * 100:.2f}% of one epoch cold, {warm_s / epoch_s * 100:.4f}% warm")


if __name__ == "__main__":
    main()
