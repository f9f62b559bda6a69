"""Peak memory of `vocseg predict` on a large image, whole vs slide mode (and mmseg's own inference).

    python benchmarks/predict_memory.py                    # tiny model, an 8000 x 8000 JPEG
    python benchmarks/predict_memory.py --size 4000 --reference

A demo dataset is written and the tiny model trained for 2 iterations (the weights do not matter
for memory). An image of SIZE x SIZE is tiled from the demo photos. Each measurement is a fresh
process (peak resident set size: `VmHWM` of /proc/self/status, Linux):

- baseline: `vocseg predict` on one 160 x 120 demo photo (Python, torch, mmseg, the model);
- segment only, whole / slide: load the model, decode BIG, `predict_array` (the class map), no
  pictures written: what vocseg's inference costs;
- command, whole / slide: `vocseg predict BIG --mode whole|slide` (the label PNG and the overlay
  with its legend, drawn by `vocseg.visualization.overlays.overlay_image`, included);
- reference (--reference): mmseg's `inference_model` on the same image in whole mode, as vocseg
  0.1 predicted: it resizes the logits (21 x SIZE x SIZE float32) to full size at once.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import sys, time
start = time.perf_counter()
if sys.argv[1].startswith("segment-"):
    from pathlib import Path
    from vocseg.data.images import read_image_rgb
    from vocseg.inference.segmenter import load_model, predict_array
    model = load_model(sys.argv[3], device="cpu", mode=sys.argv[1].split("-")[1])
    predict_array(model, read_image_rgb(Path(sys.argv[2])))
    code = 0
elif sys.argv[1] == "reference":
    import numpy as np
    from vocseg.data.images import read_image_rgb
    from vocseg.inference.segmenter import load_model
    model = load_model(sys.argv[3], device="cpu").model  # applies vocseg's stack fixes before mmseg.apis
    from mmseg.apis import inference_model
    model.cfg.test_pipeline = [dict(t) for t in model.cfg.test_pipeline]
    rgb = read_image_rgb(__import__("pathlib").Path(sys.argv[2]))
    inference_model(model, np.ascontiguousarray(rgb[:, :, ::-1]))
    code = 0
else:
    from vocseg.cli import run
    code = run(["predict", sys.argv[2], "-c", sys.argv[3], "-o", sys.argv[4], "--mode", sys.argv[1], "--device", "cpu"])
# VmHWM: this process's own peak (ru_maxrss would also count the parent's size at spawn time)
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print("RESULT", code, hwm, time.perf_counter() - start)
"""


def tiny_demo_run(work: Path) -> tuple[Path, Path]:
    """(data root, run folder) of a demo dataset and the tiny model trained 2 iterations in `work`
    (kept: a later call reuses them). The weights do not matter for speed or memory."""
    from vocseg.cli import run as vocseg
    from vocseg.data.demo import write_demo_dataset

    data, run_dir = work / "data", work / "run"
    if not (run_dir / "config.py").is_file():
        write_demo_dataset(data, n_train=8, n_val=4, n_sbd_only=0)
        args = ["train", "--data-root", str(data), "--model", "tiny", "--no-aug", "--device", "cpu", "--batch", "2",
                "--workers", "0", "--iters", "2", "--work-dir", str(run_dir)]  # fmt: skip
        if vocseg(args) != 0:
            sys.exit("training the benchmark model failed")
    return data, run_dir


def prepare(work: Path, size: int) -> tuple[Path, Path, Path]:
    import numpy as np
    from PIL import Image

    data, run_dir = tiny_demo_run(work)
    photos = sorted((data / "VOCdevkit" / "VOC2012" / "JPEGImages").glob("*.jpg"))
    small = work / "small.jpg"
    small.write_bytes(photos[0].read_bytes())
    big = work / f"big_{size}.jpg"
    if not big.is_file():
        tiles = [np.asarray(Image.open(p).convert("RGB")) for p in photos[:4]]
        row = np.concatenate(tiles, axis=1)
        block = np.concatenate([row, np.roll(row, 160, axis=1)], axis=0)  # 240 x 640
        reps = (-(-size // block.shape[0]), -(-size // block.shape[1]), 1)
        Image.fromarray(np.tile(block, reps)[:size, :size]).save(big, quality=90)
    return run_dir, small, big


def measure(kind: str, image: Path, run_dir: Path, out: Path) -> tuple[float, float]:
    proc = subprocess.run([sys.executable, "-c", CHILD, kind, str(image), str(run_dir), str(out)], capture_output=True, text=True)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT")), None)
    if proc.returncode != 0 or line is None or line.split()[1] != "0":
        print(f"{kind} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}", flush=True)
        return float("nan"), float("nan")
    _, _, rss_kb, seconds = line.split()
    print(f"{kind} {image.name}: peak RSS {int(rss_kb) / 1024:.0f} MiB, {float(seconds):.1f} s", flush=True)
    return int(rss_kb) / 1024, float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=8000)
    parser.add_argument("--reference", action="store_true", help="also mmseg's inference_model (needs ~classes x size^2 x 4 bytes more)")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="vocseg_predict_memory_"))
    work.mkdir(parents=True, exist_ok=True)
    run_dir, small, big = prepare(work, args.size)
    rows = {"baseline (160x120, whole)": measure("whole", small, run_dir, work / "out_small")}
    for mode in ("whole", "slide"):
        rows[f"{args.size}x{args.size}, segment only, {mode}"] = measure(f"segment-{mode}", big, run_dir, work / "unused")
    for mode in ("whole", "slide"):
        rows[f"{args.size}x{args.size}, vocseg predict --mode {mode}"] = measure(mode, big, run_dir, work / f"out_{mode}")
    if args.reference:
        rows[f"{args.size}x{args.size}, mmseg inference_model (whole)"] = measure("reference", big, run_dir, work / "unused")
    print(f"{'what':<56} {'peak RSS MiB':>12} {'seconds':>8}")
    for name, (rss, seconds) in rows.items():
        print(f"{name:<56} {rss:>12.0f} {seconds:>8.1f}")
    print(json.dumps({name: {"peak_rss_mib": round(rss), "seconds": round(s, 1)} for name, (rss, s) in rows.items()}))


if __name__ == "__main__":
    main()
