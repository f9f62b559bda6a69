"""Pretrained backbone weights: refuse the ones that do not fit before any training starts.

The classic silent failure: `torchvision://resnet50` (a 7x7 `conv1` stem) loaded into a
ResNetV1c (a deep `stem.*`) leaves the stem at random init with only a warning in the log.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from rich.console import Console

from vocseg.errors import VocsegError
from vocseg.recipe.models import PRESETS, PRETRAINED_URLS
from vocseg.recipe.recipe import Recipe


def cache_dir() -> Path:
    env = os.environ.get("VOCSEG_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("vocseg"))


def matching_hint(recipe: Recipe) -> str:
    preset = PRESETS[recipe.model]
    if preset.pretrained:
        return f"Use --pretrained auto ({preset.pretrained}, which matches --model {recipe.model}) or none."
    return f"No published weights match --model {recipe.model}: use --pretrained none."


def summarize_keys(keys: list[str], order: list[str], groups: int = 3) -> str:
    """'stem.* (9: stem.0.weight, ...), layer1.* (...)': keys grouped by top module, in model order."""
    by_module: dict[str, list[str]] = {}
    rank = {k: i for i, k in enumerate(order)}
    for key in sorted(keys, key=lambda k: (rank.get(k, len(rank)), k)):
        by_module.setdefault(key.split(".", 1)[0], []).append(key)
    parts = [f"{m}.* ({len(ks)}: {ks[0]}, ...)" if len(ks) > 1 else ks[0] for m, ks in list(by_module.items())[:groups]]
    more = len(by_module) - groups
    return ", ".join(parts) + (f" and {more} more modules" if more > 0 else "")


def check_pretrained_choice(recipe: Recipe) -> None:
    """Refuse known mismatches at once; check a local file's keys against the backbone."""
    source = recipe.pretrained_checkpoint
    if source is None:
        return
    if source.startswith(("torchvision://", "modelzoo://")):
        raise VocsegError(
            f"--pretrained {source} is a torchvision ResNet (7x7 conv1 stem); --model {recipe.model} uses ResNetV1c (deep stem.* convs): the stem would stay untrained.",
            matching_hint(recipe),
        )
    if "://" in source and not source.startswith(("http://", "https://", "open-mmlab://", "openmmlab://")):
        raise VocsegError(f"--pretrained {source}: unknown scheme.", "Pass auto, none, a .pth path or an http(s) URL.")
    if "://" not in source:
        path = Path(source).expanduser()
        if not path.is_file():
            raise VocsegError(f"--pretrained {path} does not exist.", "Pass an existing .pth file, auto or none.")
        check_backbone_fit(path, recipe)


BACKBONE_PREFIX = "backbone."  # the backbone's keys in a whole segmentor checkpoint (mmseg's EncoderDecoder)


def checkpoint_prefix(weights: dict[str, Any]) -> str | None:
    """'backbone.' for a whole segmentor checkpoint (a vocseg run's iter_N.pth, MMSeg's published
    ones: keys `backbone.*`, `decode_head.*`, `auxiliary_head.*`), None for a backbone file."""
    return BACKBONE_PREFIX if any(k.startswith(BACKBONE_PREFIX) for k in weights) else None


def url_prefix(url: str) -> str | None:
    """The prefix of a checkpoint known only by its URL: MMSeg's model zoo (`.../mmsegmentation/...`)
    publishes whole segmentors, the `pretrain/` folders backbones."""
    return BACKBONE_PREFIX if "/mmsegmentation/" in url else None


def backbone_state_dict(checkpoint: Any) -> dict[str, Any]:
    """Backbone weights from a backbone-only or a full segmentor checkpoint."""
    from vocseg.stack.checkpoints import state_dict_of

    weights = state_dict_of(checkpoint)
    if checkpoint_prefix(weights):
        weights = {k[len(BACKBONE_PREFIX) :]: v for k, v in weights.items() if k.startswith(BACKBONE_PREFIX)}
    return weights


def pretrained_summary(path: Path, recipe: Recipe) -> tuple[str | None, str]:
    """(init_cfg prefix, the plan's line) for a local --pretrained file; raises unless it fits."""
    from vocseg.stack.checkpoints import state_dict_of
    from vocseg.stack.compat import load_checkpoint_file

    prefix = checkpoint_prefix(state_dict_of(load_checkpoint_file(path)))
    loaded = check_backbone_fit(path, recipe)
    what = "the backbone part of a whole segmentor checkpoint; decode and auxiliary heads start fresh" if prefix else "a backbone checkpoint; the heads start fresh"
    return prefix, f"--pretrained {path.name}: {loaded} backbone tensors load ({what})"


def check_backbone_fit(path: Path, recipe: Recipe) -> int:
    """Build the recipe's backbone and compare its keys and shapes with the file's (fc/head keys
    ignored); returns the number of backbone tensors that load (BatchNorm's counters not counted)."""
    from vocseg.stack.checkpoints import compare_state_dicts
    from vocseg.stack.compat import ensure_stack, load_checkpoint_file

    ensure_stack()
    from mmengine.registry import init_default_scope

    init_default_scope("mmseg")
    import mmseg.models  # noqa: F401
    from mmseg.registry import MODELS

    from vocseg.recipe.models import model_config

    backbone_cfg = dict(model_config(PRESETS[recipe.model], sync_bn=False, pretrained_checkpoint=None)["backbone"])
    backbone_cfg["norm_cfg"] = dict(type="BN", requires_grad=True)
    backbone = MODELS.build(backbone_cfg)
    weights = {k: v for k, v in backbone_state_dict(load_checkpoint_file(path)).items() if not k.startswith("fc.")}
    expected = backbone.state_dict()
    report = compare_state_dicts(expected, weights)
    if report.missing or report.mismatched:
        order = list(expected)
        parts = []
        if report.missing:
            parts.append(f"{len(report.missing)} backbone weights missing, they would stay random: {summarize_keys(report.missing, order)}")
        if report.mismatched:
            k, got, exp = report.mismatched[0]
            parts.append(f"{len(report.mismatched)} of other shapes (e.g. {k}: {got} vs {exp})")
        if report.unexpected:
            parts.append(f"{len(report.unexpected)} keys in the file unused: {summarize_keys(report.unexpected, list(weights))}")
        raise VocsegError(f"--pretrained {path} does not fit the {recipe.model} backbone (ResNetV1c): {'; '.join(parts)}.", matching_hint(recipe))
    return sum(1 for k in expected if not k.endswith("num_batches_tracked"))


def sha_prefix(name: str) -> str | None:
    """The sha256 prefix mmseg/mmengine put in a checkpoint's file name (`resnet50_v1c-2cccc1ad.pth`), or None."""
    m = re.search(r"-([0-9a-f]{8})\.pth$", name)
    return m.group(1) if m else None


def download_console(quiet: bool) -> Console:
    """Progress bars and retry notes of checkpoint downloads: stderr (stdout holds results), or nowhere."""
    from vocseg.console import err_console

    return Console(quiet=True) if quiet else err_console


def fetch_pretrained(source: str, *, quiet: bool = False) -> Path:
    """A URL or `open-mmlab://` name -> a cached local file whose sha256 starts with the name's hash.

    Through `vocseg.data.download.fetch_verified`: resumed after a cut connection, retried,
    verified before it gets its name in `CACHE/pretrained/`.
    """
    from vocseg.data.download import fetch_verified

    url = PRETRAINED_URLS.get(source.replace("openmmlab://", "open-mmlab://"), source)
    if not url.startswith(("http://", "https://")):
        path = Path(source).expanduser()
        if not path.is_file():
            raise VocsegError(f"Pretrained weights {source} not found.", "Pass a path, a URL, auto or none.")
        return path.resolve()  # the config must find it from any folder
    name = url.rstrip("/").rsplit("/", 1)[-1]
    target = cache_dir() / "pretrained" / name
    return fetch_verified(
        url,
        target,
        expected=sha_prefix(name),
        what=f"pretrained weights {name}",
        hint=f"Check the network, or download it by hand and pass --pretrained PATH (or place it at {target}).",
        space_hint="Free some space, or set $VOCSEG_CACHE_DIR to a folder on a bigger disk",
        console=download_console(quiet),
    )


def resolve_for_training(recipe: Recipe) -> str | None:
    """Fetch (cached, hash-checked) and check the weights; return the local path for the config."""
    source = recipe.pretrained_checkpoint
    if source is None:
        return None
    check_pretrained_choice(recipe)
    path = fetch_pretrained(source)
    check_backbone_fit(path, recipe)
    return str(path)
