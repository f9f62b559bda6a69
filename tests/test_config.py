"""`vocseg config`: recipe -> plan -> a standalone MMSeg config whose values are right."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vocseg.recipe.mmconfig import build_config_text
from vocseg.recipe.recipe import Recipe, plan

MMSEG_TRAIN = Path(__import__("mmseg").__file__).parent / ".mim" / "tools" / "train.py"


def load(text: str, tmp_path: Path):
    from vocseg.stack.compat import ensure_stack

    ensure_stack()
    from mmengine.config import Config

    path = tmp_path / "cfg.py"
    path.write_text(text)
    return Config.fromfile(str(path))


def test_official_40k_recipe(tmp_path: Path) -> None:
    recipe = Recipe(data_root=str(tmp_path), model="r50", gpus="0-3", batch=4, schedule="40k")
    p = plan(recipe, train_size=10_582)
    assert p.total_batch == 16 and p.lr == pytest.approx(0.01)
    assert p.max_iters == 40_000 and p.ratio_to_official == pytest.approx(1.0)
    assert p.official_equivalent_epochs == pytest.approx(60.5, abs=0.05)
    assert p.warnings == ()
    cfg = load(build_config_text(recipe, p, tmp_path / "run"), tmp_path)
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(0.01)
    assert cfg.optim_wrapper.optimizer.momentum == 0.9 and cfg.optim_wrapper.optimizer.weight_decay == 0.0005
    (poly,) = cfg.param_scheduler
    assert poly.type == "PolyLR" and poly.by_epoch is False and poly.end == 40_000 and poly.power == 0.9 and poly.eta_min == 1e-4
    assert cfg.train_cfg.max_iters == 40_000
    assert cfg.model.backbone.type == "ResNetV1c" and cfg.model.backbone.depth == 50
    assert cfg.model.backbone.init_cfg.checkpoint == "open-mmlab://resnet50_v1c"
    assert cfg.model.pretrained is None  # never both pretrained and init_cfg
    assert cfg.model.decode_head.num_classes == 21 and cfg.model.auxiliary_head.loss_decode.loss_weight == 0.4
    assert cfg.model.backbone.norm_cfg.type == "SyncBN"  # 4 GPUs share the batch statistics
    datasets = cfg.train_dataloader.dataset.dataset.datasets
    assert [d.ann_file for d in datasets] == ["ImageSets/Segmentation/train.txt", "ImageSets/Segmentation/aug.txt"]
    assert [d.data_prefix.seg_map_path for d in datasets] == ["SegmentationClass", "SegmentationClassAug"]
    resize = cfg.train_pipeline[2]
    assert resize.type == "VocsegRandomResizeCrop" and resize.keep_ratio and tuple(resize.crop_size) == (512, 512) and resize.cat_max_ratio == 0.75 and tuple(resize.scale) == (2048, 512) and tuple(resize.ratio_range) == (0.5, 2.0)


def test_voc_only_equivalent_epochs(tmp_path: Path) -> None:
    p = plan(Recipe(data_root=str(tmp_path), aug=False, gpus="first:4", batch=4), train_size=1_464)
    assert round(p.official_equivalent_epochs, 1) == 437.2


@pytest.mark.parametrize("aug,size", [(False, 1_464), (True, 10_582)])
def test_reference_runs_intent_at_2x4(tmp_path: Path, aug: bool, size: int) -> None:
    """The seed runs (2 GPUs x 4, 200 epochs), as vocseg writes them: LR scaled, poly per iteration, stem matched."""
    recipe = Recipe(data_root=str(tmp_path), model="r50", aug=aug, gpus="6,7", batch=4, epochs=200)
    p = plan(recipe, train_size=size)
    assert p.lr == pytest.approx(0.005)
    assert p.max_iters == 200 * p.iters_per_epoch
    assert any("official 40k" in w for w in p.warnings)  # 0.46x or 3.3x the official schedule
    cfg = load(build_config_text(recipe, p, tmp_path / "run"), tmp_path)
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(0.005)
    (poly,) = cfg.param_scheduler
    assert poly.by_epoch is False and poly.end == p.max_iters  # the LR moves every iteration
    assert cfg.train_cfg.type == "VocsegResumableIterLoop"
    assert cfg.model.backbone.type == "ResNetV1c" and cfg.model.backbone.init_cfg.checkpoint == "open-mmlab://resnet50_v1c"


def test_warmup_and_explicit_lr(tmp_path: Path) -> None:
    recipe = Recipe(data_root=str(tmp_path), gpus="6,7", batch=4, iters=1000, lr=0.02, warmup_iters=100)
    p = plan(recipe, train_size=1_464)
    assert p.lr == 0.02 and "not rescaled" in p.lr_rule
    assert any("differs from the linearly scaled" in w for w in p.warnings)
    cfg = load(build_config_text(recipe, p, tmp_path / "run"), tmp_path)
    warm, poly = cfg.param_scheduler
    assert warm.type == "LinearLR" and warm.end == 100 and poly.begin == 100 and poly.end == 1000


def test_risky_choices_warn(tmp_path: Path) -> None:
    p = plan(Recipe(data_root=str(tmp_path), batch=1, pretrained="none", iters=100), train_size=1_464)
    text = " ".join(p.warnings)
    assert "1 image per GPU" in text and "No pretrained weights" in text and "official 40k" in text


def test_config_command_writes_loadable_file(cli, demo_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "cfg.py"
    r = cli("config", "--data-root", demo_root, "--model", "tiny", "--device", "cpu", "--iters", "50", "-o", out)
    assert r.code == 0, r.err
    assert "Training plan" in r.out and "samples seen" in r.out
    cfg = load(out.read_text(), tmp_path)
    assert cfg.train_cfg.max_iters == 50
    text = out.read_text()
    assert "_base_ =" not in text and "# LR " in text  # standalone, commented


def test_config_does_not_need_the_gpus_it_names(cli, demo_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "cfg.py"
    r = cli("config", "--data-root", demo_root, "--model", "tiny", "--gpus", "6,7", "--batch", "4", "--epochs", "3", "-o", out)
    assert r.code == 0, r.err
    cfg = load(out.read_text(), tmp_path)
    assert cfg.model.backbone.norm_cfg.type == "SyncBN"
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(0.1 * 8 / 16)  # tiny's base LR 0.1 at 16, scaled to 8


def test_config_to_stdout(cli, demo_root: Path) -> None:
    r = cli("config", "--data-root", demo_root, "--model", "tiny", "--iters", "5")
    assert r.code == 0 and r.out.lstrip().startswith("# MMSegmentation config written by `vocseg config`")


@pytest.mark.parametrize(
    "flags,needle",
    [
        (["--gpus", "6,x"], "not a list of GPU ids"),
        (["--gpus", "first:0"], "positive count"),
        (["--gpus", "3-1"], "runs backwards"),
        (["--gpus", "1,1"], "names a GPU twice"),
        (["--batch", "0"], "--batch must be at least 1"),
        (["--epochs", "-3"], "--epochs must be at least 1"),
        (["--epochs", "3", "--iters", "10"], "both set the training length"),
        (["--crop", "200"], "larger than the training scale"),
        (["--schedule", "80k"], "'80k' is not one of '20k', '40k'"),
        (["--model", "r34"], "'r34' is not one of"),
        (["--iters", "abc"], "--iters"),
        (["--pretrained", "/nonexistent/w.pth"], "does not exist"),
        (["--pretrained", "torchvision://resnet50"], "torchvision"),
    ],
)
def test_bad_flags(cli, demo_root: Path, tmp_path: Path, flags: list[str], needle: str) -> None:
    model = [] if "--model" in flags else ["--model", "tiny"]
    if "torchvision" in " ".join(flags):
        model = ["--model", "r50"]
    r = cli("config", "--data-root", demo_root, *model, *flags, "-o", tmp_path / "c.py")
    assert r.code != 0
    assert needle in r.err
    assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err
    assert not (tmp_path / "c.py").exists()


def test_missing_data_root(cli, tmp_path: Path) -> None:
    """`config` plans before the data exist (VOC's official sizes, said so); `train` refuses."""
    r = cli("config", "--data-root", tmp_path / "nothing", "--model", "tiny", "--no-aug", "-o", tmp_path / "c.py")
    text = " ".join(r.out.split())
    assert r.code == 0 and "official train size (1464 images)" in text and "vocseg prepare --no-aug --data-root" in text
    r = cli("train", "--data-root", tmp_path / "nothing", "--model", "tiny", "--device", "cpu", "--no-aug")
    assert r.code != 0 and "vocseg prepare" in r.err


def _torchvision_style_weights(path: Path) -> None:
    """A plain-ResNet state dict (7x7 conv1 stem), as torchvision://resnet50 has."""
    import torch

    from vocseg.recipe.models import PRESETS

    tiny = PRESETS["tiny"]
    sd = {"conv1.weight": torch.zeros(tiny.base_channels, 3, 7, 7), "bn1.weight": torch.ones(tiny.base_channels), "fc.weight": torch.zeros(10, 128)}
    torch.save(sd, path)


def test_pretrained_that_does_not_fit_is_refused(cli, demo_root: Path, tmp_path: Path) -> None:
    weights = tmp_path / "tv.pth"
    _torchvision_style_weights(weights)
    r = cli("config", "--data-root", demo_root, "--model", "tiny", "--pretrained", weights, "-o", tmp_path / "c.py")
    assert r.code != 0
    assert "stem.* (" in r.err and "stem.0.weight" in r.err and "conv1.weight" in r.err  # the missing and the unused keys
    assert "--pretrained none" in r.err


def test_pretrained_that_fits_is_accepted(cli, demo_root: Path, tmp_path: Path) -> None:
    import torch

    from vocseg.stack.compat import ensure_stack

    ensure_stack()
    from mmengine.registry import init_default_scope

    init_default_scope("mmseg")
    import mmseg.models  # noqa: F401
    from mmseg.registry import MODELS

    from vocseg.recipe.models import PRESETS, model_config

    backbone = dict(model_config(PRESETS["tiny"], sync_bn=False, pretrained_checkpoint=None)["backbone"])
    weights = tmp_path / "v1c.pth"
    torch.save({"state_dict": MODELS.build(backbone).state_dict()}, weights)
    out = tmp_path / "c.py"
    r = cli("config", "--data-root", demo_root, "--model", "tiny", "--pretrained", weights, "--iters", "5", "-o", out)
    assert r.code == 0, r.err
    assert str(weights) in out.read_text()


@pytest.mark.slow
def test_written_config_trains_with_vocseg_and_mmseg_tools(cli, demo_root: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.py"
    r = cli("config", "--data-root", demo_root, "--model", "tiny", "--device", "cpu", "--batch", "2", "--iters", "3", "-o", cfg)
    assert r.code == 0, r.err
    assert "'num_workers': 'auto'" in cfg.read_text()  # decided where it trains: tools/train.py too
    ours = tmp_path / "ours"
    r = cli("train", cfg, "--work-dir", ours)
    assert r.code == 0, r.err
    assert (ours / "iter_3.pth").is_file() and (ours / "config.py").is_file()
    theirs = tmp_path / "theirs"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, str(MMSEG_TRAIN), str(cfg), "--work-dir", str(theirs)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (theirs / "iter_3.pth").is_file()


def test_train_with_config_refuses_recipe_flags(cli, demo_root: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.py"
    assert cli("config", "--data-root", demo_root, "--model", "tiny", "--iters", "3", "-o", cfg).code == 0
    r = cli("train", cfg, "--batch", "4")
    assert r.code != 0 and "cannot be combined with a config file" in r.err


GOLDEN = Path(__file__).parent / "data" / "golden_configs"
GOLDEN_RECIPES = {
    "r50_2gpu_40k": dict(data_root="/data/voc", gpus="6,7", batch=4, schedule="40k"),
    "tiny_cpu_demo": dict(data_root="/data/demo", model="tiny", device="cpu", batch=8, iters=3000, num_workers=2, aug=True),
    "r101_epochs_noaug": dict(data_root="/data/voc", model="r101", gpus="first:4", batch=2, epochs=50, aug=False, amp=True, num_workers=4),
}


@pytest.mark.parametrize("name", sorted(GOLDEN_RECIPES))
def test_written_config_is_byte_identical_to_the_golden_file(name: str) -> None:
    """The golden files were written by the code before the package layout changed (docs/architecture.md):
    moving code must not change a config by one byte. A deliberate change to configs updates them."""
    recipe = Recipe(**GOLDEN_RECIPES[name])
    text = build_config_text(recipe, plan(recipe, 10582 if recipe.aug else 1464), "/work/runs/" + name)
    assert text == (GOLDEN / f"{name}.py").read_text()


def test_official_config_is_byte_identical_to_the_golden_file() -> None:
    from vocseg.recipe import official

    name = sorted(official.CATALOGUE)[0]
    assert official.config_text(official.CATALOGUE[name], "/data/voc") == (GOLDEN / "official.py").read_text()


def test_a_crop_smaller_than_the_backbone_stride_is_refused() -> None:
    from vocseg.errors import VocsegError
    from vocseg.recipe.recipe import validate

    with pytest.raises(VocsegError, match="--crop 1 is smaller than 32"):
        validate(Recipe(model="tiny", device="cpu", crop=1))


def test_warmup_as_long_as_the_schedule_is_refused() -> None:
    from vocseg.errors import VocsegError

    with pytest.raises(VocsegError, match="--warmup-iters 99 is not shorter than the whole schedule"):
        plan(Recipe(model="tiny", device="cpu", iters=10, warmup_iters=99), 100)
    assert plan(Recipe(model="tiny", device="cpu", iters=10, warmup_iters=5), 100).max_iters == 10


def test_negative_counts_name_the_flag() -> None:
    from vocseg.errors import VocsegError
    from vocseg.recipe.recipe import validate

    with pytest.raises(VocsegError, match="^--warmup-iters -5 cannot be negative"):
        validate(Recipe(model="tiny", device="cpu", warmup_iters=-5))
