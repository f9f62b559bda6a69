"""Speed settings for training: mixed precision, channels_last, data-loader sizing, CPU threads.

On CUDA, vocseg trains with bf16 autocast (fp16 with dynamic loss scaling where the GPU lacks
bf16), channels_last tensors (convolutions take the NHWC tensor-core path), cudnn benchmark and
pinned, persistent loader workers. Each is a recipe flag and can be turned off. Everything here
also runs on the CPU (bf16 autocast included), which is how the tests exercise it.

MMEngine's AmpOptimWrapper refuses to run without a GPU and fixes the dtype when the config is
written; `VocsegAmpOptimWrapper` chooses on the machine that trains. Likewise loader workers
(`num_workers='auto'`, resolved when the Runner builds a loader) and torch's intra-op threads
(`VocsegThreadsHook`) are sized on the machine that trains (`vocseg.stack.threads`).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

from vocseg.stack.compat import ensure_stack
from vocseg.stack.threads import intra_op_threads, local_processes, machine_cpu_count, resolve_loader_cfg

ensure_stack()  # before mmseg is imported, whoever imports this module first

import torch  # noqa: E402
from mmengine.hooks import Hook  # noqa: E402
from mmengine.model import MMDistributedDataParallel  # noqa: E402
from mmengine.optim import AmpOptimWrapper, OptimWrapper  # noqa: E402
from mmengine.registry import HOOKS, MODEL_WRAPPERS, OPTIM_WRAPPERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

AMP_DTYPES = ("auto", "bfloat16", "float16")


def pick_amp_dtype(requested: str, device_type: str, bf16_supported: bool) -> torch.dtype:
    """bf16 where the device has it (no loss scaling needed), else fp16 (with loss scaling)."""
    if requested not in AMP_DTYPES:
        raise ValueError(f"amp dtype must be one of {AMP_DTYPES}, got {requested!r}")
    if requested == "float16":
        return torch.float16
    if requested == "bfloat16" or device_type == "cpu" or bf16_supported:
        return torch.bfloat16
    return torch.float16


@OPTIM_WRAPPERS.register_module(name="VocsegAmpOptimWrapper")
class MixedPrecisionOptimWrapper(AmpOptimWrapper):
    """Autocast + (for fp16 only) dynamic loss scaling, on CUDA or the CPU."""

    def __init__(self, dtype: str = "auto", loss_scale: str | float = "dynamic", **kwargs: Any) -> None:
        OptimWrapper.__init__(self, **kwargs)  # AmpOptimWrapper.__init__ asserts a GPU
        self.device_type = "cuda" if torch.cuda.is_available() else "cpu"
        bf16 = self.device_type == "cuda" and torch.cuda.is_bf16_supported()
        self.cast_dtype = pick_amp_dtype(dtype, self.device_type, bf16)
        scaling = self.cast_dtype == torch.float16
        self._scale_update_param = loss_scale if isinstance(loss_scale, float) else None
        init = dict(init_scale=loss_scale) if isinstance(loss_scale, float) else {}
        self.loss_scaler = torch.amp.GradScaler(self.device_type, enabled=scaling, **init)

    @contextmanager
    def optim_context(self, model: torch.nn.Module) -> Any:
        with OptimWrapper.optim_context(self, model), torch.autocast(self.device_type, dtype=self.cast_dtype):
            yield

    def state_dict(self) -> dict:
        state = OptimWrapper.state_dict(self)
        if self.loss_scaler.is_enabled():
            state["loss_scaler"] = self.loss_scaler.state_dict()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        scaler = state_dict.pop("loss_scaler", None)
        if scaler and self.loss_scaler.is_enabled():
            self.loss_scaler.load_state_dict(scaler)
        OptimWrapper.load_state_dict(self, state_dict)


def to_channels_last(model: torch.nn.Module) -> torch.nn.Module:
    return model.to(memory_format=torch.channels_last)


@HOOKS.register_module(name="VocsegChannelsLastHook")
class ChannelsLastHook(Hook):
    """Single process: convert the model's weights to channels_last before the first step."""

    priority = "VERY_HIGH"

    def before_run(self, runner: Any) -> None:
        from mmengine.model import is_model_wrapper

        if not is_model_wrapper(runner.model):  # a DDP model was converted before wrapping
            to_channels_last(runner.model)


@MODEL_WRAPPERS.register_module(name="VocsegDistributedDataParallel")
class ChannelsLastDDP(MMDistributedDataParallel):
    """MMDistributedDataParallel that converts the module to channels_last first, so DDP's
    gradient buckets are laid out for the strides the gradients will really have."""

    def __init__(self, module: torch.nn.Module, channels_last: bool = False, **kwargs: Any) -> None:
        if channels_last:
            to_channels_last(module)
        super().__init__(module=module, **kwargs)


def _install_auto_workers() -> None:
    """Let `Runner.build_dataloader` take `num_workers='auto'` / `persistent_workers='auto'`
    (configs written by `vocseg config`): resolved for the machine that builds the loader."""
    build = Runner.build_dataloader
    if getattr(build, "vocseg_auto_workers", False):
        return

    def build_dataloader(dataloader: Any, *args: Any, **kwargs: Any) -> Any:
        return build(resolve_loader_cfg(dataloader), *args, **kwargs)

    build_dataloader.vocseg_auto_workers = True  # type: ignore[attr-defined]
    Runner.build_dataloader = staticmethod(build_dataloader)  # type: ignore[method-assign]


_install_auto_workers()


@HOOKS.register_module(name="VocsegThreadsHook")
class ThreadsHook(Hook):
    """Before training: torch's intra-op threads = this process's share of the cores minus one
    per loader worker, at least 1 (`vocseg.stack.threads.intra_op_threads`), so that the training
    process and its workers do not run more threads than there are cores. An OMP_NUM_THREADS set
    by the user (or by torchrun's launcher) is left as it is."""

    priority = "VERY_HIGH"

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads

    def before_train(self, runner: Any) -> None:
        import os

        if self.threads is None and os.environ.get("OMP_NUM_THREADS"):
            return
        n = self.threads
        if n is None:
            workers = int(getattr(runner.train_dataloader, "num_workers", 0) or 0)
            n = intra_op_threads(machine_cpu_count(), local_processes(), workers)
        torch.set_num_threads(max(1, n))
