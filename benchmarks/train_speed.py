"""Training iteration time: `vocseg train CONFIG` against mmseg's own `tools/train.py CONFIG`.

One config, written by `vocseg config` (tiny model, CPU, demo data); both train it from scratch
in a fresh process, in alternating rounds (the machine is shared: alternating spreads other
jobs' load over both). Per-iteration time is MMEngine's own `time` scalar (IterTimerHook, from
the end of one iteration to the end of the next: data loading and every hook included) read from
each run's `scalars.json`, over the iterations after the first `--warmup`, so start-up (imports,
model build, data-loader start) is excluded. What differs is what vocseg adds around the Runner:
its progress display, the stop-request check, the batch guard, the MMEngine log kept out of the
terminal. The target is a ratio of at most 1.05.

Run: python benchmarks/train_speed.py [--iters 200] [--rounds 3] [--workers 2] [--terminal] [--keep DIR]
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
from pathlib import Path

import mmseg

MMSEG_TRAIN = Path(mmseg.__file__).parent / ".mim" / "tools" / "train.py"


def per_iter_time(work_dir: Path, warmup: int) -> float:
    """Mean of the logged per-iteration `time` after `warmup` iterations (training rows only)."""
    rows = []
    for path in work_dir.glob("*/vis_data/scalars.json"):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if "loss" in row and "time" in row and row["step"] > warmup:
                rows.append(row["time"])
    if not rows:
        raise SystemExit(f"no per-iteration times logged in {work_dir}")
    return statistics.mean(rows)


def run(cmd: list[str], env: dict[str, str], cwd: Path) -> None:
    r = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")


def run_in_terminal(cmd: list[str], env: dict[str, str], cwd: Path) -> None:
    """As `run`, with a pseudo-terminal for output: vocseg then shows its live display."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    out = b""
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        out = (out + data)[-5000:]
    os.close(master)
    if proc.wait():
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.decode(errors='replace')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="data-loader workers")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    parser.add_argument("--terminal", action="store_true", help="run vocseg on a pseudo-terminal (its live display) instead of a pipe (plain lines)")
    args = parser.parse_args()

    base = args.keep or Path(tempfile.mkdtemp(prefix="vocseg-train-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    vocseg = [sys.executable, "-m", "vocseg.cli"]
    data = base / "data"
    if not (data / "VOCdevkit").is_dir():
        run([*vocseg, "prepare", "--demo", "--data-root", str(data)], env, base)
    config = base / "tiny.py"
    # Validation only at the end (it is not part of the iteration time); logged every iteration.
    run([*vocseg, "config", "--data-root", str(data), "--model", "tiny", "--device", "cpu", "--batch", "2",
         "--workers", str(args.workers), "--iters", str(args.iters), "--val-interval", str(args.iters),
         "--ckpt-interval", str(args.iters), "-o", str(config)], env, base)
    text = config.read_text() + "\ndefault_hooks['logger']['interval'] = 1\n"
    config.write_text(text)

    times: dict[str, list[float]] = {"vocseg train": [], "tools/train.py": []}
    for i in range(args.rounds):
        order = ["vocseg train", "tools/train.py"] if i % 2 == 0 else ["tools/train.py", "vocseg train"]
        for name in order:
            work = base / f"{'vocseg' if name == 'vocseg train' else 'mmseg'}-{i}"
            shutil.rmtree(work, ignore_errors=True)
            if name == "vocseg train":
                (run_in_terminal if args.terminal else run)([*vocseg, "train", str(config), "--work-dir", str(work)], env, base)
            else:
                run([sys.executable, str(MMSEG_TRAIN), str(config), "--work-dir", str(work)], env, base)
            times[name].append(per_iter_time(work, args.warmup))
    shown = "live display on a terminal" if args.terminal else "plain lines to a pipe"
    print(f"per-iteration time after {args.warmup} warm-up iterations ({args.iters} iterations, tiny model, CPU, "
          f"{args.workers} loader workers, same config; vocseg progress: {shown})")
    for name, values in times.items():
        print(f"  {name:15s} median {statistics.median(values) * 1000:7.1f} ms   rounds: {', '.join(f'{v * 1000:.1f}' for v in values)}")
    ratios = [v / m for v, m in zip(times["vocseg train"], times["tools/train.py"], strict=True)]
    ratio = statistics.median(times["vocseg train"]) / statistics.median(times["tools/train.py"])
    print(f"vocseg train / tools/train.py: {ratio:.3f} (target <= 1.05); per round: {', '.join(f'{r:.3f}' for r in ratios)}")
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
