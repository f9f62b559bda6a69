"""Time of `vocseg report` on a demo-sized run (40 val images), and the eval pass's cost of the galleries.

Builds (once, in --work) the demo dataset (80 train, 40 val, 80 SBD-only), trains the tiny model
for --iters iterations and evaluates it on val and train, then:

1. runs `build_report` --reps times (the page from existing evals: tables, charts, galleries),
   printing wall and CPU seconds per section;
2. runs the val eval --reps times with and without the per-image statistics metric
   (`VocsegImageStats`, the galleries' source), alternating, and prints the time ratio.

Run: python benchmarks/report_time.py [--work DIR] [--iters N] [--reps N]
Timings on a shared machine are noisy: compare the ratio and the CPU seconds, not single wall times.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path


def prepare(work: Path, iters: int) -> Path:
    from vocseg.cli import run

    data, run_dir = work / "data", work / "run"
    if not (data / "VOCdevkit").is_dir():
        assert run(["prepare", "--demo", "--data-root", str(data)]) == 0
    if not (run_dir / "last_checkpoint").is_file():
        assert run(["train", "--data-root", str(data), "--model", "tiny", "--device", "cpu", "--batch", "8", "--iters", str(iters), "--workers", "0", "--work-dir", str(run_dir)]) == 0
    for split in ("val", "train"):
        if not (run_dir / "eval" / f"{split}.json").is_file():
            assert run(["eval", str(run_dir), "--split", split, "--workers", "0"]) == 0
    return run_dir


def time_reports(run_dir: Path, reps: int) -> None:
    from vocseg.reports.report import build_report

    walls, cpus, sections = [], [], []
    for k in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        path, summary = build_report(run_dir, out=run_dir / f"report_bench_{k}.html")
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        sections.append(summary["seconds"])
        path.unlink()
    print(f"vocseg report on {run_dir} ({summary['gallery_images']} gallery images, {summary['bytes'] / 1e6:.1f} MB page):")
    print(f"  wall s: median {statistics.median(walls):.2f} (all {', '.join(f'{w:.2f}' for w in walls)}); CPU s: median {statistics.median(cpus):.2f}")
    for name in sections[0]:
        print(f"  {name:10s} median {statistics.median(s[name] for s in sections):.2f} s wall")


def time_eval_overhead(run_dir: Path, reps: int) -> None:
    """The val eval with and without VocsegImageStats (the only difference), alternating."""
    from vocseg.evaluation.evaluate import evaluate

    with_stats, without = [], []
    for k in range(2 * reps):
        stats = k % 2 == 0
        t0 = time.process_time()
        evaluate(run_dir, split="val", out_dir=run_dir / "eval_bench", num_workers=0, galleries=stats)
        (with_stats if stats else without).append(time.process_time() - t0)
    a, b = statistics.median(with_stats), statistics.median(without)
    print(f"val eval CPU s: with per-image stats {a:.2f}, without {b:.2f}: ratio {a / b:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, default=Path("runs/bench-report"))
    parser.add_argument("--iters", type=int, default=600)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    run_dir = prepare(args.work, args.iters)
    time_reports(run_dir, args.reps)
    time_eval_overhead(run_dir, args.reps)


if __name__ == "__main__":
    main()
