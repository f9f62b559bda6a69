"""What a dataset is: its classes, palette, ignore index, split lists and folders, as one typed object.

`DatasetSpec` is the single source of "how many classes and what they are called" for config
writing (num_classes, metainfo), the loader, the check, eval, predict, report and export.
PASCAL VOC 2012 (`VOC`) is the built-in one. Own datasets in VOC's layout are recognised from the
files the annotation tools write (`detect`):

- labelme (`labelme2voc.py`): `class_names.txt` (one name per line, `_background_` first),
  `SegmentationClass/` palette PNGs of class ids (255 = ignore), no split lists;
- CVAT "Segmentation mask 1.1" / Datumaro `format='voc'`: `labelmap.txt`
  (`# label:color_rgb:parts:actions`, then `name:r,g,b::` per class, background any colour and
  anywhere), `SegmentationClass/` as RGB colour PNGs, `ImageSets/Segmentation/default.txt` or
  train/val lists;
- a VOC layout (`JPEGImages/`, `SegmentationClass/`, lists) with or without `VOCdevkit/VOC2012/`
  above it.

vocseg never writes into the user's folders: what it derives (the seeded train/val split when the
export has none, class-id PNGs of RGB masks) goes to `<dataset>/.vocseg/` (`materialize`), a folder
vocseg owns. No heavy imports.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from vocseg.data.voc import CLASSES, IGNORE_INDEX, PALETTE, SPLITS_SUBDIR, VOC_SUBDIR
from vocseg.errors import VocsegError

OWN_DIR = ".vocseg"  # vocseg's folder inside an own dataset: splits, converted masks, precheck cache
CLASS_NAMES_FILE = "class_names.txt"  # labelme
LABELMAP_FILE = "labelmap.txt"  # CVAT, Datumaro
IMAGES = "JPEGImages"
MASKS = "SegmentationClass"
ID_MASKS = "SegmentationClassIds"  # under .vocseg/: RGB masks converted to class ids
VAL_RATIO = 0.2  # the share of ids in val when vocseg writes the split (at least one id)
SPLIT_SEED = 0
VOID_COLOUR = (224, 224, 192)  # VOC's boundary band: ignore, where the labelmap does not name it
Colour = tuple[int, int, int]


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset in VOC's layout.

    `classes[i]` is the name of class id i, `palette[i]` its RGB colour (0-255); pixels equal to
    `ignore_index` are not trained or scored. `base` is the folder holding `JPEGImages/`;
    `mask_dir` the folder of class-id masks the loader reads (`.vocseg/SegmentationClassIds` for
    RGB exports after `materialize`); `lists` maps split name -> list file (`train`, `val`).
    `colour_masks`: the export's masks are RGB pictures, mapped through `palette` to class ids.
    `background`: the id not painted in overlays (None: every class is painted).
    """

    name: str
    kind: str  # "voc" (PASCAL VOC 2012), "labelme", "cvat" (CVAT / Datumaro), "classes" (--classes FILE), "voc-layout" (VOC2012/ without VOCdevkit/)
    classes: tuple[str, ...]
    palette: tuple[Colour, ...]
    base: Path | None = None
    ignore_index: int = IGNORE_INDEX
    colour_masks: bool = False
    background: int | None = 0
    class_file: Path | None = None
    lists: dict[str, Path] = field(default_factory=dict)
    split_note: str = ""  # how the train/val split came about (the user's lists, or vocseg's seeded one)

    @property
    def is_voc(self) -> bool:
        return self.kind == "voc"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_dir(self) -> Path:
        assert self.base is not None
        return self.base / IMAGES

    @property
    def source_mask_dir(self) -> Path:
        assert self.base is not None
        return self.base / MASKS

    @property
    def own_dir(self) -> Path:
        assert self.base is not None
        return self.base / OWN_DIR

    @property
    def mask_dir(self) -> Path:
        return self.own_dir / ID_MASKS if self.colour_masks else self.source_mask_dir

    @property
    def full_palette(self) -> list[Colour]:
        """256 colours for a palette PNG: the classes', VOC's elsewhere (255 = VOC's void colour)."""
        return list(self.palette) + PALETTE[len(self.palette) :]

    def describe(self) -> str:
        """One line: what was found, how many classes and where the class names come from."""
        what = {"labelme": "a labelme export", "cvat": "a CVAT / Datumaro export", "classes": "a VOC-layout dataset", "voc": "PASCAL VOC 2012",
                "voc-layout": "PASCAL VOC's layout without VOCdevkit/VOC2012 above it"}[self.kind]
        source = f" (classes from {self.class_file.name})" if self.class_file else ""
        return f"{what} with {self.num_classes} classes{source}: {', '.join(self.classes)}"

    def metainfo(self) -> dict[str, list]:
        """mmseg's dataset metainfo: classes and palette (lists, as a config holds them)."""
        return dict(classes=list(self.classes), palette=[list(c) for c in self.palette])

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name, "kind": self.kind, "classes": list(self.classes), "palette": [list(c) for c in self.palette],
            "ignore_index": self.ignore_index, "background": self.background, "base": str(self.base) if self.base else None,
            "colour_masks": self.colour_masks, "class_file": str(self.class_file) if self.class_file else None,
            "lists": {k: str(v) for k, v in self.lists.items()}, "split": self.split_note,
        }  # fmt: skip


VOC = DatasetSpec(name="voc", kind="voc", classes=CLASSES, palette=tuple(PALETTE[: len(CLASSES)]))


def spec_from_meta(classes: Sequence[str], palette: Sequence[Sequence[int]] | None = None, name: str = "dataset") -> DatasetSpec:
    """A spec from an mmseg dataset metainfo (a run's config): VOC when the classes are VOC's."""
    names = tuple(str(c) for c in classes)
    if names == CLASSES:
        return VOC
    colours = tuple(tuple(int(v) for v in c[:3]) for c in (palette or []))
    if len(colours) < len(names):
        colours = colours + tuple(PALETTE[len(colours) : len(names)])
    background = next((i for i, n in enumerate(names) if n.lower() in ("background", "_background_")), None)
    return DatasetSpec(name=name, kind="classes", classes=names, palette=colours[: len(names)], background=background)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# The one active dataset of this process (set where a run's model or config is loaded): pictures,
# legends and export metadata read it. VOC unless a run of another dataset was loaded.
_active: list[DatasetSpec] = [VOC]


def use_dataset(spec: DatasetSpec) -> None:
    _active[0] = spec


def active_dataset() -> DatasetSpec:
    return _active[0]


def dataset_of_config(cfg: object) -> DatasetSpec:
    """The dataset a (mmengine) config trains or evaluates on: its `vocseg_dataset` entry, else
    its val dataset's metainfo classes, else VOC (configs of VOC runs carry no classes)."""
    get = getattr(cfg, "get", None)
    if get is None:
        return VOC
    embedded = get("vocseg_dataset")
    if embedded:
        data = json.loads(embedded) if isinstance(embedded, str) else dict(embedded)
        kind = str(data.get("kind", "classes"))
        if kind == "voc":
            return VOC
        spec = spec_from_meta(data.get("classes", CLASSES), data.get("palette"), str(data.get("name", "dataset")))
        bg = data.get("background")
        palette = spec.palette if not spec.is_voc else VOC.palette
        return DatasetSpec(name=str(data.get("name", "dataset")), kind=kind, classes=spec.classes, palette=palette, background=bg if isinstance(bg, int) else None)
    for key in ("val_dataloader", "test_dataloader", "train_dataloader"):
        loader = get(key) or {}
        dataset = loader.get("dataset") or {}
        while isinstance(dataset, dict) and ("dataset" in dataset or "datasets" in dataset):
            dataset = dataset.get("dataset") or (dataset.get("datasets") or [{}])[0]
        meta = dataset.get("metainfo") if isinstance(dataset, dict) else None
        if meta and meta.get("classes"):
            return spec_from_meta(meta["classes"], meta.get("palette"))
    return VOC


def dataset_of_run(run: Path) -> DatasetSpec:
    """The dataset of a run folder, read from its config.py's `vocseg_dataset` entry without
    executing the file (ast); VOC when it has none (VOC runs) or the file cannot be read."""
    import ast

    try:
        tree = ast.parse((Path(run) / "config.py").read_text())
    except (OSError, SyntaxError, ValueError):
        return VOC
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "vocseg_dataset" for t in node.targets):
            try:
                return dataset_of_config({"vocseg_dataset": ast.literal_eval(node.value)})
            except (ValueError, TypeError, json.JSONDecodeError):
                return VOC
    return VOC


# ---------------------------------------------------------------------------------------------
# Class files
_LABELMAP_LINE = re.compile(r"^([^:#][^:]*):\s*(\d{1,3})\s*,\s*(\d{1,3})\s*,\s*(\d{1,3})\s*(?::.*)?$")


def parse_labelmap(text: str, source: str) -> tuple[tuple[str, ...], tuple[Colour, ...]]:
    """`labelmap.txt` (CVAT / Datumaro VOC export): names and colours in file order.

    Lines: `# label:color_rgb:parts:actions` (comment) then `name:r,g,b:parts:actions`. A line that
    is not of that form raises VocsegError naming the file and the line number.
    """
    names: list[str] = []
    colours: list[Colour] = []
    for number, raw in enumerate(text.lstrip("\ufeff").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LABELMAP_LINE.match(line)
        if not m or any(int(v) > 255 for v in m.group(2, 3, 4)):
            raise VocsegError(f"Line {number} of {source} is not `name:r,g,b::` ({line!r}).", "Fix the line: a class name, its colour as r,g,b (0-255), then '::'.")
        name, colour = m.group(1).strip(), (int(m.group(2)), int(m.group(3)), int(m.group(4)))
        if name in names:
            raise VocsegError(f"{source} names class {name!r} twice (line {number}).", "Give each class one line.")
        if colour in colours:
            other = names[colours.index(colour)]
            raise VocsegError(f"{source} gives {name!r} the colour {colour} of {other!r} (line {number}): masks could not tell them apart.", "Give each class its own colour.")
        names.append(name)
        colours.append(colour)
    if not names:
        raise VocsegError(f"{source} names no class.", "Write one `name:r,g,b::` line per class.")
    return tuple(names), tuple(colours)


def parse_class_names(text: str, source: str) -> tuple[str, ...]:
    """One class name per line (labelme's `class_names.txt`): blank lines skipped, `__ignore__`
    (labelme's ignore label, written as 255) dropped, `_background_` read as `background`."""
    names = [line.strip() for line in text.lstrip("\ufeff").splitlines() if line.strip() and line.strip() != "__ignore__"]
    names = ["background" if n == "_background_" else n for n in names]
    if not names:
        raise VocsegError(f"{source} names no class.", "Write one class name per line, the background first.")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise VocsegError(f"{source} names {', '.join(twice[:3])} more than once.", "Give each class one line.")
    if len(names) > IGNORE_INDEX:
        raise VocsegError(f"{source} names {len(names)} classes; class ids must stay below {IGNORE_INDEX} (the ignore index).", "Merge classes.")
    return tuple(names)


def read_class_file(path: Path) -> tuple[tuple[str, ...], tuple[Colour, ...] | None]:
    """Names (and colours, for the labelmap format) of a class file; VocsegError naming it otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise VocsegError(f"Class file {path} does not exist.", "Pass a file with one class name per line, or a labelmap.txt (--classes FILE).") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise VocsegError(f"Cannot read class file {path}: {exc}.", "Save it as UTF-8 text.") from None
    body = [ln.strip() for ln in text.lstrip("\ufeff").splitlines() if ln.strip() and not ln.strip().startswith("#")]
    if body and all(_LABELMAP_LINE.match(ln) for ln in body):
        return parse_labelmap(text, str(path))
    return parse_class_names(text, str(path)), None


# ---------------------------------------------------------------------------------------------
# Detection
def unknown_classes_error(root: Path, retry: Sequence[str]) -> VocsegError | None:
    """The one refusal for a data root holding someone's images without a class file: `JPEGImages/`
    or `SegmentationClass/` in `root` (no `VOCdevkit/VOC2012/` above them) and neither
    `class_names.txt` nor `labelmap.txt` (the caller found none: `detect` gave VOC); None for any
    other folder. vocseg never guesses classes, and never writes VOC or its demo into such a
    folder (docs/own-data.md). `retry`: the command to show again with `--classes FILE`."""
    from vocseg.console import command

    if (root / VOC_SUBDIR).is_dir() or not ((root / IMAGES).is_dir() or (root / MASKS).is_dir()):
        return None
    if root.name == VOC_SUBDIR.split("/")[1] and root.parent.name == VOC_SUBDIR.split("/")[0]:  # VOC's own tree, one level too deep
        return VocsegError(f"{root} is the VOC2012 folder itself: the data root is the folder above {VOC_SUBDIR}/.",
                           f"Pass it: `{command(*(root.parent.parent if a == root else a for a in retry))}`.")
    return VocsegError(
        f"{root} holds {IMAGES}/ or {MASKS}/ without {VOC_SUBDIR}/ above them and without a class file ({CLASS_NAMES_FILE} or {LABELMAP_FILE}): "
        "vocseg cannot tell which classes the mask ids mean; nothing was downloaded or written.",
        f"Pass the class names: `{command(*retry, '--classes', 'FILE')}` (one name per line, background first).",
    )


def dataset_base(root: Path) -> Path:
    """The folder holding JPEGImages/: `root/VOCdevkit/VOC2012` when there, else `root`."""
    voc = root / VOC_SUBDIR
    return voc if voc.is_dir() else root


def _background_of(names: Sequence[str]) -> int | None:
    return next((i for i, n in enumerate(names) if n.lower() in ("background", "_background_")), None)


def detect(root: Path, classes_file: Path | None = None) -> DatasetSpec:
    """The dataset under a data root: an own export (class file found or given), else VOC.

    Class files are looked for in the dataset's base folder and in `root`: `class_names.txt`
    (labelme), `labelmap.txt` (CVAT / Datumaro). A VOC layout without either is PASCAL VOC 2012
    (`VOC`, its 21 classes). `lists` holds the train/val lists that exist in the user's tree.
    """
    base = dataset_base(root)
    found = classes_file
    kind = "classes"
    if found is None:
        for folder in dict.fromkeys((base, root)):
            for name, k in ((LABELMAP_FILE, "cvat"), (CLASS_NAMES_FILE, "labelme")):
                if (folder / name).is_file():
                    found, kind = folder / name, k
                    break
            if found is not None:
                break
    if found is None:
        lists = {s: root / SPLITS_SUBDIR / f"{s}.txt" for s in ("train", "val")}
        if base == root and (root / IMAGES).is_dir() and (root / MASKS).is_dir() and all(p.is_file() for p in lists.values()):
            # VOC2012's own layout without VOCdevkit/VOC2012 above it: VOC's classes, its lists, here
            return DatasetSpec(name=root.name or "voc", kind="voc-layout", classes=CLASSES, palette=VOC.palette, base=root, lists=lists,
                               split_note=f"the tree's own lists ({lists['train'].name}, {lists['val'].name})")
        return VOC
    names, colours = read_class_file(found)
    if kind == "cvat" and colours is None:
        raise VocsegError(f"{found} is not in the labelmap format (`name:r,g,b::` per line).", "Fix it, or pass the class names with --classes FILE.")
    if kind == "labelme" and colours is not None:
        kind = "cvat"
    colour_masks = colours is not None
    palette = colours if colours is not None else tuple(PALETTE[: len(names)])
    lists = {s: base / SPLITS_SUBDIR / f"{s}.txt" for s in ("train", "val") if (base / SPLITS_SUBDIR / f"{s}.txt").is_file()}
    name = root.name or "dataset"  # the folder given as --data-root names the dataset (and its runs)
    return DatasetSpec(
        name=name, kind=kind, classes=names, palette=palette, base=base, colour_masks=colour_masks,
        background=_background_of(names), class_file=found, lists=lists,
    )  # fmt: skip


def detect_or_none(root: Path, classes_file: Path | None = None) -> DatasetSpec | None:
    """`detect`, but None when the root holds no dataset at all (no JPEGImages/ anywhere)."""
    spec = detect(root, classes_file)
    if spec.is_voc:
        return spec if (dataset_base(root) / IMAGES).is_dir() else None
    return spec


# ---------------------------------------------------------------------------------------------
# Masks of RGB exports
def colour_lookup(spec: DatasetSpec) -> dict[int, int]:
    """24-bit colour code -> class id for an RGB export; VOC's void colour -> ignore unless a class owns it."""
    table = {(r << 16) | (g << 8) | b: i for i, (r, g, b) in enumerate(spec.palette)}
    void = (VOID_COLOUR[0] << 16) | (VOID_COLOUR[1] << 8) | VOID_COLOUR[2]
    table.setdefault(void, spec.ignore_index)
    return table


def ids_of_mask(mask: object, spec: DatasetSpec) -> tuple[object, dict[Colour, int]]:
    """(class-id mask, unknown colours -> pixel count) for a mask of this dataset, as numpy arrays.

    RGB(A) masks of a colour export are mapped through the labelmap; single-channel masks are ids
    already. Unknown colours become the ignore index in the returned mask (the check reports them).
    """
    import numpy as np

    from vocseg.data.rgb_masks import colour_codes

    arr = np.asarray(mask)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2 or not spec.colour_masks:
        return arr, {}
    codes, inverse, counts = np.unique(colour_codes(arr[..., :3]), return_inverse=True, return_counts=True)
    table = colour_lookup(spec)
    ids = np.array([table.get(int(c), spec.ignore_index) for c in codes], dtype=np.uint8)
    unknown = {((int(c) >> 16) & 255, (int(c) >> 8) & 255, int(c) & 255): int(n) for c, n in zip(codes, counts) if int(c) not in table}
    return ids[inverse.reshape(arr.shape[:2])], unknown


# ---------------------------------------------------------------------------------------------
# Splits
def _order_key(image_id: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{image_id}".encode()).hexdigest()


def stratified_split(ids: Sequence[str], classes_of: Callable[[str], set[int]], *, ratio: float = VAL_RATIO, seed: int = SPLIT_SEED) -> tuple[list[str], list[str]]:
    """(train, val): a deterministic split of `ids`, val about `ratio` of them (at least one, and
    one id left for train). Stratified: for each class (rarest first) found in two or more images
    and not yet in val, one of its images goes to val; the rest of val is filled in seeded order.
    Pure given `classes_of` (id -> class ids in its mask)."""
    ordered = sorted(dict.fromkeys(ids), key=lambda i: _order_key(i, seed))
    if len(ordered) < 2:
        return list(ordered), []
    want = min(len(ordered) - 1, max(1, round(len(ordered) * ratio)))
    present = {i: classes_of(i) for i in ordered}
    holders: dict[int, list[str]] = {}
    for i in ordered:
        for c in sorted(present[i]):
            holders.setdefault(c, []).append(i)
    val: list[str] = []
    covered: set[int] = set()
    for c in sorted(holders, key=lambda k: (len(holders[k]), k)):
        if len(val) >= want or c in covered or len(holders[c]) < 2:
            continue
        pick = holders[c][0]
        val.append(pick)
        covered |= present[pick]
    for i in ordered:
        if len(val) >= want:
            break
        if i not in val:
            val.append(i)
    chosen = set(val)
    return [i for i in ordered if i not in chosen], [i for i in ordered if i in chosen]


def export_ids(spec: DatasetSpec) -> tuple[list[str], str]:
    """The ids of an export without train/val lists: `default.txt` when there, else every image
    with a mask. Returns (ids, where they came from)."""
    from vocseg.data.images import IMAGE_SUFFIXES, MASK_SUFFIXES, FolderIndex
    from vocseg.data.lists import read_id_list

    assert spec.base is not None
    for name in ("default", "trainval"):
        lst = spec.base / SPLITS_SUBDIR / f"{name}.txt"
        if lst.is_file():
            return read_id_list(lst), str(lst)
    masks = FolderIndex(spec.source_mask_dir)
    ids = sorted(p.stem for p in spec.image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if spec.image_dir.is_dir() else []
    return [i for i in ids if masks.find(i, MASK_SUFFIXES)], f"every image in {spec.image_dir} with a mask"


def mask_classes(spec: DatasetSpec, image_id: str) -> set[int]:
    """The class ids present in an id's mask (as the loader will read it); empty when unreadable."""
    import numpy as np

    from vocseg.data.images import MASK_SUFFIXES, FolderIndex, read_mask

    found = FolderIndex(spec.source_mask_dir).find(image_id, MASK_SUFFIXES)
    if found is None:
        return set()
    try:
        ids, _ = ids_of_mask(read_mask(found), spec)
    except Exception:  # noqa: BLE001 - the check names unreadable masks
        return set()
    values = np.unique(np.asarray(ids))
    return {int(v) for v in values if v < spec.num_classes}


def class_pixels(spec: DatasetSpec, split: str) -> list[int]:
    """Labelled pixels per class (ids 0..num_classes-1) over the masks of a split's list, as the
    loader reads them (the converted masks of an RGB export). One mask decode per id. Written here
    for the plan's class shares; a class-weight module may compute the same counts."""
    import numpy as np

    from vocseg.data.images import MASK_SUFFIXES, FolderIndex, read_mask

    counts = np.zeros(spec.num_classes, dtype=np.int64)
    if split not in spec.lists:
        return counts.tolist()
    index = FolderIndex(spec.source_mask_dir)
    for image_id in dict.fromkeys(_ids(spec.lists[split])):
        found = index.find(image_id, MASK_SUFFIXES)
        if found is None:
            continue
        try:
            ids, _ = ids_of_mask(read_mask(found), spec)
        except Exception:  # noqa: BLE001 - the check names unreadable masks
            continue
        counts += np.bincount(np.asarray(ids, dtype=np.int64).ravel(), minlength=256)[: spec.num_classes]
    return counts.tolist()


def planned_split(spec: DatasetSpec, seed: int = SPLIT_SEED) -> tuple[dict[str, list[str]], str]:
    """The ids of train and val for a dataset without both lists, and a note saying how they came about."""
    ids, source = export_ids(spec)
    train, val = stratified_split(ids, lambda i: mask_classes(spec, i), seed=seed)
    note = f"vocseg's seeded split (seed {seed}, val {VAL_RATIO:.0%}, stratified by class) of the {len(ids)} ids of {source}"
    return {"train": train, "val": val}, note


def kept_split(spec: DatasetSpec) -> tuple[dict[str, list[str]], str] | None:
    """The split vocseg wrote earlier into `.vocseg/splits/`, when it still covers exactly the
    export's ids (a split never changes under a project because a mask was redrawn); else None."""
    folder = spec.own_dir / "splits"
    try:
        meta = json.loads((folder / "split.json").read_text())
        split = {name: _ids(folder / f"{name}.txt") for name in ("train", "val")}
    except (OSError, ValueError, VocsegError):
        return None
    ids, _ = export_ids(spec)
    if sorted(split["train"] + split["val"]) != sorted(set(ids)) or not isinstance(meta, dict):
        return None
    return split, str(meta.get("note", "vocseg's seeded split"))


def materialize(spec: DatasetSpec, *, console_print: Callable[[str], None] | None = None) -> DatasetSpec:
    """`write_own_files`, with a folder vocseg cannot write into said in one line."""
    try:
        return write_own_files(spec, console_print=console_print)
    except PermissionError as exc:
        raise VocsegError(
            f"vocseg cannot write its folder {spec.own_dir if spec.base else OWN_DIR} in the dataset ({exc.strerror}): the split and converted masks go there.",
            "Make the dataset folder writable, or work on a writable copy of it.",
        ) from None


def write_own_files(spec: DatasetSpec, *, console_print: Callable[[str], None] | None = None) -> DatasetSpec:
    """Write what vocseg derives for an own dataset into `<base>/.vocseg/` and return the spec with
    the lists to train on: the user's train/val lists when both exist, else vocseg's seeded split
    (`.vocseg/splits/{train,val}.txt`, with `split.json`); RGB masks converted once to class-id PNGs
    in `.vocseg/SegmentationClassIds/` (an existing one newer than its original is kept).
    Nothing outside `.vocseg/` is written. VOC is returned unchanged."""
    if spec.is_voc or spec.base is None:
        return spec
    from vocseg.files import owned_write_text

    say = console_print or (lambda _: None)
    own = spec.own_dir
    if "train" in spec.lists and "val" in spec.lists:
        lists, note = dict(spec.lists), f"the export's own lists {spec.lists['train']} and {spec.lists['val']}"
    else:
        split, note = kept_split(spec) or planned_split(spec)
        lists = {}
        for name, ids in split.items():
            path = own / "splits" / f"{name}.txt"
            text = "".join(f"{i}\n" for i in ids)
            if not path.is_file() or path.read_text() != text:
                owned_write_text(path, text)
            lists[name] = path
        meta = json.dumps({"seed": SPLIT_SEED, "val_ratio": VAL_RATIO, "train": len(split["train"]), "val": len(split["val"]), "note": note}, indent=1) + "\n"
        if not (own / "splits" / "split.json").is_file() or (own / "splits" / "split.json").read_text() != meta:
            owned_write_text(own / "splits" / "split.json", meta)
            say(f"split: {len(split['train'])} train / {len(split['val'])} val ids written to {own / 'splits'} ({note})")
    if spec.colour_masks:
        converted = convert_colour_export(spec, [i for p in lists.values() for i in _ids(p)])
        if converted:
            say(f"RGB masks: {converted} mapped through {spec.class_file} to class-id PNGs in {spec.mask_dir} (originals untouched)")
    if lists.get("train", Path()).parent == own / "splits":
        note = f"{note}; lists in {own / 'splits'} (vocseg's folder: nothing else in {spec.base} is written)"
    spec = replace(spec, lists=lists, split_note=note)
    info = json.dumps(spec.to_json(), indent=1) + "\n"
    if not (own / "dataset.json").is_file() or (own / "dataset.json").read_text() != info:
        owned_write_text(own / "dataset.json", info)
    return spec


def _ids(path: Path) -> list[str]:
    from vocseg.data.lists import read_id_list

    return read_id_list(path)


def convert_colour_export(spec: DatasetSpec, ids: Sequence[str]) -> int:
    """RGB masks of `ids` -> palette PNGs of class ids in `spec.mask_dir`; returns how many were
    written now. A mask with a colour the labelmap does not name, or one that does not decode, is
    left out (the check names it), and a class-id copy vocseg wrote of it before is deleted: the
    loader must not train on the labels of a mask the user has since changed."""
    from vocseg.data.images import MASK_SUFFIXES, FolderIndex, read_mask
    from vocseg.data.rgb_masks import palette_png_bytes
    from vocseg.files import may_delete, owned_delete, owned_write_bytes

    index = FolderIndex(spec.source_mask_dir)
    done = 0
    for image_id in dict.fromkeys(ids):
        source = index.find(image_id, MASK_SUFFIXES)
        if source is None:
            continue
        target = spec.mask_dir / f"{image_id}.png"
        if target.is_file() and target.stat().st_mtime_ns >= source.stat().st_mtime_ns:
            continue
        try:
            ids_mask, unknown = ids_of_mask(read_mask(source), spec)
        except Exception:  # noqa: BLE001 - the check names unreadable masks
            ids_mask, unknown = None, True
        if unknown:
            if may_delete(target):  # an older copy of a mask that changed: not trained on
                owned_delete(target)
            continue
        owned_write_bytes(target, palette_png_bytes(ids_mask, spec.full_palette))  # type: ignore[arg-type]
        done += 1
    return done


_RESOLVED: dict[tuple[str, str], DatasetSpec] = {}  # one command resolves a data root once (plan, config, table)


def resolve(root: Path, classes_file: Path | None = None, *, write: bool = True, console_print: Callable[[str], None] | None = None) -> DatasetSpec:
    """The dataset of a data root, ready to train on (`materialize`d when `write`, once per process)."""
    if not write:
        return detect(root, classes_file)
    key = (str(root), str(classes_file or ""))
    if key not in _RESOLVED:
        _RESOLVED[key] = materialize(detect(root, classes_file), console_print=console_print)
    return _RESOLVED[key]
