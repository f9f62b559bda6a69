"""The one owner of every file vocseg writes: one record, one rule, one atomic writer, one lock.

The rule (docs/trust.md). vocseg writes, replaces, moves aside, truncates or deletes a path only
when this module allows it:

- a new name (nothing there), inside the folder the command was given (`root`), reached without
  following a symbolic link;
- or a file the record proves vocseg created there and nobody changed since (same size, same
  sha256);
- or, with `force`, a regular file the user named as an output (never an input of the command,
  never a path in `protect`, e.g. a dataset's masks, never a folder, a link or a special file:
  FIFO, device, socket).

Everything else raises `VocsegError`: one line naming the path and the next step.

The record. Every folder vocseg writes into holds `.vocseg-written.jsonl`, an append-only journal,
one JSON object per line, written *before* the step it describes, so a command killed at any
point (SIGKILL included) leaves a record that is true:

    {"t": NAME, "pid": PID}                       a temporary file NAME is about to be created
    {"f": NAME, "h": SHA256, "n": SIZE, "r": ROLE, "p": 1}
                                                  NAME is about to be replaced by these bytes (pending:
                                                  NAME holds its recorded bytes or these)
    {"f": NAME, "h": SHA256, "n": SIZE, "r": ROLE}  NAME holds exactly these bytes (committed)
    {"d": ".", "r": ROLE}                         vocseg created this folder (recorded inside the folder
                                                  itself, so the folder it was created in, e.g. the
                                                  current folder, gets no record)
    {"d": NAME, "r": ROLE}                        vocseg is about to create the folder NAME here (only in
                                                  a folder that already has a record: a run folder, a
                                                  results folder), so that a kill between the mkdir
                                                  and the folder's own line leaves a true record
    {"x": NAME}                                   NAME (file, folder or temporary) is gone

A half-written last line (a kill inside `write`) is ignored. `ROLE` says who wrote the file
("output", "run", "data", ...). Files written by others on vocseg's behalf (MMEngine's checkpoints
and logs) are recorded right after they are written (`record_written`).

API (small on purpose; everything else in vocseg goes through it):

- `owned_write_bytes(path, data, root=, role=, force=)` / `owned_write_text`: check, write to a
  recorded temporary file, fsync, rename into place, record.
- `atomic_writer(path, ...)`: the same for writers that need a file name (matplotlib `savefig`,
  PIL `save`, `torch.save`, ONNX): `with atomic_writer(p) as tmp: fig.savefig(tmp)`.
- `owned_mkdir(path, root=)`: create the missing folders, recorded; never through a link.
- `owned_delete(path)`, `owned_rmtree(path)`: delete only what the record proves is vocseg's and
  unchanged; what is not vocseg's stays and is named.
- `owned_replace(src, dst)`: move a recorded file or folder to a new name (a rename, both recorded).
- `check_may_write(path, ...)`, `check_output_folder(folder, ...)`, `may_delete(path)`: the rule
  alone, before a long computation.
- `recorded(path, role=)`: whether vocseg created `path` and it is unchanged.
- `remove_stale_temps(folder)`: delete the temporary files of killed processes the record names.
- `read_regular(path)`: read an earlier output back (a regular file only: no link, no FIFO).
- `lock(folder, name)`: one process at a time (flock on a file created with O_NOFOLLOW in
  `folder`, which holds only a pid and is removed on release).

Fault injection for tests: `VOCSEG_TEST_KILL_AFTER=N` makes the process kill itself (SIGKILL, or
the signal named by `VOCSEG_TEST_KILL_SIGNAL`: INT, TERM) right after its N-th record line: every
step of every multi-step write can be interrupted deterministically.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from vocseg.errors import VocsegError

RECORD_NAME = ".vocseg-written.jsonl"
MANIFEST_NAME = RECORD_NAME  # the name earlier versions imported
_LEGACY_MANIFEST = ".vocseg-written.json"  # {"files": {name: {"sha256", "role"}}} of vocseg <= 0.x
OWN_NAMES = frozenset({RECORD_NAME, _LEGACY_MANIFEST})  # never an output, never listed as the user's

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_BINARY = getattr(os, "O_BINARY", 0)


# ---------------------------------------------------------------- the record


@dataclass
class FolderRecord:
    """What the journal of one folder says. `files`: name -> (role, {(sha256, size)} it may hold);
    `dirs`: name -> role; `temps`: temporary name -> pid of the process that made it."""

    files: dict[str, tuple[str, set[tuple[str, int]]]] = field(default_factory=dict)
    dirs: dict[str, str] = field(default_factory=dict)
    temps: dict[str, int] = field(default_factory=dict)
    lines: int = 0

    def apply(self, event: dict) -> None:
        self.lines += 1
        if "f" in event:
            name, digest = str(event["f"]), (str(event.get("h")), int(event.get("n", -1)))
            role = str(event.get("r", "output"))
            if event.get("p") and name in self.files:
                self.files[name] = (role, self.files[name][1] | {digest})
            else:
                self.files[name] = (role, {digest})
        elif "d" in event:
            self.dirs[str(event["d"])] = str(event.get("r", "output"))
        elif "t" in event:
            self.temps[str(event["t"])] = int(event.get("pid", 0))
        elif "x" in event:
            name = str(event["x"])
            self.files.pop(name, None)
            self.dirs.pop(name, None)
            self.temps.pop(name, None)


_CACHE: dict[Path, tuple[int, int, int, FolderRecord]] = {}  # folder -> (st_ino, offset read, mtime_ns, record)
_EVENTS = 0  # record lines this process wrote (VOCSEG_TEST_KILL_AFTER)
_WRITTEN: dict[Path, int] = {}  # folder -> files this process completed there (for the Ctrl-C line)


def _read_regular(path: Path) -> tuple[os.stat_result, bytes] | None:
    """The bytes of `path` if it is a regular file (never following a link, never opening a FIFO)."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC | _BINARY)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        return st, b"".join(chunks)
    finally:
        os.close(fd)


def read_regular(path: str | Path) -> bytes | None:
    """The bytes of `path` when it is a regular file; None for a link (never followed), a FIFO or
    device (never blocked on), a folder or nothing. For inputs that sit at output names (an
    earlier result vocseg may reuse)."""
    got = _read_regular(Path(path))
    return None if got is None else got[1]


def _legacy(folder: Path, record: FolderRecord) -> None:
    got = _read_regular(folder / _LEGACY_MANIFEST)
    if got is None:
        return
    try:
        files = json.loads(got[1]).get("files", {})
        for name, entry in files.items():
            if isinstance(entry, dict):
                record.files[str(name)] = (str(entry.get("role", "output")), {(str(entry.get("sha256")), -1)})
    except (ValueError, AttributeError):
        return


def folder_record(folder: str | Path) -> FolderRecord:
    """The record of `folder` (empty when it has none). Cached per process, re-read when it grew."""
    folder = Path(os.path.abspath(folder))
    path = folder / RECORD_NAME
    try:
        st = os.lstat(path)
    except OSError:
        _CACHE.pop(folder, None)
        record = FolderRecord()
        _legacy(folder, record)
        return record
    if not stat.S_ISREG(st.st_mode):
        return FolderRecord()
    cached = _CACHE.get(folder)
    if cached and cached[0] == st.st_ino and cached[1] == st.st_size and cached[2] == st.st_mtime_ns:
        return cached[3]
    start, record = 0, FolderRecord()
    if cached and cached[0] == st.st_ino and cached[1] < st.st_size:
        start, record = cached[1], cached[3]  # appended since: read the tail only
    else:
        _legacy(folder, record)
    got = _read_regular(path)
    if got is None:
        return FolderRecord()
    data = got[1]
    end = data.rfind(b"\n") + 1  # a half-written last line is not an event
    for line in data[start:end].splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            record.apply(event)
    _CACHE[folder] = (got[0].st_ino, end, got[0].st_mtime_ns if end == len(data) else -1, record)
    return record


def _append(folder: Path, *events: dict) -> None:
    """Append events to the journal of `folder` (O_APPEND, one write; never through a link)."""
    global _EVENTS
    folder = Path(os.path.abspath(folder))
    path = folder / RECORD_NAME
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW | _NONBLOCK | _CLOEXEC | _BINARY, 0o644)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
            raise VocsegError(f"{path} is not vocseg's record of that folder (a link or a special file); nothing was written.", f"Move {path} away.") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise VocsegError(f"{path} is not vocseg's record of that folder; nothing was written.", f"Move {path} away.")
        for event in events:
            os.write(fd, (json.dumps(event, separators=(",", ":")) + "\n").encode())
            folder_record(folder)  # the cache follows our own lines
            _EVENTS += 1
            _maybe_kill()
    finally:
        os.close(fd)
    record = folder_record(folder)
    if not (record.files or record.dirs or record.temps) and not os.path.lexists(folder / _LEGACY_MANIFEST):
        _CACHE.pop(folder, None)  # nothing of vocseg's left there: no record either
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _maybe_kill() -> None:
    limit = os.environ.get("VOCSEG_TEST_KILL_AFTER")
    if limit and limit.isdigit() and _EVENTS >= int(limit):
        import signal

        sig = {"INT": signal.SIGINT, "TERM": signal.SIGTERM}.get(os.environ.get("VOCSEG_TEST_KILL_SIGNAL", ""), signal.SIGKILL)
        os.environ.pop("VOCSEG_TEST_KILL_AFTER", None)  # once (SIGINT/SIGTERM let the process go on)
        os.kill(os.getpid(), sig)


def _digest_file(path: Path, sizes: set[int]) -> tuple[str, int] | None:
    """(sha256, size) of a regular file at `path` (no link, no FIFO), or None. A size no recorded
    version has is not hashed."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    if sizes and -1 not in sizes and st.st_size not in sizes:
        return ("", st.st_size)
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC | _BINARY)
    except OSError:
        return None
    digest = hashlib.sha256()
    try:
        while True:
            chunk = os.read(fd, 1 << 22)
            if not chunk:
                break
            digest.update(chunk)
    finally:
        os.close(fd)
    return digest.hexdigest(), st.st_size


def recorded(path: str | Path, role: str | None = None) -> bool:
    """Whether the record proves vocseg created `path` (a regular file, or a folder) and, for a
    file, that it holds exactly what vocseg wrote there; with `role`, wrote it in that role."""
    target = Path(os.path.abspath(path))
    record = folder_record(target.parent)
    try:
        st = os.lstat(target)
    except OSError:
        return False
    if stat.S_ISDIR(st.st_mode):
        made = folder_record(target).dirs.get(".") or record.dirs.get(target.name)
        return made is not None and (role is None or made == role)
    entry = record.files.get(target.name)
    if entry is None or (role is not None and entry[0] != role):
        return False
    if ("*", -1) in entry[1]:  # a growing file (a download's part): vocseg's while a regular file
        return stat.S_ISREG(st.st_mode)
    got = _digest_file(target, {n for _, n in entry[1]})
    return got is not None and any(h == got[0] and n in (got[1], -1) for h, n in entry[1])


written_by_vocseg = recorded  # the name earlier versions used


def record_written(*paths: str | Path, role: str = "output") -> None:
    """Record files that were just written for vocseg by another library (MMEngine's checkpoints
    and logs, a PIL save through `atomic_writer` is recorded already) as vocseg's, as they are now.
    Links and special files are never recorded."""
    for p in paths:
        target = Path(os.path.abspath(p))
        got = _digest_file(target, set())
        if got is not None:
            _append(target.parent, {"f": target.name, "h": got[0], "n": got[1], "r": role})


def record_folder(path: str | Path, role: str = "output") -> None:
    """Record a folder another library just created for vocseg (MMEngine's log folder)."""
    target = Path(os.path.abspath(path))
    if target.is_dir() and not target.is_symlink() and "." not in folder_record(target).dirs:
        _append(target, {"d": ".", "r": role})


# ---------------------------------------------------------------- the rule


def _kind(st: os.stat_result) -> str:
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "a file"


def never_replaced(named: str, st: os.stat_result) -> str:
    """The one wording for something vocseg never replaces, whatever --force says (a link, a FIFO,
    a socket, a device, a folder): "NAMED is a FIFO; vocseg never replaces one (--force included)"."""
    return f"{named} is {_kind(st)}; vocseg never replaces one (--force included)"


def _inside(target: Path, root: Path | None) -> None:
    """Refuse a target outside `root`, or reached through a link below `root` (or its parent,
    without a root)."""
    parent = target.parent
    if root is not None:
        root = Path(os.path.abspath(root))
        try:
            rel = parent.relative_to(root)
        except ValueError:
            raise VocsegError(f"{target} is outside {root}, the folder this command writes into; nothing was written.", "Pass a path inside it.") from None
        check = [root.joinpath(*rel.parts[: i + 1]) for i in range(len(rel.parts))]
    else:
        check = [parent]
    for folder in check:
        try:
            st = os.lstat(folder)
        except FileNotFoundError:
            return  # created later by owned_mkdir, which checks each step
        if stat.S_ISLNK(st.st_mode):
            raise VocsegError(f"{folder} is a symbolic link; vocseg never writes through one ({target} was not written).", f"Replace the link {folder} with a folder, or pass another path.")
        if stat.S_ISREG(st.st_mode):  # the CLI names it with the command that continues (vocseg.errors)
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(folder))
        if not stat.S_ISDIR(st.st_mode):
            raise VocsegError(f"{folder} is {_kind(st)}, not a folder; {target} was not written.", f"Move {folder} away, or pass another path.")


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.abspath(a) == os.path.abspath(b) or a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def output_named_by(option: str | None) -> dict[str, str]:
    """`check_may_write`'s wording for an output path: chosen with `option` (e.g. "-o"), or, with
    None, the command's default path (the message says "the default output" and how to choose
    another with -o, never an -o the user did not give)."""
    if option:
        return {"option": option}
    return {"option": "the default output", "another": "another path with -o PATH"}


def check_may_write(
    path: str | Path,
    *,
    force: bool = False,
    inputs: Iterable[str | Path] = (),
    protect: Iterable[str | Path] = (),
    data: bytes | None = None,
    root: str | Path | None = None,
    role: str | None = None,
    option: str = "",
    force_option: str | None = "--force",
    another: str = "another path",
) -> None:
    """Raise `VocsegError` (one line: the path and the next step) unless vocseg may write `path`.

    Allowed: a new name; a file the record proves vocseg wrote there (in `role`, if given) and
    nobody changed since; a regular file already holding exactly `data`; with `force`, any other
    regular file. Never (`force` included): an input of this command (`inputs`; a folder's files
    count), a file under a folder in `protect` or equal to one (a dataset's masks), a folder, a
    symbolic link, a FIFO, device or socket, a path outside `root` or reached through a link.
    `option` names the flag that chose the path (or, for a default path, words such as "the
    default output"), `force_option` the command's flag that allows replacing (None: it has none),
    `another` how to pick another path ("another path with -o PATH" where none was given), for the message.
    """
    target = Path(os.path.abspath(path))
    named = f"{option} {target}" if option else str(target)
    if target.name in OWN_NAMES:
        raise VocsegError(f"{named} is vocseg's record of that folder; it is never an output.", f"Pass {another}.")
    _inside(target, Path(root) if root is not None else None)
    guarded = [Path(p) for p in inputs]
    guarded += [f for p in guarded if p.is_dir() and not p.is_symlink() for f in p.iterdir() if f.is_file()]  # a run folder's files
    for given in guarded:
        if _same(target, given):
            raise VocsegError(f"{named} is one of this command's inputs; it would be replaced.", f"Pass {another}.")
    for kept in protect:
        kept = Path(os.path.abspath(kept))
        if target == kept or kept in target.parents or _same(target, kept):
            raise VocsegError(f"{named} is inside {kept}, which vocseg never writes into (--force included).", "Pass a path outside it.")
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(st.st_mode):
        hint = f"Pass a file name inside it or {another}." if stat.S_ISDIR(st.st_mode) else f"Move {target} away, or pass {another}."
        raise VocsegError(f"{never_replaced(named, st)}.", hint)
    if recorded(target, role=role):
        return
    if data is not None and st.st_size == len(data):
        got = _read_regular(target)
        if got is not None and got[1] == data:
            return
    if force:
        return
    more = f" or {force_option} to replace it" if force_option else ""
    raise VocsegError(f"{named} exists and was not written by vocseg (or was changed since); it is left as it is.", f"Pass {another}{more}.")


def check_output_folder(
    folder: str | Path,
    *,
    force: bool = False,
    option: str = "",
    own_dirs: str = "",
    may_write: Callable[[str], bool] | None = None,
    root: str | Path | None = None,
    role: str | None = None,
    force_option: str | None = "--force",
) -> None:
    """Refuse (one line) an output folder that holds entries vocseg did not create there (with
    `role`: in that role; a dataset's masks vocseg wrote are not outputs).

    With `may_write` (a name -> bool), only entries whose names the command could write count: the
    user's other files in the folder are left alone and do not stop it. A new or empty folder is
    fine; so is one where every such entry is recorded (unchanged files, folders vocseg made).
    `own_dirs` is kept for callers of earlier versions and ignored: folders count only when the
    record names them. With `force`, regular files of the user's may be replaced; links, special
    files and the user's folders still refuse, named for what they are (`never_replaced`), without
    offering --force. `force_option`: the command's flag that allows replacing the user's regular
    files (None: none does, e.g. eval's --save-predictions), for the message.
    """
    target = Path(os.path.abspath(folder))
    named = f"{option} {target}" if option else str(target)
    _inside(target / "x", Path(root) if root is not None else None)
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        raise VocsegError(f"{named} is {_kind(st)}, not a folder; it is left as it is.", "Pass a folder (a new one is created).")
    foreign = []
    never: list[tuple[str, os.stat_result]] = []  # not regular files: --force does not replace them either
    for entry in sorted(target.iterdir()):
        if entry.name in OWN_NAMES or (may_write is not None and not may_write(entry.name)):
            continue
        if recorded(entry, role=role):
            continue
        est = os.lstat(entry)
        if not stat.S_ISREG(est.st_mode):
            never.append((entry.name, est))
            continue
        if force:
            continue
        foreign.append(entry.name)
    if never:
        name, est = never[0]
        others = f" ({len(never) - 1} more such: {', '.join(n for n, _ in never[1:4])}{' ...' if len(never) > 4 else ''})" if len(never) > 1 else ""
        raise VocsegError(f"{named} holds what vocseg did not write: {never_replaced(name, est)}{others}; nothing was written there.",
                          f"Move {target / name} away, or pass a new or empty folder.")
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        more = f", or {force_option} to replace your files of the same names" if force_option and not force else ""
        raise VocsegError(f"{named} holds files vocseg did not write ({shown}); nothing was written there.", f"Pass a new or empty folder{more}.")


def may_delete(path: str | Path) -> bool:
    """Whether the rule allows deleting `path`: a file vocseg wrote and nobody changed, a
    recorded temporary file, or a folder vocseg created (its content is checked one by one)."""
    target = Path(os.path.abspath(path))
    if target.name in folder_record(target.parent).temps:
        try:
            return stat.S_ISREG(os.lstat(target).st_mode)
        except OSError:
            return False
    return recorded(target)


# ---------------------------------------------------------------- writing


def owned_mkdir(path: str | Path, *, root: str | Path | None = None, role: str = "output", exist_ok: bool = True) -> Path:
    """Create `path` and its missing parents (below `root`, if given), recording each folder made.

    An existing folder is used as it is (`exist_ok=False`: FileExistsError, for picking a new
    name); a link or a file in the way refuses (one line).
    """
    target = Path(os.path.abspath(path))
    base = Path(os.path.abspath(root)) if root is not None else None
    if base is not None:
        _inside(target / "x", base)
    missing = []
    probe = target
    while True:
        try:
            st = os.lstat(probe)
        except (FileNotFoundError, NotADirectoryError):  # (a file above: named below)
            missing.append(probe)
            if probe.parent == probe:
                break
            probe = probe.parent
            continue
        if stat.S_ISREG(st.st_mode):  # the CLI names it with the command that continues (vocseg.errors)
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(probe))
        if not stat.S_ISDIR(st.st_mode):
            raise VocsegError(f"{probe} is {_kind(st)}, not a folder; {target} was not created.", f"Move {probe} away, or pass another path.")
        if probe == target and not exist_ok:
            raise FileExistsError(errno.EEXIST, "exists", str(target))
        break
    for folder in reversed(missing):
        # Noted first in the folder it is made in, where that folder has a record already (no new
        # record file in a folder of the user's): a kill right after the mkdir leaves it vocseg's.
        intent = os.path.lexists(folder.parent / RECORD_NAME)
        if intent:
            _append(folder.parent, {"d": folder.name, "r": role})
        try:
            os.mkdir(folder)
        except FileExistsError:
            if intent:  # another process made it meanwhile: not ours
                _append(folder.parent, {"x": folder.name})
            if folder == target and not exist_ok:
                raise
            if not folder.is_dir() or folder.is_symlink():
                raise VocsegError(f"{folder} appeared as something else than a folder; nothing was written there.", f"Move {folder} away.") from None
            continue
        _append(folder, {"d": ".", "r": role})
    return target


def record_folder_made_here(path: str | Path, role: str = "output") -> None:
    """Note, before another library creates it, a folder it will create for vocseg inside a folder
    that has a record (MMEngine's timestamped log folder in a run folder): a kill between its mkdir
    and `record_folder` then leaves it vocseg's."""
    target = Path(os.path.abspath(path))
    if os.path.lexists(target.parent / RECORD_NAME) and not os.path.lexists(target) and target.name not in folder_record(target.parent).dirs:
        _append(target.parent, {"d": target.name, "r": role})


def _forget_in_parent(folder: Path) -> None:
    """After a folder vocseg made is removed: its note in the folder above, if any, goes too."""
    if folder.name in folder_record(folder.parent).dirs:
        _append(folder.parent, {"x": folder.name})


def _new_temp(target: Path) -> tuple[Path, int]:
    """Create (O_EXCL: never an existing name, never through a link) and record a temporary file
    beside `target`; returns its path and an open descriptor."""
    record = folder_record(target.parent)
    _clean_temps(target.parent, record)
    pid = os.getpid()
    for k in range(100):
        tmp = target.with_name(f".{target.name}.{pid}.tmp" if k == 0 else f".{target.name}.{pid}-{k}.tmp")
        if os.path.lexists(tmp):
            continue
        _append(target.parent, {"t": tmp.name, "pid": pid})
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC | _BINARY, 0o644)
        except FileExistsError:
            _append(target.parent, {"x": tmp.name})
            continue
        return tmp, fd
    raise VocsegError(f"No free temporary name beside {target}.", f"Remove the .{target.name}.*.tmp files you made there.")


def _commit(tmp: Path, target: Path, role: str) -> None:
    """Record the bytes of `tmp` as pending for `target`, rename it into place, record them as
    what `target` holds."""
    got = _digest_file(tmp, set())
    if got is None:
        raise VocsegError(f"{tmp} vanished or changed kind before it was renamed to {target}.", "Run the command again.")
    folder = target.parent
    _append(folder, {"f": target.name, "h": got[0], "n": got[1], "r": role, "p": 1})
    os.replace(tmp, target)
    _append(folder, {"f": target.name, "h": got[0], "n": got[1], "r": role}, {"x": tmp.name})
    _WRITTEN[folder] = _WRITTEN.get(folder, 0) + 1


def written_this_process() -> tuple[int, list[Path]]:
    """(files this process wrote completely, the folders they are in, most first): what an
    interrupted command had finished."""
    folders = sorted(_WRITTEN, key=lambda f: -_WRITTEN[f])
    return sum(_WRITTEN.values()), folders


def _discard(tmp: Path) -> None:
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    _append(tmp.parent, {"x": tmp.name})


@contextmanager
def atomic_writer(
    path: str | Path,
    *,
    root: str | Path | None = None,
    role: str = "output",
    force: bool = False,
    inputs: Iterable[str | Path] = (),
    protect: Iterable[str | Path] = (),
    option: str = "",
    mode: str = "path",
) -> Iterator:
    """Write `path` through a recorded temporary file beside it, renamed into place on success.

    `mode="path"` yields the temporary file's `Path` (for `savefig`, PIL `save(tmp, format=...)`,
    `torch.save`: pass the format, the name ends in `.tmp`); `mode="wb"` yields an open binary file.
    The rule (`check_may_write`) is applied before and again just before the rename. On an error
    the temporary file is removed and `path` keeps what it held.
    """
    target = Path(os.path.abspath(path))
    check = dict(force=force, inputs=list(inputs), protect=list(protect), root=root, option=option)
    check_may_write(target, **check)
    owned_mkdir(target.parent, root=root, role=role)
    tmp, fd = _new_temp(target)
    ok = False
    try:
        if mode == "wb":
            with os.fdopen(fd, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
        else:
            os.close(fd)
            yield tmp
        check_may_write(target, **check)
        _commit(tmp, target, role)
        ok = True
    finally:
        if not ok:
            _discard(tmp)


def owned_write_bytes(
    path: str | Path,
    data: bytes,
    *,
    root: str | Path | None = None,
    role: str = "output",
    force: bool = False,
    inputs: Iterable[str | Path] = (),
    protect: Iterable[str | Path] = (),
    option: str = "",
    durable: bool = True,
) -> Path:
    """Write `data` to `path` under the rule: a recorded temporary file, fsync, rename, record.
    (`durable=False` skips the fsync: for many small files a re-run recreates after a power cut.)

    A process killed at any moment leaves `path` as it was or complete, and a record that names
    both (the next run takes either as vocseg's). Returns `path`. Raises `VocsegError` (one line)
    where the rule refuses.
    """
    target = Path(os.path.abspath(path))
    check_may_write(target, force=force, inputs=inputs, protect=protect, data=data, root=root, option=option)
    owned_mkdir(target.parent, root=root, role=role)
    tmp, fd = _new_temp(target)
    ok = False
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        _commit(tmp, target, role)
        ok = True
    finally:
        if not ok:
            _discard(tmp)
    return target


def owned_write_text(path: str | Path, text: str, **kwargs) -> Path:
    """`owned_write_bytes` for text (UTF-8)."""
    return owned_write_bytes(path, text.encode("utf-8"), **kwargs)


def owned_delete(path: str | Path, *, missing_ok: bool = True) -> bool:
    """Delete a file (or empty folder) vocseg created and nobody changed; False when there is
    nothing. Raises `VocsegError` (one line) for anything else: it is left as it is."""
    target = Path(os.path.abspath(path))
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        if not missing_ok:
            raise VocsegError(f"{target} does not exist.", "") from None
        return False
    if not may_delete(target):
        raise VocsegError(f"{target} is {_kind(st)} vocseg did not write (or one changed since); it is left as it is.", f"Move {target} away yourself if it should go.")
    if stat.S_ISDIR(st.st_mode):
        for own in OWN_NAMES:
            if os.path.lexists(target / own) and len(os.listdir(target)) == 1:
                os.unlink(target / own)
        _CACHE.pop(target, None)
        os.rmdir(target)
        _forget_in_parent(target)
    else:
        os.unlink(target)
        _append(target.parent, {"x": target.name})
    return True


def owned_rmtree(path: str | Path) -> list[Path]:
    """Delete what vocseg created under `path` (bottom up: recorded unchanged files, recorded
    temporary files, recorded folders once empty). Returns what was kept (the user's entries,
    links, changed files); never follows a link."""
    target = Path(os.path.abspath(path))
    kept: list[Path] = []
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return kept
    if stat.S_ISDIR(st.st_mode):
        for entry in sorted(os.scandir(target), key=lambda e: e.name):
            child = target / entry.name
            if entry.name in OWN_NAMES:
                continue
            if entry.is_dir(follow_symlinks=False) and recorded(child):
                kept += owned_rmtree(child)
            elif entry.is_dir(follow_symlinks=False) and not os.listdir(child):
                os.rmdir(child)  # empty: made by a command killed before it recorded it (nothing to lose)
                _forget_in_parent(child)
            elif may_delete(child):
                os.unlink(child)
                _append(target, {"x": entry.name})
            else:
                kept.append(child)
        if kept or not may_delete(target):
            return kept or [target]
        for own in OWN_NAMES:
            try:
                os.unlink(target / own)
            except FileNotFoundError:
                pass
        _CACHE.pop(target, None)
        os.rmdir(target)
        _forget_in_parent(target)
        return kept
    if may_delete(target):
        os.unlink(target)
        _append(target.parent, {"x": target.name})
        return kept
    return [target]


def owned_replace(src: str | Path, dst: str | Path, *, role: str | None = None) -> None:
    """Rename `src` (a file or folder vocseg created: recorded, unchanged) to the new name `dst`
    (nothing there, or a file the rule lets vocseg replace), recording the move in both folders."""
    source, target = Path(os.path.abspath(src)), Path(os.path.abspath(dst))
    if not may_delete(source):
        raise VocsegError(f"{source} was not written by vocseg (or was changed since); it is left as it is.", f"Move {source} away yourself.")
    is_dir = source.is_dir() and not source.is_symlink()
    if is_dir:
        if os.path.lexists(target):
            raise VocsegError(f"{target} exists; {source} was not moved there.", f"Move {target} away.")
    else:
        check_may_write(target)
    src_record = folder_record(source.parent)
    if not is_dir:
        entry_role, versions = src_record.files.get(source.name) or ("output", set())
        for h, n in versions:
            _append(target.parent, {"f": target.name, "h": h, "n": n, "r": role or entry_role, "p": 1})
    os.replace(source, target)
    _CACHE.pop(source, None)
    if not is_dir:
        _append(source.parent, {"x": source.name})
        got = _digest_file(target, set())
        if got is not None:
            _append(target.parent, {"f": target.name, "h": got[0], "n": got[1], "r": role or src_record.files.get(source.name, ("output",))[0]})


def open_append(path: str | Path, *, role: str = "part"):
    """Open a file vocseg grows across runs (a download's `NAME.part`) for appending, binary: created
    and recorded as vocseg's (content checked later by its hash), or the one recorded earlier.
    A file of the user's at that name, a link or a special file refuses (one line)."""
    target = Path(os.path.abspath(path))
    if os.path.lexists(target) and not recorded(target):
        st = os.lstat(target)
        raise VocsegError(f"{target} is {_kind(st)} vocseg did not make; it is left as it is.", f"Move {target} away and run the command again.")
    owned_mkdir(target.parent)
    if not recorded(target):
        _append(target.parent, {"f": target.name, "h": "*", "n": -1, "r": role})
    fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW | _NONBLOCK | _CLOEXEC | _BINARY, 0o644)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise VocsegError(f"{target} is not a regular file; it is left as it is.", f"Move {target} away.")
    return os.fdopen(fd, "ab")


def place_tree(src: str | Path, dst: str | Path, *, role: str = "data") -> None:
    """Rename a tree vocseg just built inside a staging folder it created (`src`, e.g. an
    extraction) to the new name `dst` (nothing may be there), recording `dst` as vocseg's first."""
    source, target = Path(os.path.abspath(src)), Path(os.path.abspath(dst))
    if not any(folder_record(p).dirs.get(".") == STAGING_ROLE for p in source.parents):
        raise VocsegError(f"{source} is not inside a staging folder vocseg created; it was not moved.", "Run the command again.")
    if os.path.lexists(target):
        raise VocsegError(f"{target} exists; it is left as it is.", f"Move {target} away and run the command again.")
    _inside(target, None)
    _append(source, {"d": ".", "r": role})
    os.replace(source, target)
    _CACHE.pop(source, None)


def move_aside(path: str | Path, backup: str | Path) -> None:
    """Move a user's regular file the command was asked to convert in place (`path`) to `backup`
    (a new name, in a folder vocseg creates: recorded) with one rename; the file stays the user's.
    Never a link or a special file, never over an existing name."""
    source, target = Path(os.path.abspath(path)), Path(os.path.abspath(backup))
    st = os.lstat(source)
    if not stat.S_ISREG(st.st_mode):
        raise VocsegError(f"{source} is {_kind(st)}; it is left as it is.", f"Replace {source} with a regular file.")
    owned_mkdir(target.parent)
    if os.path.lexists(target):
        raise VocsegError(f"{target} exists; {source} was not moved there.", f"Move {target} away.")
    os.link(source, target) if hasattr(os, "link") else None  # never over an existing name (EEXIST)
    os.unlink(source)


STAGING_ROLE = "staging"  # a hidden folder vocseg creates and fills alone (an extraction): removed whole


def remove_staging(path: str | Path) -> None:
    """Delete a staging folder the record names as vocseg's (role "staging"), with all it holds,
    never following a link. Anything else at that name stays (VocsegError)."""
    import shutil

    target = Path(os.path.abspath(path))
    if not os.path.lexists(target):
        return
    st = os.lstat(target)
    if not stat.S_ISDIR(st.st_mode) or folder_record(target).dirs.get(".") != STAGING_ROLE:
        raise VocsegError(f"{target} is not a staging folder vocseg made; it is left as it is.", f"Move {target} away.")
    shutil.rmtree(target)
    _CACHE.pop(target, None)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _clean_temps(folder: Path, record: FolderRecord) -> list[Path]:
    removed = []
    for name, pid in list(record.temps.items()):
        if pid == os.getpid() or _pid_alive(pid):
            continue
        tmp = folder / name
        try:
            st = os.lstat(tmp)
            if stat.S_ISREG(st.st_mode):
                os.unlink(tmp)
                removed.append(tmp)
        except FileNotFoundError:
            pass
        _append(folder, {"x": name})
    return removed


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temporary files the record of `folder` says vocseg created, of processes that no
    longer run (a killed command's). Any other `.X.N.tmp` is the user's and stays. Returns them."""
    target = Path(os.path.abspath(folder))
    if not target.is_dir() or target.is_symlink():
        return []
    return _clean_temps(target, folder_record(target))


# ---------------------------------------------------------------- one process at a time


class LockBusy(Exception):
    """Another process holds the lock; `holder` is its pid as it wrote it (or '')."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


@contextmanager
def lock(folder: str | Path, name: str, *, waiting: Callable[[str], None] | None = None) -> Iterator[int | None]:
    """Hold the lock `folder/name` (an flock; the file holds the holder's pid) or raise `LockBusy`;
    with `waiting`, call it once with the holder's pid and wait instead.

    The file is opened with O_NOFOLLOW and never truncated unless it holds a pid (or nothing): a
    link or a file of the user's at that name refuses (VocsegError). It is removed on release, so
    no lock file stays once the command ends (a killed holder's stays until the next command and
    its lock goes with the process). Yields the descriptor (children that keep it open keep the
    lock), or None where the platform or the file system has no locks.
    """
    try:
        import fcntl
    except ImportError:  # Windows
        yield None
        return
    path = Path(os.path.abspath(folder)) / name
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _NONBLOCK | _CLOEXEC, 0o644)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR, errno.EWOULDBLOCK):
                raise VocsegError(f"{path} is not a vocseg lock (a link, folder or special file); nothing was done.", f"Move {path} away.") from None
            raise
        st = os.fstat(fd)
        content = os.pread(fd, 64, 0) if stat.S_ISREG(st.st_mode) else b"x"
        if not stat.S_ISREG(st.st_mode) or st.st_size > 32 or not content.strip().isdigit() and content.strip():
            os.close(fd)
            raise VocsegError(f"{path} is not a vocseg lock (it holds something else); nothing was done.", f"Move {path} away.")
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
                if waiting is None:
                    raise LockBusy(holder) from None
                waiting(holder)
                waiting = lambda _h: None  # noqa: E731 (print once)
                fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            if isinstance(exc, BlockingIOError):
                raise
            os.close(fd)  # a file system without locks (some network mounts): go on unguarded
            yield None
            return
        except BaseException:
            os.close(fd)
            raise
        try:
            now = os.lstat(path)
        except FileNotFoundError:
            now = None
        if now is None or now.st_ino != os.fstat(fd).st_ino:  # released and removed meanwhile: again
            os.close(fd)
            continue
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            yield fd
        finally:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        return


@contextmanager
def exclusive_lock(lock_path: str | Path) -> Iterator[int | None]:
    """`lock(folder, name)` of a full path (the name earlier versions used)."""
    target = Path(lock_path)
    with lock(target.parent, target.name) as fd:
        yield fd
