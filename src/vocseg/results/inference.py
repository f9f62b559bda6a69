"""Predict over files: which inputs, where the outputs go, and that nothing of the user's is replaced.

Per image, in the output folder: `<stem>_overlay.png` (the photo with the classes painted over it
and a legend of the classes present with their share of the image) and `<stem>_label.png` (the
class map in the VOC palette, readable by any VOC tool); per video `<stem>_overlay.mp4`
(`vocseg.results.video`). Two inputs with the same stem get their parent folder's name in front
(`<parent>_<stem>_...`); stems longer than MAX_STEM_BYTES are shortened with a hash.
`predictions.json` lists every input: what was written, the class shares, notes on how it was
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
import fnmatch
import hashlib
import io
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vocseg.errors import VocsegError
from vocseg.results.segmenter import Segmenter, predict_array
from vocseg.results.visualize import class_shares, overlay_image, save_label_png
from vocseg.training.runs import RUNS_ROOT

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".bmp", ".dib", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".jp2", ".j2k", ".ico", ".pcx", ".sgi", ".exr", ".hdr"}
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".mts", ".m2ts", ".3gp", ".ogv"}
REPORT_NAME = "predictions.json"
WRITTEN_BY = "vocseg predict"
IMAGE_OUTPUTS = ("_overlay.png", "_label.png")
VIDEO_OUTPUTS = ("_overlay.mp4",)
MAX_STEM_BYTES = 180  # + "_overlay.png" + the atomic write's ".NAME.PID.tmp" stays below 255 bytes


@dataclass
class InputFile:
    path: Path
    explicit: bool  # named on the command line (not found in a folder or by a glob)


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
        if self.frames is not None:
            data.update(frames=self.frames, fps=self.fps)
        return data


# ---------------------------------------------------------------- inputs


def expand_inputs(inputs: Iterable[str]) -> list[InputFile]:
    """Files, folders (their non-hidden files, not recursive) and globs (`**` recursive) -> inputs
    in the given order, each file once.

    Symbolic links are followed, but every folder is entered once (by device and inode), so a
    link back to a parent never loops. Paths that do not exist and files that are not images
    stay in the list: they are reported and skipped, one line each, while the rest is processed.
    """
    found: list[InputFile] = []
    for raw in inputs:
        p = Path(raw).expanduser()
        if _is_dir(p):
            try:
                entries = sorted(q for q in p.iterdir() if not q.name.startswith(".") and (q.is_file() or (q.is_symlink() and not q.is_dir())))
            except OSError as exc:
                raise VocsegError(f"Cannot list {p}: {exc.strerror or exc}.", "Check the folder's permissions.") from None
            found.extend(InputFile(q, explicit=False) for q in entries)
        elif not os.path.lexists(p) and any(ch in raw for ch in "*?["):
            matches = glob_files(str(p))
            found.extend([InputFile(q, explicit=False) for q in matches] or [InputFile(p, explicit=True)])  # matching nothing: reported
        else:
            found.append(InputFile(p, explicit=True))
    seen: set[Path] = set()
    unique = []
    for item in found:
        key = _real(item.path)
        if key not in seen:
            seen.add(key)
            unique.append(item)
    return unique


def glob_files(pattern: str) -> list[Path]:
    """Files matching a glob (`*`, `?`, `[...]` within a name, `**` for any depth), hidden names
    excluded, sorted; each folder visited once even through symlink loops."""
    parts = Path(pattern).parts
    first = next((i for i, part in enumerate(parts) if any(ch in part for ch in "*?[")), len(parts))
    base = Path(*parts[:first]) if first else Path(".")
    rest = parts[first:]
    depth_limit = None if any("**" in part for part in rest) else len(rest)
    matches: list[Path] = []
    visited: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in visited:
            dirnames[:] = []
            continue
        visited.add((st.st_dev, st.st_ino))
        rel = Path(dirpath).relative_to(base).parts
        if depth_limit is not None and len(rel) + 1 >= depth_limit:
            dirnames[:] = []
        else:
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and _matches(rest, (*rel, name)) and (Path(dirpath) / name).is_file():
                matches.append(Path(dirpath) / name)
    return sorted(matches)


def _matches(pattern: tuple[str, ...], names: tuple[str, ...]) -> bool:
    if not pattern:
        return not names
    if pattern[0] == "**":
        return any(_matches(pattern[1:], names[k:]) for k in range(len(names) + 1))
    return bool(names) and fnmatch.fnmatchcase(names[0], pattern[0].replace("**", "*")) and _matches(pattern[1:], names[1:])


def _is_dir(p: Path) -> bool:
    try:
        return p.is_dir()
    except OSError:
        return False


def _real(p: Path) -> Path:
    try:
        return p.resolve() if os.path.lexists(p) else p
    except (OSError, RuntimeError):  # a symlink loop
        return p.absolute()


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
        raise VocsegError(str(exc), "Downscale or split it (vips, ImageMagick), or raise the limit with VOCSEG_MAX_MEGAPIXELS=N if you trust the file.") from None
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


def default_out_dir(run: Path | None) -> Path:
    """Where outputs go without `-o`: RUN/predict, RUN/predict2, ... for a model from a run folder,
    else runs/predict, runs/predict2, ... (as Ultralytics names them): never the current folder."""
    root = run if run is not None else RUNS_ROOT
    candidate, n = root / "predict", 2
    while os.path.lexists(candidate):
        candidate = root / f"predict{n}"
        n += 1
    return candidate


def short_stem(stem: str) -> str:
    """`stem`, or (longer than MAX_STEM_BYTES in UTF-8) its start + `~` + 8 hex digits of its sha1."""
    raw = stem.encode("utf-8", "surrogateescape")
    if len(raw) <= MAX_STEM_BYTES:
        return stem
    digest = hashlib.sha1(raw).hexdigest()[:8]
    head = raw[: MAX_STEM_BYTES - 9].decode("utf-8", "ignore")
    return f"{head}~{digest}"


def output_stems(paths: list[Path]) -> list[str]:
    """Predictable, distinct output names: the file stem; `<parent>_<stem>` where stems collide; then `-N`."""
    counts: dict[str, int] = {}
    for p in paths:
        counts[p.stem] = counts.get(p.stem, 0) + 1
    stems, used = [], set()
    for p in paths:
        stem = short_stem(p.stem if counts[p.stem] == 1 else f"{p.parent.name or 'root'}_{p.stem}")
        candidate, n = stem, 2
        while candidate in used:
            candidate = f"{stem}-{n}"
            n += 1
        used.add(candidate)
        stems.append(candidate)
    return stems


class OutputFolder:
    """The output folder and what vocseg may write there: names it wrote before (its
    `predictions.json`), never a file it did not write, never one of this batch's inputs."""

    def __init__(self, folder: Path, inputs: Iterable[Path]) -> None:
        self.folder = folder
        self.previous = previous_outputs(folder)
        self.inputs = {_real(p) for p in inputs}
        self.claimed: set[str] = set()

    def is_vocseg_output(self, path: Path) -> bool:
        return _real(path.parent) == _real(self.folder) and path.name in self.previous

    def claim(self, stem: str, suffixes: tuple[str, ...]) -> tuple[str, str | None]:
        """A stem whose output names are all free to write, and a note when it is not `stem`."""
        candidate, n = stem, 2
        while any(self._blocked(f"{candidate}{suffix}") for suffix in suffixes):
            candidate = f"{stem}-{n}"
            n += 1
        self.claimed.update(f"{candidate}{suffix}" for suffix in suffixes)
        if candidate == stem:
            return stem, None
        taken = next(f"{stem}{s}" for s in suffixes if self._blocked(f"{stem}{s}"))
        return candidate, f"{taken} exists and is not vocseg's: written as {candidate}{suffixes[0]} instead"

    def _blocked(self, name: str) -> bool:
        path = self.folder / name
        if name in self.claimed or _real(path) in self.inputs:
            return True
        return os.path.lexists(path) and name not in self.previous


def previous_outputs(folder: Path) -> set[str]:
    """Names of the files vocseg wrote into `folder` before, from its predictions.json; a
    predictions.json vocseg did not write is refused (one line) rather than overwritten."""
    report = folder / REPORT_NAME
    if not os.path.lexists(report):
        return set()
    try:
        data = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    if isinstance(data, dict) and data.get("written_by") == WRITTEN_BY:
        return {str(name) for name in data.get("files", []) if isinstance(name, str)} | {REPORT_NAME}
    if isinstance(data, dict) and set(data) == {"checkpoint", "mode", "images"}:  # vocseg 0.1's report
        names = {Path(str(item.get(key))).name for item in data["images"] if isinstance(item, dict) for key in ("overlay", "label") if item.get(key)}
        return names | {REPORT_NAME}
    raise VocsegError(
        f"{report} exists and was not written by vocseg; it will not be replaced.",
        "Choose another output folder with -o (without -o vocseg writes to a new runs/predict*/ or RUN/predict*/).",
    )


def save_png_atomic(image: Any, path: Path) -> None:
    """A PIL image as PNG, written whole or not at all."""
    from vocseg.files import write_bytes_atomic

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    write_bytes_atomic(path, buffer.getvalue())


def save_label_atomic(label_map: np.ndarray, path: Path) -> None:
    """`visualize.save_label_png`, written whole or not at all."""
    from vocseg.files import write_bytes_atomic

    buffer = io.BytesIO()
    buffer.name = path.name  # Pillow picks the format from the name
    save_label_png(label_map, buffer)  # type: ignore[arg-type]
    write_bytes_atomic(path, buffer.getvalue())


# ---------------------------------------------------------------- predicting


def predict(
    inputs: list[InputFile] | list[Path],
    model: Segmenter,
    out_dir: Path,
    *,
    opacity: float = 0.5,
    every: int = 1,
    batch: int = 8,
    progress: Callable[[str], Any] | None = None,
) -> list[Prediction]:
    """Segment each input; an input that cannot be read or segmented is reported in its
    Prediction and skipped. Files found in folders or by globs that vocseg itself wrote to
    `out_dir` earlier get no Prediction (len(inputs) - len(result) of them). Raises VocsegError only for faults of the output folder (full disk,
    no permission), after writing what was done to predictions.json."""
    items = [i if isinstance(i, InputFile) else InputFile(Path(i), explicit=True) for i in inputs]
    folder = OutputFolder(out_dir, [])
    kept = [i for i in items if i.explicit or not folder.is_vocseg_output(i.path)]
    folder.inputs = {_real(i.path) for i in kept}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VocsegError(f"Cannot create the output folder {out_dir}: {exc.strerror or exc}.", "Pass another folder with -o.") from None
    results: list[Prediction] = []
    paths = [i.path for i in kept]
    stems = {(_real(p.parent), p.stem) for p in paths}
    try:
        for item, path, stem in zip(kept, paths, output_stems(paths)):
            of = companion_of(path)
            if not item.explicit and of is not None and (_real(path.parent), of) in stems:
                results.append(Prediction(image=path, error=f"{path} looks like the {path.stem[len(of) + 1 :]} of {of}.*, not a photo: not segmented (name it to segment it)."))
            elif path.suffix.lower() in VIDEO_SUFFIXES:
                results.append(_predict_video(path, stem, model, folder, opacity=opacity, every=every, batch=batch, progress=progress))
            else:
                results.append(_predict_image(path, stem, model, folder, opacity=opacity))
    except OSError as exc:
        report = _write_partial_report(results, out_dir, folder)
        where = exc.filename or out_dir
        raise VocsegError(
            f"Cannot write {where}: {exc.strerror or exc}.",
            f"{sum(r.error is None for r in results)} input(s) done before it are listed in {report}; free space or pass another -o, then run predict again.",
        ) from None
    return results


def companion_of(path: Path) -> str | None:
    """The stem `cat` when `path` is named like a file that goes with `cat.jpg` (`cat_label.png`,
    `cat_overlay.png`, `cat_mask.png`, as vocseg and annotation tools name them), else None."""
    for suffix in ("_label", "_overlay", "_mask", "_labels", "_seg", "_gt"):
        if path.stem.endswith(suffix) and len(path.stem) > len(suffix):
            return path.stem[: -len(suffix)]
    return None


def _predict_image(path: Path, stem: str, model: Segmenter, folder: OutputFolder, *, opacity: float) -> Prediction:
    item = Prediction(image=path)
    try:
        decoded = read_input(path)
    except VocsegError as exc:
        item.error = exc.message
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
        save_label_atomic(label_map, label)
        save_png_atomic(overlay_image(rgb, label_map, opacity, item.shares), overlay)
    except OSError as exc:
        with contextlib.suppress(OSError):  # no half pair left behind: the label was this run's
            if label.name in folder.claimed:
                label.unlink(missing_ok=True)
        if exc.errno != errno.ENAMETOOLONG:
            raise
        item.error = f"{path}: cannot write {exc.filename or label}: file name too long."
        return item
    item.label, item.overlay = label, overlay
    return item


def _predict_video(path: Path, stem: str, model: Segmenter, folder: OutputFolder, *, opacity: float, every: int, batch: int, progress: Any) -> Prediction:
    from vocseg.results.video import segment_video

    item = Prediction(image=path)
    if not path.is_file():
        item.error = f"{path} does not exist." if not os.path.lexists(path) else f"{path} is not a readable file."
        return item
    stem, note = folder.claim(stem, VIDEO_OUTPUTS)
    out = folder.folder / f"{stem}{VIDEO_OUTPUTS[0]}"
    try:
        video = segment_video(path, model, out, opacity=opacity, every=every, batch=batch, progress=progress)
    except VocsegError as exc:
        if "vocseg[video]" in exc.hint:
            raise
        item.error = exc.message
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
    from vocseg.files import write_text_atomic

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
    write_text_atomic(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    return path
