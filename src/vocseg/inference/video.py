"""Video in, overlay video out: every frame of the input, at its frame rate, with the classes painted over it.

Reading and writing go through PyAV (FFmpeg's libraries, the optional extra `vocseg[video]`), so
any container and codec FFmpeg decodes is accepted (MP4, MOV, MKV, WebM, AVI, ...). The output is
H.264 (`libx264`, yuv420p; MPEG-4 Part 2 where this FFmpeg build has no libx264) in an MP4 with
the same number of frames and the input's average frame rate; odd widths/heights are padded by
one edge pixel (yuv420p needs even sizes). Audio is not copied. A rotation in the video's
display matrix (phone videos) is applied, as players do.

Frames are segmented in batches (`batch` frames per forward pass in whole mode); with
`every=N` only every N-th frame is segmented and the frames in between are painted with the
last segmented frame's classes, so the output still has every frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from vocseg.data.dataset import active_dataset
from vocseg.errors import VocsegError
from vocseg.inference.segmenter import Segmenter
from vocseg.visualization.overlays import outlined

EXTRA_HINT = "Install the video extra: pip install 'vocseg[video]' (PyAV)."
MAX_PENDING_FRAMES = 64  # frames held while a batch of sampled frames fills (with --every N)


@dataclass
class VideoResult:
    frames: int  # frames read = frames written
    segmented: int  # frames the model ran on
    fps: float
    size: tuple[int, int]  # width, height of the input frames
    shares: dict[str, float]  # class -> percent of the segmented pixels
    notes: list[str] = field(default_factory=list)


def require_av() -> Any:
    """The `av` module, or a one-line error naming the extra."""
    try:
        import av
    except ImportError:
        raise VocsegError("Reading and writing video needs PyAV, which is not installed.", EXTRA_HINT) from None
    return av


def segment_video(
    path: Path, model: Segmenter, out_path: Path, *, opacity: float = 0.5, every: int = 1, batch: int = 8, progress: Any = None
) -> VideoResult:
    """Write `out_path` (an MP4 overlay of every frame of `path`); written whole or not at all.

    `progress`: a callable(done_frames, total_frames_or_None) or None. Raises VocsegError for a
    file FFmpeg cannot read or without a video stream, and when PyAV is missing.
    """
    av = require_av()
    if every < 1 or batch < 1:
        raise VocsegError("--every and --batch must be at least 1.", "")
    try:
        source = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise VocsegError(f"{path} is not a video FFmpeg can read ({detail}).", "Pass an MP4, MOV, MKV, WebM or AVI file.") from None
    from vocseg.files import atomic_writer

    with atomic_writer(out_path) as tmp:  # recorded temporary file, renamed into place when complete
        with source:
            if not source.streams.video:
                raise VocsegError(f"{path} has no video stream.", "Pass a video file.")
            stream = source.streams.video[0]
            stream.thread_type = "AUTO"
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate or Fraction(25)
            total = int(stream.frames) or None
            with av.open(str(tmp), "w", format="mp4") as sink:
                writer = _Writer(av, sink, Fraction(rate), model, opacity, batch)
                error = None
                try:
                    for frame in source.decode(stream):
                        writer.add(_frame_rgb(frame), writer.read % every == 0)
                        if progress is not None:
                            progress(writer.read, total)
                except av.error.FFmpegError as exc:
                    error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                writer.close()
        if writer.read == 0:
            raise VocsegError(f"{path} has no frame FFmpeg can decode{f' ({error})' if error else ''}.", "Check that the file plays.")
    notes = [f"{writer.read} frames at {float(rate):.3g} fps; {writer.segmented} segmented" + (f" (every {every})" if every > 1 else "")]
    if writer.padded:
        notes.append("odd frame size padded by one pixel for H.264")
    if error:
        notes.append(f"decoding stopped at frame {writer.read}: {error}")
    counts = writer.counts
    total_px = max(1, int(counts.sum()))
    classes = active_dataset().classes
    shares = {classes[i]: round(100.0 * int(counts[i]) / total_px, 2) for i in np.argsort(-counts, kind="stable") if counts[i] > 0}
    return VideoResult(writer.read, writer.segmented, float(rate), writer.size or (0, 0), shares, notes)


def _frame_rgb(frame: Any) -> np.ndarray:
    rgb = frame.to_ndarray(format="rgb24")
    rotation = int(getattr(frame, "rotation", 0) or 0)  # degrees counter-clockwise of the display matrix
    k = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb


class _Writer:
    """Holds decoded frames until a batch of frames to segment is full, then segments, paints and encodes them in order."""

    def __init__(self, av: Any, sink: Any, rate: Fraction, model: Segmenter, opacity: float, batch: int) -> None:
        self.av, self.sink, self.rate, self.model, self.opacity, self.batch = av, sink, rate, model, opacity, batch
        self.pending: list[tuple[np.ndarray, bool]] = []
        self.stream: Any = None
        self.size: tuple[int, int] | None = None
        self.padded = False
        self.last_label: np.ndarray | None = None
        self.read = 0
        self.segmented = 0
        self.counts = np.zeros(len(active_dataset().classes), dtype=np.int64)

    def add(self, rgb: np.ndarray, sample: bool) -> None:
        self.pending.append((rgb, sample or (self.last_label is None and not self.pending)))
        self.read += 1
        if sum(s for _, s in self.pending) >= self.batch or len(self.pending) >= max(self.batch, MAX_PENDING_FRAMES):
            self.flush()

    def flush(self) -> None:
        sampled = [rgb for rgb, s in self.pending if s]
        labels = iter(self.model.predict_batch(sampled) if sampled else [])
        for rgb, s in self.pending:
            if s:
                self.last_label = next(labels)
                self.segmented += 1
                self.counts += np.bincount(self.last_label.ravel(), minlength=len(self.counts))[: len(self.counts)]
            label = self.last_label
            assert label is not None
            if label.shape != rgb.shape[:2]:  # the stream changed size mid-way
                import cv2

                label = cv2.resize(label, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)
            self.encode(outlined(rgb, label, self.opacity))  # the same picture as image overlays: outlines in the legend's colours
        self.pending = []

    def encode(self, rgb: np.ndarray) -> None:
        if self.stream is None:
            h, w = rgb.shape[:2]
            self.size = (w, h)
            codec = "libx264" if "libx264" in self.av.codecs_available else "mpeg4"
            self.stream = self.sink.add_stream(codec, rate=self.rate)
            self.stream.width, self.stream.height = w + w % 2, h + h % 2
            self.stream.pix_fmt = "yuv420p"
            self.padded = (w % 2, h % 2) != (0, 0)
        width, height = self.stream.width, self.stream.height
        if rgb.shape[:2] != (height, width):
            if rgb.shape[0] <= height and rgb.shape[1] <= width:
                rgb = np.pad(rgb, ((0, height - rgb.shape[0]), (0, width - rgb.shape[1]), (0, 0)), mode="edge")
            else:
                import cv2

                rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
        frame = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for packet in self.stream.encode(frame):
            self.sink.mux(packet)

    def close(self) -> None:
        if self.pending:
            self.flush()
        if self.stream is not None:
            for packet in self.stream.encode():
                self.sink.mux(packet)
