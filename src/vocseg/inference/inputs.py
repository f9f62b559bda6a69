"""What `vocseg predict` is given: files, folders and globs -> input files, each once, never looping on symlinks."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from vocseg.errors import VocsegError


@dataclass
class InputFile:
    path: Path
    explicit: bool  # named on the command line (not found in a folder or by a glob)


def expand_inputs(inputs: Iterable[str]) -> list[InputFile]:
    """Files, folders (their non-hidden files, not recursive) and globs (`**` recursive) -> inputs
    in the given order, each file once.

    Symbolic links are followed, but every folder is entered once (by device and inode), so a
    link back to a parent never loops. Paths that do not exist and files that are not images
    stay in the list: they are reported and skipped, one line each, while the rest is processed.
    """
    found: list[InputFile] = []
    for raw in inputs:
        p = Path(raw).expanduser()
        if _is_dir(p):
            try:
                entries = sorted(q for q in p.iterdir() if not q.name.startswith(".") and (q.is_file() or (q.is_symlink() and not q.is_dir())))
            except OSError as exc:
                raise VocsegError(f"Cannot list {p}: {exc.strerror or exc}.", "Check the folder's permissions.") from None
            found.extend(InputFile(q, explicit=False) for q in entries)
        elif not os.path.lexists(p) and any(ch in raw for ch in "*?["):
            matches = glob_files(str(p))
            found.extend([InputFile(q, explicit=False) for q in matches] or [InputFile(p, explicit=True)])  # matching nothing: reported
        else:
            found.append(InputFile(p, explicit=True))
    seen: set[Path] = set()
    unique = []
    for item in found:
        key = real_path(item.path)
        if key not in seen:
            seen.add(key)
            unique.append(item)
    return unique


def glob_files(pattern: str) -> list[Path]:
    """Files matching a glob (`*`, `?`, `[...]` within a name, `**` for any depth), hidden names
    excluded, sorted; each folder visited once even through symlink loops."""
    parts = Path(pattern).parts
    first = next((i for i, part in enumerate(parts) if any(ch in part for ch in "*?[")), len(parts))
    base = Path(*parts[:first]) if first else Path(".")
    rest = parts[first:]
    depth_limit = None if any("**" in part for part in rest) else len(rest)
    matches: list[Path] = []
    visited: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in visited:
            dirnames[:] = []
            continue
        visited.add((st.st_dev, st.st_ino))
        rel = Path(dirpath).relative_to(base).parts
        if depth_limit is not None and len(rel) + 1 >= depth_limit:
            dirnames[:] = []
        else:
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and _matches(rest, (*rel, name)) and (Path(dirpath) / name).is_file():
                matches.append(Path(dirpath) / name)
    return sorted(matches)


def _matches(pattern: tuple[str, ...], names: tuple[str, ...]) -> bool:
    if not pattern:
        return not names
    if pattern[0] == "**":
        return any(_matches(pattern[1:], names[k:]) for k in range(len(names) + 1))
    return bool(names) and fnmatch.fnmatchcase(names[0], pattern[0].replace("**", "*")) and _matches(pattern[1:], names[1:])


def _is_dir(p: Path) -> bool:
    try:
        return p.is_dir()
    except OSError:
        return False


def real_path(p: Path) -> Path:
    """`p` with symlinks resolved; as given (absolute) when it does not exist or loops."""
    try:
        return p.resolve() if os.path.lexists(p) else p
    except (OSError, RuntimeError):  # a symlink loop
        return p.absolute()
