"""Shared fixtures: a small demo dataset and one tiny trained run per test session (CPU, seconds)."""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from vocseg.cli import run

# Keep tests reproducible and off the user's folders.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def one_thread():
    """One intra-op thread for in-process training: with the cores shared (CI, parallel jobs)
    OpenMP threads spin against each other and an iteration of the tiny model takes seconds."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run `vocseg ARGS...` in this process; returns exit code, stdout and stderr."""

    def invoke(*args: str | Path) -> CliResult:
        capsys.readouterr()
        code = run([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return invoke


def make_demo(root: Path, **sizes: int) -> Path:
    from vocseg.data.demo import write_demo_dataset
    from vocseg.data.sbd import convert_sbd, write_aug_lists

    write_demo_dataset(root, **sizes)
    convert_sbd(root, workers=1)
    write_aug_lists(root)
    return root


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo dataset (24 train, 12 val, 24 SBD-only) with SBD converted and lists written. Read-only."""
    return make_demo(tmp_path_factory.mktemp("demo") / "data", n_train=24, n_val=12, n_sbd_only=24)


@pytest.fixture
def demo_copy(demo_root: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the demo dataset (for tests that damage it)."""
    target = tmp_path / "data"
    shutil.copytree(demo_root, target)
    return target


TINY_TRAIN = ("--model", "tiny", "--device", "cpu", "--batch", "2", "--workers", "0")


@pytest.fixture(scope="session")
def trained_run(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder of the tiny model trained 8 iterations on the demo data. Read-only."""
    work_dir = tmp_path_factory.mktemp("run") / "tiny"
    code = run(["train", "--data-root", str(demo_root), *TINY_TRAIN, "--iters", "8", "--work-dir", str(work_dir)])
    assert code == 0
    return work_dir


def file_tree(folder: Path) -> dict[str, str]:
    """Every path under `folder` -> sha256 of its bytes ('dir' for folders, 'link:' for links)."""
    out: dict[str, str] = {}
    if not folder.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(folder))
            if path.is_symlink():
                out[rel] = "link:" + os.readlink(path)
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out
