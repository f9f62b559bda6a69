"""One owner of every file (issue 19): every write, replace and delete in src/ goes through
`vocseg.files`; the rule refuses, in one line, a user's file, an edited vocseg file, a link and a
FIFO; locks never follow links nor truncate what is not a lock; checkpoint paths are re-rooted.

Kills at seeded points of multi-step writes are in test_interrupt.py.
"""

from __future__ import annotations

import ast
import os
import shutil
from pathlib import Path

import pytest

from vocseg.errors import VocsegError
from vocseg.files import (
    RECORD_NAME,
    LockBusy,
    atomic_writer,
    check_may_write,
    lock,
    owned_delete,
    owned_mkdir,
    owned_replace,
    owned_rmtree,
    owned_write_bytes,
    owned_write_text,
    recorded,
    remove_stale_temps,
)

SRC = Path(__file__).resolve().parents[1] / "src" / "vocseg"


def tree(folder: Path) -> dict[str, str]:
    """Every path under `folder` -> its bytes' sha256, 'dir', 'link:TARGET' or 'fifo' (never opened)."""
    import hashlib
    import stat

    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = os.lstat(path)
            rel = str(path.relative_to(folder))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = "link:" + os.readlink(path)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = "dir"
            elif stat.S_ISREG(st.st_mode):
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                out[rel] = "special"
    return out

# ---------------------------------------------------------------- every call site goes through the owner

# Calls that write, replace, move or delete. `replace` counts as os.replace / Path.replace (one
# argument; str.replace takes two), `save` as PIL/np/torch saves to a path.
_MUTATORS = {
    "unlink", "rmtree", "rename", "truncate", "ftruncate", "write_text", "write_bytes", "mkdir", "makedirs",
    "removedirs", "rmdir", "link", "symlink", "symlink_to", "hardlink_to", "savefig", "put",
}
_THROUGH_OWNER = {"tmp", "f", "buf", "buffer"}  # names bound by vocseg.files.atomic_writer or in-memory buffers

# The only direct calls outside vocseg/files.py, each with why it is the owner's work all the same.
ALLOWED = {
    "data/extract.py:mkdir": "os.mkdir of a member's folder inside the staging folder vocseg created (recorded, role staging)",
    "data/extract.py:fdopen('wb')": "a member written with O_EXCL|O_NOFOLLOW inside that staging folder; the tree is placed with files.place_tree",
}


def _mode(call: ast.Call) -> str | None:
    if len(call.args) >= 2 and isinstance(call.args[1], ast.Constant):
        return str(call.args[1].value)
    for k in call.keywords:
        if k.arg == "mode" and isinstance(k.value, ast.Constant):
            return str(k.value.value)
    return None


def write_sites(path: Path) -> list[tuple[int, str]]:
    """(line, kind) of every call in `path` that writes, replaces, moves or deletes a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        receiver = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
        first = node.args[0].id if node.args and isinstance(node.args[0], ast.Name) else ""
        kind = None
        if name in _MUTATORS and not (name == "savefig" and first in _THROUGH_OWNER):
            kind = name
        elif name in ("remove", "move", "copy", "copy2", "copyfile", "copytree") and receiver in ("os", "shutil"):
            kind = f"{receiver}.{name}"
        elif name == "replace" and (receiver == "os" or (len(node.args) == 1 and not node.keywords)):
            kind = "replace"
        elif name in ("open", "fdopen") and receiver in ("", "io", "os") and (_mode(node) or "r").strip("rbt") != "":
            kind = f"{name}({_mode(node)!r})"
        elif name == "open" and receiver == "os" and "O_CREAT" in ast.unparse(node):
            kind = "os.open(O_CREAT)"
        elif name == "save" and receiver not in ("np",) and node.args and first not in _THROUGH_OWNER:
            kind = "save"
        if kind:
            found.append((node.lineno, kind))
    return found


def test_every_write_replace_and_delete_goes_through_vocseg_files() -> None:
    outside: dict[str, list[int]] = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel == "files.py":
            continue
        for line, kind in write_sites(path):
            outside.setdefault(f"{rel}:{kind}", []).append(line)
    new = {k: v for k, v in outside.items() if k not in ALLOWED}
    assert not new, "write, replace or delete outside vocseg.files (route it through the owner): " + "; ".join(f"{k} lines {v}" for k, v in sorted(new.items()))
    stale = set(ALLOWED) - set(outside)
    assert not stale, f"allowed but gone (remove from ALLOWED): {sorted(stale)}"


def test_the_walker_finds_each_kind(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import os, shutil\n"
        "p.unlink()\nshutil.rmtree(p)\nos.replace(a, b)\np.replace(q)\n'x'.replace('a', 'b')\n"
        "open(p, 'w')\nopen(p)\np.write_text('x')\nimg.save(path)\nimg.save(tmp)\nfig.savefig(tmp)\n"
        "os.open(p, os.O_WRONLY | os.O_CREAT)\np.mkdir()\nos.remove(p)\n"
    )
    kinds = [k for _, k in write_sites(probe)]
    assert kinds == ["unlink", "rmtree", "replace", "replace", "open('w')", "write_text", "save", "os.open(O_CREAT)", "mkdir", "os.remove"]


# ---------------------------------------------------------------- the rule, for every kind of thing in the way


def _situation(kind: str, target: Path, outside: Path) -> None:
    """Put a user's file, an edited vocseg file, a link to outside or a FIFO at `target`."""
    if kind == "user file":
        target.write_text("mine\n")
    elif kind == "edited vocseg file":
        owned_write_text(target, "vocseg's\n")
        target.write_text("vocseg's, edited by hand\n")
    elif kind == "link to outside":
        target.symlink_to(outside)
    elif kind == "fifo":
        os.mkfifo(target)


SITUATIONS = ["user file", "edited vocseg file", "link to outside", "fifo"]


def _one_line(exc: Exception, target: Path) -> None:
    text = str(exc)
    assert "\n" not in text and str(target) in text, text


@pytest.mark.parametrize("kind", SITUATIONS)
@pytest.mark.parametrize(
    "operation",
    ["write_bytes", "atomic_writer", "delete", "replace_onto", "rmtree", "mkdir_below", "lock"],
)
def test_the_rule_refuses_everything_not_vocsegs(tmp_path: Path, kind: str, operation: str) -> None:
    folder, outside = tmp_path / "out", tmp_path / "outside.txt"
    folder.mkdir()
    outside.write_text("outside\n")
    target = folder / "result.json"
    _situation(kind, target, outside)
    before = tree(tmp_path)
    with pytest.raises((VocsegError, NotADirectoryError)) as err:  # a file above a folder to make: the CLI's OSError line
        if operation == "write_bytes":
            owned_write_bytes(target, b"new")
        elif operation == "atomic_writer":
            with atomic_writer(target) as tmp:
                tmp.write_bytes(b"new")
        elif operation == "delete":
            owned_delete(target)
        elif operation == "replace_onto":
            source = owned_write_text(folder / "fresh.json", "fresh")
            before = tree(tmp_path)
            owned_replace(source, target)
        elif operation == "rmtree":
            kept = owned_rmtree(target)
            assert kept == [target]
            raise VocsegError(f"kept {target}")
        elif operation == "mkdir_below":
            owned_mkdir(target / "sub")
        elif operation == "lock":
            with lock(folder, target.name):
                pass
    _one_line(err.value, target)
    assert tree(tmp_path) == before
    assert outside.read_text() == "outside\n"


@pytest.mark.parametrize("kind", SITUATIONS)
def test_force_replaces_only_a_regular_file(tmp_path: Path, kind: str) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("outside\n")
    target = tmp_path / "result.json"
    _situation(kind, target, outside)
    if kind in ("user file", "edited vocseg file"):
        owned_write_bytes(target, b"new", force=True)
        assert target.read_bytes() == b"new" and recorded(target)
    else:
        before = tree(tmp_path)
        with pytest.raises(VocsegError) as err:
            owned_write_bytes(target, b"new", force=True)
        _one_line(err.value, target)
        assert tree(tmp_path) == before
    assert outside.read_text() == "outside\n"


def test_force_never_touches_an_input_or_a_protected_folder(tmp_path: Path) -> None:
    masks = tmp_path / "SegmentationClass"
    masks.mkdir()
    (masks / "a.png").write_bytes(b"mask")
    with pytest.raises(VocsegError, match="never writes into"):
        owned_write_bytes(masks / "a.png", b"pred", force=True, protect=[masks])
    with pytest.raises(VocsegError, match="inputs"):
        owned_write_bytes(masks / "a.png", b"pred", force=True, inputs=[masks / "a.png"])
    assert (masks / "a.png").read_bytes() == b"mask"


def test_no_write_through_a_linked_folder_below_the_root(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (root / "eval").symlink_to(elsewhere)
    with pytest.raises(VocsegError, match="symbolic link"):
        owned_write_text(root / "eval" / "val.json", "{}", root=root)
    with pytest.raises(VocsegError, match="outside"):
        owned_write_text(tmp_path / "x.json", "{}", root=root)
    assert list(elsewhere.iterdir()) == []


def test_vocsegs_own_unchanged_files_are_written_again_and_deleted(tmp_path: Path) -> None:
    target = owned_write_text(tmp_path / "sub" / "a.json", "1")
    owned_write_text(target, "2")
    assert recorded(target) and recorded(tmp_path / "sub")
    (tmp_path / "sub" / "mine.txt").write_text("mine")
    assert owned_rmtree(tmp_path / "sub") == [tmp_path / "sub" / "mine.txt"]
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == [RECORD_NAME, "mine.txt"]


def test_the_record_is_never_in_the_folder_above_what_vocseg_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    owned_write_text(Path("runs") / "x" / "a.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # no record in the current folder


def test_a_killed_write_leaves_a_record_that_names_both_versions(tmp_path: Path) -> None:
    """The pending line is written before the rename: old or new, the file is vocseg's."""
    import json

    target = owned_write_text(tmp_path / "a.json", "old")
    with open(tmp_path / RECORD_NAME, "a") as journal:  # as if killed between the two steps
        journal.write(json.dumps({"f": "a.json", "h": "0" * 64, "n": 3, "r": "output", "p": 1}) + "\n")
    assert recorded(target)
    with open(tmp_path / RECORD_NAME, "a") as journal:
        journal.write('{"f": "a.json", "h": "trunc')  # a line cut short by the kill: ignored
    assert recorded(target)


# ---------------------------------------------------------------- temporary files and locks


def test_stale_temps_go_only_where_the_record_says_vocseg_made_them(tmp_path: Path) -> None:
    users = tmp_path / ".notes.99999999.tmp"  # the old rule deleted any .X.N.tmp of a dead pid
    users.write_text("mine")
    record = tmp_path / RECORD_NAME
    record.write_text('{"t": ".a.json.99999998.tmp", "pid": 99999998}\n')
    (tmp_path / ".a.json.99999998.tmp").write_text("half")
    assert remove_stale_temps(tmp_path) == [tmp_path / ".a.json.99999998.tmp"]
    assert users.read_text() == "mine"


def test_a_lock_is_removed_on_release_and_busy_while_held(tmp_path: Path) -> None:
    with lock(tmp_path, ".x.lock"):
        assert (tmp_path / ".x.lock").read_text() == str(os.getpid())
        import subprocess
        import sys

        code = "import sys\nfrom vocseg.files import lock, LockBusy\ntry:\n    with lock(sys.argv[1], '.x.lock'): sys.exit(0)\nexcept LockBusy: sys.exit(3)\n"
        assert subprocess.run([sys.executable, "-c", code, str(tmp_path)]).returncode == 3
    assert not (tmp_path / ".x.lock").exists()
    assert LockBusy("1").holder == "1"


def test_a_lock_never_truncates_a_file_that_is_not_a_lock(tmp_path: Path) -> None:
    (tmp_path / ".vocseg.lock").write_text("my notes, not a pid\n")
    with pytest.raises(VocsegError, match="not a vocseg lock"):
        with lock(tmp_path, ".vocseg.lock"):
            pass
    assert (tmp_path / ".vocseg.lock").read_text() == "my notes, not a pid\n"


# ---------------------------------------------------------------- MMEngine's deletions


class _Logger:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, line: str) -> None:
        self.lines.append(line)


class _Runner:
    def __init__(self) -> None:
        self.logger = _Logger()


def test_checkpoint_paths_are_rerooted_and_an_outside_path_deletes_nothing(tmp_path: Path) -> None:
    from vocseg.training.checkpoint_hook import SafeCheckpointHook

    original, copy = tmp_path / "original", tmp_path / "copy"
    owned_write_bytes(original / "best_mIoU_iter_4.pth", b"weights")
    shutil.copytree(original, copy)  # a copied run folder: its record came along
    outside = tmp_path / "precious.pth"
    outside.write_bytes(b"not vocseg's")
    hook = SafeCheckpointHook.__new__(SafeCheckpointHook)
    hook.out_dir = str(copy)
    runner = _Runner()
    before = tree(original)
    assert hook._delete(runner, str(original / "best_mIoU_iter_4.pth"))  # the copy's own file of that name
    assert not (copy / "best_mIoU_iter_4.pth").exists() and tree(original) == before
    assert not hook._delete(runner, str(outside))  # re-rooted: copy/precious.pth does not exist
    (copy / "iter_2.pth").write_bytes(b"the user's")
    assert not hook._delete(runner, str(copy / "iter_2.pth"))  # not vocseg's: kept, noted in the log
    assert outside.read_bytes() == b"not vocseg's" and (copy / "iter_2.pth").read_bytes() == b"the user's"
    assert any("Kept" in line for line in runner.logger.lines)


def test_check_may_write_names_a_special_file_for_what_it_is(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(VocsegError, match="a FIFO"):
        check_may_write(tmp_path / "pipe", force=True)


def test_a_checkpoint_naming_outside_paths_deletes_nothing_end_to_end(cli, trained_run: Path, tmp_path: Path) -> None:
    """A run whose checkpoint names, as its previous best and last checkpoint, a user's file outside
    the run and a file inside another run (MMEngine's `best_ckpt` / `last_ckpt` in `message_hub`),
    resumed through the CLI with a best score it is sure to beat: the hook's "delete the previous
    best" and "delete old checkpoints" touch only the run's own files; the outside ones stay byte
    for byte."""
    import hashlib

    import torch

    from tests.helpers import copy_run
    from vocseg.stack.compat import load_checkpoint_file

    run, other = copy_run(trained_run, tmp_path / "run"), copy_run(trained_run, tmp_path / "other")
    users = tmp_path / "mine"
    users.mkdir()
    precious = users / "best_mIoU_iter_3.pth"  # the name the run's own best has: re-rooted, not followed
    precious.write_bytes(b"the user's weights\n")
    elsewhere = users / "notes.pth"
    elsewhere.write_bytes(b"the user's notes\n")

    checkpoint = load_checkpoint_file(run / "iter_7.pth")
    info = checkpoint["message_hub"]["runtime_info"]
    info["best_ckpt"] = str(precious)
    info["last_ckpt"] = str(other / "iter_7.pth")
    info["best_score"] = -1.0  # iteration 8's mIoU beats it: the hook removes "the previous best"
    info["keep_ckpt_ids"] = [5, 6, 7]
    owned_delete(run / "iter_8.pth")
    with atomic_writer(run / "iter_7.pth", role="run") as tmp:
        torch.save(checkpoint, tmp)
    owned_write_text(run / "last_checkpoint", str(other / "iter_7.pth"), role="run")  # another run's, as a copied folder has

    def hashed(folder: Path) -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}

    before_users, before_other = hashed(users), tree(other)
    result = cli("resume", run)
    assert result.code == 0, result.out + result.err
    assert (run / "iter_8.pth").is_file()
    assert hashed(users) == before_users  # the outside "previous best" and the user's notes
    assert tree(other) == before_other  # the other run, record included
    assert not (run / "best_mIoU_iter_3.pth").exists() and list(run.glob("best_mIoU_iter_8.pth"))  # the run's own best moved on
