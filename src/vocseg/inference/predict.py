"""Predict over files: read each input, segment it, write its pictures, report every input.

Per image, in the output folder: `<stem>_overlay.png` (the photo with the classes painted over it
and a legend of the classes present with their share of the image) and `<stem>_label.png` (the
class map in the VOC palette, readable by any VOC tool); per video `<stem>_overlay.mp4`
(`vocseg.inference.video`). Two inputs with the same stem get their parent folder's name in front
(`<parent>_<stem>_...`); stems longer than MAX_STEM_BYTES are shortened with a hash.
Inputs come from `vocseg.inference.inputs`, output names and the never-overwrite rule from
`vocseg.inference.outputs`. `predictions.json` lists every input: what was written, the class shares, notes on how it was
read, or why it was skipped; and every file vocseg has written to that folder (`files`).

Never over the user's files: an output name that is taken by a file vocseg did not write (not in
the folder's `predictions.json`), or by one of this batch's inputs, is not used; the outputs of
that input get the next free stem (`cat-2_label.png`) and a note says so. A `predictions.json`
vocseg did not write stops the command before anything is written. Files vocseg wrote earlier
into a folder that is also an input folder (`predict photos/ -o photos/`, twice) are not
segmented again, and neither are VOC label maps (palette PNGs with VOC's palette).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vocseg.console import ProgressDisplay
from vocseg.errors import VocsegError
from vocseg.inference.inputs import InputFile, real_path
from vocseg.inference.outputs import REPORT_NAME, WRITTEN_BY, OutputFolder, output_stems, previous_outputs, save_png_atomic
from vocseg.inference.segmenter import Segmenter, predict_array
from vocseg.runs.provenance import DEMO_CAVEAT, trained_on_demo
from vocseg.visualization.overlays import DEMO_LEGEND, class_shares, overlay_image, save_label_png

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".bmp", ".dib", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".jp2", ".j2k", ".ico", ".pcx", ".sgi", ".exr", ".hdr"}
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".mts", ".m2ts", ".3gp", ".ogv"}
IMAGE_OUTPUTS = ("_overlay.png", "_label.png")
VIDEO_OUTPUTS = ("_overlay.mp4",)


@dataclass
class Prediction:
    image: Path
    overlay: Path | None = None
    label: Path | None = None
    shares: dict[str, float] = field(default_factory=dict)  # class -> percent of the image (of all frames segmented, for a video)
    size: tuple[int, int] | None = None  # width, height
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    frames: int | None = None  # videos: frames written (= frames read)
    fps: float | None = None  # videos
    demo_model: bool = False  # the model was trained on vocseg's synthetic demo data (runs.provenance)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "image": str(self.image),
            "overlay": str(self.overlay) if self.overlay else None,
            "label": str(self.label) if self.label else None,
            "size": list(self.size) if self.size else None,
            "shares": self.shares,
            "error": self.error,
            "notes": self.notes,
        }
        if self.demo_model:
            data["model_caveat"] = DEMO_CAVEAT
        if self.frames is not None:
            data.update(frames=self.frames, fps=self.fps)
        return data


# ---------------------------------------------------------------- reading


def read_input(path: Path) -> Any:
    """An input image as a viewer shows it (`vocseg.data.images.DecodedImage`), or a one-line VocsegError."""
    from PIL import Image, UnidentifiedImageError

    from vocseg.data.images import read_image

    if not os.path.lexists(path):
        what = "matches no file" if any(ch in str(path) for ch in "*?[") else "does not exist"
        raise VocsegError(f"{path} {what}.", "Check the path.")
    if not path.exists():
        raise VocsegError(f"{path} is a broken or looping symbolic link.", "Point it at an image.")
    if not path.is_file():
        raise VocsegError(f"{path} is not a file.", "Pass image files, folders or globs.")
    try:
        return read_image(path)
    except Image.DecompressionBombError as exc:
        raise VocsegError(str(exc), "") from None  # the message names VOCSEG_MAX_MEGAPIXELS and downscaling
    except MemoryError:
        raise VocsegError(f"{path} is too large to decode in the memory available.", "Downscale or split it.") from None
    except UnidentifiedImageError:
        if path.suffix.lower() in IMAGE_SUFFIXES:
            raise VocsegError(f"{path} is a damaged image, or one neither Pillow nor OpenCV can read.", "Re-export it as JPEG or PNG.") from None
        raise VocsegError(f"{path} is not an image.", "Pass JPEG/PNG images (or videos).") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise VocsegError(f"{path} is a damaged or unreadable image ({detail}).", "Re-export it as JPEG or PNG.") from None


def read_rgb(path: Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB as viewers show it, or a one-line VocsegError."""
    return read_input(path).rgb


# ---------------------------------------------------------------- outputs


# ---------------------------------------------------------------- predicting


def predict(
    inputs: list[InputFile] | list[Path],
    model: Segmenter,
    out_dir: Path,
    *,
    opacity: float = 0.5,
    every: int = 1,
    batch: int = 8,
    progress: ProgressDisplay | None = None,
) -> list[Prediction]:
    """Segment each input; an input that cannot be read or segmented is reported in its
    Prediction and skipped. Files found in folders or by globs that vocseg itself wrote to
    `out_dir` earlier get no Prediction (len(inputs) - len(result) of them). `progress` (entered by
    the caller, total = len(inputs)) advances after each input; a video shows its frames nested. Raises VocsegError only for faults of the output folder (full disk,
    no permission), after writing what was done to predictions.json."""
    items = [i if isinstance(i, InputFile) else InputFile(Path(i), explicit=True) for i in inputs]
    folder = OutputFolder(out_dir, [])
    kept = [i for i in items if i.explicit or not folder.is_vocseg_output(i.path)]
    folder.inputs = {real_path(i.path) for i in kept}
    try:
        from vocseg.files import owned_mkdir

        owned_mkdir(out_dir)
    except OSError as exc:
        raise VocsegError(f"Cannot create the output folder {out_dir}: {exc.strerror or exc}.", "Pass another folder with -o.") from None
    results: list[Prediction] = []
    demo = model_trained_on_demo(model)
    paths = [i.path for i in kept]
    stems = {(real_path(p.parent), p.stem) for p in paths}
    try:
        for item, path, stem in zip(kept, paths, output_stems(paths)):
            of = companion_of(path)
            if not item.explicit and of is not None and (real_path(path.parent), of) in stems:
                results.append(Prediction(image=path, error=f"{path} looks like the {path.stem[len(of) + 1 :]} of {of}.*, not a photo: not segmented (name it to segment it)."))
            elif path.suffix.lower() in VIDEO_SUFFIXES:
                results.append(_predict_video(path, stem, model, folder, opacity=opacity, every=every, batch=batch, progress=progress))
            else:
                results.append(_predict_image(path, stem, model, folder, opacity=opacity, caveat=DEMO_LEGEND if demo else ()))
            results[-1].demo_model = demo
            if progress is not None:
                progress.advance()
    except OSError as exc:
        report = _write_partial_report(results, out_dir, folder)
        where = exc.filename or out_dir
        raise VocsegError(
            f"Cannot write {where}: {exc.strerror or exc}.",
            f"{sum(r.error is None for r in results)} input(s) done before it are listed in {report}; free space or pass another -o, then run predict again.",
        ) from None
    return results


def model_trained_on_demo(model: Segmenter) -> bool:
    """True for a model from a run (or a checkpoint whose config) trained on the demo data's root (its
    marker), or an exported `.onnx` whose metadata carries the demo caveat (`model_caveat`, written by
    `vocseg export` from the same test)."""
    metadata = getattr(model, "metadata", None)
    if isinstance(metadata, dict) and metadata.get("model_caveat"):
        return True
    return trained_on_demo(getattr(model, "run", None), getattr(getattr(model, "model", None), "cfg", None))


def companion_of(path: Path) -> str | None:
    """The stem `cat` when `path` is named like a file that goes with `cat.jpg` (`cat_label.png`,
    `cat_overlay.png`, `cat_mask.png`, as vocseg and annotation tools name them), else None."""
    for suffix in ("_label", "_overlay", "_mask", "_labels", "_seg", "_gt"):
        if path.stem.endswith(suffix) and len(path.stem) > len(suffix):
            return path.stem[: -len(suffix)]
    return None


def _predict_image(path: Path, stem: str, model: Segmenter, folder: OutputFolder, *, opacity: float, caveat: tuple[str, ...] = ()) -> Prediction:
    item = Prediction(image=path)
    try:
        decoded = read_input(path)
    except VocsegError as exc:
        item.error = str(exc)  # with its way out (e.g. VOCSEG_MAX_MEGAPIXELS for a large image)
        return item
    item.notes = list(decoded.notes)
    if decoded.voc_label_map:
        item.error = f"{path} is a VOC label map (a palette PNG with VOC's colours), not a photo: not segmented."
        return item
    rgb = decoded.rgb
    try:
        label_map = predict_array(model, rgb)
    except MemoryError:
        item.error = f"{path} ({rgb.shape[1]}x{rgb.shape[0]}) does not fit in memory: try --mode slide."
        return item
    except Exception as exc:  # noqa: BLE001 - one input the model cannot take must not stop the batch
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        item.error = f"{path} ({rgb.shape[1]}x{rgb.shape[0]}) could not be segmented: {detail}"
        return item
    stem, note = folder.claim(stem, IMAGE_OUTPUTS)
    if note:
        item.notes.append(note)
    item.size = (rgb.shape[1], rgb.shape[0])
    item.shares = class_shares(label_map)
    label, overlay = folder.folder / f"{stem}_label.png", folder.folder / f"{stem}_overlay.png"
    try:
        save_label_png(label_map, label, option="-o")
        save_png_atomic(overlay_image(rgb, label_map, opacity, item.shares, caveat), overlay)
    except OSError as exc:
        with contextlib.suppress(OSError):  # no half pair left behind: the label was this run's
            if label.name in folder.claimed:
                from vocseg.files import owned_delete

                owned_delete(label)
        if exc.errno != errno.ENAMETOOLONG:
            raise
        item.error = f"{path}: cannot write {exc.filename or label}: file name too long."
        return item
    item.label, item.overlay = label, overlay
    return item


def _predict_video(path: Path, stem: str, model: Segmenter, folder: OutputFolder, *, opacity: float, every: int, batch: int,
                   progress: ProgressDisplay | None) -> Prediction:
    from vocseg.inference.video import segment_video

    item = Prediction(image=path)
    if not path.is_file():
        item.error = f"{path} does not exist." if not os.path.lexists(path) else f"{path} is not a readable file."
        return item
    stem, note = folder.claim(stem, VIDEO_OUTPUTS)
    out = folder.folder / f"{stem}{VIDEO_OUTPUTS[0]}"
    frames = progress.nested(f"{path.name} frames", None, unit="frames") if progress is not None else contextlib.nullcontext()
    try:
        with frames as shown_frames:
            video = segment_video(path, model, out, opacity=opacity, every=every, batch=batch,
                                  progress=shown_frames.update if shown_frames is not None else None)
    except VocsegError as exc:
        if "vocseg[video]" in exc.hint:
            raise
        item.error = str(exc)
        return item
    except OSError as exc:
        if exc.filename is not None and Path(exc.filename).resolve().parent != folder.folder.resolve():
            item.error = f"{path} could not be read: {exc.strerror or exc}"  # the input's fault: this video only
            return item
        raise  # the output folder's fault: one line for the whole command
    except Exception as exc:  # noqa: BLE001 - one video the model cannot take must not stop the batch
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        item.error = f"{path} could not be segmented: {detail}"
        return item
    item.overlay, item.size, item.shares = out, video.size, video.shares
    item.frames, item.fps = video.frames, video.fps
    item.notes = [*video.notes, *([note] if note else [])]
    return item


def _write_partial_report(results: list[Prediction], out_dir: Path, folder: OutputFolder) -> Path:
    try:
        return write_report(results, out_dir, checkpoint="", mode="", folder=folder)
    except OSError:
        return out_dir / REPORT_NAME


def write_report(results: list[Prediction], out_dir: Path, *, checkpoint: str, mode: str, folder: OutputFolder | None = None) -> Path:
    """predictions.json: every input, and every file vocseg has written to `out_dir` (this run and before)."""
    from vocseg.files import owned_write_text

    path = out_dir / REPORT_NAME
    previous = folder.previous if folder is not None else previous_outputs(out_dir)
    written = {Path(str(p)).name for r in results for p in (r.overlay, r.label) if p}
    data = {
        "written_by": WRITTEN_BY,
        "checkpoint": checkpoint,
        "mode": mode,
        "images": [r.to_json() for r in results],
        "files": sorted((previous | written | {REPORT_NAME}) - {REPORT_NAME}),
    }
    # ASCII with \u escapes: a file name that is not UTF-8 (surrogate escapes) is kept exactly, and json.load gives it back
    owned_write_text(path, json.dumps(data, indent=1, ensure_ascii=True) + "\n")
    return path
