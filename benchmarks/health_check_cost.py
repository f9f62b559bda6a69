"""Cost of the health guard's weight check (`vocseg.training.health.weights_finite`) against one
training iteration of the same model, on the CPU, one thread.

The guard checks every parameter and floating-point buffer only where a checkpoint, a validation
or the end follows (docs/training.md, "Runs that cannot be right"); this prints what that check
costs next to what an iteration costs, so the figure in the docs is a ratio measured in one
script, not an absolute time from a machine that was busy.

Models: vocseg's `tiny` (crop 96, batch 2) and UPerNet-R50 (`r50`, crop 512, batch 2), built from
the configs `vocseg config` writes (`vocseg.recipe.mmconfig.build_config_text`), randomly
initialised (no download). An iteration is MMEngine's `train_step` on a random batch of the
config's crop size (forward, loss, backward, SGD step). Medians of `--repeat` runs.

Run: python benchmarks/health_check_cost.py [--repeat 5] [--models tiny r50]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402


def build(model_name: str, work: Path) -> tuple[Any, Any, int]:
    """(model, optimizer wrapper, crop) from vocseg's written config for `model_name`, on the CPU."""
    from vocseg.stack.compat import ensure_stack

    ensure_stack()  # mmcv-lite's missing compiled ops, before mmseg's models are imported
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    import vocseg.mmseg_plugin  # noqa: F401  (vocseg's registered types)
    from vocseg.recipe.mmconfig import build_config_text
    from vocseg.recipe.recipe import Recipe, plan

    register_all_modules(init_default_scope=True)
    recipe = Recipe(data_root=str(work), model=model_name, device="cpu", batch=2, pretrained="none")
    cfg = Config.fromstring(build_config_text(recipe, plan(recipe, 1464), str(work / "run")), ".py")
    model_cfg = cfg["model"]
    model_cfg.pop("pretrained", None)
    if isinstance(model_cfg.get("backbone", {}).get("init_cfg"), dict):
        model_cfg["backbone"]["init_cfg"] = None
    model = MODELS.build(model_cfg)
    model.train()
    optim = build_optim_wrapper(model, cfg["optim_wrapper"])
    crop = int(cfg["crop_size"][0]) if "crop_size" in cfg else int(recipe_crop(cfg))
    return model, optim, crop


def recipe_crop(cfg: Any) -> int:
    """The crop of the config's train pipeline (its RandomCrop-like step's `crop_size`)."""
    for step in cfg["train_dataloader"]["dataset"].get("pipeline", []) or cfg["train_pipeline"]:
        if "crop_size" in step:
            return int(step["crop_size"][0])
    raise SystemExit("no crop size in the config")


def batch(crop: int, n: int = 2) -> dict[str, Any]:
    """A random training batch as the loader gives it: uint8 images, labels 0..20 and 255."""
    import torch
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    g = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for _ in range(n):
        inputs.append(torch.randint(0, 256, (3, crop, crop), dtype=torch.uint8, generator=g))
        label = torch.randint(0, 21, (1, crop, crop), dtype=torch.int64, generator=g)
        sample = SegDataSample(gt_sem_seg=PixelData(data=label))
        sample.set_metainfo(dict(img_shape=(crop, crop), ori_shape=(crop, crop), pad_shape=(crop, crop)))
        samples.append(sample)
    return {"inputs": inputs, "data_samples": samples}


def median_seconds(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--models", nargs="+", default=["tiny", "r50"])
    args = ap.parse_args()
    import torch

    from vocseg.training.health import weights_finite

    torch.set_num_threads(1)
    print(f"load before: {Path('/proc/loadavg').read_text().strip() if Path('/proc/loadavg').exists() else '?'}")
    with tempfile.TemporaryDirectory(prefix="vocseg-health-") as tmp:
        for name in args.models:
            model, optim, crop = build(name, Path(tmp))
            data = batch(crop)
            tensors = sum(1 for _ in model.parameters()) + sum(1 for b in model.buffers() if b.is_floating_point())
            params = sum(p.numel() for p in model.parameters())
            model.train_step(data, optim)  # warm-up
            check = median_seconds(lambda m=model: weights_finite(m), args.repeat)
            step = median_seconds(lambda m=model, o=optim, d=data: m.train_step(d, o), max(1, args.repeat if name == "tiny" else 2))
            print(
                f"{name:5s} crop {crop}, batch 2: {tensors} tensors, {params / 1e6:.1f}M parameters; "
                f"weight check {1e3 * check:.1f} ms, one iteration {1e3 * step:.0f} ms; "
                f"RATIO check / iteration: {check / step:.3f}"
            )
    print(f"load after: {Path('/proc/loadavg').read_text().strip() if Path('/proc/loadavg').exists() else '?'}")


if __name__ == "__main__":
    main()
