"""vocseg predict on a video: same frame count and rate, batched frames, --every, the extra named when missing."""

from __future__ import annotations

import json
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import require_extra
from vocseg.data.voc import VOC_SUBDIR


def require_av() -> None:
    require_extra("video", "av")


def write_clip(path: Path, frames: list[np.ndarray], fps: int, codec: str = "mpeg4", pix_fmt: str = "yuv420p") -> None:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], pix_fmt
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def read_clip(path: Path) -> tuple[list[np.ndarray], Fraction]:
    import av

    with av.open(str(path)) as source:
        stream = source.streams.video[0]
        return [f.to_ndarray(format="rgb24") for f in source.decode(stream)], stream.average_rate


@pytest.fixture
def clip(demo_root: Path, tmp_path: Path) -> Path:
    require_av()
    from PIL import Image

    jpgs = sorted((demo_root / VOC_SUBDIR / "JPEGImages").glob("*.jpg"))[:3]
    photos = [np.asarray(Image.open(p).convert("RGB"))[:118, :158] for p in jpgs]  # 158 x 118
    path = tmp_path / "clip.mp4"
    write_clip(path, [photos[i // 5 % 3] for i in range(13)], fps=10)
    return path


def test_overlay_video_same_frames_and_rate(cli, trained_run: Path, clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = cli("predict", clip, "-c", trained_run, "-o", out, "--batch", "4", "--opacity", "0")
    assert r.code == 0, r.err
    frames, rate = read_clip(out / "clip_overlay.mp4")
    source, source_rate = read_clip(clip)
    assert len(frames) == len(source) == 13 and rate == source_rate == 10
    assert frames[0].shape == source[0].shape
    assert np.abs(frames[6].astype(int) - source[6]).mean() < 6  # opacity 0: the frames themselves (re-encoded)
    item = json.loads((out / "predictions.json").read_text())["images"][0]
    assert item["frames"] == 13 and item["fps"] == 10 and item["error"] is None and abs(sum(item["shares"].values()) - 100) < 0.1
    assert "13 segmented" in item["notes"][0]


def test_every_nth_frame(cli, trained_run: Path, clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vocseg.inference import segmenter

    seen: list[int] = []
    real = segmenter.MMSegSegmenter.predict_batch
    monkeypatch.setattr(segmenter.MMSegSegmenter, "predict_batch", lambda self, images: seen.append(len(images)) or real(self, images))
    r = cli("predict", clip, "-c", trained_run, "-o", tmp_path / "out", "--every", "3", "--batch", "2")
    assert r.code == 0, r.err
    assert sum(seen) == 5 and max(seen) <= 2  # frames 0, 3, 6, 9, 12 in batches of at most 2
    out, rate = read_clip(tmp_path / "out" / "clip_overlay.mp4")
    assert len(out) == 13 and rate == 10


def test_odd_size_in_another_container(cli, trained_run: Path, clip: Path, tmp_path: Path) -> None:
    """An MKV of lossless FFV1 frames, 157 x 117: H.264 yuv420p needs even sizes, so one edge pixel is added."""
    frames, _ = read_clip(clip)
    odd = tmp_path / "odd.mkv"
    write_clip(odd, [f[:117, :157] for f in frames[:4]], fps=5, codec="ffv1", pix_fmt="yuv444p")
    r = cli("predict", odd, "-c", trained_run, "-o", tmp_path / "out")
    assert r.code == 0, r.err
    out, rate = read_clip(tmp_path / "out" / "odd_overlay.mp4")
    assert len(out) == 4 and rate == 5 and out[0].shape == (118, 158, 3)
    item = json.loads((tmp_path / "out" / "predictions.json").read_text())["images"][0]
    assert item["size"] == [157, 117] and any("padded" in n for n in item["notes"])


def test_missing_pyav_names_the_extra(cli, trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "clip.mp4").write_bytes(b"\x00" * 100)
    monkeypatch.setitem(sys.modules, "av", None)  # import av -> ImportError
    r = cli("predict", tmp_path / "clip.mp4", "-c", trained_run, "-o", tmp_path / "out")
    assert r.code != 0 and "vocseg[video]" in r.err and "Traceback" not in r.err
    assert not (tmp_path / "out").exists()


def test_not_a_video_is_reported(cli, trained_run: Path, tmp_path: Path) -> None:
    require_av()
    (tmp_path / "clip.mp4").write_bytes(b"not a video at all" * 10)
    r = cli("predict", tmp_path / "clip.mp4", "-c", trained_run, "-o", tmp_path / "out")
    assert r.code != 0 and "None of the 1 inputs" in r.err and "Traceback" not in r.err + r.out
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name != ".vocseg-written.jsonl"] == ["predictions.json"]
    item = json.loads((tmp_path / "out" / "predictions.json").read_text())["images"][0]
    assert "not a video FFmpeg can read" in item["error"]
