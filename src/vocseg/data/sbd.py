"""SBD -> VOC: `cls/*.mat` to `SegmentationClassAug/*.png`, and the aug / trainaug split lists.

Pixel-identical to mmseg's `tools/dataset_converters/voc_aug.py` (a plain 2-D uint8 PNG of
`GTcls.Segmentation`), with the same list sets, written sorted so runs are reproducible.

Why it is faster than mmseg's script (measured in benchmarks/sbd_convert.py):
- `read_segmentation` walks the MAT-file v5 structure and takes `GTcls.Segmentation` straight from
  the decompressed bytes, without building the 20 sparse `Boundaries` matrices `loadmat` makes.
  A well-formed file of another variant (labels stored as double, a struct array) goes to
  `loadmat`, so the result is always loadmat's; `loadmat` runs in a separate Python process there,
  because scipy's reader can crash the interpreter (SIGSEGV/SIGBUS) on some damaged files.
- Anything malformed (cut short, bad sizes, a zlib error, not a MAT v5 file) is "damaged": every
  exception of the reader becomes `DamagedMatError`, never a crash or a traceback.
- `encode_png` writes the 8-bit grayscale PNG itself: filter "none" and zlib's run-length strategy
  suit label maps (large flat areas), several times faster than Pillow's adaptive filtering at its
  default level, and the files come out smaller.
- Work goes to the processes in chunks of files, not one task per file.
"""

from __future__ import annotations

import errno
import os
import struct
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vocseg.data.voc import SBD_SUBDIR, SPLITS_SUBDIR, VOC_SUBDIR
from vocseg.errors import VocsegError

# MAT-file v5 element types and array classes (MATLAB's "MAT-File Format" document).
_MI_INT8, _MI_UINT8, _MI_INT32, _MI_UINT32, _MI_MATRIX, _MI_COMPRESSED = 1, 2, 5, 6, 14, 15
_MX_STRUCT, _MX_UINT8 = 2, 9
_FLAG_COMPLEX, _FLAG_GLOBAL, _FLAG_LOGICAL = 0x800, 0x400, 0x200
_INFLATE_BUFFER = 1 << 20  # above a 500x500 label map and its boundaries


class _NotRecognised(Exception):
    """The fast reader met a well-formed variant it does not handle: let loadmat decide."""


class DamagedMatError(ValueError):
    """A `.mat` file that is not a readable SBD label file; the message says what is wrong."""


class _Malformed(Exception):
    """The bytes contradict the MAT-file v5 structure: the file is damaged."""


def _element(buf: bytes, pos: int, endian: str) -> tuple[int, int, int, int]:
    """(type, data start, data bytes, next element) of the data element at `pos`."""
    if pos + 8 > len(buf):
        raise _Malformed("a data element runs past the end of the file")
    (raw,) = struct.unpack_from(endian + "I", buf, pos)
    if raw >> 16:  # small data element: type and size share the first 4 bytes
        return raw & 0xFFFF, pos + 4, raw >> 16, pos + 8
    (size,) = struct.unpack_from(endian + "I", buf, pos + 4)
    if pos + 8 + size > len(buf):
        raise _Malformed("a data element runs past the end of the file")
    return raw, pos + 8, size, pos + 8 + ((size + 7) & ~7)


def _matrix_header(buf: bytes, pos: int, endian: str) -> tuple[int, int, tuple[int, ...], bytes, int, int]:
    """(class, flags, dims, name, first sub-element, end) of the miMATRIX element at `pos`."""
    kind, start, size, _ = _element(buf, pos, endian)
    if kind != _MI_MATRIX:
        raise _NotRecognised("not a matrix")
    end = start + size
    kind, fstart, fsize, p = _element(buf, start, endian)
    if kind != _MI_UINT32 or fsize < 4:
        raise _NotRecognised("array flags")
    (flags,) = struct.unpack_from(endian + "I", buf, fstart)
    kind, dstart, dsize, p = _element(buf, p, endian)
    if kind != _MI_INT32 or dsize % 4:
        raise _NotRecognised("dimensions")
    dims = struct.unpack_from(f"{endian}{dsize // 4}i", buf, dstart)
    kind, nstart, nsize, p = _element(buf, p, endian)
    if kind != _MI_INT8:
        raise _NotRecognised("array name")
    return flags & 0xFF, flags, dims, bytes(buf[nstart : nstart + nsize]), p, end


def _segmentation_of_gtcls(buf: bytes, pos: int, endian: str) -> np.ndarray | None:
    """GTcls.Segmentation from the top-level matrix at `pos`; None if this variable is not GTcls."""
    cls, flags, dims, name, p, _ = _matrix_header(buf, pos, endian)
    if name != b"GTcls":
        return None
    if cls != _MX_STRUCT or dims != (1, 1):
        raise _NotRecognised("GTcls is not a 1x1 struct")
    kind, lstart, lsize, p = _element(buf, p, endian)
    if kind != _MI_INT32 or lsize != 4:
        raise _NotRecognised("field name length")
    (name_len,) = struct.unpack_from(endian + "i", buf, lstart)
    kind, fstart, fsize, p = _element(buf, p, endian)
    if kind != _MI_INT8 or name_len <= 0 or fsize % name_len:
        raise _NotRecognised("field names")
    fields = [bytes(buf[fstart + i * name_len : fstart + (i + 1) * name_len]).split(b"\0", 1)[0] for i in range(fsize // name_len)]
    if fields.count(b"Segmentation") != 1:
        raise _NotRecognised("no single Segmentation field")
    for field in fields:
        kind, _, _, after = _element(buf, p, endian)
        if field != b"Segmentation":
            p = after
            continue
        cls, flags, dims, _, q, _ = _matrix_header(buf, p, endian)
        if cls != _MX_UINT8 or flags & (_FLAG_COMPLEX | _FLAG_GLOBAL | _FLAG_LOGICAL) or len(dims) != 2 or min(dims) <= 0:
            raise _NotRecognised("Segmentation is not a plain 2-D uint8 matrix")
        kind, vstart, vsize, _ = _element(buf, q, endian)
        if kind != _MI_UINT8:
            raise _NotRecognised("Segmentation data stored as another type")
        if vsize != dims[0] * dims[1]:
            raise _Malformed(f"Segmentation holds {vsize} bytes for {dims[0]}x{dims[1]} pixels")
        # MATLAB stores column-major: (cols, rows) in C order, transposed, is loadmat's (rows, cols).
        return np.frombuffer(buf, np.uint8, vsize, vstart).reshape(dims[1], dims[0]).T
    raise _NotRecognised("Segmentation not reached")


def read_segmentation_fast(data: bytes) -> np.ndarray:
    """GTcls.Segmentation from the bytes of a MAT v5 file; `_NotRecognised` for anything unusual."""
    if len(data) < 128 or data[126:128] not in (b"IM", b"MI") or data[124:126] not in (b"\x00\x01", b"\x01\x00"):
        raise _Malformed("not a MAT-file v5 (SBD's format)" if len(data) >= 128 else f"only {len(data)} bytes long")
    endian = "<" if data[126:128] == b"IM" else ">"
    pos = 128
    while pos < len(data):
        kind, start, size, after = _element(data, pos, endian)
        if kind == _MI_COMPRESSED:
            try:
                # One large first buffer: growing it block by block costs a third more time.
                buf = zlib.decompress(data[start : start + size], 15, _INFLATE_BUFFER)
            except zlib.error as exc:
                raise _Malformed(f"compressed data damaged ({exc})") from None
            found = _segmentation_of_gtcls(buf, 0, endian)
            after = start + size  # compressed elements carry no padding
        elif kind == _MI_MATRIX:
            found = _segmentation_of_gtcls(data, pos, endian)
        else:
            found = None
        if found is not None:
            return found
        pos = after
    raise _Malformed("no GTcls variable")


def read_segmentation_scipy(path: Path) -> np.ndarray:
    """Exactly what mmseg's converter does: loadmat, then GTcls[0]['Segmentation'][0] as uint8.

    In this process: only for files already known to be well formed (tests compare with it).
    """
    from scipy.io import loadmat

    data = loadmat(str(path))
    return data["GTcls"][0]["Segmentation"][0].astype(np.uint8)


# Run in a fresh interpreter: no vocseg import, the array comes back as .npy bytes on stdout.
_LOADMAT_CHILD = (
    "import sys, numpy as np\n"
    "from scipy.io import loadmat\n"
    "seg = loadmat(sys.argv[1])['GTcls'][0]['Segmentation'][0].astype(np.uint8)\n"
    "np.save(sys.stdout.buffer, np.ascontiguousarray(seg), allow_pickle=False)\n"
)
LOADMAT_TIMEOUT_S = 60


def read_segmentation_isolated(path: Path) -> np.ndarray:
    """`read_segmentation_scipy` in a child Python process: a crash of scipy's reader (it can
    segfault on damaged files) or any exception becomes `DamagedMatError`."""
    import io
    import signal
    import subprocess
    import sys

    try:
        done = subprocess.run(
            [sys.executable, "-c", _LOADMAT_CHILD, str(path)],
            capture_output=True,
            timeout=LOADMAT_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DamagedMatError(f"scipy's MAT reader did not finish within {LOADMAT_TIMEOUT_S} s") from None
    if done.returncode < 0:
        try:
            name = signal.Signals(-done.returncode).name
        except ValueError:
            name = f"signal {-done.returncode}"
        raise DamagedMatError(f"scipy's MAT reader crashed on it ({name})")
    if done.returncode != 0:
        lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise DamagedMatError(lines[-1] if lines else f"scipy's MAT reader failed (exit code {done.returncode})")
    try:
        return np.load(io.BytesIO(done.stdout), allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - whatever the child wrote, it is not an array
        raise DamagedMatError(f"scipy's MAT reader returned no label map ({exc})") from None


def read_sbd_mat(path: Path) -> np.ndarray:
    """GTcls.Segmentation of an SBD `.mat` as uint8, as mmseg's converter reads it.

    Raises `DamagedMatError` (a ValueError) naming what is wrong when the file is damaged or not an
    SBD label file: every exception of the reader, never a crash of this process.
    """
    data = path.read_bytes()
    try:
        return read_segmentation_fast(data)
    except _NotRecognised:
        pass  # a well-formed variant: loadmat decides, in another process
    except _Malformed as exc:
        raise DamagedMatError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - struct.error, ValueError, MemoryError...: malformed bytes
        raise DamagedMatError(f"malformed MAT-file ({type(exc).__name__}: {exc})") from None
    mask = read_segmentation_isolated(path)
    if mask.ndim != 2 or 0 in mask.shape:
        raise DamagedMatError(f"GTcls.Segmentation has shape {mask.shape}, expected a 2-D label map")
    return mask


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def encode_png(mask: np.ndarray) -> bytes:
    """An 8-bit grayscale PNG of a 2-D uint8 array (what Pillow writes for mode "L", pixel for pixel)."""
    height, width = mask.shape
    rows = np.empty((height, width + 1), np.uint8)
    rows[:, 0] = 0  # filter type "none" on every row
    rows[:, 1:] = mask
    packer = zlib.compressobj(1, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
    idat = packer.compress(rows.tobytes()) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def write_atomic(target: Path, data: bytes) -> None:
    """Write via a recorded temporary name + rename (`vocseg.files`), so a PNG that exists is
    always complete and recorded as vocseg's (never over a file of the user's)."""
    from vocseg.files import owned_write_bytes

    owned_write_bytes(target, data, role="data", durable=False)


def convert_one(mat_path: Path, out_dir: Path) -> str:
    """Convert one `.mat` to `out_dir/<id>.png`; return the id. DamagedMatError if the `.mat` is damaged."""
    mask = read_sbd_mat(mat_path)
    write_atomic(out_dir / f"{mat_path.stem}.png", encode_png(mask))
    return mat_path.stem


def _convert_chunk(args: tuple[list[str], str, str]) -> tuple[int, list[tuple[str, str]]]:
    """(converted count, [(file, why)] for damaged files). Disk errors propagate: they stop the run."""
    names, in_dir, out_dir = args
    failures: list[tuple[str, str]] = []
    for name in names:
        try:
            convert_one(Path(in_dir) / name, Path(out_dir))
        except DamagedMatError as exc:
            failures.append((name, str(exc)))
    return len(names) - len(failures), failures


def _chunks(names: list[str], workers: int) -> list[list[str]]:
    # A few chunks per worker balance the load; 64 files cap the latency of the progress bar.
    size = max(1, min(64, len(names) // (workers * 4) or 1))
    return [names[i : i + size] for i in range(0, len(names), size)]


def pending_mats(root: Path, *, force: bool = False) -> tuple[list[str], int]:
    """(names of the `.mat` files still to convert, total `.mat` count)."""
    in_dir = root / SBD_SUBDIR / "cls"
    out_dir = root / VOC_SUBDIR / "SegmentationClassAug"
    if not in_dir.is_dir():
        raise VocsegError(f"No SBD labels at {in_dir}.", "Run `vocseg prepare --aug` to fetch and extract SBD.")
    names = sorted(e.name for e in os.scandir(in_dir) if e.name.endswith(".mat") and not e.name.startswith("."))
    if not out_dir.is_dir():
        return names, len(names)
    from vocseg.files import remove_stale_temps

    remove_stale_temps(out_dir)  # writes that were killed before their rename (only vocseg's)
    done: set[str] = set()
    for entry in os.scandir(out_dir):
        if entry.name.endswith(".png") and not entry.name.startswith("."):
            done.add(entry.name[:-4])
    if force:
        return names, len(names)
    return [n for n in names if n[:-4] not in done], len(names)


def convert_sbd(
    root: Path,
    *,
    workers: int | None = None,
    force: bool = False,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Convert every `cls/*.mat` under `root`'s SBD tree; skip PNGs already there unless `force`.

    Returns the number converted. Damaged `.mat` files do not stop the others: they are reported
    together at the end (one VocsegError), and a re-run converts only what is still missing.
    """
    in_dir = root / SBD_SUBDIR / "cls"
    out_dir = root / VOC_SUBDIR / "SegmentationClassAug"
    names, _ = pending_mats(root, force=force)
    if not names:
        return 0
    workers = max(1, min(workers or os.cpu_count() or 1, len(names)))
    converted = 0
    failures: list[tuple[str, str]] = []
    try:
        from vocseg.files import owned_mkdir

        owned_mkdir(out_dir, role="data")
        jobs = [(chunk, str(in_dir), str(out_dir)) for chunk in _chunks(names, workers)]
        if workers == 1:
            results: Iterable[tuple[int, list[tuple[str, str]]]] = map(_convert_chunk, jobs)
            for (chunk, _, _), (done, failed) in zip(jobs, results):
                converted += done
                failures.extend(failed)
                if progress:
                    progress(len(chunk))
        else:
            from concurrent.futures import as_completed

            from vocseg.data.pool import process_pool

            with process_pool(workers) as pool:
                futures = {pool.submit(_convert_chunk, job): len(job[0]) for job in jobs}
                for future in as_completed(futures):
                    done, failed = future.result()
                    converted += done
                    failures.extend(failed)
                    if progress:
                        progress(futures[future])
    except BrokenProcessPool:
        kept = sum(1 for e in os.scandir(out_dir) if e.name.endswith(".png")) if out_dir.is_dir() else 0
        raise VocsegError(
            f"A conversion process died while writing SBD labels to {out_dir} (out of memory, or killed).",
            f"Re-run `vocseg prepare --aug` (add --workers 1 if memory is short): the {kept} labels already converted are kept.",
        ) from None
    except OSError as exc:
        kept = sum(1 for e in os.scandir(out_dir) if e.name.endswith(".png")) if out_dir.is_dir() else 0
        what = "Disk full" if exc.errno == errno.ENOSPC else f"{exc.strerror or exc}"
        raise VocsegError(
            f"{what} while writing SBD labels to {out_dir}.",
            f"Free some space and re-run `vocseg prepare --aug`: the {kept} labels already converted are kept.",
        ) from None
    if failures:
        failures.sort()
        name, why = failures[0]
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise VocsegError(
            f"Damaged SBD label file {in_dir / name}: {why}{more}.",
            f"Delete {root / SBD_SUBDIR.split('/')[0]} and re-run `vocseg prepare --aug` to extract it again from the verified archive; "
            f"the {converted} labels converted now are kept.",
        )
    return converted


def read_ids(path: Path) -> list[str]:
    """The ids of a VOC or SBD list (`vocseg.data.lists.read_id_list`)."""
    from vocseg.data.lists import read_id_list

    if not path.is_file():
        raise VocsegError(f"Split list {path} is missing.", "Re-extract the dataset (vocseg prepare --redo).")
    return read_id_list(path)


@dataclass(frozen=True)
class AugLists:
    aug: list[str]
    trainaug: list[str]


def aug_lists(voc_train: Iterable[str], voc_val: Iterable[str], sbd_train: Iterable[str], sbd_val: Iterable[str]) -> AugLists:
    """mmseg's sets: trainaug = (VOC train | SBD) - VOC val; aug = SBD - (VOC train | VOC val). Sorted."""
    train, val, sbd = set(voc_train), set(voc_val), set(sbd_train) | set(sbd_val)
    return AugLists(aug=sorted(sbd - train - val), trainaug=sorted((train | sbd) - val))


def write_aug_lists(root: Path) -> AugLists:
    splits = root / VOC_SUBDIR / SPLITS_SUBDIR
    sbd = root / SBD_SUBDIR
    lists = aug_lists(read_ids(splits / "train.txt"), read_ids(splits / "val.txt"), read_ids(sbd / "train.txt"), read_ids(sbd / "val.txt"))
    for name, ids in (("aug.txt", lists.aug), ("trainaug.txt", lists.trainaug)):
        write_atomic(splits / name, "".join(f"{i}\n" for i in ids).encode())
    return lists
