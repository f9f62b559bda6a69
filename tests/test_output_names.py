"""Every output name of every command vs what a user may have put there (issue 19, "Done when").

For each command that writes files, through the CLI (real commands, the tiny trained run): at each
name it writes, in turn, (a) a user's regular file, (b) a file vocseg wrote there and the user
edited since, (c) a symbolic link to a file outside the folder, (d) a FIFO. Then the command runs
and the placed thing must be unchanged (bytes hashed; the link's target and the target's bytes;
still a FIFO, never opened: a watchdog releases a blocked open and fails the case), the command
exits non-zero, or, for predict, writes elsewhere (`NAME-2_*`) and says so, and exactly one line
of its output names the path.

The table of names (`TABLE`) is checked against what each command actually writes into a clean
folder (`test_the_table_is_every_name_the_commands_write`), so it is neither hand-picked nor
stale: per-image names are generalised (`ID`), MMEngine's timestamped log folders left out.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import TINY_TRAIN, copy_run
from vocseg.files import OWN_NAMES

SITUATIONS = ("user", "edited", "link", "fifo")
SEED_RUNS = Path(__file__).parent / "data" / "seed_runs.json"
FIFO_LIMIT_S = 420.0  # a command still running this long after start with a FIFO in its way is taken as blocked in open()

# command -> the names it writes, relative to its workspace (see `_args`): "out/" an output folder
# given with -o / --save-predictions / --chart, "run/" a copy of the tiny run, "data/" a data root.
TABLE: dict[str, tuple[str, ...]] = {
    "config": ("out/c.py",),
    "eval": ("out/config.py", "out/val.csv", "out/val.json", "out/val_confusion.png", "out/val_images.json", "out/val_iou.png"),
    "eval-save-predictions": ("out/ID.png",),
    "predict": ("out/ID_label.png", "out/ID_overlay.png", "out/predictions.json"),
    "compare": ("out/c.json", "out/c.png"),
    "report": (
        "run/report.html", "run/eval/config.py", "run/eval/val.csv", "run/eval/val.json",
        "run/eval/val_confusion.png", "run/eval/val_images.json", "run/eval/val_iou.png",
    ),
    "export": ("run/iter_ID.onnx", "run/iter_ID.onnx.json"),
    "train": ("run/best_mIoU_iter_ID.pth", "run/config.py", "run/curves.png", "run/iter_ID.pth", "run/last_checkpoint", "run/recipe.json"),
    "prepare-demo": (
        "data/vocseg_demo.json",
        "data/VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt", "data/VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt",
        "data/VOCdevkit/VOC2012/ImageSets/Segmentation/trainval.txt", "data/VOCdevkit/VOC2012/ImageSets/Segmentation/aug.txt",
        "data/VOCdevkit/VOC2012/ImageSets/Segmentation/trainaug.txt",
        "data/VOCdevkit/VOC2012/JPEGImages/ID.jpg", "data/VOCdevkit/VOC2012/SegmentationClass/ID.png",
        "data/VOCdevkit/VOC2012/SegmentationClassAug/ID.png",
        "data/benchmark_RELEASE/dataset/train.txt", "data/benchmark_RELEASE/dataset/val.txt",
        "data/benchmark_RELEASE/dataset/img/ID.jpg", "data/benchmark_RELEASE/dataset/cls/ID.mat",
    ),
}
# Commands that, run again over their own complete results, reuse them and write nothing at that
# name: report takes the run's existing eval/ results (it evaluates only when there are none), and
# prepare --demo finds the complete demo dataset. A file of theirs the user edited is then left as
# it is and the command succeeds (the `edited` situation only; a user's file, a link or a FIFO
# there is refused as everywhere else).
REUSES = {"report": "run/eval/", "prepare-demo": "data/"}
_ID = re.compile(r"\d{4}_\d{6}|(?<=iter_)\d+")
_TIMESTAMP = re.compile(r"(^|/)\d{8}_\d{6}(/|$)")


def _general(name: str) -> str:
    return _ID.sub("ID", name)


def _args(command: str, ws: Path, run: Path, demo_root: Path) -> list[str | Path]:
    """The command line of `command` writing into the workspace `ws`."""
    image = sorted((demo_root / "VOCdevkit" / "VOC2012" / "JPEGImages").glob("*.jpg"))[0]
    return {
        "config": ["config", "--data-root", demo_root, "--model", "tiny", "-o", ws / "out" / "c.py"],
        "eval": ["eval", run, "-o", ws / "out", "--workers", "0"],
        "eval-save-predictions": ["eval", run, "--save-predictions", ws / "out", "-o", ws / "results", "--no-plots", "--workers", "0"],
        "predict": ["predict", "-c", run, image, "-o", ws / "out"],
        "compare": ["compare", SEED_RUNS, "--chart", ws / "out" / "c.png", "--json", ws / "out" / "c.json"],
        "report": ["report", ws / "run"],
        "export": ["export", ws / "run"],
        "train": ["train", "--data-root", demo_root, *TINY_TRAIN, "--iters", "8", "--work-dir", ws / "run"],
        "prepare-demo": ["prepare", "--demo", "--data-root", ws / "data"],
    }[command]


def _written(folder: Path) -> dict[str, str]:
    """Every regular file under `folder` -> sha256, without vocseg's records and MMEngine's timestamped log folders."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.name in OWN_NAMES or _TIMESTAMP.search(rel) or not path.is_file() or path.is_symlink():
            continue
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _small_demo(mp: pytest.MonkeyPatch) -> None:
    import functools

    import vocseg.data.demo

    mp.setattr(vocseg.data.demo, "write_demo_dataset", functools.partial(vocseg.data.demo.write_demo_dataset, n_train=4, n_val=2, n_sbd_only=4))


def _wide(mp: pytest.MonkeyPatch) -> None:
    """No wrapping by rich at 80 columns: a line of the command is one line of the captured text."""
    import vocseg.console

    for c in (vocseg.console.console, vocseg.console.err_console):
        mp.setattr(c, "_width", 100_000)


class Workspaces:
    """One clean run of each command (the reference) and a fresh workspace per case."""

    def __init__(self, root: Path, run: Path, demo_root: Path, invoke: Callable[[list[str | Path]], tuple[int, str, str]]) -> None:
        self.root, self.run, self.demo_root, self.invoke = root, run, demo_root, invoke
        self.reference: dict[str, Path] = {}
        self.written: dict[str, dict[str, str]] = {}
        self.n = 0

    def fresh(self, command: str) -> Path:
        self.n += 1
        ws = self.root / f"case{self.n}"
        ws.mkdir()
        if command in ("report", "export"):
            copy_run(self.run, ws / "run")
        return ws

    def clean(self, command: str) -> Path:
        """The workspace of one uninterrupted run of `command` (made once)."""
        if command == "train" and command not in self.reference:  # the session's tiny run is that command's clean run
            ws = self.fresh(command)
            copy_run(self.run, ws / "run")
            self.written[command] = {"run/" + k: v for k, v in _written(self.run).items()}
            self.reference[command] = ws
        if command not in self.reference:
            ws = self.fresh(command)
            before = _written(ws)
            code, out, err = self.invoke(_args(command, ws, self.run, self.demo_root))
            assert code == 0, f"{command}: {out}\n{err}"
            after = _written(ws)
            self.written[command] = {k: v for k, v in after.items() if before.get(k) != v}
            self.reference[command] = ws
        return self.reference[command]

    def edited_copy(self, command: str) -> Path:
        """A copy of the reference workspace (its records came along: vocseg's files stay vocseg's)."""
        self.n += 1
        ws = self.root / f"case{self.n}"
        copy_run(self.clean(command), ws)
        return ws


@pytest.fixture(scope="module")
def workspaces(trained_run: Path, demo_root: Path, tmp_path_factory: pytest.TempPathFactory):
    from vocseg.cli import run as vocseg_run

    def invoke(args: list[str | Path]) -> tuple[int, str, str]:
        import contextlib
        import io

        out, err = io.StringIO(), io.StringIO()
        with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            _small_demo(mp)
            _wide(mp)
            code = vocseg_run([str(a) for a in args])
        return code, out.getvalue(), err.getvalue()

    from tests.helpers import file_tree

    before = file_tree(trained_run)
    yield Workspaces(tmp_path_factory.mktemp("names"), trained_run, demo_root, invoke)
    assert file_tree(trained_run) == before, "the session's run was changed (through a hard link?)"


def _concrete(command: str, name: str, ws: Workspaces) -> str:
    """The table's `ID` name as the reference run of `command` wrote it (the first such file)."""
    if "ID" not in name:
        return name
    matches = sorted(n for n in ws.written[command] if _general(n) == name)
    assert matches, f"{command} wrote no {name}"
    return matches[0]


# ---------------------------------------------------------------- the table is what the commands write


@pytest.mark.slow
@pytest.mark.parametrize("command", list(TABLE))
def test_the_table_is_every_name_the_commands_write(command: str, workspaces: Workspaces) -> None:
    workspaces.clean(command)
    written = {_general(n) for n in workspaces.written[command] if not n.startswith("results/")}
    assert written == set(TABLE[command])


# ---------------------------------------------------------------- each name vs what may be there


def _state(path: Path, outside: Path) -> tuple[str, ...]:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return ("link", os.readlink(path), hashlib.sha256(outside.read_bytes()).hexdigest())
    if stat.S_ISFIFO(st.st_mode):
        return ("fifo",)
    return ("file", hashlib.sha256(path.read_bytes()).hexdigest())


def _guarded(invoke: Callable[[list[str | Path]], tuple[int, str, str]], args: list[str | Path], fifo: Path | None) -> tuple[int, str, str, bool]:
    """Run the command; with a FIFO in its way, a watchdog opens it (O_RDWR never blocks) if the
    command is still running after FIFO_LIMIT_S, which releases an open() blocked on it and fails
    the case instead of hanging the suite. Returns (code, out, err, blocked)."""
    done, blocked = threading.Event(), threading.Event()

    def watch() -> None:
        if fifo is None or done.wait(FIFO_LIMIT_S):
            return
        blocked.set()
        while not done.is_set():  # release each open() on it until the command ends
            fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
            done.wait(0.5)
            os.close(fd)

    watchdog = threading.Thread(target=watch, daemon=True)
    watchdog.start()
    try:
        code, out, err = invoke(args)
    finally:
        done.set()
        watchdog.join()
    return code, out, err, blocked.is_set()


CASES = [(c, n) for c, names in TABLE.items() for n in names]


@pytest.mark.slow
@pytest.mark.parametrize("situation", SITUATIONS)
@pytest.mark.parametrize(("command", "name"), CASES, ids=[f"{c}:{n}" for c, n in CASES])
def test_nothing_placed_at_an_output_name_is_changed_and_it_is_named(command: str, name: str, situation: str, workspaces: Workspaces, tmp_path: Path) -> None:
    workspaces.clean(command)
    concrete = _concrete(command, name, workspaces)
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"a file of the user's outside the folder\n")
    if situation == "edited":
        ws = workspaces.edited_copy(command)
        target = ws / concrete
        data = target.read_bytes()  # the user edits vocseg's file (a new inode: never the hard-linked original's)
        target.unlink()
        target.write_bytes(data + b"\n# edited by hand\n")
    else:
        ws = workspaces.fresh(command)
        target = ws / concrete
        target.parent.mkdir(parents=True, exist_ok=True)
        if situation == "user":
            target.write_bytes(b"the user's own file\n")
        elif situation == "link":
            target.symlink_to(outside)
        else:
            os.mkfifo(target)
    before = _state(target, outside)

    code, out, err, blocked = _guarded(workspaces.invoke, _args(command, ws, workspaces.run, workspaces.demo_root), target if situation == "fifo" else None)

    assert not blocked, f"the command opened the FIFO {target} and blocked"
    assert _state(target, outside) == before, f"{target} was changed"
    assert outside.read_bytes() == b"a file of the user's outside the folder\n"
    text = out + err
    assert "Traceback" not in text, text
    if code == 0 and situation == "edited" and concrete.startswith(REUSES.get(command, "\0")):
        return  # nothing was to be written at that name (see REUSES); it was left as it is
    if code == 0:  # a mature tool writes elsewhere and says so (predict's NAME-2_* scheme)
        assert command == "predict", f"{command} went on over {target}:\n{text}"
        naming = [line for line in text.splitlines() if target.name in line]
        assert len(naming) == 1 and "instead" in naming[0], f"not one line naming {target}:\n{text}"
        if target.name != "predictions.json":
            stem, kind = target.name.rsplit("_", 1)
            assert (target.parent / f"{stem}-2_{kind}").is_file(), naming[0]
        return
    # Refused: one error line, naming the path or the folder (inside the workspace) that holds it
    # (a data root's tree that is not the demo's, a run folder that already holds a run).
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, f"not one error line (exit {code}):\n{text}"
    named = [target, *(p for p in target.parents if ws in p.parents)]
    assert any(str(p) in errors[0] for p in named) or (str(target.parent) in errors[0] and target.name in errors[0]), f"{target} not named:\n{errors[0]}"
