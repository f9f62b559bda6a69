"""Official mmseg UPerNet VOC checkpoints: `--checkpoint official:upernet-r50-40k`.

The published models (mmseg v0.5 model zoo, trained on VOC 2012 + SBD aug, 4 GPUs x 4 images)
are downloaded once (resumable, retried: `vocseg.data.download.fetch_verified`, as `prepare`),
checked against the sha256 prefix in their file name, and cached. Their
config is built from vocseg's own model presets (UPerNet + ResNetV1c, 21 classes, BN instead of
SyncBN for one process, test Resize (2048, 512)) and written next to the checkpoint, so it also
works with mmseg's own `tools/test.py`. No heavy imports at module level.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from vocseg.errors import VocsegError
from vocseg.recipe.pretrained import cache_dir, download_console

PREFIX = "official:"
BASE_URL = "https://download.openmmlab.com/mmsegmentation/v0.5/upernet"
# A mirror holding the same `<config>/<file>` layout (an internal server, or a local folder served over HTTP).
MIRROR_ENV = "VOCSEG_OFFICIAL_URL"


@dataclass(frozen=True)
class OfficialModel:
    key: str  # what follows `official:`
    preset: str  # vocseg model preset with the same architecture
    config_name: str  # mmseg 0.x config name: the folder of the file on the server
    filename: str
    miou: float  # published single-scale val mIoU
    miou_ms_flip: float  # published multi-scale + flip val mIoU

    @property
    def sha256_prefix(self) -> str:
        m = re.search(r"-([0-9a-f]{8})\.pth$", self.filename)
        if not m:
            raise VocsegError(f"Official checkpoint {self.filename} names no sha256 prefix.", "Report this as a vocseg bug.")
        return m.group(1)

    def url(self, base: str | None = None) -> str:
        root = (base or os.environ.get(MIRROR_ENV) or BASE_URL).rstrip("/")
        return f"{root}/{self.config_name}/{self.filename}"


# From mmseg's configs/upernet/metafile.yaml (v1.2.2): the VOC 2012 + aug UPerNet checkpoints.
CATALOGUE: dict[str, OfficialModel] = {
    m.key: m
    for m in (
        OfficialModel("upernet-r50-20k", "r50", "upernet_r50_512x512_20k_voc12aug", "upernet_r50_512x512_20k_voc12aug_20200617_165330-5b5890a7.pth", 74.82, 76.35),
        OfficialModel("upernet-r50-40k", "r50", "upernet_r50_512x512_40k_voc12aug", "upernet_r50_512x512_40k_voc12aug_20200613_162257-ca9bcc6b.pth", 75.92, 77.44),
        OfficialModel("upernet-r101-20k", "r101", "upernet_r101_512x512_20k_voc12aug", "upernet_r101_512x512_20k_voc12aug_20200617_165629-f14e7f27.pth", 77.10, 78.29),
        OfficialModel("upernet-r101-40k", "r101", "upernet_r101_512x512_40k_voc12aug", "upernet_r101_512x512_40k_voc12aug_20200613_163549-e26476ac.pth", 77.43, 78.56),
    )
}


@dataclass(frozen=True)
class ModelRef:
    """What `-c/--checkpoint MODEL` names, read once: `official:NAME` (a published checkpoint), an
    exported `.onnx` file, or a path (a run folder or a checkpoint `.pth`). Every command and every
    layer below asks this type, never the text's prefix or suffix."""

    text: str

    @classmethod
    def parse(cls, target: str | Path, *, onnx: bool = True, command: str = "eval") -> ModelRef:
        """The reference, checked as far as it can be without reading files: an unknown official
        name or (with `onnx=False`) an .onnx file fail here, before anything is read or downloaded."""
        ref = cls(str(target))
        if ref.is_official:
            ref.official  # noqa: B018 - looked up: a typo fails now
        if ref.is_onnx and not onnx:
            raise VocsegError(f"{ref.text} is an exported ONNX model; vocseg {command} needs the PyTorch checkpoint it came from.",
                              f"Pass the run folder or its .pth: vocseg {command} -c RUN")
        return ref

    @property
    def is_official(self) -> bool:
        return self.text.startswith(PREFIX)

    @property
    def is_onnx(self) -> bool:
        return not self.is_official and self.text.lower().endswith(".onnx")

    @property
    def key(self) -> str | None:
        """The name after `official:` (None for a path)."""
        return self.text[len(PREFIX) :] if self.is_official else None

    @property
    def official(self) -> OfficialModel:
        """The catalogue entry of `official:NAME`. Errors: `VocsegError` for an unknown name or a path."""
        return lookup(self.key if self.key is not None else self.text)

    @property
    def path(self) -> Path | None:
        """The file or folder named (None for `official:NAME`)."""
        return None if self.is_official else Path(self.text)


def lookup(key: str) -> OfficialModel:
    """The catalogue entry of `official:KEY` (KEY alone, or with the prefix)."""
    key = key[len(PREFIX) :] if key.startswith(PREFIX) else key
    model = CATALOGUE.get(key)
    if model is None:
        raise VocsegError(f"Unknown official checkpoint {PREFIX}{key}.", f"Choose one of: {', '.join(PREFIX + k for k in CATALOGUE)}.")
    return model


def cache_root() -> Path:
    return cache_dir() / "official"


def fetch(model: OfficialModel, *, quiet: bool = False) -> Path:
    """The cached checkpoint file, downloaded if needed (a cut transfer resumes on the next call);
    refused unless its sha256 starts with the prefix in its name."""
    from vocseg.data.download import fetch_verified

    target = cache_root() / model.filename
    return fetch_verified(
        model.url(),
        target,
        expected=model.sha256_prefix,
        what=f"{PREFIX}{model.key}",
        hint=f"Check the network, set ${MIRROR_ENV} to a mirror, or download it by hand to {target}.",
        space_hint="Free some space, or set $VOCSEG_CACHE_DIR to a folder on a bigger disk",
        console=download_console(quiet),
    )


def config_text(model: OfficialModel, data_root: str = "") -> str:
    """A standalone MMSeg test config for the official checkpoint, from vocseg's presets."""
    from vocseg.recipe.mmconfig import Entry, iou_metric, render_config, runtime_entries, test_pipeline, voc_dataset
    from vocseg.recipe.models import PRESETS, model_config

    preset = PRESETS[model.preset]
    net = model_config(preset, sync_bn=False, pretrained_checkpoint=None)
    loader = dict(
        batch_size=1,
        num_workers=2,
        persistent_workers=True,
        sampler=dict(type="DefaultSampler", shuffle=False),
        dataset=voc_dataset(data_root, "val.txt", "SegmentationClass", test_pipeline(preset.scale)),
    )
    work_dir = f"runs/official-{model.key}"
    metric = iou_metric(work_dir)
    entries = [
        Entry("default_scope", "mmseg"),
        Entry("custom_imports", dict(imports=["vocseg.mmseg_plugin"], allow_failed_imports=False), "stack fixes and vocseg's metric"),
        Entry("work_dir", work_dir),
        Entry("crop_size", (preset.crop, preset.crop)),
        Entry("model", net, f"{preset.description}; BN (SyncBN needs several GPUs); the checkpoint holds the weights"),
        Entry("test_pipeline", test_pipeline(preset.scale), "the official test pipeline: Resize (2048, 512), keep ratio"),
        Entry("val_dataloader", loader, "VOC 2012 val; set data_root or pass --data-root to vocseg"),
        Entry("test_dataloader", loader),
        Entry("val_evaluator", metric),
        Entry("test_evaluator", metric),
        Entry("val_cfg", dict(type="ValLoop")),
        Entry("test_cfg", dict(type="TestLoop")),
        Entry("default_hooks", dict(timer=dict(type="IterTimerHook"), logger=dict(type="LoggerHook", interval=50, log_metric_by_epoch=False))),
        Entry("env_cfg", dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0), dist_cfg=dict(backend="nccl"))),
        *runtime_entries(tta_note="used by `vocseg eval --tta` and tools/test.py --tta"),
    ]
    header = (
        f"MMSegmentation test config written by vocseg for {PREFIX}{model.key}\n"
        f"({model.config_name}: published val mIoU {model.miou}, {model.miou_ms_flip} with multi-scale + flip).\n"
        "Evaluate with `vocseg eval` or mmseg's tools/test.py."
    )
    return render_config(entries, header)


def resolve(ref: ModelRef, *, quiet: bool = False) -> tuple[Path, Path]:
    """`official:KEY` -> (cached checkpoint, its config file written next to it)."""
    from vocseg.files import owned_write_text

    model = ref.official
    checkpoint = fetch(model, quiet=quiet)
    config = checkpoint.with_name(f"{model.key}.py")
    text = config_text(model)
    if not config.is_file() or config.read_text() != text:
        owned_write_text(config, text)
    return checkpoint, config


__all__ = ["CATALOGUE", "ModelRef", "OfficialModel", "PREFIX", "fetch", "lookup", "resolve", "config_text"]
