"""The two consoles every vocseg command prints to (results on stdout, progress and warnings on
stderr), a stream that swallows what MMEngine prints when not --verbose, and the three things
every printed line needs: commands a shell runs as printed (`command`), names shown as data, never
as markup or terminal control (`shown`), and one progress display (`progress`: a bar on a
terminal, plain lines in a pipe or a log). Imports nothing of vocseg: everything may import it."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import time
from collections.abc import Iterator
from typing import Any

from rich.console import Console

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


class NullStream(io.TextIOBase):
    """A text stream that discards what is written to it."""

    def write(self, s: str) -> int:
        return len(s)


@contextlib.contextmanager
def quiet_stdout(verbose: bool) -> Iterator[None]:
    """Discard what is printed to stdout inside the block, unless `verbose`."""
    if verbose:
        yield
        return
    with contextlib.redirect_stdout(NullStream()):
        yield


# ---------------------------------------------------------------- commands a shell runs as printed

# Characters a terminal acts on instead of showing (C0, DEL, C1 controls) and the lone surrogates
# Python uses for bytes of a file name that are not UTF-8 (os.fsdecode's surrogateescape).
_UNSHOWABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def shell_quote(arg: object) -> str:
    """One argument as bash reads it back exactly: `shlex.quote` (single quotes, so spaces, `$`,
    accents and quotes are literal), or bash's `$'...'` with `\\xNN` bytes for a name that holds
    control characters or bytes that are not UTF-8 (they would be invisible or unprintable)."""
    text = os.fspath(arg) if isinstance(arg, os.PathLike) else str(arg)
    if not _UNSHOWABLE.search(text):
        return shlex.quote(text)
    out = []
    for byte in os.fsencode(text):
        ch = chr(byte)
        out.append(ch if 0x20 <= byte < 0x7F and ch not in "'\\" else f"\\x{byte:02x}")
    return "$'" + "".join(out) + "'"


def command(*argv: object) -> str:
    """`vocseg ARGV...` as one line that a POSIX shell (bash, zsh) runs as printed: every path
    quoted (`shell_quote`). Placeholders such as IMAGE stay as they are. Print it with
    `soft_wrap=True` (or on its own line) so the terminal, not rich, decides where it breaks."""
    return " ".join(["vocseg", *(shell_quote(a) for a in argv)])


def shown(text: object) -> str:
    """A name (a path, a run, a class) as text for rich to print: markup escaped, and control
    characters and undecodable bytes shown as `\\xNN` instead of reaching the terminal."""
    from rich.markup import escape

    raw = os.fspath(text) if isinstance(text, os.PathLike) else str(text)
    visible = _UNSHOWABLE.sub(lambda m: "".join(f"\\x{b:02x}" for b in os.fsencode(m.group())), raw)
    return escape(visible)


def plain(text: object) -> str:
    """A name as plain text (no markup): control characters and undecodable bytes as `\\xNN`."""
    raw = os.fspath(text) if isinstance(text, os.PathLike) else str(text)
    return _UNSHOWABLE.sub(lambda m: "".join(f"\\x{b:02x}" for b in os.fsencode(m.group())), raw)


_SURROGATES = re.compile("[\ud800-\udfff]")


def encodable(text: str) -> str:
    """`text` with the bytes of a non-UTF-8 file name (surrogate escapes, which UTF-8 cannot
    encode) written as `\\xNN`: for pages and files that must be UTF-8 (the report's HTML).
    Other text, newlines included, is unchanged."""
    if not _SURROGATES.search(text):
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


# ---------------------------------------------------------------- numbers people read


def format_duration(seconds: float) -> str:
    """H:MM:SS; "-" when unknown (inf/nan)."""
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return "-"
    whole = int(max(0.0, seconds))
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


def format_rate(items: float, seconds: float, unit: str = "img") -> str:
    """A throughput people can read at any speed: `12.5 img/s`, `0.42 img/s` (two significant
    digits below 10), or `8.3 s/img` below 0.1 item a second (a large model on a CPU). "-" when
    unknown. `items` per `seconds` of wall time."""
    if not seconds or seconds <= 0 or items <= 0:
        return "-"
    rate = items / seconds
    if rate >= 10:
        return f"{rate:.1f} {unit}/s"
    if rate >= 0.1:
        return f"{rate:.2g} {unit}/s"
    return f"{seconds / items:.2g} s/{unit}"


# ---------------------------------------------------------------- progress


RATE_UNITS = {"images": "img", "frames": "frame", "inputs": "input"}
PLAIN_LINE_SECONDS = 30.0  # in a pipe, a line at least this often while items finish (slow models)


class ProgressDisplay:
    """Progress of one loop over `total` items: a rich bar (done/total, rate, ETA) when `out` is a
    terminal, else a plain line at most every `every` items (10% steps by default) and at the end,
    so a pipe or a CI log gets a few readable lines and never a redraw. Used as a context manager;
    `advance()` after each item, `update(done, total)` when the caller counts itself (video
    frames: total may be None). `unit` names the items (images, frames)."""

    def __init__(self, label: str, total: int | None, *, unit: str = "images", out: Console | None = None, every: int | None = None) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.out = out or err_console
        self.every = every
        self.done = 0
        self.bar: Any = None
        self.task: Any = None
        self._t0 = time.perf_counter()
        self._printed = -1
        self._last_line = self._t0
        self.parent: ProgressDisplay | None = None  # `nested`: shares the parent's bar

    @property
    def live(self) -> bool:
        return self.out.is_terminal

    def nested(self, label: str, total: int | None, *, unit: str = "frames") -> ProgressDisplay:
        """A display for the parts of one item (a video's frames): a second row of the same bar
        on a terminal, its own plain lines otherwise."""
        child = ProgressDisplay(label, total, unit=unit, out=self.out)
        child.parent = self
        return child

    def __enter__(self) -> ProgressDisplay:
        self._t0 = self._last_line = time.perf_counter()
        shared = self.parent.bar if self.parent is not None else None
        if shared is not None:
            self.bar = shared
        elif self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[unit]}"),
                                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=self.out, transient=True)
            self.bar.start()
        if self.bar is not None:
            self.task = self.bar.add_task(shown(self.label), total=self.total, unit=self.unit)
        return self

    def start(self, total: int | None) -> None:
        """The items begin now (after a model was loaded): the clock for rate and ETA starts here."""
        self._t0 = self._last_line = time.perf_counter()
        self.update(0, total)
        if self.bar is not None:
            self.bar.reset(self.task, total=total)

    def advance(self, n: int = 1) -> None:
        self.update(self.done + n, self.total)

    def update(self, done: int, total: int | None = None) -> None:
        self.done = done
        if total is not None:
            self.total = total
        if self.bar is not None:
            self.bar.update(self.task, completed=done, total=self.total)
            return
        if self.total == 1:  # one item: its result is the news, a progress line would be noise
            return
        step = self.every or (max(1, -(-self.total // 10)) if self.total else 250)
        first = self._printed < 0 and done >= 1  # the first item: it started, it is not hanging
        stale = time.perf_counter() - self._last_line > PLAIN_LINE_SECONDS
        if first or done == self.total or done // step > max(self._printed, 0) // step or (stale and done != self._printed):
            self._print_line()

    def line(self) -> str:
        """The plain line: `eval: 12/40 images (30%), 0:00:12, 1.0 img/s, ETA 0:00:28`."""
        spent = time.perf_counter() - self._t0
        rate = format_rate(self.done, spent, RATE_UNITS.get(self.unit, self.unit))
        if self.total:
            eta = spent / self.done * (self.total - self.done) if self.done else float("inf")
            return f"{self.label}: {self.done}/{self.total} {self.unit} ({100 * self.done / self.total:.0f}%), {format_duration(spent)}, {rate}, ETA {format_duration(eta)}"
        return f"{self.label}: {self.done} {self.unit}, {format_duration(spent)}, {rate}"

    def _print_line(self) -> None:
        self._printed = self.done
        self._last_line = time.perf_counter()
        self.out.print(shown(self.line()), soft_wrap=True)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None and self.parent is not None and self.parent.bar is self.bar:
            self.bar.remove_task(self.task)
            self.bar = None
        elif self.bar is not None:
            self.bar.stop()
            self.bar = None
        elif self.done and self._printed != self.done and exc[0] is None and self.total != 1:
            self._print_line()


def progress(label: str, total: int | None, *, unit: str = "images", out: Console | None = None) -> ProgressDisplay:
    """`with progress("eval", 40) as p: ... p.advance()`: see `ProgressDisplay`."""
    return ProgressDisplay(label, total, unit=unit, out=out)

