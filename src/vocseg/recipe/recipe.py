"""The experiment recipe: one typed object, the single source of truth for every default.

Flags become a `Recipe`; `plan()` derives every number from it (total batch, scaled LR,
iterations, samples seen, ratio to the official schedule); `vocseg.recipe.mmconfig` turns both into
an MMSeg config. Nothing here imports torch or mmseg.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vocseg.data.voc import NUM_CLASSES, SPLITS_SUBDIR, VOC_SUBDIR
from vocseg.errors import VocsegError
from vocseg.recipe import schedule as sched
from vocseg.recipe.models import DEFAULT_MODEL, PRESETS
from vocseg.recipe.trackers import LOG_TO_HINT, TRACKERS
from vocseg.stack.threads import AUTO, loader_workers, machine_cpu_count

if TYPE_CHECKING:
    from vocseg.data.dataset import DatasetSpec


def command(*argv: object) -> str:
    """`vocseg.console.command` (a pasteable shell command), imported only when a hint is built:
    the console imports rich, which `vocseg --help` must not (benchmarks/startup.py)."""
    from vocseg.console import command as shell_command

    return shell_command(*argv)

DATA_ROOT_ENV = "VOCSEG_DATA_ROOT"
MIN_CROP = 32  # pixels: ResNet backbones downsample by 32 (mmseg ResNetV1c, strides 2-2-2-2-2)
DEVICES = ("cuda", "cpu")


def default_data_root() -> Path:
    """$VOCSEG_DATA_ROOT, else the user's platformdirs data folder."""
    env = os.environ.get(DATA_ROOT_ENV)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("vocseg")) / "data"


@dataclass(frozen=True)
class GpuSpec:
    """`--gpus 6,7` / `7` / `0-3` (exact nvidia-smi ids) or `first:N` (the first N visible GPUs)."""

    count: int
    ids: tuple[int, ...] | None = None

    def __str__(self) -> str:
        return ",".join(map(str, self.ids)) if self.ids is not None else f"first:{self.count}"


GPUS_GRAMMAR = 2  # recipe files of grammar 1 (unmarked) read a bare --gpus number as a count
GPUS_HINT = "Use GPU ids like 6,7 or 7 or 0-3 (nvidia-smi numbering), or first:N for the first N visible GPUs."


def parse_gpus(text: str) -> GpuSpec:
    """Parse `--gpus`: ids and ranges (`6,7`, `7`, `0-3,6`), or `first:N`.

    A bare number is a GPU id, never a count: `--gpus 7` on a shared server means GPU 7, and
    reading it as "seven GPUs" would silently take GPUs other people are using.
    """
    raw = text.strip().lower()
    if not raw:
        raise VocsegError("--gpus is empty.", GPUS_HINT)
    if raw.startswith("first:"):
        n = raw.removeprefix("first:").strip()
        if not re.fullmatch(r"[0-9]{1,4}", n) or int(n) == 0:
            raise VocsegError(f"--gpus {text!r}: first:N needs a positive count N.", GPUS_HINT)
        return GpuSpec(count=int(n))
    ids: list[int] = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        m = re.fullmatch(r"([0-9]{1,4})(?:-([0-9]{1,4}))?", part)
        if not m:
            raise VocsegError(f"--gpus {text!r} is not a list of GPU ids.", GPUS_HINT)
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise VocsegError(f"--gpus {text!r}: the range {part} runs backwards.", "Write ranges low-high, e.g. 0-3.")
        ids.extend(range(lo, hi + 1))
    if not ids:
        raise VocsegError(f"--gpus {text!r} is not a list of GPU ids.", GPUS_HINT)
    if len(set(ids)) != len(ids):
        raise VocsegError(f"--gpus {text!r} names a GPU twice.", "Name each GPU once.")
    return GpuSpec(count=len(ids), ids=tuple(ids))


@dataclass(frozen=True)
class Recipe:
    """Every choice of a training run. Field defaults are vocseg's defaults."""

    data_root: str = ""
    model: str = DEFAULT_MODEL
    aug: bool = True  # VOC train + SBD aug (10582 images), as the official recipe
    device: str = "cuda"
    gpus: str = "first:1"  # ids like "6,7" / "7" / "0-3", or "first:N"
    nproc: int = 1  # processes for --device cpu (the distributed path over gloo)
    nnodes: int = 1  # machines (torchrun --nnodes); --gpus / --nproc count per machine
    batch: int = 4  # per GPU / process
    iters: int | None = None
    epochs: int | None = None
    schedule: str | None = None  # "20k" | "40k": the official schedule, equal in samples seen
    base_lr: float | None = None  # default: the model preset's (0.01 for the official recipe)
    base_batch: int = sched.OFFICIAL_BATCH
    lr: float | None = None  # an explicit LR, not rescaled
    warmup_iters: int = 0
    crop: int | None = None  # default: the model preset's
    pretrained: str = "auto"  # "auto" = the weights that match the backbone; "none"; a path or URL
    amp: bool | None = None  # None: on with CUDA (bf16, or fp16 + loss scaling), off on the CPU
    channels_last: bool | None = None  # None: on with CUDA
    cudnn_benchmark: bool | None = None  # None: on with CUDA unless --deterministic
    pin_memory: bool | None = None  # None: on with CUDA
    val_interval: int | None = None  # in epochs with --epochs, else iterations
    ckpt_interval: int | None = None  # likewise
    keep: int = 3
    seed: int = 0
    deterministic: bool = False
    num_workers: int | None = None  # None: sized to this machine's cores (see loader_workers)
    name: str | None = None
    log_to: tuple[str, ...] = ()  # experiment trackers (vocseg.recipe.trackers); () = vocseg's own files only
    dataset: str = ""  # "" = PASCAL VOC 2012; else the name of an own dataset found under data_root (vocseg.data.dataset)
    classes_file: str = ""  # --classes FILE: the class names of an own dataset, when no export file names them
    # Loss weight per class: "none", "auto" (median-frequency balancing of the training split's
    # pixels, vocseg.data.class_pixels) or one number per class of the dataset (21 for VOC).
    class_weight: str = "none"
    class_weight_values: tuple[float, ...] = ()  # the weights written into the loss (from class_weight; filled by vocseg)
    # Whole-model weights to fine-tune from (MMEngine's load_from): a checkpoint file, a run folder
    # or official:NAME; tensors whose name and shape match load, the rest start fresh.
    load_from: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def gpu_spec(self) -> GpuSpec:
        return parse_gpus(self.gpus)

    @property
    def world_size(self) -> int:
        return self.procs_per_node * self.nnodes

    @property
    def procs_per_node(self) -> int:
        return self.gpu_spec.count if self.device == "cuda" else self.nproc

    @property
    def total_batch(self) -> int:
        return self.world_size * self.batch

    @property
    def use_amp(self) -> bool:
        return self.amp if self.amp is not None else self.device == "cuda"

    @property
    def use_channels_last(self) -> bool:
        return self.channels_last if self.channels_last is not None else self.device == "cuda"

    @property
    def use_cudnn_benchmark(self) -> bool:
        if self.device != "cuda":
            return False
        return self.cudnn_benchmark if self.cudnn_benchmark is not None else not self.deterministic

    @property
    def use_pin_memory(self) -> bool:
        return self.pin_memory if self.pin_memory is not None else self.device == "cuda"

    @property
    def workers(self) -> int:
        """Loader workers per process on this machine (--workers, else sized to its cores)."""
        if self.num_workers is not None:
            return self.num_workers
        return loader_workers(machine_cpu_count(), self.procs_per_node)

    @property
    def config_workers(self) -> int | str:
        """`num_workers` as written into a config: --workers, else 'auto' (decided on the
        machine that trains, by `vocseg.stack.threads`)."""
        return self.num_workers if self.num_workers is not None else AUTO

    @property
    def base_lr_value(self) -> float:
        return self.base_lr if self.base_lr is not None else PRESETS[self.model].base_lr

    @property
    def crop_size(self) -> int:
        return self.crop or PRESETS[self.model].crop

    @property
    def pretrained_checkpoint(self) -> str | None:
        if self.pretrained == "auto":
            # Fine-tuning a whole model (--load-from) replaces the backbone's init anyway.
            return None if self.load_from else PRESETS[self.model].pretrained
        if self.pretrained.lower() == "none":
            return None
        return self.pretrained

    @property
    def is_voc(self) -> bool:
        return not self.dataset

    @property
    def class_weights(self) -> tuple[float, ...] | None:
        """The per-class loss weights to train with, or None (`--class-weight none`)."""
        if self.class_weight == "none":
            return None
        if self.class_weight == "auto":
            return self.class_weight_values or None
        return parse_class_weights(self.class_weight, len(self.class_names))

    @property
    def class_names(self) -> tuple[str, ...]:
        """The classes this recipe trains: VOC's 21, or the own dataset's (its class file; read, never written)."""
        if self.is_voc:
            from vocseg.data.voc import CLASSES

            return tuple(CLASSES)
        from vocseg.data.dataset import detect

        return detect(Path(self.data_root), Path(self.classes_file) if self.classes_file else None).classes

    def default_name(self) -> str:
        data = ("vocaug" if self.aug else "voc") if self.is_voc else self.dataset
        if self.epochs is not None:
            length = f"{self.epochs}ep"
        elif self.iters is not None:
            length = f"{self.iters}it"
        else:
            length = self.schedule or sched.REFERENCE_SCHEDULE
        return f"{self.model}-{data}-{length}"

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        if not self.log_to:
            del data["log_to"]  # recipes (and configs) without trackers stay as before the field existed
        for key in ("dataset", "classes_file"):
            if not data[key]:
                del data[key]  # VOC recipes (and their configs) stay byte for byte as before
        for name in ("class_weight", "class_weight_values", "load_from"):  # likewise
            if data[name] in ("none", (), None):
                del data[name]
        return json.dumps({**data, "gpus_grammar": GPUS_GRAMMAR}, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Recipe:
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        gpus = str(values.get("gpus", ""))
        if data.get("gpus_grammar") != GPUS_GRAMMAR and gpus.isdecimal():
            values["gpus"] = f"first:{gpus}"  # written when a bare number was a count
        for name in ("log_to", "class_weight_values"):
            if isinstance(values.get(name), list):
                values[name] = tuple(values[name])
        return cls(**values)


CLASS_WEIGHT_HINT = f"Pass --class-weight auto, none, or one comma-separated non-negative number per class, in class-id order ({NUM_CLASSES} for PASCAL VOC)."


def parse_class_weights(text: str, num_classes: int = NUM_CLASSES) -> tuple[float, ...]:
    """`--class-weight w0,...,w20` -> the weights; a VocsegError naming what is wrong."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != num_classes:
        raise VocsegError(f"--class-weight {text!r} has {len(parts)} values; it needs {num_classes} weights, one per class.", CLASS_WEIGHT_HINT)
    values = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            raise VocsegError(f"--class-weight: {part!r} is not a number.", CLASS_WEIGHT_HINT) from None
        if not math.isfinite(value) or value < 0:
            raise VocsegError(f"--class-weight: {part!r} is not a finite non-negative number.", CLASS_WEIGHT_HINT)
        values.append(value)
    if not any(values):
        raise VocsegError("--class-weight: all weights are 0; at least one class must count.", CLASS_WEIGHT_HINT)
    return tuple(values)


MAX_SEED = 2**32 - 1  # numpy.random.seed's limit; mmengine seeds numpy, random and torch with it


def validate_run_name(name: str) -> None:
    """A run name becomes one folder under runs/: no separators, no `..`, no control characters."""
    bad = (
        not name.strip()
        or name in (".", "..")
        or any(sep in name for sep in ("/", "\\", "\x00"))
        or any(ord(c) < 32 for c in name)
        or len(name.encode("utf-8", "surrogateescape")) > 200
    )
    if bad:
        raise VocsegError(f"--name {name!r} cannot be a folder name under runs/.", "Use letters, digits, '-', '_' and '.' (at most 200 bytes), no '/' and not '..'.")


def validate(recipe: Recipe) -> None:
    """Refuse impossible or contradictory choices with a one-line, actionable error."""
    if recipe.model not in PRESETS:
        raise VocsegError(f"Unknown --model {recipe.model!r}.", f"Choose one of: {', '.join(PRESETS)}.")
    if recipe.device not in DEVICES:
        raise VocsegError(f"Unknown --device {recipe.device!r}.", "Use cuda or cpu.")
    parse_gpus(recipe.gpus)
    if not isinstance(recipe.log_to, tuple) or any(n not in TRACKERS for n in recipe.log_to):
        raise VocsegError(f"Unknown tracker in log_to {recipe.log_to!r}.", LOG_TO_HINT)
    chosen = [n for n, v in (("--epochs", recipe.epochs), ("--iters", recipe.iters), ("--schedule", recipe.schedule)) if v is not None]
    if len(chosen) > 1:
        raise VocsegError(f"{' and '.join(chosen)} both set the training length.", "Give only one of --epochs, --iters, --schedule.")
    for flag, value in (("--batch", recipe.batch), ("--nproc", recipe.nproc), ("--nnodes", recipe.nnodes), ("--base-batch", recipe.base_batch), ("--keep", recipe.keep)):
        if value < 1:
            raise VocsegError(f"{flag} must be at least 1, got {value}.", f"Pass a positive {flag}.")
    for flag, opt in (("--epochs", recipe.epochs), ("--iters", recipe.iters), ("--val-interval", recipe.val_interval), ("--ckpt-interval", recipe.ckpt_interval), ("--crop", recipe.crop)):
        if opt is not None and opt < 1:
            raise VocsegError(f"{flag} must be at least 1, got {opt}.", f"Pass a positive {flag}.")
    if recipe.schedule is not None and recipe.schedule not in sched.OFFICIAL_SCHEDULES:
        raise VocsegError(f"Unknown --schedule {recipe.schedule!r}.", f"Choose one of: {', '.join(sched.OFFICIAL_SCHEDULES)}.")
    for flag, rate in (("--base-lr", recipe.base_lr), ("--lr", recipe.lr)):
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate)):
            raise VocsegError(f"{flag} {rate!r} is not a finite number.", f"Pass a positive {flag}, e.g. 0.01.")
    if recipe.base_lr_value <= 0 or (recipe.lr is not None and recipe.lr <= 0):
        raise VocsegError("The learning rate must be positive.", "Pass a positive --lr / --base-lr.")
    if isinstance(recipe.seed, bool) or not isinstance(recipe.seed, int) or not 0 <= recipe.seed <= MAX_SEED:
        raise VocsegError(f"--seed {recipe.seed!r} is out of range: seeds run from 0 to {MAX_SEED} (NumPy's limit).", "Pass --seed 0 or another non-negative number.")
    if recipe.device == "cpu" and parse_gpus(recipe.gpus) != parse_gpus(Recipe.gpus):
        raise VocsegError(f"--gpus {recipe.gpus} cannot be used with --device cpu.", "Drop --gpus (use --nproc N for CPU processes), or train with --device cuda.")
    if recipe.device == "cuda" and recipe.nproc != 1:
        raise VocsegError(f"--nproc {recipe.nproc} is for --device cpu.", "Pick GPUs with --gpus (e.g. --gpus 0,1 or --gpus first:2).")
    if recipe.name is not None:
        validate_run_name(recipe.name)
    if recipe.dataset and recipe.aug:
        raise VocsegError(
            f"--aug adds SBD, PASCAL VOC's extra labels: dataset {recipe.dataset!r} has its own classes.",
            "Drop --aug (own datasets train on their own train list).",
        )
    if not isinstance(recipe.class_weight, str):
        raise VocsegError(f"class_weight {recipe.class_weight!r} is not a string.", CLASS_WEIGHT_HINT)
    if recipe.class_weight not in ("none", "auto"):
        parse_class_weights(recipe.class_weight, len(recipe.class_names))
    if recipe.class_weight_values:
        parse_class_weights(",".join(map(str, recipe.class_weight_values)), len(recipe.class_names))
    for flag, count in (("--warmup-iters", recipe.warmup_iters), ("--workers", recipe.num_workers)):
        if count is not None and count < 0:
            raise VocsegError(f"{flag} {count} cannot be negative.", "Pass 0 or more.")
    if recipe.crop is not None and recipe.crop < MIN_CROP:
        raise VocsegError(
            f"--crop {recipe.crop} is smaller than {MIN_CROP} pixels: the backbone downsamples by 32, so nothing would be left to segment.",
            f"Use --crop {MIN_CROP} or more (the official recipe: 512).",
        )
    scale = PRESETS[recipe.model].scale
    if recipe.crop is not None and recipe.crop > min(scale):
        raise VocsegError(
            f"--crop {recipe.crop} is larger than the training scale {scale} of --model {recipe.model}: most crops would be padding.",
            f"Use --crop {min(scale)} or less.",
        )


def _count_ids(path: Path) -> int:
    """Ids of a split list as the loader reads them (`vocseg.data.lists.read_id_list`)."""
    from vocseg.data.lists import read_id_list

    return len(read_id_list(path))


def dataset_spec(recipe: Recipe) -> DatasetSpec:
    """The dataset a recipe trains on: VOC, or the own dataset under its data root, its split lists
    written into `<dataset>/.vocseg/` where the export has none (`vocseg.data.dataset.resolve`)."""
    from vocseg.data.dataset import VOC, resolve

    if recipe.is_voc:
        return VOC

    spec = resolve(Path(recipe.data_root), Path(recipe.classes_file) if recipe.classes_file else None)
    if spec.is_voc:
        raise VocsegError(
            f"Data root {recipe.data_root} no longer holds the class file of dataset {recipe.dataset!r} (class_names.txt or labelmap.txt).",
            "Put it back, or pass the class names with --classes FILE.",
        )
    return spec


def train_lists(recipe: Recipe) -> list[Path]:
    """The split lists a recipe trains on: VOC train, plus SBD's aug list with --aug; an own dataset's train list."""
    if not recipe.is_voc:
        return [dataset_spec(recipe).lists["train"]]
    splits = Path(recipe.data_root) / VOC_SUBDIR / SPLITS_SUBDIR
    return [splits / "train.txt"] + ([splits / "aug.txt"] if recipe.aug else [])


def check_data_root(recipe: Recipe) -> None:
    from vocseg.data.dataset import unknown_classes_error

    root = Path(recipe.data_root)
    if not recipe.is_voc:
        spec = dataset_spec(recipe)
        for lst in spec.lists.values():
            if not lst.is_file():
                raise VocsegError(f"Split list {lst} is missing.", f"`vocseg prepare --check --data-root {root}` shows what the dataset holds.")
        return
    refusal = unknown_classes_error(root, ("train", "--data-root", root))  # someone's images: never offer VOC or the demo
    if refusal is not None:
        raise refusal
    if not (root / VOC_SUBDIR).is_dir():
        raise VocsegError(
            f"Data root {root} has no {VOC_SUBDIR}.",
            f"Run `{command('prepare', *(['--aug'] if recipe.aug else []), '--data-root', root)}` "
            f"(or `{command('prepare', '--demo', '--data-root', root)}`), or pass --data-root / set ${DATA_ROOT_ENV}.",
        )
    for lst in train_lists(recipe) + [root / VOC_SUBDIR / SPLITS_SUBDIR / "val.txt"]:
        if not lst.is_file():
            fix = command("prepare", "--aug", "--data-root", root) if lst.name == "aug.txt" else command("prepare", "--data-root", root)
            raise VocsegError(f"Split list {lst} is missing.", f"Run `{fix}`{' or pass --no-aug' if lst.name == 'aug.txt' else ''}.")


@dataclass(frozen=True)
class Plan:
    """Every number derived from a recipe, with the reasoning shown to the user."""

    world_size: int
    total_batch: int
    lr: float
    lr_rule: str
    train_size: int
    iters_per_epoch: int
    max_iters: int
    epochs: float
    samples: int
    ratio_to_official: float
    official_equivalent_epochs: float
    official_equivalent_iters: int
    val_interval_iters: int
    ckpt_interval_iters: int
    warnings: tuple[str, ...]
    # What loads into the model before training (--pretrained, --load-from), one line each, with
    # the tensor counts (`vocseg.training.experiment.plan_experiment` fills it).
    weights: tuple[str, ...] = ()


def plan(recipe: Recipe, train_size: int | None = None, *, missing_data_ok: bool = False) -> Plan:
    """Derive the schedule. `train_size` defaults to counting the recipe's split lists; with
    `missing_data_ok` (`vocseg config` before `vocseg prepare`), a VOC data root without
    VOCdevkit/ is planned with VOC's official split sizes and a warning that says so."""
    validate(recipe)
    absent_note = ""
    if train_size is None and missing_data_ok and recipe.is_voc and not (Path(recipe.data_root) / VOC_SUBDIR).is_dir():
        from vocseg.data.dataset import unknown_classes_error
        from vocseg.data.voc import SPLIT_SIZES

        refusal = unknown_classes_error(Path(recipe.data_root), ("config", "--data-root", recipe.data_root))
        if refusal is not None:  # someone's images, not VOC yet to come: never planned as VOC
            raise refusal

        train_size = SPLIT_SIZES["trainaug"] if recipe.aug else SPLIT_SIZES["train"]
        absent_note = (
            f"Data root {recipe.data_root} holds no {VOC_SUBDIR} yet: this plan uses VOC's official "
            f"{'train + SBD aug' if recipe.aug else 'train'} size ({train_size} images). "
            f"Get the data with `vocseg prepare{'' if recipe.aug else ' --no-aug'} --data-root {recipe.data_root}`."
        )
    if train_size is None:
        check_data_root(recipe)
        train_size = sum(_count_ids(p) for p in train_lists(recipe))
    if train_size < 1:
        raise VocsegError("The training split lists are empty.", "Re-run `vocseg prepare` for this data root.")
    world = recipe.world_size
    total = recipe.total_batch
    if recipe.lr is not None:
        lr, rule = recipe.lr, f"{recipe.lr:g} as given (--lr, not rescaled)"
    else:
        lr = sched.scaled_lr(recipe.base_lr_value, recipe.base_batch, total)
        rule = f"{recipe.base_lr_value:g} x {total} / {recipe.base_batch} (linear scaling from the base batch)"
    ipe = sched.iters_per_epoch(train_size, recipe.batch, world)
    if recipe.epochs is not None:
        max_iters = recipe.epochs * ipe
    elif recipe.iters is not None:
        max_iters = recipe.iters
    else:
        max_iters = sched.official_schedule_iters(recipe.schedule or sched.REFERENCE_SCHEDULE, total)
    unit = ipe if recipe.epochs is not None else 1
    if recipe.warmup_iters >= max_iters:
        raise VocsegError(
            f"--warmup-iters {recipe.warmup_iters} is not shorter than the whole schedule ({max_iters} iterations): the LR would never reach its value.",
            f"Use fewer warm-up iterations (e.g. --warmup-iters {max(0, max_iters // 20)}).",
        )
    default_interval = max(1, max_iters // 10)
    val_iters = recipe.val_interval * unit if recipe.val_interval else default_interval
    ckpt_iters = recipe.ckpt_interval * unit if recipe.ckpt_interval else default_interval
    ratio = sched.ratio_to_official(max_iters, total)
    warnings = [absent_note] if absent_note else []
    if not 0.5 <= ratio <= 2.0 and recipe.model != "tiny" and recipe.is_voc:
        warnings.append(
            f"This schedule sees {ratio:.2f}x the samples of the official 40k x 16 schedule; "
            f"`--schedule 40k` at your batch is {sched.official_schedule_iters('40k', total)} iterations."
        )
    if not recipe.is_voc and recipe.epochs is None and recipe.iters is None:
        warnings.append(
            f"No --epochs/--iters: VOC's {recipe.schedule or sched.REFERENCE_SCHEDULE} schedule is {max_iters} iterations, "
            f"{max_iters / ipe:.0f} passes over your {train_size} train images; pass --epochs N (or --iters N) sized for your data."
        )
    if recipe.batch == 1:
        warnings.append("1 image per GPU with BatchNorm: batch statistics of a single image are noisy; use --batch 2 or more.")
    if recipe.pretrained_checkpoint is None and recipe.model != "tiny" and not recipe.load_from:
        warnings.append(f"No pretrained weights: the backbone starts from random init and {'VOC' if recipe.is_voc else 'a dataset of this size'} is too small to learn it well.")
    scaled = sched.scaled_lr(recipe.base_lr_value, recipe.base_batch, total)
    if recipe.lr is not None and abs(recipe.lr - scaled) > 1e-12:
        warnings.append(f"--lr {recipe.lr:g} differs from the linearly scaled {scaled:g} for batch {total}.")
    return Plan(
        world_size=world,
        total_batch=total,
        lr=lr,
        lr_rule=rule,
        train_size=train_size,
        iters_per_epoch=ipe,
        max_iters=max_iters,
        epochs=max_iters / ipe,
        samples=sched.samples_seen(max_iters, total),
        ratio_to_official=ratio,
        official_equivalent_epochs=sched.equivalent_epochs(sched.OFFICIAL_SCHEDULES["40k"], sched.OFFICIAL_BATCH, train_size),
        official_equivalent_iters=sched.official_schedule_iters("40k", total),
        val_interval_iters=min(val_iters, max_iters),
        ckpt_interval_iters=min(ckpt_iters, max_iters),
        warnings=tuple(warnings),
    )
