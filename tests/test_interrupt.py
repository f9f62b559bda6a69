"""Interruption is a normal event (issue 19): each multi-step write is killed (SIGKILL, or SIGINT /
SIGTERM) at seeded points and run again; the result equals an uninterrupted run, no temporary
file is left, and the user's files are unchanged.

The kill points come from the fault-injection hook of the one write module
(`VOCSEG_TEST_KILL_AFTER=N`: the process kills itself right after its N-th record line, i.e.
between any two steps of any write), so they are deterministic and cheap: the cheap commands run
in a forked child of this process (no interpreter start), the commands with a model in a
subprocess at fewer points.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import copy_run
from vocseg.files import OWN_NAMES

KILL_POINTS = 20  # per cheap command
SEED = 19


_REPORT_TIME = re.compile(rb"written \d{4}-\d\d-\d\d \d\d:\d\d")


def content_tree(folder: Path) -> dict[str, str]:
    """Every path under `folder` -> sha256 of its bytes ('dir', 'link:...', 'special'); vocseg's
    record files are left out (their lines differ between an interrupted and a clean run)."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            if name in OWN_NAMES:
                continue
            path = Path(dirpath) / name
            st = os.lstat(path)
            rel = path.relative_to(folder).as_posix()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = "link:" + os.readlink(path)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = "dir"
            elif stat.S_ISREG(st.st_mode):
                data = path.read_bytes()
                if name.endswith(".mat"):
                    data = data[128:]  # a MAT header holds its creation time
                elif name.endswith(".html"):
                    data = _REPORT_TIME.sub(b"written TIME", data)  # the report says when it was written (to the minute)
                out[rel] = hashlib.sha256(data).hexdigest()
            else:
                out[rel] = "special"
    return out


def temporary_files(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".vocseg-extract-"))


def count_events(fn: Callable[[], object]) -> int:
    """How many record lines an uninterrupted `fn()` writes."""
    import vocseg.files

    before = vocseg.files._EVENTS
    fn()
    return vocseg.files._EVENTS - before


def killed_in_child(fn: Callable[[], object], after: int, sig: str = "KILL") -> bool:
    """Run `fn` in a forked child that kills itself after its `after`-th record line; True when
    it was killed (or interrupted) before finishing."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        import vocseg.files

        signal.alarm(600)  # a child that hangs (a lock inherited mid-use) dies instead of the suite
        code = 0
        try:
            vocseg.files._EVENTS = 0
            os.environ["VOCSEG_TEST_KILL_AFTER"] = str(after)
            os.environ["VOCSEG_TEST_KILL_SIGNAL"] = sig
            fn()
        except BaseException:  # noqa: BLE001 - SIGINT / SIGTERM end it with an exception
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGALRM), "the child hung (killed by its alarm)"
    return os.WIFSIGNALED(status) or os.WEXITSTATUS(status) == 3


def kill_points(total: int, n: int = KILL_POINTS, seed: int = SEED) -> list[int]:
    rng = random.Random(seed)
    return sorted(rng.sample(range(1, total + 1), min(n, total)))


# ---------------------------------------------------------------- prepare --demo (write, convert, list)


def _quiet_console():  # noqa: ANN202
    from rich.console import Console

    return Console(file=open(os.devnull, "w"), quiet=True)  # noqa: SIM115


def _small_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    import functools

    import vocseg.data.demo

    monkeypatch.setattr(vocseg.data.demo, "write_demo_dataset", functools.partial(vocseg.data.demo.write_demo_dataset, n_train=4, n_val=2, n_sbd_only=4))


def test_prepare_demo_killed_anywhere_is_completed_by_the_next_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vocseg.data.prepare import prepare_demo

    _small_demo(monkeypatch)
    console = _quiet_console()
    reference = tmp_path / "reference"
    total = count_events(lambda: prepare_demo(reference, force=False, workers=1, console=console))
    expected = content_tree(reference)
    assert total > 40 and temporary_files(reference) == []

    signals = ["KILL", "KILL", "TERM", "INT"]
    for i, after in enumerate(kill_points(total)):
        root = tmp_path / f"root{after}"
        root.mkdir()
        (root / "my_notes.txt").write_text("the user's\n")
        assert killed_in_child(lambda root=root: prepare_demo(root, force=False, workers=1, console=console), after, signals[i % len(signals)])
        prepare_demo(root, force=False, workers=1, console=console)  # the same command again
        got = content_tree(root)
        assert got.pop("my_notes.txt") == hashlib.sha256(b"the user's\n").hexdigest()
        assert got == expected, f"killed after record line {after}"
        assert temporary_files(root) == [], f"killed after record line {after}"


# ---------------------------------------------------------------- RGB-mask conversion (write, move aside, rename)


def _rgb_masks(folder: Path, n: int = 8) -> list[Path]:
    import numpy as np
    from PIL import Image

    from vocseg.data.voc import PALETTE

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        labels = rng.integers(0, 4, size=(6, 8))
        rgb = np.array(PALETTE, dtype=np.uint8)[labels]
        path = folder / f"m{i}.png"
        Image.fromarray(rgb, mode="RGB").save(path)
        paths.append(path)
    return paths


def test_rgb_mask_conversion_killed_anywhere_loses_no_mask(tmp_path: Path) -> None:
    from vocseg.data.rgb_masks import convert_rgb_masks

    reference = tmp_path / "reference" / "SegmentationClass"
    masks = _rgb_masks(reference)
    originals = content_tree(reference)
    total = count_events(lambda: convert_rgb_masks(masks))
    expected = content_tree(reference.parent)
    assert set(content_tree(reference.parent / "SegmentationClass-rgb-originals").values()) == set(originals.values()) - {"dir"}

    for after in kill_points(total):
        folder = tmp_path / f"run{after}" / "SegmentationClass"
        paths = _rgb_masks(folder)
        assert killed_in_child(lambda paths=paths: convert_rgb_masks(paths), after)
        convert_rgb_masks(sorted(folder.glob("*.png")))  # the next run finds what is there
        assert content_tree(folder.parent) == expected, f"killed after record line {after}"
        assert temporary_files(folder.parent) == []


# ---------------------------------------------------------------- extraction, report, export, --save-predictions (CLI in forked children)


def _cli_ok(args: list[str | Path]) -> None:
    """`vocseg ARGS` in this process; an exit code other than 0 (Ctrl-C: 130, SIGTERM: 143) raises."""
    from vocseg.cli import run

    code = run([str(a) for a in args])
    if code:
        raise SystemExit(code)


_LOG_FOLDER = re.compile(r"(^|/)\d{8}_\d{6}(/|$)")


def _without_logs(tree: dict[str, str]) -> dict[str, str]:
    """A content tree without MMEngine's log folders (`RUN/eval/20261203_002617/`): each attempt,
    an interrupted one included, keeps the log of what it did, named by the second it started."""
    return {k: v for k, v in tree.items() if not _LOG_FOLDER.search(k)}


USER_FILE = "my_notes.txt"
USER_BYTES = b"the user's, beside the outputs\n"


def _killed_and_rerun_everywhere(
    tmp_path: Path, fresh: Callable[[Path], None], args: list[str | Path], user_folders: list[str], *, fork_server: bool = False
) -> tuple[int, int]:
    """Kill `vocseg ARGS` (writing into the workspace tmp_path/ws, made by `fresh`) at KILL_POINTS
    seeded record lines (SIGKILL, SIGTERM, SIGINT in turn) in a forked child, then run it again in
    this process. Each time: the same tree as an uninterrupted run (files whose bytes differ between
    two uninterrupted runs, e.g. a time or a pid inside, compared by name), no temporary file, the
    user's files in `user_folders` unchanged. Every run uses the same path (outputs name it).
    Returns (kill points, record lines of a clean run):
    every line is a kill point when there are fewer than KILL_POINTS."""
    ws = tmp_path / "ws"

    def prepared() -> Path:
        if ws.exists():
            shutil.rmtree(ws)
        ws.mkdir()
        fresh(ws)
        for folder in user_folders:
            (ws / folder).mkdir(parents=True, exist_ok=True)
            (ws / folder / USER_FILE).write_bytes(USER_BYTES)
        return ws

    prepared()
    total = count_events(lambda: _cli_ok(args))
    expected = _without_logs(content_tree(ws))
    prepared()
    _cli_ok(args)
    volatile = {k for k, v in _without_logs(content_tree(ws)).items() if expected.get(k) != v}
    assert volatile != set(expected) and temporary_files(ws) == []
    signals = ["KILL", "TERM", "INT"]
    points = kill_points(total)
    for i, after in enumerate(points):
        prepared()
        killed = killed_in_fresh_child(args, after, signals[i % len(signals)]) if fork_server else killed_in_child(lambda: _cli_ok(args), after, signals[i % len(signals)])
        assert killed, f"not killed after record line {after}"
        _cli_ok(args)  # the same command again
        got = _without_logs(content_tree(ws))
        assert got.keys() == expected.keys(), f"killed after record line {after}: {sorted(got.keys() ^ expected.keys())}"
        assert {k: v for k, v in got.items() if k not in volatile} == {k: v for k, v in expected.items() if k not in volatile}, f"killed after record line {after}"
        assert temporary_files(ws) == [], f"killed after record line {after}"
        for folder in user_folders:
            assert (ws / folder / USER_FILE).read_bytes() == USER_BYTES
    return len(points), total


def _cli_killed(args: list[str | Path], after: int, sig: str) -> None:
    """In a fresh child of the fork server: `vocseg ARGS` killed after its `after`-th record line."""
    import vocseg.files

    signal.alarm(600)
    vocseg.files._EVENTS = 0
    os.environ["VOCSEG_TEST_KILL_AFTER"] = str(after)
    os.environ["VOCSEG_TEST_KILL_SIGNAL"] = sig
    try:
        _cli_ok(args)
    except BaseException:  # noqa: BLE001 - SIGINT / SIGTERM end it with an exit code
        os._exit(3)
    os._exit(0)


def killed_in_fresh_child(args: list[str | Path], after: int, sig: str = "KILL") -> bool:
    """`killed_in_child` for commands that run a model: the thread pools of torch (OpenMP) and
    onnxruntime, started in this process by an earlier run, can deadlock a plain fork (seen with
    export and report); a child of multiprocessing's fork server (which has imported vocseg, torch
    and mmengine, never run a model) starts clean."""
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["vocseg.cli", "vocseg.stack.compat", "torch", "mmengine"])
    child = ctx.Process(target=_cli_killed, args=(args, after, sig))
    child.start()
    child.join()
    assert child.exitcode != -signal.SIGALRM, "the child hung (killed by its alarm)"
    return child.exitcode is not None and (child.exitcode < 0 or child.exitcode == 3)


def _tar(root: Path, out: Path, members: list[str], mode: str) -> Path:
    import tarfile

    with tarfile.open(out, mode) as tar:
        for member in members:
            tar.add(root / member, member)
    return out


def test_extraction_killed_anywhere_is_completed_by_the_next_run(tmp_path: Path) -> None:
    """`prepare --aug --from-dir` (VOC and SBD archives of a small demo: verify, extract, place,
    convert SBD, write the lists), killed at seeded points."""
    import hashlib as _hashlib

    from tests.helpers import make_demo
    from vocseg.data.demo import DEMO_MARKER
    from vocseg.data.voc import SBD_ARCHIVE, SBD_SUBDIR, SPLITS_SUBDIR, VOC_ARCHIVE, VOC_SUBDIR

    source = make_demo(tmp_path / "source", n_train=4, n_val=2, n_sbd_only=4)
    archives = tmp_path / "archives"
    archives.mkdir()
    voc = _tar(source, archives / VOC_ARCHIVE, [f"{VOC_SUBDIR}/JPEGImages", f"{VOC_SUBDIR}/SegmentationClass", *(f"{VOC_SUBDIR}/{SPLITS_SUBDIR}/{n}.txt" for n in ("train", "val", "trainval"))], "w")
    sbd = _tar(source, archives / SBD_ARCHIVE, [SBD_SUBDIR], "w:gz")
    md5s = [f"{p.name}={_hashlib.md5(p.read_bytes()).hexdigest()}" for p in (voc, sbd)]

    def fresh(ws: Path) -> None:
        (ws / "data").mkdir()
        shutil.copy(source / DEMO_MARKER, ws / "data" / DEMO_MARKER)  # the demo's split sizes

    args: list[str | Path] = ["prepare", "--aug", "--data-root", tmp_path / "ws" / "data", "--from-dir", archives, "--workers", "1", "--md5", md5s[0], "--md5", md5s[1]]
    points, _ = _killed_and_rerun_everywhere(tmp_path, fresh, args, ["data"], fork_server=True)  # no plain fork after threads of earlier tests
    assert points >= KILL_POINTS


@pytest.mark.slow
@pytest.mark.parametrize("command", ["report", "export", "eval-save-predictions"])
def test_report_export_and_saved_predictions_killed_anywhere_are_completed(command: str, trained_run: Path, tmp_path: Path) -> None:
    """report (its eval, pictures and page), export (ONNX file and its sidecar) and
    `eval --save-predictions` (one PNG per image), killed at seeded points of a run on the tiny model."""
    ws = tmp_path / "ws"
    args: list[str | Path] = {
        "report": ["report", ws / "run"],
        "export": ["export", ws / "run", "-o", ws / "out" / "model.onnx"],
        "eval-save-predictions": ["eval", trained_run, "--save-predictions", ws / "out" / "pred", "-o", ws / "out" / "eval", "--no-plots", "--workers", "0"],
    }[command]

    def fresh(ws: Path) -> None:
        if command != "eval-save-predictions":
            copy_run(trained_run, ws / "run")

    users = {"report": ["run"], "export": ["run", "out"], "eval-save-predictions": ["out"]}[command]
    run_before = content_tree(trained_run)
    points, total = _killed_and_rerun_everywhere(tmp_path, fresh, args, users, fork_server=True)
    assert points == min(KILL_POINTS, total)  # export writes 8 record lines in all: each one is a kill point
    assert content_tree(trained_run) == run_before


# ---------------------------------------------------------------- commands with a model (subprocess, fewer points)


def _vocseg(*args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    full = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "vocseg.cli", *map(str, args)], capture_output=True, text=True, env=full, cwd=cwd, timeout=600)


@pytest.mark.slow
def test_predict_and_eval_killed_are_completed_by_the_next_run(trained_run: Path, demo_root: Path, tmp_path: Path) -> None:
    """predict -o and eval -o, SIGKILLed after seeded record lines, then run again: the same files
    as an uninterrupted run (predictions' bytes; eval's result names), nothing called the user's,
    no NAME-2 copies, no temporary files; the run folder is unchanged."""
    images = sorted((demo_root / "VOCdevkit" / "VOC2012" / "JPEGImages").glob("*.jpg"))[:3]
    run_before = content_tree(trained_run)
    reference = tmp_path / "reference"
    assert _vocseg("predict", "-c", trained_run, *images, "-o", reference).returncode == 0
    expected = {k: v for k, v in content_tree(reference).items() if k.endswith(".png")}
    for after in kill_points(24, n=3, seed=SEED):  # 3 images: 2 files each, 4 record lines per file
        out = tmp_path / f"predict{after}"
        killed = _vocseg("predict", "-c", trained_run, *images, "-o", out, env={"VOCSEG_TEST_KILL_AFTER": str(after)})
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        again = _vocseg("predict", "-c", trained_run, *images, "-o", out)
        assert again.returncode == 0, again.stderr
        got = {k: v for k, v in content_tree(out).items() if k.endswith(".png")}
        assert got == expected, f"killed after record line {after}"
        assert temporary_files(out) == []

    for after in kill_points(12, n=2, seed=SEED):
        out = tmp_path / f"eval{after}"
        killed = _vocseg("eval", trained_run, "-o", out, "--no-plots", "--workers", "0", env={"VOCSEG_TEST_KILL_AFTER": str(after)})
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        again = _vocseg("eval", trained_run, "-o", out, "--no-plots", "--workers", "0")
        assert again.returncode == 0, again.stderr  # its own files are never called the user's
        assert (out / "val.json").is_file() and temporary_files(out) == []
    assert content_tree(trained_run) == run_before


@pytest.mark.slow
def test_resuming_a_copied_run_leaves_the_original_byte_for_byte(trained_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(trained_run, copy, ignore=shutil.ignore_patterns(".vocseg.lock"))
    from vocseg.files import owned_delete, owned_write_text

    # The copy as a run stopped after iteration 7 (what vocseg itself leaves): resume trains iteration 8,
    # saves, and deletes old checkpoints and the previous best, whose paths inside the checkpoint
    # name the original folder.
    owned_delete(copy / "iter_8.pth")
    owned_write_text(copy / "last_checkpoint", str(trained_run / "iter_7.pth"), role="run")
    before = content_tree(trained_run)
    before_records = {p: p.read_bytes() for p in trained_run.rglob(".vocseg-written.jsonl")}
    result = _vocseg("resume", copy)
    assert result.returncode == 0, result.stderr
    assert (copy / "iter_8.pth").is_file()
    assert content_tree(trained_run) == before
    assert {p: p.read_bytes() for p in trained_run.rglob(".vocseg-written.jsonl")} == before_records


def test_ctrl_c_prints_one_line_with_what_was_finished_and_how_to_continue(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import vocseg.files

    _small_demo(monkeypatch)
    monkeypatch.setattr(vocseg.files, "_EVENTS", 0)
    monkeypatch.setenv("VOCSEG_TEST_KILL_AFTER", "30")
    monkeypatch.setenv("VOCSEG_TEST_KILL_SIGNAL", "INT")  # as Ctrl-C: a KeyboardInterrupt in this process
    root = tmp_path / "data"
    result = cli("prepare", "--demo", "--data-root", root)
    assert result.code == 130
    line = " ".join(result.err.split())
    assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err, result.err
    assert "written completely in" in line and f"run `vocseg prepare --demo --data-root {root}` again to finish" in line
    assert cli("prepare", "--demo", "--data-root", root).code == 0 and temporary_files(root) == []


# ---------------------------------------------------------------- SIGTERM is a Ctrl-C for every command but training

_TERM_COMMANDS = ["prepare-demo", "eval", "predict", "report", "export"]


def _term_args(command: str, ws: Path, run: Path | None, demo_root: Path | None) -> list[str | Path]:
    if command == "prepare-demo":
        return ["prepare", "--demo", "--data-root", ws / "data"]
    assert run is not None and demo_root is not None
    image = sorted((demo_root / "VOCdevkit" / "VOC2012" / "JPEGImages").glob("*.jpg"))[0]
    return {
        "eval": ["eval", run, "-o", ws / "eval", "--no-plots", "--workers", "0"],
        "predict": ["predict", "-c", run, image, "-o", ws / "predict"],
        "report": ["report", run],
        "export": ["export", run, "-o", ws / "model.onnx"],
    }[command]


@pytest.mark.parametrize("command", [pytest.param(c, marks=pytest.mark.slow) if c != "prepare-demo" else c for c in _TERM_COMMANDS])
def test_sigterm_prints_one_line_exits_143_and_the_next_run_finishes(command: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """SIGTERM (VOCSEG_TEST_KILL_SIGNAL=TERM, right after the first record line) stops the command as
    Ctrl-C does: exit 143, one line on stderr (what was finished, the command that continues), no
    traceback, no temporary file; the same command then completes."""
    ws = tmp_path / "ws"
    ws.mkdir()
    run = demo_root = None
    if command != "prepare-demo":
        trained, demo_root = request.getfixturevalue("trained_run"), request.getfixturevalue("demo_root")
        run = copy_run(trained, ws / "run")  # report and export write into the run
    args = _term_args(command, ws, run, demo_root)
    killed = _vocseg(*args, env={"VOCSEG_TEST_KILL_AFTER": "1", "VOCSEG_TEST_KILL_SIGNAL": "TERM"})
    assert killed.returncode == 143, killed.stdout + killed.stderr
    lines = killed.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in killed.stderr, killed.stderr
    assert "stopped by SIGTERM" in lines[0] and "again to finish" in lines[0], lines[0]
    assert temporary_files(ws) == []
    again = _vocseg(*args)
    assert again.returncode == 0, again.stdout + again.stderr
    assert temporary_files(ws) == []


@pytest.mark.slow
@pytest.mark.parametrize("stop_at", ["launch", "runner"])
def test_train_stopped_before_its_first_checkpoint_names_the_command_that_reuses_its_folder(
    cli, demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop_at: str
) -> None:
    """Trial 2, item 1: a SIGTERM as the training starts (config.py and recipe.json written, no
    checkpoint yet): the line suggests `vocseg train RUN/config.py` (as `vocseg resume RUN` does),
    not the same `train ... --name early` again, which would start a new folder early-2; that
    command then trains RUN itself. `runner`: stopped inside MMEngine's Runner, after it created
    its timestamped log folder in RUN (trial 3, item 1: that folder, unrecorded, made the
    suggested command refuse RUN as holding the user's files)."""
    import mmengine.runner

    import vocseg.training.launch
    from tests.helpers import TINY_TRAIN

    def sigterm_at_launch(*args: object, **kwargs: object) -> int:
        os.kill(os.getpid(), signal.SIGTERM)  # the CLI's handler raises Terminated here, in the main thread
        raise AssertionError("SIGTERM did not stop the command")

    def sigterm_after_the_log_folder(self: object, *args: object, **kwargs: object) -> object:
        assert Path(self.log_dir).is_dir()  # type: ignore[attr-defined]
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the command")

    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "runs" / "early"
    with monkeypatch.context() as patched:
        if stop_at == "launch":
            patched.setattr(vocseg.training.launch, "launch_training", sigterm_at_launch)
        else:
            patched.setattr(mmengine.runner.Runner, "build_logger", sigterm_after_the_log_folder)
        stopped = cli("train", "--data-root", demo_root, *TINY_TRAIN, "--iters", "2", "--val-interval", "2", "--name", "early")
    line = " ".join(stopped.err.split())
    assert stopped.code == 143 and "Traceback" not in stopped.err, stopped.err
    assert f"run `vocseg train {run_dir / 'config.py'}` to finish." in line and "--name" not in line, line
    again = cli("train", run_dir / "config.py")
    assert again.code == 0, again.out + again.err
    assert (run_dir / "iter_2.pth").is_file() and [p.name for p in (tmp_path / "runs").iterdir() if p.name not in OWN_NAMES] == ["early"]


def test_sigterm_after_the_work_is_done_keeps_the_exit_code() -> None:
    """Trial 2, item 2: a SIGTERM once the command has returned (outputs written, success printed)
    stops nothing: in the CLI's SIGTERM mechanism it is ignored, and while the `vocseg` process
    shuts down (here: from an atexit hook, after `main` returned) it does not end a success as a
    silent exit 143."""
    from vocseg.errors import sigterm_as_interrupt

    with sigterm_as_interrupt() as sigterm:
        sigterm.finished()
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, in the main thread: no Terminated
        assert sum(range(1000)) == 499500
    late = "import atexit, os, signal, sys; atexit.register(lambda: os.kill(os.getpid(), signal.SIGTERM)); from vocseg.cli import main; sys.argv = ['vocseg', '--version']; main()"
    result = subprocess.run([sys.executable, "-c", late], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("vocseg "), (result.returncode, result.stdout, result.stderr)
    # A command that failed with an exception (a traceback) and is then SIGTERMed while the process
    # shuts down is still a failure, never exit 0.
    crashed = "import atexit, os, signal, sys; atexit.register(lambda: os.kill(os.getpid(), signal.SIGTERM)); import vocseg.cli as c; c._run = lambda *a, **k: 1 / 0; c.main()"
    result = subprocess.run([sys.executable, "-c", crashed], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0, (result.returncode, result.stdout, result.stderr)


def test_an_interruption_a_library_turned_into_its_own_error_stays_an_interruption(tmp_path: Path) -> None:
    """Trial 2, item 1 (seen at 6 s): SIGTERM while MMEngine formats config.py (yapf inside a bare
    `except:` that raises SyntaxError) must not read as a broken config: it is the interruption."""
    from vocseg.errors import Terminated
    from vocseg.training.runner import _config_errors_in_one_line

    def build() -> None:
        try:
            raise Terminated()
        except:  # noqa: E722 - as mmengine.config.Config does
            raise SyntaxError("Failed to format the config file") from None

    with pytest.raises(Terminated):
        _config_errors_in_one_line(tmp_path / "config.py", build, verbose=False)


# ---------------------------------------------------------------- SIGTERM during the SBD conversion pool


def test_sigterm_during_sbd_conversion_cancels_the_pending_jobs(tmp_path: Path) -> None:
    """`prepare --aug --workers 2` on a demo whose SBD labels are not converted yet, SIGTERMed while
    both workers are busy: the jobs not yet started are cancelled (not waited for), so fewer labels
    than all are converted; one line, exit 143; the next run converts the rest.

    One `.mat` in each of the first two jobs is a FIFO, so each worker blocks on it. The FIFOs are
    released (then put back as their `.mat`) once the command's main thread has taken the signal
    (no longer pending in /proc) and half a second more (the handler raises at once: the pending
    jobs are cancelled within microseconds); the command waits for the two running jobs (so its
    lock and its line are true), not for the rest. Without the cancellation it would go on
    converting every job."""
    import errno
    import threading
    import time

    from vocseg.data.demo import write_demo_dataset
    from vocseg.data.sbd import _chunks
    from vocseg.data.voc import SBD_SUBDIR, VOC_SUBDIR

    root = tmp_path / "data"
    write_demo_dataset(root, n_train=2, n_val=2, n_sbd_only=40)
    cls_dir, out_dir = root / SBD_SUBDIR / "cls", root / VOC_SUBDIR / "SegmentationClassAug"
    names = sorted(p.name for p in cls_dir.glob("*.mat"))
    chunks = _chunks(names, 2)
    assert len(chunks) >= 8  # 2 running + at most 3 queued in the pool's call queue: the rest are pending
    blockers = [cls_dir / chunks[0][-1], cls_dir / chunks[1][-1]]
    saved = {p: p.read_bytes() for p in blockers}
    for path in blockers:
        path.unlink()
        os.mkfifo(path)
    args = ["prepare", "--aug", "--data-root", str(root), "--workers", "2"]
    lines: list[str] = []
    proc = subprocess.Popen([sys.executable, "-m", "vocseg.cli", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    def signal_pending(pid: int) -> bool:
        """SIGTERM still pending for the process or its main thread (bit 15 of SigPnd/ShdPnd)."""
        try:
            status = Path(f"/proc/{pid}/task/{pid}/status").read_text()
        except OSError:
            return False
        masks = [int(line.split()[1], 16) for line in status.splitlines() if line.startswith(("SigPnd:", "ShdPnd:"))]
        return any(mask & (1 << (signal.SIGTERM - 1)) for mask in masks)

    try:
        deadline = time.monotonic() + 300  # a guard against a hang, never an assertion on time
        while proc.poll() is None and not any(out_dir.glob("*.png")) and time.monotonic() < deadline:
            time.sleep(0.05)  # a worker has started converting
        assert any(out_dir.glob("*.png")), "no label converted: the command did not start its workers"
        proc.send_signal(signal.SIGTERM)
        while proc.poll() is None and signal_pending(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.5)
        stopped = threading.Event()

        def read_stderr() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                lines.append(line)
                if "stopped by SIGTERM" in line:
                    stopped.set()

        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        released: set[Path] = set()
        while proc.poll() is None and len(released) < len(blockers) and time.monotonic() < deadline:  # let each blocked worker read an empty file
            for path in set(blockers) - released:
                try:
                    os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
                    released.add(path)
                except OSError as exc:
                    if exc.errno != errno.ENXIO:  # ENXIO: no reader (yet)
                        raise
            time.sleep(0.05)
        stopped.wait(timeout=300)  # the line comes once the two running jobs ended: a guard, not an assertion
        proc.wait(timeout=300)
        reader.join(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, "".join(lines)
    assert len(lines) == 1 and "Traceback" not in lines[0] and "again to finish" in lines[0], lines
    converted = len(list(out_dir.glob("*.png")))
    assert 0 < converted < len(names) - len(blockers), converted
    assert temporary_files(out_dir) == []
    for path, data in saved.items():
        path.unlink()
        path.write_bytes(data)
    again = _vocseg(*args)
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(list(out_dir.glob("*.png"))) == len(names) and temporary_files(root) == []
