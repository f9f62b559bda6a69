"""SBD conversion: vocseg's `convert_sbd` against mmseg's own `tools/dataset_converters/voc_aug.py`.

Both convert the same generated SBD set at the same number of processes; mmseg's `convert_mat` runs
through mmengine's `track_parallel_progress` exactly as its script calls it, and its lists come from
its `generate_aug_list` on the same inputs. Every PNG is compared pixel for pixel (and by mode), and
both lists by their id sets. Target: vocseg at least 2x faster.

The set is generated once and cached in the temp folder: N `.mat` files written by scipy.io.savemat
with SBD's structure (GTcls: Segmentation uint8 ~500x375 from polygons, Boundaries as a 20x1 cell
of sparse matrices, CategoriesPresent), plus SBD and VOC split lists overlapping as in the real data.

Run: python benchmarks/sbd_convert.py [--files 2000] [--nproc 2 1] [--repeat 5] [--cache DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from multiprocessing import Pool
from pathlib import Path
from types import ModuleType

import numpy as np

from vocseg.data.sbd import convert_sbd, write_aug_lists
from vocseg.data.voc import SBD_SUBDIR, SPLITS_SUBDIR, VOC_SUBDIR

GENERATOR_VERSION = 2
SHAPES = ((375, 500), (500, 375), (333, 500), (375, 500), (366, 500), (500, 333), (375, 500), (281, 500))


def default_cache() -> Path:
    """A RAM-backed temp folder where there is one: on a shared VM, creating a file on disk costs
    from 0.02 to 0.9 ms depending on the moment, the same for both converters, which drowns what is
    being compared. Pass --cache to measure on a disk."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    return base / "vocseg-bench-sbd"


def mmseg_voc_aug() -> ModuleType:
    """mmseg's converter script, loaded from the installed wheel (it is not an importable module)."""
    import mmseg

    path = Path(mmseg.__file__).parent / ".mim" / "tools" / "dataset_converters" / "voc_aug.py"
    spec = importlib.util.spec_from_file_location("mmseg_voc_aug", path)
    assert spec and spec.loader, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its convert_mat must pickle by name for the process pool
    spec.loader.exec_module(module)
    return module


def sbd_label(seed: int) -> dict:
    """One SBD-like GTcls: a few polygon objects of random classes on background."""
    import scipy.sparse as sp
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    height, width = SHAPES[seed % len(SHAPES)]
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(1, 5))):
        label = int(rng.integers(1, 21))
        cx, cy = rng.uniform(0.15, 0.85) * width, rng.uniform(0.15, 0.85) * height
        radius = rng.uniform(0.08, 0.45) * min(width, height)
        n = int(rng.integers(6, 24))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = radius * rng.uniform(0.5, 1.0, n)
        draw.polygon([(float(cx + r * np.cos(a)), float(cy + r * np.sin(a))) for a, r in zip(angles, radii)], fill=label)
    seg = np.asarray(canvas, dtype=np.uint8).copy()
    boundaries = np.empty((20, 1), dtype=object)
    for k in range(1, 21):
        inside = seg == k
        if inside.any():
            edge = inside.copy()
            edge[1:-1, 1:-1] &= ~(inside[:-2, 1:-1] & inside[2:, 1:-1] & inside[1:-1, :-2] & inside[1:-1, 2:])
            boundaries[k - 1, 0] = sp.csc_matrix(edge)
        else:
            boundaries[k - 1, 0] = sp.csc_matrix((height, width), dtype=bool)
    present = np.array([c for c in np.unique(seg) if 0 < c < 255], dtype=np.uint8).reshape(-1, 1)
    return {"GTcls": {"Boundaries": boundaries, "Segmentation": seg, "CategoriesPresent": present}}


def _write_mat(args: tuple[int, str]) -> None:
    from scipy.io import savemat

    seed, path = args
    savemat(path, sbd_label(seed), do_compression=True)  # MATLAB's default (v7) compresses too


def generate(root: Path, files: int) -> Path:
    """The SBD + VOC layout under `root` (cached: generated once per size and generator version)."""
    done = root / f".complete-{files}-v{GENERATOR_VERSION}"
    if done.is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    cls_dir = root / SBD_SUBDIR / "cls"
    cls_dir.mkdir(parents=True)
    splits = root / VOC_SUBDIR / SPLITS_SUBDIR
    splits.mkdir(parents=True)
    ids = [f"{2007 + i % 5}_{i:06d}" for i in range(files)]
    t0 = time.perf_counter()
    with Pool(os.cpu_count()) as pool:
        pool.map(_write_mat, [(i, str(cls_dir / f"{image_id}.mat")) for i, image_id in enumerate(ids)], chunksize=16)
    rng = np.random.default_rng(0)
    is_train = rng.random(files) < 0.75
    (root / SBD_SUBDIR / "train.txt").write_text("".join(f"{i}\n" for i, t in zip(ids, is_train) if t))
    (root / SBD_SUBDIR / "val.txt").write_text("".join(f"{i}\n" for i, t in zip(ids, is_train) if not t))
    # VOC lists: part overlaps SBD (train and val both), part is VOC-only, as in the real data.
    picks = rng.permutation(files)
    voc_train = [ids[i] for i in picks[: files // 8]] + [f"2012_{i:06d}" for i in range(files // 10)]
    voc_val = [ids[i] for i in picks[files // 8 : files // 8 + files // 10]] + [f"2012_{i:06d}" for i in range(files // 10, files // 5)]
    (splits / "train.txt").write_text("".join(f"{i}\n" for i in sorted(voc_train)))
    (splits / "val.txt").write_text("".join(f"{i}\n" for i in sorted(voc_val)))
    done.write_text("")
    print(f"generated {files} SBD .mat files in {time.perf_counter() - t0:.1f} s under {root}")
    return root


def read_list(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines()]


def cpu_seconds() -> float:
    """User + system CPU of this process and of its finished children (the worker processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(run: Callable[[], None]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of `run`."""
    os.sync()  # let the file system finish deleting the previous output before the clock starts
    time.sleep(1.0)
    wall, cpu = time.perf_counter(), cpu_seconds()
    run()
    return time.perf_counter() - wall, cpu_seconds() - cpu


def clear(folder: Path) -> None:
    """Empty the output folder but keep it: both converters write into the same directory, since
    where a new directory lands on disk changes file-creation cost several-fold on this machine."""
    folder.mkdir(parents=True, exist_ok=True)
    for entry in os.scandir(folder):
        os.unlink(entry.path)


def mmseg_main(module: ModuleType, root: Path, out_dir: Path, lists_dir: Path, nproc: int) -> None:
    """What mmseg's main() does: convert via track_parallel_progress, then its two lists."""
    from mmengine.utils import mkdir_or_exist, scandir, track_parallel_progress

    in_dir = root / SBD_SUBDIR / "cls"
    mkdir_or_exist(str(out_dir))
    with open(os.devnull, "w") as quiet:  # its text progress bar, kept off the report
        track_parallel_progress(
            partial(module.convert_mat, in_dir=str(in_dir), out_dir=str(out_dir)), list(scandir(str(in_dir), suffix=".mat")), nproc=nproc, file=quiet
        )
    full_aug = read_list(root / SBD_SUBDIR / "train.txt") + read_list(root / SBD_SUBDIR / "val.txt")
    train = read_list(root / VOC_SUBDIR / SPLITS_SUBDIR / "train.txt")
    val = read_list(root / VOC_SUBDIR / SPLITS_SUBDIR / "val.txt")
    trainaug = module.generate_aug_list(train + full_aug, val)
    aug = module.generate_aug_list(full_aug, train + val)
    lists_dir.mkdir(parents=True, exist_ok=True)
    (lists_dir / "trainaug.txt").write_text("".join(f"{i}\n" for i in trainaug))
    (lists_dir / "aug.txt").write_text("".join(f"{i}\n" for i in aug))


def vocseg_main(root: Path, nproc: int) -> None:
    convert_sbd(root, workers=nproc)
    write_aug_lists(root)


def compare(ours_dir: Path, theirs_dir: Path, splits: Path, theirs_lists: Path) -> int:
    """Every PNG pixel-identical (same mode, shape, values) and both lists the same sets; returns the PNG count."""
    from PIL import Image

    names = sorted(p.name for p in theirs_dir.iterdir() if p.suffix == ".png")
    assert names == sorted(p.name for p in ours_dir.iterdir() if p.suffix == ".png"), "different PNG file sets"
    for name in names:
        with Image.open(theirs_dir / name) as a, Image.open(ours_dir / name) as b:
            assert a.mode == b.mode == "L", (name, a.mode, b.mode)
            assert np.array_equal(np.asarray(a), np.asarray(b)), f"pixels differ in {name}"
    for name in ("aug.txt", "trainaug.txt"):
        theirs, ours = read_list(theirs_lists / name), read_list(splits / name)
        assert set(theirs) == set(ours) and len(ours) == len(set(ours)), f"{name} differs"
        assert ours == sorted(ours), f"{name} is not sorted"
    return len(names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--nproc", type=int, nargs="+", default=[os.cpu_count() or 1])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=default_cache(), help="where the set is generated and converted (default: %(default)s)")
    args = parser.parse_args()

    root = generate(args.cache / f"n{args.files}", args.files)
    for p in (root / SBD_SUBDIR / "cls").iterdir():  # warm the page cache for both sides alike
        p.read_bytes()
    module = mmseg_voc_aug()
    out_dir = root / VOC_SUBDIR / "SegmentationClassAug"  # mmseg's default output folder, and vocseg's
    lists_dir = args.cache / "mmseg_lists"
    failed = False
    for nproc in args.nproc:
        runs: dict[str, list[tuple[float, float]]] = {"mmseg": [], "vocseg": []}
        jobs = {"mmseg": partial(mmseg_main, module, root, out_dir, lists_dir, nproc), "vocseg": partial(vocseg_main, root, nproc)}
        for r in range(args.repeat):
            # Alternate who goes first so drift on a shared machine hits both alike.
            for name in ("mmseg", "vocseg") if r % 2 == 0 else ("vocseg", "mmseg"):
                clear(out_dir)
                runs[name].append(timed(jobs[name]))
        # Identity: vocseg's output where it belongs, mmseg's (untimed) in a folder beside it.
        clear(out_dir)
        vocseg_main(root, nproc)
        reference = args.cache / "mmseg_reference"
        clear(reference)
        mmseg_main(module, root, reference, lists_dir, nproc)
        count = compare(out_dir, reference, root / VOC_SUBDIR / SPLITS_SUBDIR, lists_dir)

        (wall_t, cpu_t), (wall_o, cpu_o) = (tuple(min(x) for x in zip(*runs[n])) for n in ("mmseg", "vocseg"))
        # Each round ran both back to back: the ratio within a round is the least disturbed by drift.
        paired = sorted(t[0] / o[0] for t, o in zip(runs["mmseg"], runs["vocseg"]))
        print(
            f"{count} files, {nproc} process(es), {args.repeat} rounds: mmseg voc_aug.py best {wall_t:.2f} s ({wall_t / count * 1e3:.2f} ms/file), "
            f"vocseg best {wall_o:.2f} s ({wall_o / count * 1e3:.2f} ms/file); vocseg faster by {statistics.median(paired):.2f}x "
            f"(median of the rounds, range {paired[0]:.2f}-{paired[-1]:.2f}; best vs best {wall_t / wall_o:.2f}x; "
            f"CPU time {cpu_t:.2f} s vs {cpu_o:.2f} s: {cpu_t / cpu_o:.2f}x). Output identical: every PNG's pixels, aug/trainaug sets."
        )
        failed |= statistics.median(paired) < 2.0
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
