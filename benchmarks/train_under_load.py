"""Training speed on a busy CPU: the demo's iterations/s with 0, 1 and 2 competing CPU-bound
processes, `vocseg train CONFIG` against mmseg's own `tools/train.py CONFIG` on the same config.

The config is the demo's (tiny UPerNet, CPU, batch 8, 2 loader workers, demo data), written by
`vocseg config` with validation and checkpoints only at the end and MMEngine's logger every
iteration. A third variant runs tools/train.py on the same config without vocseg's thread sizing
(`VocsegThreadsHook` removed): what both tools did before it (torch's default of one intra-op
thread per core in the training process, beside the loader workers). Each competitor is a `python -c "while True: pass"` process (one busy core each, as
another user's job). Per-iteration time is MMEngine's own `time` scalar (IterTimerHook: data
loading and every hook included) from each run's `scalars.json`, after `--warmup` iterations.

The environment is the user's: OMP_NUM_THREADS / MKL_NUM_THREADS are removed unless `--omp N`
sets them (for both tools), so each tool picks its own thread counts as it would for someone
running the README's commands. vocseg and tools/train.py run interleaved (alternating order per
round) under each load, so other jobs on a shared machine weigh on both alike: read the ratios,
not the absolute numbers.

Run: python benchmarks/train_under_load.py [--iters 120] [--warmup 20] [--rounds 2] [--loads 0,1,2] [--omp N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mmseg

from train_speed import per_iter_time, run  # benchmarks/ is on sys.path when run as a script

MMSEG_TRAIN = Path(mmseg.__file__).parent / ".mim" / "tools" / "train.py"
PLAIN = "tools/train.py without thread sizing"
TOOLS = ("vocseg train", "tools/train.py", PLAIN)


@contextmanager
def competitors(n: int) -> Iterator[None]:
    """`n` single-threaded busy loops for the duration of the block."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=120)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--loads", default="0,1,2", help="numbers of competing busy processes, comma-separated")
    parser.add_argument("--workers", type=int, default=2, help="data-loader workers (the demo's: 2)")
    parser.add_argument("--batch", type=int, default=8, help="batch (the demo's: 8)")
    parser.add_argument("--omp", type=int, help="set OMP_NUM_THREADS/MKL_NUM_THREADS for both tools (default: unset, as for a user)")
    parser.add_argument("--tools", default=",".join(TOOLS), help="which to run, comma-separated")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    loads = [int(x) for x in args.loads.split(",")]
    tools = [t.strip() for t in args.tools.split(",")]

    base = args.keep or Path(tempfile.mkdtemp(prefix="vocseg-load-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if args.omp:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.omp)
    vocseg = [sys.executable, "-m", "vocseg.cli"]
    data = base / "data"
    if not (data / "VOCdevkit").is_dir():
        run([*vocseg, "prepare", "--demo", "--data-root", str(data)], env, base)
    config = base / "demo.py"
    run([*vocseg, "config", "--data-root", str(data), "--model", "tiny", "--device", "cpu", "--batch", str(args.batch),
         "--workers", str(args.workers), "--iters", str(args.iters), "--val-interval", str(args.iters),
         "--ckpt-interval", str(args.iters), "-o", str(config)], env, base)
    config.write_text(config.read_text() + "\ndefault_hooks['logger']['interval'] = 1\n")
    plain = base / "demo_plain.py"
    plain.write_text(config.read_text() + "\ncustom_hooks = [h for h in custom_hooks if h['type'] != 'VocsegThreadsHook']\n")

    times: dict[tuple[str, int], list[float]] = {(t, n): [] for t in tools for n in loads}
    for n in loads:
        with competitors(n):
            for i in range(args.rounds):
                for name in tools if i % 2 == 0 else tools[::-1]:
                    work = base / f"{TOOLS.index(name)}-load{n}-{i}"
                    shutil.rmtree(work, ignore_errors=True)
                    if name == "vocseg train":
                        run([*vocseg, "train", str(config), "--work-dir", str(work)], env, base)
                    else:
                        cfg = plain if name == PLAIN else config
                        run([sys.executable, str(MMSEG_TRAIN), str(cfg), "--work-dir", str(work)], env, base)
                    times[(name, n)].append(per_iter_time(work, args.warmup))
                    print(f"  {name:34s} load {n} round {i}: {1 / times[(name, n)][-1]:.2f} it/s", flush=True)

    omp = f"OMP_NUM_THREADS={args.omp}" if args.omp else "OMP_NUM_THREADS unset"
    print(f"\niterations/s after {args.warmup} warm-up iterations ({args.iters} iterations; demo config: tiny model, CPU, "
          f"batch {args.batch}, {args.workers} loader workers; {omp}; {os.cpu_count()} cores; median of {args.rounds} rounds)")
    print("| competing processes | " + " | ".join(tools) + " | ratio to the first |")
    print("|---" * (len(tools) + 2) + "|")
    for n in loads:
        rates = [1 / statistics.median(times[(t, n)]) for t in tools]
        ratios = " / ".join(f"{r / rates[0]:.2f}" for r in rates[1:])
        print(f"| {n} | " + " | ".join(f"{r:.2f} it/s" for r in rates) + f" | {ratios} |")
    if loads[0] == 0 and len(loads) > 1:
        for t in tools:
            base_rate = 1 / statistics.median(times[(t, 0)])
            slow = ", ".join(f"{n}: {base_rate * statistics.median(times[(t, n)]):.2f}x" for n in loads[1:])
            print(f"slow-down against no load, {t}: {slow}")
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
