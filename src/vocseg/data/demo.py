"""A small, learnable dataset in the real VOC 2012 and SBD layouts, generated in seconds.

Every one of the 20 object classes has its own colour, texture and shape; objects sit on varied,
low-saturation backgrounds at varied scales. VOC masks are palette PNGs with a 255 "void" band
along object borders, as in VOC; SBD labels are `.mat` files (``GTcls.Segmentation``) with no band
and coarser edges, as in SBD. Some SBD ids are VOC train and VOC val ids, as in the real data, so
the aug/trainaug list arithmetic of `vocseg prepare --aug` has something to do.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vocseg.data.voc import NUM_CLASSES, PALETTE, SBD_SUBDIR, SPLITS_SUBDIR, VOC_SUBDIR

DEMO_MARKER = "vocseg_demo.json"
IMAGE_SIZE = (160, 120)  # width, height: VOC photos are ~500x375, scaled down for the CPU

# How the demo trains (`vocseg train --data-root ROOT` + these): the README's demo recipe, i.e. the
# noxfile's `demo` session (tests/test_prepare.py checks that they agree): the tiny model on the CPU,
# 3000 iterations of batch 8 (~10 min on 2 cores; 96.8 mIoU on the demo val split, README). The
# defaults (r50, 160k iterations, pretrained weights) are the VOC recipe, days on a CPU.
DEMO_TRAIN_FLAGS = ("--model", "tiny", "--device", "cpu", "--batch", "8", "--iters", "3000", "--workers", "2")


@dataclass(frozen=True)
class DemoSplits:
    """Split sizes of the demo dataset (`vocseg prepare --check` compares against these)."""

    train: int
    val: int
    trainval: int
    aug: int
    trainaug: int
    sbd_train: int
    sbd_val: int


# 72 degrees apart: more than twice the pipeline's hue jitter (+-36 degrees); x 4 textures (solid,
# horizontal stripes, vertical stripes, checks) = 20 classes
HUE_GROUPS = 5


def class_appearance(label: int) -> tuple[int, int]:
    """(hue group, texture) of an object class 1..20: unique per class."""
    return (label - 1) % HUE_GROUPS, (label - 1) // HUE_GROUPS


def _class_colour(label: int) -> np.ndarray:
    """A saturated RGB colour for the class's hue group."""
    group, texture = class_appearance(label)
    hue = group / HUE_GROUPS + 0.03
    value = 0.9 if texture % 2 == 0 else 0.75
    h6 = hue * 6.0
    i = int(h6) % 6
    f = h6 - int(h6)
    p, q, t = 0.1 * value, value * (1 - 0.9 * f), value * (0.1 + 0.9 * f)
    rgb = [(value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value), (value, p, q)][i]
    return np.array(rgb, dtype=np.float32) * 255.0


def _texture(label: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """The class's pattern in [0, 1], coarse enough to survive a 0.5x resize."""
    _, texture = class_appearance(label)
    period = 10
    if texture == 0:
        return np.ones_like(yy, dtype=np.float32)
    if texture == 1:
        pattern = (yy // (period // 2)) % 2
    elif texture == 2:
        pattern = (xx // (period // 2)) % 2
    else:
        pattern = ((xx // (period // 2)) + (yy // (period // 2))) % 2
    return pattern.astype(np.float32)


def _shape_mask(label: int, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    """A class-specific silhouette: ellipse, box, triangle, diamond or ring."""
    dy, dx = (yy - cy) / ry, (xx - cx) / rx
    kind = (label // 5 + label) % 5
    if kind == 0:
        return dx**2 + dy**2 <= 1.0
    if kind == 1:
        return (np.abs(dx) <= 1.0) & (np.abs(dy) <= 0.7)
    if kind == 2:
        return (dy <= 1.0) & (dy >= -1.0) & (np.abs(dx) <= (dy + 1.0) / 2.0)
    if kind == 3:
        return np.abs(dx) + np.abs(dy) <= 1.0
    r2 = dx**2 + dy**2
    return (r2 <= 1.0) & (r2 >= 0.3)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A low-saturation gradient with noise: varied from image to image, never a class colour."""
    base = rng.uniform(60, 200)
    tint = rng.uniform(-20, 20, size=3)
    gy = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    gx = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    slope = rng.uniform(-50, 50, size=2)
    img = base + tint + slope[0] * gy + slope[1] * gx
    img = img + rng.normal(0, 8, size=(height, width, 3))
    return img.astype(np.float32)


def render_sample(rng: np.random.Generator, labels: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """One RGB image (uint8) and its exact label map (uint8, no void band) with the given objects."""
    width, height = IMAGE_SIZE
    yy, xx = np.mgrid[0:height, 0:width]
    img = _background(rng, height, width)
    label_map = np.zeros((height, width), dtype=np.uint8)
    for label in labels:
        scale = rng.uniform(0.18, 0.42) * min(height, width)
        ry, rx = scale * rng.uniform(0.8, 1.2), scale * rng.uniform(0.8, 1.4)
        cy, cx = rng.uniform(ry * 0.6, height - ry * 0.6), rng.uniform(rx * 0.6, width - rx * 0.6)
        mask = _shape_mask(label, yy, xx, cy, cx, ry, rx)
        shade = 0.45 + 0.55 * _texture(label, yy, xx)
        colour = _class_colour(label) * rng.uniform(0.85, 1.1)
        img[mask] = colour * shade[mask, None] + rng.normal(0, 6, size=(int(mask.sum()), 3))
        label_map[mask] = label
    return np.clip(img, 0, 255).astype(np.uint8), label_map


def voc_void_band(label_map: np.ndarray, width: int = 1) -> np.ndarray:
    """VOC-style mask: pixels within `width` of a border between two labels become 255."""
    from scipy import ndimage

    size = 2 * width + 1
    hi = ndimage.maximum_filter(label_map, size=size)
    lo = ndimage.minimum_filter(label_map, size=size)
    out = label_map.copy()
    out[hi != lo] = 255
    return out


def sbd_coarse(label_map: np.ndarray, block: int = 4) -> np.ndarray:
    """SBD-style mask: no void band, blocky edges like polygon annotations."""
    small = label_map[block // 2 :: block, block // 2 :: block]
    coarse = np.repeat(np.repeat(small, block, axis=0), block, axis=1)
    return coarse[: label_map.shape[0], : label_map.shape[1]].astype(np.uint8)


def save_palette_png(label_map: np.ndarray, path: Path, role: str = "demo") -> None:
    from PIL import Image

    from vocseg.files import atomic_writer

    image = Image.fromarray(label_map, mode="P")
    image.putpalette([c for rgb in PALETTE for c in rgb])
    with atomic_writer(path, role=role) as tmp:
        image.save(tmp, format="PNG")


def save_sbd_mat(label_map: np.ndarray, path: Path) -> None:
    """An SBD `cls/*.mat`: a 1x1 struct GTcls with Segmentation, Boundaries and CategoriesPresent."""
    from scipy.io import savemat

    present = np.array([c for c in np.unique(label_map) if 0 < c < 255], dtype=np.uint8).reshape(-1, 1)
    gtcls = {
        "Segmentation": label_map.astype(np.uint8),
        "Boundaries": np.empty((NUM_CLASSES - 1, 1), dtype=object),
        "CategoriesPresent": present,
    }
    gtcls["Boundaries"][:] = [[np.zeros((0, 0))] for _ in range(NUM_CLASSES - 1)]
    from vocseg.files import atomic_writer

    with atomic_writer(path, role=DEMO_ROLE, mode="wb") as f:
        savemat(f, {"GTcls": gtcls}, do_compression=True)


def _write_list(path: Path, ids: list[str]) -> None:
    from vocseg.files import owned_write_text

    owned_write_text(path, "".join(f"{i}\n" for i in ids), role=DEMO_ROLE)


def _save_jpeg(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    from vocseg.files import atomic_writer

    with atomic_writer(path, role=DEMO_ROLE) as tmp:
        Image.fromarray(image).save(tmp, format="JPEG", quality=92)


DEMO_ROLE = "demo"  # the record's role of every file and folder the demo writes (prepare --demo replaces only these)


def write_demo_dataset(root: Path, *, n_train: int = 80, n_val: int = 40, n_sbd_only: int = 80, seed: int = 0) -> DemoSplits:
    """Write the demo VOC and SBD trees under `root`; return the split sizes. Deterministic in `seed`.

    Every file and folder is written through `vocseg.files` with the role "demo" (recorded as it is
    created); the marker `DEMO_MARKER` is written last, so its absence means "not finished"."""
    from vocseg.files import owned_mkdir, owned_write_text

    rng = np.random.default_rng(seed)
    voc = root / VOC_SUBDIR
    sbd = root / SBD_SUBDIR
    for folder in (voc / "JPEGImages", voc / "SegmentationClass", voc / SPLITS_SUBDIR, sbd / "img", sbd / "cls"):
        owned_mkdir(folder, role=DEMO_ROLE)

    n_total = n_train + n_val + n_sbd_only
    ids = [f"2026_{i:06d}" for i in range(1, n_total + 1)]
    train_ids, val_ids, sbd_only = ids[:n_train], ids[n_train : n_train + n_val], ids[n_train + n_val :]
    # As in the real data, SBD covers part of VOC train and part of VOC val.
    sbd_overlap = train_ids[: n_train // 4] + val_ids[: n_val // 4]
    sbd_ids = set(sbd_only) | set(sbd_overlap)

    objects = list(range(1, NUM_CLASSES))
    cursor = 0
    for image_id in ids:
        count = int(rng.integers(1, 4))
        labels = [objects[(cursor + k) % len(objects)] for k in range(count)]
        cursor += count
        image, label_map = render_sample(rng, labels)
        _save_jpeg(image, voc / "JPEGImages" / f"{image_id}.jpg")
        if image_id not in sbd_only:
            save_palette_png(voc_void_band(label_map), voc / "SegmentationClass" / f"{image_id}.png")
        if image_id in sbd_ids:
            _save_jpeg(image, sbd / "img" / f"{image_id}.jpg")
            save_sbd_mat(sbd_coarse(label_map), sbd / "cls" / f"{image_id}.mat")

    split_rng = np.random.default_rng(seed + 1)
    sbd_sorted = sorted(sbd_ids)
    is_sbd_train = split_rng.random(len(sbd_sorted)) < 0.75
    sbd_train = [i for i, t in zip(sbd_sorted, is_sbd_train) if t]
    sbd_val = [i for i, t in zip(sbd_sorted, is_sbd_train) if not t]

    _write_list(voc / SPLITS_SUBDIR / "train.txt", train_ids)
    _write_list(voc / SPLITS_SUBDIR / "val.txt", val_ids)
    _write_list(voc / SPLITS_SUBDIR / "trainval.txt", train_ids + val_ids)
    _write_list(sbd / "train.txt", sbd_train)
    _write_list(sbd / "val.txt", sbd_val)

    aug = sbd_ids - set(train_ids) - set(val_ids)
    trainaug = (set(train_ids) | sbd_ids) - set(val_ids)
    splits = DemoSplits(
        train=n_train,
        val=n_val,
        trainval=n_train + n_val,
        aug=len(aug),
        trainaug=len(trainaug),
        sbd_train=len(sbd_train),
        sbd_val=len(sbd_val),
    )
    owned_write_text(root / DEMO_MARKER, json.dumps({"demo": True, "seed": seed, "splits": asdict(splits)}, indent=1), role=DEMO_ROLE)
    return splits


def demo_split_sizes(root: Path) -> dict[str, int] | None:
    """The split sizes recorded by `write_demo_dataset`, or None when `root` is not a demo dataset."""
    marker = root / DEMO_MARKER
    if not marker.is_file():
        return None
    splits = json.loads(marker.read_text()).get("splits")
    return dict(splits) if isinstance(splits, dict) else None


OWN_DEMO_CLASSES = ("_background_", "crack", "hole", "rust")  # as labelme's class_names.txt writes them
OWN_DEMO_ROLE = "own-demo"  # what vocseg.files records for the own-classes demo's files


def write_own_demo(root: Path, *, n_images: int = 40, seed: int = 0) -> int:
    """A small own-classes dataset in labelme's layout (what `labelme2voc.py` writes) under `root`:
    `class_names.txt` (`_background_` first), `JPEGImages/`, `SegmentationClass/` (palette PNGs of
    class ids 0..3, labelme's colours = VOC's colour map), `SegmentationClassVisualization/`, no
    split lists. The shapes are the demo's (classes 1-3's looks), learnable on a CPU. Deterministic
    in `seed`; refuses a folder that holds anything but an earlier own demo. Returns the image count."""
    import io

    from PIL import Image

    from vocseg.errors import VocsegError
    from vocseg.files import OWN_NAMES, owned_mkdir, owned_write_bytes, owned_write_text, recorded

    marker = root / DEMO_MARKER
    if root.is_dir():  # only an empty folder, or one holding an earlier (maybe killed) own demo
        foreign = [e for e in sorted(root.iterdir()) if e.name not in OWN_NAMES and not recorded(e, role=OWN_DEMO_ROLE)]
        if foreign:
            raise VocsegError(f"{root} holds {foreign[0]}, which is not the own-classes demo's; the demo is written only into an empty folder.",
                              "Pass a new --data-root for the demo.")
    owned_mkdir(root, role=OWN_DEMO_ROLE)
    rng = np.random.default_rng(seed)
    folders = [owned_mkdir(root / n, role=OWN_DEMO_ROLE) for n in ("JPEGImages", "SegmentationClass", "SegmentationClassVisualization")]

    def jpeg(array: np.ndarray, quality: int) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
        return buffer.getvalue()

    objects = list(range(1, len(OWN_DEMO_CLASSES)))
    lut = np.array(PALETTE, dtype=np.uint8)
    for k in range(n_images):
        image_id = f"img_{k:04d}"
        labels = [objects[(k + j) % len(objects)] for j in range(int(rng.integers(1, 3)))]
        image, label_map = render_sample(rng, labels)
        owned_write_bytes(folders[0] / f"{image_id}.jpg", jpeg(image, 92), role=OWN_DEMO_ROLE)
        save_palette_png(label_map, folders[1] / f"{image_id}.png", role=OWN_DEMO_ROLE)
        viz = (0.5 * image + 0.5 * lut[label_map]).astype(np.uint8)
        owned_write_bytes(folders[2] / f"{image_id}.jpg", jpeg(viz, 85), role=OWN_DEMO_ROLE)
    owned_write_text(root / "class_names.txt", "".join(f"{n}\n" for n in OWN_DEMO_CLASSES), role=OWN_DEMO_ROLE)
    owned_write_text(marker, json.dumps({"demo": True, "own": True, "seed": seed, "images": n_images}, indent=1), role=OWN_DEMO_ROLE)
    return n_images
