"""Speed settings (issue: GPU defaults): every code path runs on the CPU, autocast included."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import TINY_TRAIN
from vocseg.recipe.mmconfig import build_config_text
from vocseg.recipe.recipe import Recipe, loader_workers, plan


def test_amp_dtype_choice() -> None:
    import torch

    from vocseg.stack.speed import pick_amp_dtype

    assert pick_amp_dtype("auto", "cuda", bf16_supported=True) is torch.bfloat16
    assert pick_amp_dtype("auto", "cuda", bf16_supported=False) is torch.float16  # e.g. V100, T4
    assert pick_amp_dtype("auto", "cpu", bf16_supported=False) is torch.bfloat16
    assert pick_amp_dtype("float16", "cuda", bf16_supported=True) is torch.float16
    with pytest.raises(ValueError):
        pick_amp_dtype("int8", "cuda", True)


@given(st.integers(1, 256), st.integers(1, 16))
def test_loader_workers_share_the_cores(cpus: int, procs: int) -> None:
    w = loader_workers(cpus, procs)
    assert 0 <= w <= 8
    assert w * procs <= max(cpus, procs)  # never more workers than cores


@given(st.integers(1, 256), st.integers(1, 16), st.integers(0, 16))
def test_intra_op_threads_leave_the_workers_their_cores(cpus: int, procs: int, workers: int) -> None:
    from vocseg.stack.threads import intra_op_threads

    t = intra_op_threads(cpus, procs, workers)
    assert t >= 1
    assert t == 1 or (t + workers) * procs <= cpus  # never more threads than cores, unless at the floor of 1


def test_demo_on_two_cores_trains_on_one_thread() -> None:
    from vocseg.stack.threads import intra_op_threads

    assert intra_op_threads(2, 1, 2) == 1  # the demo: 2 loader workers on a 2-core machine
    assert intra_op_threads(16, 1, 8) == 8
    assert intra_op_threads(16, 2, 7) == 1


def test_auto_workers_are_decided_where_the_loader_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    import vocseg.stack.threads as threads

    monkeypatch.setattr(threads, "machine_cpu_count", lambda: 16)
    monkeypatch.delenv("SLURM_NTASKS_PER_NODE", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    auto = {"batch_size": 2, "num_workers": "auto", "persistent_workers": "auto"}
    assert threads.resolve_loader_cfg(auto) == {"batch_size": 2, "num_workers": 8, "persistent_workers": True}
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun: 4 processes on this machine
    assert threads.resolve_loader_cfg(auto)["num_workers"] == 3
    monkeypatch.setattr(threads, "machine_cpu_count", lambda: 1)
    assert threads.resolve_loader_cfg(auto) == {"batch_size": 2, "num_workers": 0, "persistent_workers": False}
    fixed = {"num_workers": 2, "persistent_workers": True}
    assert threads.resolve_loader_cfg(fixed) is fixed


def test_written_config_leaves_workers_to_the_training_machine(demo_root: Path) -> None:
    recipe = Recipe(data_root=str(demo_root), model="tiny", device="cpu", iters=4)
    text = build_config_text(recipe, plan(recipe), "/tmp/x")
    assert "'num_workers': 'auto'" in text and "'persistent_workers': 'auto'" in text
    assert "{'type': 'VocsegThreadsHook'}" in text
    pinned = Recipe(data_root=str(demo_root), model="tiny", device="cpu", iters=4, num_workers=3)
    assert "'num_workers': 3" in build_config_text(pinned, plan(pinned), "/tmp/x")


def test_threads_hook_sizes_torch_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    import torch

    import vocseg.stack.speed as speed

    before = torch.get_num_threads()
    runner = types.SimpleNamespace(train_dataloader=types.SimpleNamespace(num_workers=2))
    monkeypatch.setattr(speed, "machine_cpu_count", lambda: 4)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.delenv("SLURM_NTASKS_PER_NODE", raising=False)
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's choice stays
        torch.set_num_threads(3)
        speed.ThreadsHook().before_train(runner)
        assert torch.get_num_threads() == 3
        monkeypatch.delenv("OMP_NUM_THREADS")
        speed.ThreadsHook().before_train(runner)
        assert torch.get_num_threads() == 2  # 4 cores - 2 workers
    finally:
        torch.set_num_threads(before)


def test_cuda_defaults_are_fast_and_each_can_be_turned_off(tmp_path: Path) -> None:
    from vocseg.stack.compat import ensure_stack

    ensure_stack()
    from mmengine.config import Config

    def cfg_for(**kw: object) -> Config:
        r = Recipe(data_root=str(tmp_path), model="r50", gpus="first:2", batch=4, iters=100, **kw)  # type: ignore[arg-type]
        path = tmp_path / "c.py"
        path.write_text(build_config_text(r, plan(r, train_size=1464), tmp_path / "run"))
        return Config.fromfile(str(path))

    fast = cfg_for()
    assert fast.optim_wrapper.type == "VocsegAmpOptimWrapper" and fast.optim_wrapper.dtype == "auto"
    assert fast.model.data_preprocessor.type == "VocsegSegDataPreProcessor" and fast.model.data_preprocessor.channels_last
    assert fast.model_wrapper_cfg.type == "VocsegDistributedDataParallel"
    assert fast.env_cfg.cudnn_benchmark is True
    assert fast.train_dataloader.pin_memory is True and fast.train_dataloader.num_workers == "auto"
    assert any(h.type == "VocsegChannelsLastHook" for h in fast.custom_hooks)

    plain = cfg_for(amp=False, channels_last=False, cudnn_benchmark=False, pin_memory=False, num_workers=3)
    assert plain.optim_wrapper.type == "OptimWrapper"
    assert plain.model.data_preprocessor.type == "VocsegSegDataPreProcessor" and not plain.model.data_preprocessor.get("channels_last")
    assert "model_wrapper_cfg" not in plain
    assert plain.env_cfg.cudnn_benchmark is False
    assert plain.train_dataloader.pin_memory is False and plain.train_dataloader.num_workers == 3
    assert cfg_for(deterministic=True).env_cfg.cudnn_benchmark is False


def test_cpu_defaults_stay_fp32(tmp_path: Path) -> None:
    r = Recipe(data_root=str(tmp_path), model="tiny", device="cpu", iters=10)
    assert not (r.use_amp or r.use_channels_last or r.use_cudnn_benchmark or r.use_pin_memory)


def test_autocast_wrapper_on_cpu() -> None:
    import torch

    from vocseg.stack.compat import ensure_stack

    ensure_stack()
    from vocseg.stack.speed import MixedPrecisionOptimWrapper

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    wrapper = MixedPrecisionOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    assert wrapper.cast_dtype is torch.bfloat16 and not wrapper.loss_scaler.is_enabled()
    before = model[0].weight.detach().clone()
    with wrapper.optim_context(model):
        out = model(torch.randn(2, 3, 8, 8))
        assert out.dtype is torch.bfloat16
        loss = out.float().mean()
    wrapper.update_params(loss)
    assert not torch.equal(before, model[0].weight)
    state = wrapper.state_dict()
    assert "loss_scaler" not in state
    wrapper.load_state_dict(state)


def test_channels_last_preprocessor_and_hook() -> None:
    import torch

    from vocseg.stack.compat import ensure_stack

    ensure_stack()
    from vocseg.data.batches import VocsegFastSegDataPreProcessor
    from vocseg.stack.speed import to_channels_last

    pre = VocsegFastSegDataPreProcessor(channels_last=True, mean=[0, 0, 0], std=[1, 1, 1], size=(8, 8))
    out = pre({"inputs": [torch.randint(0, 255, (3, 8, 8), dtype=torch.uint8)] * 2, "data_samples": None}, training=False)
    assert out["inputs"].is_contiguous(memory_format=torch.channels_last)
    conv = to_channels_last(torch.nn.Conv2d(3, 8, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.slow
def test_tiny_training_with_amp_and_channels_last_on_cpu(cli, demo_root: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    r = cli("train", "--data-root", demo_root, *TINY_TRAIN, "--iters", "4", "--amp", "--channels-last", "--work-dir", run_dir)
    assert r.code == 0, r.err
    from vocseg.stack.compat import load_checkpoint_file

    ckpt = load_checkpoint_file(run_dir / "iter_4.pth")
    loss = ckpt["message_hub"]["log_scalars"]["train/loss"].current()
    assert loss == loss and 0 < loss < 100  # finite
    conv = ckpt["state_dict"]["backbone.stem.0.weight"]
    assert conv.is_contiguous(memory_format=__import__("torch").channels_last)


def test_benchmark_script_runs_on_cpu() -> None:
    """benchmarks/gpu_train.py's code paths, at toy size on the CPU (figures need a GPU)."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_train.py"
    out = subprocess.run([sys.executable, str(script), "--smoke"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "train images/s" in out.stdout and "ratio" in out.stdout


def test_pipeline_benchmark_prints_its_ratios_and_breakdown() -> None:
    """benchmarks/pipeline_speed.py (issue 22's figure) at toy size: both paths built from their
    configs, the ratios, the per-stage breakdowns (vocseg's with its per-sample seeding)."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "pipeline_speed.py"
    out = subprocess.run([sys.executable, str(script), "--samples", "8", "--rounds", "1", "--fidelity", "4"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("RATIO mmseg / vocseg:") == 2
    assert "both exact         mean 0.000 levels, max 0, 0 of 4 images above 1 level somewhere, labels identical" in out.stdout
    assert "per-sample seeding (VocsegSeededDataset)" in out.stdout and "3. RandomCrop" in out.stdout
