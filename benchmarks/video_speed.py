"""Video throughput of `vocseg predict clip.mp4` on the CPU: frames/s, batched vs one frame per pass.

    python benchmarks/video_speed.py                       # tiny model, 96 frames of 320 x 240 at 24 fps
    python benchmarks/video_speed.py --frames 240 --width 640 --height 480 --reps 3

A demo dataset is written and the tiny model trained for 2 iterations (weights do not matter for
speed). A clip is made from the demo photos (MPEG-4). Each repetition runs, in alternating order,
`segment_video` (decode, segment, paint, H.264 encode; what `vocseg predict` does per video) with
`--batch 1` and `--batch 8`, and once with a model that returns empty class maps (decode + paint +
encode only). Reported: median frames/s of each and the ratio batch 8 / batch 1. Run with one
intra-op thread (OMP_NUM_THREADS=1) on a shared machine: ratios are steadier than absolute times.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from predict_memory import tiny_demo_run  # benchmarks/ is on sys.path when run as a script


class Blank:
    """A Segmenter that segments nothing: the cost of everything but the model."""

    mode = "whole"
    run = None

    def predict_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return [np.zeros(rgb.shape[:2], np.uint8) for rgb in images]


def prepare(work: Path, frames: int, width: int, height: int, fps: int) -> tuple[Path, Path]:
    import av
    from PIL import Image

    data, run_dir = tiny_demo_run(work)
    photos = [Image.open(p).convert("RGB").resize((width, height)) for p in sorted((data / "VOCdevkit/VOC2012/JPEGImages").glob("*.jpg"))[:6]]
    clip = work / f"clip_{width}x{height}_{frames}.mp4"
    with av.open(str(clip), "w") as out:
        stream = out.add_stream("mpeg4", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            rgb = np.roll(np.asarray(photos[i // 12 % len(photos)]), 4 * (i % 12), axis=1)  # a slow pan
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return run_dir, clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--fps", type=int, default=24)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    import torch

    from vocseg.inference.segmenter import load_model
    from vocseg.inference.video import segment_video

    work = args.work or Path(tempfile.mkdtemp(prefix="vocseg_video_speed_"))
    work.mkdir(parents=True, exist_ok=True)
    run_dir, clip = prepare(work, args.frames, args.width, args.height, args.fps)
    model = load_model(run_dir, device="cpu")
    segment_video(clip, model, work / "warmup.mp4", batch=8)
    times: dict[str, list[float]] = {"batch 1": [], "batch 8": [], "no model (decode + paint + encode)": []}
    for rep in range(args.reps):
        order = [("batch 1", model, 1), ("batch 8", model, 8)]
        for name, segmenter, batch in order if rep % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            result = segment_video(clip, segmenter, work / "out.mp4", batch=batch)
            times[name].append(time.perf_counter() - start)
            assert result.frames == args.frames
        start = time.perf_counter()
        segment_video(clip, Blank(), work / "out.mp4", batch=8)  # type: ignore[arg-type]
        times["no model (decode + paint + encode)"].append(time.perf_counter() - start)
    fps = {name: args.frames / statistics.median(ts) for name, ts in times.items()}
    print(f"{args.frames} frames of {args.width}x{args.height}, tiny model, CPU, {torch.get_num_threads()} intra-op thread(s), median of {args.reps}")
    for name, value in fps.items():
        print(f"  {name:<36} {value:7.1f} frames/s")
    print(f"  batch 8 / batch 1 throughput: {fps['batch 8'] / fps['batch 1']:.2f}x")
    print(json.dumps({"frames_per_s": {k: round(v, 2) for k, v in fps.items()}, "seconds": times}))


if __name__ == "__main__":
    main()
