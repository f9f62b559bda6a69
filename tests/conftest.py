"""Shared fixtures (a small demo dataset, one tiny trained run per session) and the suite's rules:
tests that train are marked `slow` automatically, nothing is left in the working folder (the
session runs in a temporary folder; hypothesis keeps its database under the temp dir).
Helpers that are not fixtures live in tests/helpers.py."""

from __future__ import annotations

import functools
import inspect
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import TINY_TRAIN, CliResult, make_demo
from vocseg.cli import run

# Keep tests reproducible and off the user's folders.
os.environ.setdefault("OMP_NUM_THREADS", "2")

# A suite started as a background job of a non-interactive shell (`cmd &` in a script, a CI
# runner) inherits SIGINT ignored, and so would every process the tests fork or start: the
# Ctrl-C tests (tests/test_interrupt.py) would send a signal nobody receives. Python's own handler.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# hypothesis's files (its example database, its constants cache) under the temp dir, never
# `.hypothesis/` in the working folder: the variable is read at hypothesis's first write.
HYPOTHESIS_HOME = Path(tempfile.gettempdir()) / "vocseg-hypothesis"
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(HYPOTHESIS_HOME))
try:
    from hypothesis import settings
    from hypothesis.database import DirectoryBasedExampleDatabase

    settings.register_profile("vocseg", database=DirectoryBasedExampleDatabase(HYPOTHESIS_HOME / "examples"))
    settings.load_profile("vocseg")
except ImportError:  # the test extra is not installed: the property tests fail on their own import
    pass

# A test trains when it, or a fixture it uses, runs `vocseg train/resume` or the runner itself.
_TRAINS = re.compile(r"""\b(cli|run|invoke)\(\s*\[?\s*["'](train|resume)["']|["']vocseg\.cli["'],\s*["'](train|resume)["']|\b(run_training|launch_training|run_worker)\(""")


@functools.cache
def _trains(func: object) -> bool:
    try:
        return bool(_TRAINS.search(inspect.getsource(func)))  # type: ignore[arg-type]
    except (OSError, TypeError):
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark `slow` every test that trains a model (itself or through its fixtures): `-m "not slow"` runs the rest."""
    for item in items:
        funcs = [getattr(item, "function", None)]
        info = getattr(item, "_fixtureinfo", None)
        if info is not None:
            funcs += [defs[-1].func for defs in info.name2fixturedefs.values() if defs]
        if any(f is not None and _trains(f) for f in funcs):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def _temporary_working_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The suite runs in a temporary folder: what a command writes to the current folder by default
    (runs/, MMEngine's files) never lands in the checkout."""
    before = Path.cwd()
    folder = tmp_path_factory.mktemp("cwd")
    os.chdir(folder)
    try:
        yield folder
    finally:
        os.chdir(before)


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


def _shape(folder: Path) -> dict[str, tuple[int, int]]:
    """Every entry under `folder` -> (size, mtime in ns): cheap enough to take around every test."""
    out = {}
    for path in folder.rglob("*"):
        st = path.lstat()
        out[path.relative_to(folder).as_posix()] = (st.st_size, st.st_mtime_ns)
    return out


_SHARED_RUN: dict[Path, dict[str, tuple[int, int]]] = {}  # the session's trained_run -> its _shape when made


@pytest.fixture(autouse=True)
def _the_shared_run_stays_as_it_was(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that writes into the session's `trained_run` (a report or eval that writes into its
    eval/, an export beside its checkpoint), however it got the fixture (an argument,
    `request.getfixturevalue`, another fixture), fails here, naming itself: otherwise the tests
    after it see another run and fail far away, depending on the order. Write into `copy_run(...)`
    or pass `-o`."""
    yield
    for folder, made in _SHARED_RUN.items():
        now = _shape(folder)
        changed = sorted(k for k in made.keys() | now.keys() if made.get(k) != now.get(k))
        if changed:
            _SHARED_RUN[folder] = now  # named once, here: not again for every later test
        assert not changed, f"{request.node.nodeid} changed the shared trained_run (use tests.helpers.copy_run or -o): {changed}"


@pytest.fixture(scope="session")
def trained_run(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder of the tiny model trained 8 iterations on the demo data. Read-only."""
    work_dir = tmp_path_factory.mktemp("run") / "tiny"
    code = run(["train", "--data-root", str(demo_root), *TINY_TRAIN, "--iters", "8", "--work-dir", str(work_dir)])
    assert code == 0
    _SHARED_RUN[work_dir] = _shape(work_dir)
    return work_dir
