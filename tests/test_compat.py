"""The stack compatibility layer: mmseg imports on mmcv-lite, checkpoints load safely, payloads never run."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from vocseg.errors import VocsegError
from vocseg.stack.compat import compiled_mmcv_ops_available, ensure_stack, load_checkpoint_file


def test_mmseg_models_import_and_point_sample() -> None:
    ensure_stack()
    import mmseg.models  # noqa: F401  (fails without the shim on mmcv-lite)
    import torch
    from mmcv.ops import point_sample

    feats = torch.arange(16.0).reshape(1, 1, 4, 4)
    # Pixel centres in normalised [0, 1] coordinates give back the pixel values.
    points = torch.tensor([[[0.125, 0.125], [0.875, 0.875], [0.375, 0.625]]])
    out = point_sample(feats, points, align_corners=False)
    assert out.shape == (1, 1, 3)
    assert out.flatten().tolist() == [0.0, 15.0, 9.0]


@pytest.mark.skipif(compiled_mmcv_ops_available(), reason="full mmcv installed: nothing is replaced")
def test_missing_compiled_op_explains_itself() -> None:
    ensure_stack()
    from mmcv.ops import DeformConv2d

    with pytest.raises(VocsegError, match="compiled ops"):
        DeformConv2d(3, 3, 3)


def test_shim_applies_in_a_fresh_process_through_the_config_plugin() -> None:
    """mmseg's own tools import vocseg.mmseg_plugin through a config's custom_imports."""
    code = "import vocseg.mmseg_plugin, mmseg.models, mmseg.utils; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-1500:]
    assert out.stdout.strip() == "ok"


def test_runner_checkpoint_round_trip(trained_run: Path) -> None:
    """A checkpoint MMEngine's Runner wrote (message_hub, HistoryBuffer, numpy) loads with weights_only."""
    ckpt = load_checkpoint_file(trained_run / "iter_8.pth")
    assert {"meta", "state_dict", "optimizer", "message_hub", "param_schedulers"} <= set(ckpt)
    assert ckpt["meta"]["iter"] == 8
    assert any(k.startswith("backbone.stem") for k in ckpt["state_dict"])
    scalars = ckpt["message_hub"]["log_scalars"]
    assert "train/loss" in scalars and scalars["train/loss"].mean() > 0


def test_mmengine_loader_goes_through_the_safe_path(trained_run: Path) -> None:
    ensure_stack()
    from mmengine.runner.checkpoint import CheckpointLoader

    ckpt = CheckpointLoader.load_checkpoint(str(trained_run / "iter_8.pth"), map_location="cpu")
    assert "state_dict" in ckpt


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_payload_is_refused_and_never_runs(tmp_path: Path) -> None:
    import torch

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "meta": _Payload(marker)}, evil)
    with pytest.raises(VocsegError, match="Refused to load"):
        load_checkpoint_file(evil)
    assert not marker.exists()


def test_getattr_is_only_allowed_for_history_buffer_methods(tmp_path: Path) -> None:
    """mmengine pickles getattr(HistoryBuffer, 'min'); any other getattr must be refused."""
    import numpy as np
    import torch
    from mmengine.logging import HistoryBuffer

    class Sneaky:
        """getattr on allow-listed objects is the first step of a gadget chain toward os.system."""

        def __init__(self, obj: object, name: str) -> None:
            self.obj, self.name = obj, name

        def __reduce__(self):
            return (getattr, (self.obj, self.name))

    for obj, name in ((HistoryBuffer, "__init__"), (np.ndarray, "__reduce__"), (HistoryBuffer, "update")):
        evil = tmp_path / "getattr.pth"
        torch.save({"x": Sneaky(obj, name)}, evil)
        with pytest.raises(VocsegError, match="Refused to load"):
            load_checkpoint_file(evil)
    ok = tmp_path / "ok.pth"
    torch.save({"x": Sneaky(HistoryBuffer, "mean")}, ok)
    assert load_checkpoint_file(ok)["x"] is HistoryBuffer.mean


def test_truncated_and_foreign_files(tmp_path: Path, trained_run: Path) -> None:
    data = (trained_run / "iter_8.pth").read_bytes()
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(VocsegError, match="truncated or not a PyTorch checkpoint"):
        load_checkpoint_file(truncated)
    # garbage makes torch's unpickler raise KeyError, IndexError, ...: all become one clear error
    for i, junk in enumerate((b"not a checkpoint", b"hello world, not a checkpoint", bytes(range(256)) * 8, os.urandom(4096))):
        foreign = tmp_path / f"junk{i}.pth"
        foreign.write_bytes(junk)
        with pytest.raises(VocsegError, match="Cannot read checkpoint"):
            load_checkpoint_file(foreign)
    with pytest.raises(VocsegError, match="does not exist"):
        load_checkpoint_file(tmp_path / "missing.pth")


def test_plain_pickle_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "plain.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"a": 1}))
    with pytest.raises(VocsegError):
        load_checkpoint_file(path)


def test_checkpoint_writes_are_atomic(tmp_path: Path) -> None:
    ensure_stack()
    from mmengine.fileio.backends import LocalBackend

    target = tmp_path / "f.bin"
    LocalBackend().put(b"x" * 1000, target)
    assert target.read_bytes() == b"x" * 1000
    from vocseg.files import OWN_NAMES

    assert [p.name for p in tmp_path.iterdir() if p.name not in OWN_NAMES] == ["f.bin"]  # no temporary left behind (vocseg's record aside)
