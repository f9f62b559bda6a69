"""Training and inference speed on the GPU: plain MMSeg (official config) against vocseg's defaults.

Measures, in one process, for UPerNet-R50 at 512x512 and the official per-GPU batch of 4:
  1. training images/s and peak GPU memory: (a) mmseg's official config as it is (fp32, NCHW,
     cudnn benchmark), (b) vocseg's defaults (bf16 autocast or fp16 + loss scaling, channels_last);
     synthetic in-memory batches, through the real `model.train_step` and optimizer wrapper;
  2. inference images/s, same two settings;
  3. the data pipeline's images/s (vocseg's train loader on the demo dataset, chosen workers)
     against the GPU's training step rate;
  4. equal accuracy: the first N training losses from the same initialisation and the same
     batches, vocseg's defaults against plain runs with two dropout seeds (the run-to-run noise).

Target: (b) >= 1.8x (a) in training images/s. Figures go to docs/performance.md.

    python benchmarks/gpu_train.py                 # on a CUDA machine (estimated 2-4 min on an H100; never measured)
    python benchmarks/gpu_train.py --smoke         # every code path at toy size on the CPU

With --json FILE the figures are written after every phase (a run cut short still reports); a
phase that fails is recorded under "errors", the others still run, and the exit status is 1.
benchmarks/gpu/check.sh runs this as one of its steps.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

OFFICIAL = "configs/upernet/upernet_r50_4xb4-40k_voc12aug-512x512.py"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny model, toy sizes, CPU: checks the code paths only")
    p.add_argument("--steps", type=int, default=50, help="timed training steps per setting")
    p.add_argument("--warmup", type=int, default=15)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--loss-iters", type=int, default=200)
    p.add_argument("--workers", type=int, default=None, help="loader workers for the pipeline figure (default: vocseg's choice)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args()
    if args.smoke:
        args.steps, args.warmup, args.batch, args.size, args.loss_iters = 2, 1, 2, 64, 4
    return args


def model_configs(smoke: bool, data_root: str) -> tuple[Any, Any, Any]:
    """(plain model cfg, vocseg model cfg, vocseg recipe)."""
    import mmseg
    from mmengine.config import Config

    from vocseg.recipe.models import PRESETS, model_config
    from vocseg.recipe.recipe import Recipe

    device = "cpu" if smoke else "cuda"
    model = "tiny" if smoke else "r50"
    recipe = Recipe(data_root=data_root, model=model, device=device, batch=4, iters=100, amp=True, channels_last=True, pretrained="none")
    fast = model_config(PRESETS[model], sync_bn=False, pretrained_checkpoint=None, channels_last=True)
    if smoke:
        plain = model_config(PRESETS[model], sync_bn=False, pretrained_checkpoint=None)
    else:
        official = Config.fromfile(str(Path(mmseg.__file__).parent / ".mim" / OFFICIAL))
        plain = official.model.to_dict()
        plain["pretrained"] = None  # random init for both: speed does not depend on the weights
        for key in ("backbone", "decode_head", "auxiliary_head"):
            if "norm_cfg" in plain[key]:
                plain[key]["norm_cfg"] = dict(type="BN", requires_grad=True)  # one GPU: SyncBN is BN
        plain["backbone"]["norm_cfg"] = dict(type="BN", requires_grad=True)
        plain["data_preprocessor"]["size"] = (512, 512)
    return plain, fast, recipe


def build(model_cfg: dict, *, fast: bool, device: str, lr: float = 0.01) -> tuple[Any, Any]:
    import torch
    from mmengine.config import ConfigDict
    from mmengine.optim import build_optim_wrapper
    from mmseg.registry import MODELS

    from vocseg.stack.speed import to_channels_last

    model = MODELS.build(ConfigDict(copy.deepcopy(model_cfg))).to(device)  # mmseg reads test_cfg.mode as an attribute
    model.init_weights()
    if fast:
        to_channels_last(model)
    optim = dict(type="VocsegAmpOptimWrapper" if fast else "OptimWrapper", optimizer=dict(type="SGD", lr=lr, momentum=0.9, weight_decay=0.0005))
    torch.backends.cudnn.benchmark = device == "cuda"
    return model, build_optim_wrapper(model, optim)


def synthetic_batch(batch: int, size: int, seed: int) -> dict:
    import torch
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    g = torch.Generator().manual_seed(seed)
    inputs = [torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g) for _ in range(batch)]
    samples = []
    for _ in range(batch):
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=torch.randint(0, 21, (1, size, size), generator=g))
        s.set_metainfo(dict(img_shape=(size, size), ori_shape=(size, size), pad_shape=(size, size)))
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def time_training(model: Any, optim: Any, batch: dict, steps: int, warmup: int, device: str) -> tuple[float, float]:
    """(images/s, peak GPU memory in GiB; 0 on the CPU)."""
    import torch

    model.train()
    for _ in range(warmup):
        model.train_step(batch, optim_wrapper=optim)
    sync(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        model.train_step(batch, optim_wrapper=optim)
    sync(device)
    elapsed = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else 0.0
    return steps * len(batch["inputs"]) / elapsed, peak


def time_inference(model: Any, batch: dict, steps: int, warmup: int, device: str, autocast: bool) -> float:
    import contextlib

    import torch

    model.eval()
    ctx = torch.autocast(device, dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    one = dict(inputs=batch["inputs"][:1], data_samples=batch["data_samples"][:1])
    with torch.no_grad(), ctx:
        for _ in range(warmup):
            model.test_step(one)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            model.test_step(one)
        sync(device)
    return steps / (time.perf_counter() - t0)


def pipeline_rate(recipe: Any, workers: int | None, batches: int) -> tuple[float, int, list[dict]]:
    """vocseg's real train loader on the demo data: images/s, workers used, and the batches seen."""
    import dataclasses

    from mmengine.config import Config
    from mmengine.runner import Runner

    from vocseg.recipe.mmconfig import build_config_text
    from vocseg.recipe.recipe import plan

    if workers is not None:
        recipe = dataclasses.replace(recipe, num_workers=workers)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cfg.py"
        path.write_text(build_config_text(recipe, plan(recipe), Path(tmp)))
        cfg = Config.fromfile(str(path))
    loader = Runner.build_dataloader(cfg.train_dataloader, seed=0)
    it = iter(loader)
    first = [next(it) for _ in range(2)]  # workers started
    t0 = time.perf_counter()
    seen = [next(it) for _ in range(batches)]
    elapsed = time.perf_counter() - t0
    return batches * recipe.batch / elapsed, recipe.workers, first + seen


def loss_curve(model_cfg: dict, init_state: dict, batches: list[dict], *, fast: bool, device: str, seed: int) -> list[float]:
    import torch

    torch.manual_seed(seed)  # dropout in the heads: the run-to-run noise
    model, optim = build(model_cfg, fast=fast, device=device)
    model.load_state_dict(init_state)
    if fast:
        from vocseg.stack.speed import to_channels_last

        to_channels_last(model)
    model.train()
    return [float(model.train_step(b, optim_wrapper=optim)["loss"]) for b in batches]


def smooth(values: list[float], window: int = 20) -> list[float]:
    window = max(1, min(window, len(values)))
    return [statistics.fmean(values[max(0, i - window + 1) : i + 1]) for i in range(len(values))]


def mean_abs_diff(a: list[float], b: list[float]) -> float:
    return statistics.fmean(abs(x - y) for x, y in zip(smooth(a), smooth(b), strict=True))


class Phases:
    """Runs the benchmark's phases one after another; a phase that raises is recorded in
    `results["errors"]` and the next one still runs (where it does not need the failed one).
    With --json the file is rewritten after every phase, so a run cut short still reports."""

    def __init__(self, results: dict[str, Any], json_path: Path | None) -> None:
        self.results = results
        self.json_path = json_path
        self.results.setdefault("errors", {})
        self.results.setdefault("phase_seconds", {})

    def save(self) -> None:
        if self.json_path is not None:
            tmp = self.json_path.with_name(self.json_path.name + ".tmp")
            tmp.write_text(json.dumps(self.results, indent=1))
            tmp.replace(self.json_path)

    def run(self, name: str, fn: Any) -> bool:
        t0 = time.perf_counter()
        try:
            fn()
            ok = True
        except Exception as exc:  # noqa: BLE001  recorded; the process still exits non-zero at the end
            import traceback

            traceback.print_exc()
            self.results["errors"][name] = f"{type(exc).__name__}: {exc}"[:2000]
            ok = False
        self.results["phase_seconds"][name] = round(time.perf_counter() - t0, 2)
        self.save()
        return ok


def main() -> None:
    args = parse_args()
    import torch

    from vocseg.stack.compat import ensure_stack

    ensure_stack()
    from mmengine.registry import init_default_scope

    import vocseg.mmseg_plugin  # noqa: F401  (registers vocseg's wrappers)

    init_default_scope("mmseg")
    import mmseg.models  # noqa: F401

    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("No CUDA GPU: run with --smoke to check the code paths on the CPU.")
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "CPU (smoke run: figures mean nothing)"

    with tempfile.TemporaryDirectory() as tmp:
        from vocseg.data.demo import write_demo_dataset
        from vocseg.data.sbd import convert_sbd, write_aug_lists

        root = Path(tmp) / "demo"
        write_demo_dataset(root, n_train=16, n_val=4, n_sbd_only=16)
        convert_sbd(root, workers=1)
        write_aug_lists(root)
        plain_cfg, fast_cfg, recipe = model_configs(args.smoke, str(root))

        batch = synthetic_batch(args.batch, args.size, seed=0)
        results: dict[str, Any] = {
            "device": gpu, "batch": args.batch, "size": args.size, "model": recipe.model, "torch": torch.__version__,
            # "plain fp32" on an Ampere or newer GPU: cuDNN convolutions run in TF32 unless this is False (PyTorch's default is True)
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32, "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        }
        phases = Phases(results, args.json)
        phases.save()

        def speed(name: str, cfg: dict, fast: bool) -> None:
            model, optim = build(cfg, fast=fast, device=device)
            ips, peak = time_training(model, optim, batch, args.steps, args.warmup, device)
            results[name] = {"train_images_per_s": ips, "peak_mem_gib": peak}
            inf = time_inference(model, batch, args.steps, args.warmup, device, autocast=fast)
            results[name]["infer_images_per_s"] = inf
            del model, optim
            if device == "cuda":
                torch.cuda.empty_cache()

        for name, cfg, fast in (("plain_mmseg", plain_cfg, False), ("vocseg", fast_cfg, True)):
            phases.run(name, lambda name=name, cfg=cfg, fast=fast: speed(name, cfg, fast))
        p, v = results.get("plain_mmseg", {}), results.get("vocseg", {})
        for key, ratio in (("train_images_per_s", "train_ratio"), ("infer_images_per_s", "infer_ratio")):
            if key in p and key in v:
                results[ratio] = v[key] / p[key]
        phases.save()

        loader_batches: list[dict] = []

        def pipeline() -> None:
            pipe_ips, workers, seen = pipeline_rate(recipe, args.workers, batches=max(4, args.steps))
            loader_batches.extend(seen)
            step_rate = v.get("train_images_per_s")
            results["pipeline"] = {"images_per_s": pipe_ips, "workers": workers, "gpu_step_images_per_s": step_rate,
                                   "keeps_up": None if step_rate is None else pipe_ips >= step_rate}

        phases.run("pipeline", pipeline)

        def loss_curves() -> None:
            # Equal accuracy: same init, same batches (from the real loader, cycled), plain x2 seeds vs vocseg.
            source = loader_batches or [synthetic_batch(args.batch, args.size, seed=i) for i in range(4)]
            batches = [source[i % len(source)] for i in range(args.loss_iters)]
            init_model, _ = build(fast_cfg, fast=False, device=device)
            init_state = {k: v.detach().clone() for k, v in init_model.state_dict().items()}
            del init_model
            plain_a = loss_curve(fast_cfg, init_state, batches, fast=False, device=device, seed=1)
            plain_b = loss_curve(fast_cfg, init_state, batches, fast=False, device=device, seed=2)
            ours = loss_curve(fast_cfg, init_state, batches, fast=True, device=device, seed=1)
            noise, deviation = mean_abs_diff(plain_a, plain_b), mean_abs_diff(plain_a, ours)
            results["loss_curves"] = {"iters": args.loss_iters, "batches_from": "loader" if loader_batches else "synthetic",
                                      "run_to_run_noise": noise, "vocseg_vs_plain": deviation, "within_noise": deviation <= 1.5 * noise + 1e-3,
                                      "final_loss": {"plain_a": plain_a[-1], "plain_b": plain_b[-1], "vocseg": ours[-1]}}

        phases.run("loss_curves", loss_curves)

    print(f"device: {gpu}; UPerNet-{results['model']} at {args.size}x{args.size}, batch {args.batch}")
    if "train_ratio" in results:
        print(f"train images/s: plain mmseg {p['train_images_per_s']:.1f}, vocseg {v['train_images_per_s']:.1f}, ratio {results['train_ratio']:.2f} (target >= 1.8)")
        print(f"peak memory GiB: plain {p['peak_mem_gib']:.2f}, vocseg {v['peak_mem_gib']:.2f}")
        print(f"inference images/s: plain {p['infer_images_per_s']:.1f}, vocseg {v['infer_images_per_s']:.1f}, ratio {results['infer_ratio']:.2f}")
    if "pipeline" in results:
        pl = results["pipeline"]
        verdict = {True: "keeps up", False: "STARVES the GPU", None: "no GPU step rate to compare"}[pl["keeps_up"]]
        print(f"data pipeline: {pl['images_per_s']:.1f} images/s with {pl['workers']} workers vs GPU step {pl['gpu_step_images_per_s'] or 0:.1f} images/s: {verdict}")
    if "loss_curves" in results:
        lc = results["loss_curves"]
        print(f"loss over {lc['iters']} iterations: plain-vs-plain noise {lc['run_to_run_noise']:.4f}, vocseg-vs-plain {lc['vocseg_vs_plain']:.4f}: {'within noise' if lc['within_noise'] else 'OUTSIDE noise'}")
    for phase, error in results["errors"].items():
        print(f"phase {phase} failed: {error}", file=sys.stderr)
    if results["errors"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
