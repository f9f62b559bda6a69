"""Pretrained backbone weights: refuse the ones that do not fit before any training starts.

The classic silent failure: `torchvision://resnet50` (a 7x7 `conv1` stem) loaded into a
ResNetV1c (a deep `stem.*`) leaves the stem at random init with only a warning in the log.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.request
from pathlib import Path
from typing import Any

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


def backbone_state_dict(checkpoint: Any) -> dict[str, Any]:
    """Backbone weights from a backbone-only or a full segmentor checkpoint."""
    from vocseg.stack.checkpoints import state_dict_of

    weights = state_dict_of(checkpoint)
    if any(k.startswith("backbone.") for k in weights):
        weights = {k[len("backbone.") :]: v for k, v in weights.items() if k.startswith("backbone.")}
    return weights


def check_backbone_fit(path: Path, recipe: Recipe) -> None:
    """Build the recipe's backbone and compare its keys and shapes with the file's (fc/head keys ignored)."""
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


def _sha_prefix(name: str) -> str | None:
    m = re.search(r"-([0-9a-f]{8})\.pth$", name)
    return m.group(1) if m else None


def fetch_pretrained(source: str) -> Path:
    """A URL or `open-mmlab://` name -> a cached local file whose sha256 starts with the name's hash."""
    url = PRETRAINED_URLS.get(source.replace("openmmlab://", "open-mmlab://"), source)
    if not url.startswith(("http://", "https://")):
        path = Path(source).expanduser()
        if not path.is_file():
            raise VocsegError(f"Pretrained weights {source} not found.", "Pass a path, a URL, auto or none.")
        return path
    name = url.rstrip("/").rsplit("/", 1)[-1]
    target = cache_dir() / "pretrained" / name
    expected = _sha_prefix(name)
    if target.is_file() and (expected is None or sha256_of(target).startswith(expected)):
        return target
    tmp = partial_path(target)
    try:
        download_file(url, tmp, quiet=False)
    except DOWNLOAD_ERRORS as exc:
        tmp.unlink(missing_ok=True)
        raise VocsegError(f"Could not download pretrained weights {url}: {exc}.", f"Download it by hand and pass --pretrained PATH (or place it at {target}).") from None
    if expected and not sha256_of(tmp).startswith(expected):
        tmp.unlink(missing_ok=True)
        raise VocsegError(f"Downloaded {name} does not match its sha256 prefix {expected}.", "Try again; if it persists, the server sent a different file.")
    tmp.replace(target)
    return target


# IncompleteRead and other protocol errors are not OSErrors
DOWNLOAD_ERRORS = (OSError, ValueError, http.client.HTTPException)


def partial_path(target: Path) -> Path:
    """Where `target` is downloaded to: one file per process (several nodes or Slurm tasks may
    fetch the same weights into a shared cache at once); `remove_stale_temp_files`' pattern."""
    return target.with_name(f".{target.name}.{os.getpid()}.tmp")


def download_file(url: str, target: Path, *, quiet: bool) -> None:
    """Stream `url` to `target`; a progress bar on the terminal unless quiet. The caller renames."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    from vocseg.console import err_console

    target.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as f:
        total = int(response.headers.get("Content-Length") or 0) or None
        with Progress("{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=err_console, disable=quiet, transient=True) as bar:
            task = bar.add_task(f"downloading {url.rsplit('/', 1)[-1]}", total=total)
            while chunk := response.read(1 << 20):
                f.write(chunk)
                bar.advance(task, len(chunk))


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def resolve_for_training(recipe: Recipe) -> str | None:
    """Fetch (cached, hash-checked) and check the weights; return the local path for the config."""
    source = recipe.pretrained_checkpoint
    if source is None:
        return None
    check_pretrained_choice(recipe)
    path = fetch_pretrained(source)
    check_backbone_fit(path, recipe)
    return str(path)
