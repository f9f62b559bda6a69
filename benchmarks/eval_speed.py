"""Eval throughput: `vocseg eval` against mmseg's own `tools/test.py`, same checkpoint, config and data.

    python benchmarks/eval_speed.py                       # r18 preset, 24 demo val images, 3 repetitions
    python benchmarks/eval_speed.py --model tiny --images 48 --reps 5

A demo dataset is generated and a model is trained for 2 iterations (accuracy is irrelevant here;
the cost of a forward pass is not). Then each repetition runs both tools as separate processes,
in alternating order, on the same config and checkpoint:

- mmseg:  python .../mmseg/.mim/tools/test.py RUN/config.py CKPT --work-dir W
- vocseg: vocseg eval RUN --out W   (everything it does by default: JSON, CSV, two PNG charts)

Reported per tool (median over repetitions): end-to-end images/s (process start to exit, wall
clock), images per CPU-second (user + sys of the process: far less sensitive than wall time to
other jobs on a shared machine), and test-loop images/s (from the `Iter(test)` line both write
through MMEngine's logger: mean time per image). The ratios are vocseg's time over mmseg's (above
1: vocseg is slower; target <= 1.05). Both must report the same mIoU. Ratios matter here, not
absolute times.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LOOP_LINE = re.compile(r"Iter\(test\) \[(\d+)/(\d+)\].*?mIoU: ([0-9.]+).*?(?<!data_)time: ([0-9.]+)")


def run(cmd: list[str], cwd: Path, threads: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds user + sys) of one process, start to exit."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def loop_stats(work_dir: Path) -> tuple[float, float]:
    """(seconds per image in the test loop, mIoU) from the newest MMEngine log under work_dir."""
    logs = sorted(work_dir.glob("*/*.log"), key=lambda p: p.stat().st_mtime)
    if not logs:
        sys.exit(f"no MMEngine log under {work_dir}")
    matches = LOOP_LINE.findall(logs[-1].read_text())
    if not matches:
        sys.exit(f"no Iter(test) summary line in {logs[-1]}")
    _, _, miou, per_image = matches[-1]
    return float(per_image), float(miou)


def prepare(work: Path, model: str, images: int) -> tuple[Path, Path, Path]:
    from vocseg.cli import run as vocseg
    from vocseg.data.demo import write_demo_dataset
    from vocseg.recipe.models import PRESETS
    from vocseg.runs.folders import latest_checkpoint

    data = work / "data"
    run_dir = work / "run"
    if not (run_dir / "config.py").is_file():
        write_demo_dataset(data, n_train=8, n_val=images, n_sbd_only=0)
        crop = str(min(128, PRESETS[model].crop))  # training cost only; the test scale is the preset's
        args = ["train", "--data-root", str(data), "--model", model, "--no-aug", "--device", "cpu", "--batch", "2", "--crop", crop,
                "--workers", "0", "--iters", "2", "--pretrained", "none", "--work-dir", str(run_dir)]  # fmt: skip
        if vocseg(args) != 0:
            sys.exit("training the benchmark model failed")
    checkpoint = latest_checkpoint(run_dir)
    assert checkpoint is not None
    return data, run_dir, checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="r18", help="vocseg model preset (default r18: UPerNet R-18 at the official test scale)")
    parser.add_argument("--images", type=int, default=24, help="demo val images (default 24)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each tool (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads of each tool (default 1: steadier CPU time on a shared machine)")
    parser.add_argument("--work", type=Path, default=None, help="reuse this folder (data + model) between invocations")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    import mmseg

    tools_test = Path(mmseg.__file__).parent / ".mim" / "tools" / "test.py"
    work = args.work or Path(tempfile.mkdtemp(prefix="vocseg-eval-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    _, run_dir, checkpoint = prepare(work, args.model, args.images)
    vocseg_bin = Path(sys.executable).with_name("vocseg")
    vocseg_cmd = [str(vocseg_bin)] if vocseg_bin.is_file() else [sys.executable, "-c", "from vocseg.cli import main; main()"]
    commands = {
        "mmseg tools/test.py": lambda w: [sys.executable, str(tools_test), str(run_dir / "config.py"), str(checkpoint), "--work-dir", str(w)],
        "vocseg eval": lambda w: [*vocseg_cmd, "eval", str(run_dir), "--out", str(w)],
    }
    wall: dict[str, list[float]] = {k: [] for k in commands}
    cpu: dict[str, list[float]] = {k: [] for k in commands}
    loop: dict[str, list[float]] = {k: [] for k in commands}
    mious: dict[str, set[float]] = {k: set() for k in commands}
    names = list(commands)
    print(f"{args.images} images, model {args.model}, {args.reps} repetitions, {args.threads} thread(s) per tool on {os.cpu_count()} CPUs; checkpoint {checkpoint}", flush=True)
    for rep in range(args.reps):
        for name in names if rep % 2 == 0 else names[::-1]:  # alternate the order: no tool always runs warm
            out = work / f"out-{name.split()[0]}-{rep}"
            seconds, cpu_seconds = run(commands[name](out), cwd=work, threads=args.threads)
            wall[name].append(seconds)
            cpu[name].append(cpu_seconds)
            per_image, miou = loop_stats(out)
            loop[name].append(per_image)
            mious[name].add(miou)
            print(f"  rep {rep + 1} {name:20s} {seconds:7.2f} s wall, {cpu_seconds:7.2f} s CPU, {per_image:.4f} s/image in the loop", flush=True)
    figures = {}
    for name in names:
        t, c, p = statistics.median(wall[name]), statistics.median(cpu[name]), statistics.median(loop[name])
        figures[name] = {
            "wall_s": round(t, 3),
            "cpu_s": round(c, 3),
            "images_per_s": round(args.images / t, 3),
            "images_per_cpu_s": round(args.images / c, 3),
            "loop_images_per_s": round(1 / p, 3),
            "mIoU": sorted(mious[name]),
            "runs_wall_s": [round(x, 2) for x in wall[name]],
        }
    m, v = figures["mmseg tools/test.py"], figures["vocseg eval"]
    # each repetition ran both tools back to back: their ratio shares that moment's machine load
    paired = [b / a for a, b in zip(wall["mmseg tools/test.py"], wall["vocseg eval"])]
    paired_ratio = statistics.median(paired)
    ratio = v["wall_s"] / m["wall_s"]
    cpu_ratio = v["cpu_s"] / m["cpu_s"]
    loop_ratio = m["loop_images_per_s"] / v["loop_images_per_s"]
    print()
    print(f"{'':22s} {'img/s (wall)':>13s} {'img/CPU-s':>10s} {'loop img/s':>11s}  mIoU")
    for name in names:
        f = figures[name]
        print(f"{name:22s} {f['images_per_s']:13.3f} {f['images_per_cpu_s']:10.3f} {f['loop_images_per_s']:11.3f}  {f['mIoU']}")
    print(f"ratio vocseg/mmseg time (target <= 1.05): wall {ratio:.3f}, CPU {cpu_ratio:.3f}, test loop {loop_ratio:.3f}")
    print(f"paired per repetition (wall): median {paired_ratio:.3f}, each {', '.join(f'{x:.3f}' for x in paired)}")
    same = m["mIoU"] == v["mIoU"]
    print(f"same mIoU from both: {same}")
    if args.json:
        args.json.write_text(json.dumps({"images": args.images, "model": args.model, "reps": args.reps, "threads": args.threads, "figures": figures, "ratio": round(ratio, 3), "paired_ratio": round(paired_ratio, 3), "paired": [round(x, 3) for x in paired], "cpu_ratio": round(cpu_ratio, 3), "loop_ratio": round(loop_ratio, 3), "same_mIoU": same}, indent=1) + "\n")
    if not same:
        sys.exit("the two tools disagree on mIoU")


if __name__ == "__main__":
    main()
