"""The one exception type the CLI turns into a one-line message and a non-zero exit, and the words
for what the file system or the kernel refuses (OSError kinds, a dead loader worker): one line
naming the path, what was kept and the command that continues (`describe_os_error`)."""

from __future__ import annotations

import errno
import os
import re
import shlex


class VocsegError(Exception):
    """A problem the user can fix: `message` says what is wrong, `hint` what to do."""

    def __init__(self, message: str, hint: str = "", exit_code: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code

    def __str__(self) -> str:
        return f"{self.message} {self.hint}".strip()


# ---------------------------------------------------------------- what a file-system fault left behind

# Set by the code that knows (e.g. a training run): what is intact after a fault and the command
# that continues. The CLI edge (`vocseg.cli`) reads it when it turns an OSError into one line.
KEPT_ATTR = "vocseg_kept"
NEXT_ATTR = "vocseg_next"
WHERE_ATTR = "vocseg_where"


class FaultContext:
    """`with FaultContext(kept=lambda: "...", next_command="vocseg resume RUN", where=RUN):` notes
    on any OSError (or a data-loader worker's death) raised inside what was kept, where, and the
    command that continues; the exception itself goes on unchanged. `kept` and `next_command`
    may be callables, asked only when a fault happens (what is on disk then).

    With `interruptions=True`, an interruption inside (Ctrl-C, or SIGTERM as `Terminated`) is
    noted too: its continuing command (`next_command`, when it gives one) is what the CLI's
    interrupted line suggests (`interrupted_next_command`) instead of the same command line again,
    for work whose rerun would not continue it (a `vocseg train` run starts a new folder)."""

    def __init__(self, *, kept: object = None, next_command: object = "", where: object = None, interruptions: bool = False) -> None:
        self.kept, self.next_command, self.where = kept, next_command, where
        self.interruptions = interruptions

    def __enter__(self) -> FaultContext:
        return self

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> bool:
        if isinstance(exc, KeyboardInterrupt) and self.interruptions and not _INTERRUPT_NEXT[0]:  # the innermost context knows best
            try:
                _INTERRUPT_NEXT[0] = str((self.next_command() if callable(self.next_command) else self.next_command) or "")
            except Exception:  # noqa: BLE001 - the note must never hide the interruption
                pass
            return False
        if isinstance(exc, (OSError, RuntimeError)) and not hasattr(exc, NEXT_ATTR):
            try:
                kept = self.kept() if callable(self.kept) else self.kept
                next_command = self.next_command() if callable(self.next_command) else self.next_command
            except Exception:  # noqa: BLE001 - the note must never hide the fault
                kept, next_command = None, ""
            try:
                setattr(exc, KEPT_ATTR, kept)
                setattr(exc, NEXT_ATTR, next_command)
                setattr(exc, WHERE_ATTR, self.where)
            except (AttributeError, TypeError):
                pass
        return False


# ---------------------------------------------------------------- file-system faults in one line

# The CLI edge (`vocseg.cli.run`) turns every OSError and every dead loader worker into one line
# with these; a training worker process (`vocseg.training.worker`) can use the same words.

# errno -> (what happened, what to do). The one place where an OSError becomes words.
OS_FAULTS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("disk full", "Free some space"),
    errno.EDQUOT: ("disk quota exceeded", "Free some space or raise your quota"),
    errno.EROFS: ("read-only file system", "Pick a folder on a writable file system"),
    errno.EACCES: ("permission denied", "Pick a folder you may write to, or fix its permissions"),
    errno.EPERM: ("operation not permitted", "Pick a folder you may write to, or fix its permissions"),
    errno.ENOTDIR: ("a file stands where a folder is expected", "Move that file away, or pick another path"),
    errno.EISDIR: ("a folder stands where a file is expected", "Give a file name, not a folder"),
    errno.ENAMETOOLONG: ("file name too long", "Use a shorter name or a shallower folder"),
    errno.EXDEV: ("cannot move a file across file systems", "Keep the output on the same file system as its folder"),
    errno.ENOENT: ("no such file or folder", "Check the path"),
    errno.EEXIST: ("already exists", "Move it away, or pick another path"),
    errno.EIO: ("input/output error (a failing disk or network mount)", "Check the disk or mount"),
    errno.EMFILE: ("too many open files", "Raise `ulimit -n`, or use fewer --workers"),
    errno.ENFILE: ("too many open files on this machine", "Close other programs, or use fewer --workers"),
    errno.ENOMEM: ("out of memory", "Use a smaller --batch or fewer --workers"),
    errno.ELOOP: ("too many levels of links", "Check the path for a link loop"),
}

# PyTorch's words when the kernel kills a data-loader worker (typically the out-of-memory killer).
_WORKER_DIED = re.compile(r"DataLoader worker \(pid\(?s?\)? ?[^)]*\) (is killed by signal|exited unexpectedly)")


def rerun_command(argv: list[str]) -> str:
    return "vocseg " + " ".join(shlex.quote(a) for a in argv) if argv else "vocseg"


def describe_os_error(exc: OSError, argv: list[str]) -> str:
    """One line: what happened, at which path, what was kept, and the command that continues."""
    code = exc.errno or -1
    if code == errno.EEXIST and exc.filename and not os.path.isdir(exc.filename):
        code = errno.ENOTDIR  # mkdir of a folder whose name a file already has
    kind, fix = OS_FAULTS.get(code, (exc.strerror or type(exc).__name__, "Fix the cause"))
    where = getattr(exc, WHERE_ATTR, None)
    if exc.filename and exc.filename2:
        at = f" at {exc.filename} -> {exc.filename2}"
    elif exc.filename:
        at = f" at {exc.filename}"
    else:
        at = f" while writing in {where}" if where else ""
    if exc.errno is None:  # a library's OSError about content (an image it cannot read), not the disk
        return f"{exc}{at}. Check that file, or re-run as `vocseg --verbose ...` for the traceback."
    kept = getattr(exc, KEPT_ATTR, None)
    kept_text = f" {kept.rstrip('.')}." if kept else ""
    next_command = getattr(exc, NEXT_ATTR, None) or rerun_command(argv)
    return f"{kind}{at} ({exc.strerror or exc}).{kept_text} {fix}, then run `{next_command}`."


def _loader_connection_lost(exc: BaseException) -> bool:
    """A connection to a data-loader worker broke under the main process: ConnectionError
    (ConnectionResetError, BrokenPipeError) raised inside multiprocessing while torch's DataLoader
    receives a batch, which is what a worker killed while it hands one over looks like before
    torch notices the death itself. A dataset's own errors are raised elsewhere."""
    import traceback

    if not isinstance(exc, ConnectionError):
        return False
    files = [frame.f_code.co_filename.replace("\\", "/") for frame, _ in traceback.walk_tb(exc.__traceback__)]
    return bool(files) and "/multiprocessing/" in files[-1] and any("/torch/utils/data/" in f for f in files)


def describe_worker_death(exc: BaseException, argv: list[str]) -> str | None:
    """One line for a data-loader worker killed by the kernel, or None for other errors."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if _loader_connection_lost(exc):
        first = f"its connection broke: {first or type(exc).__name__}"
    elif not _WORKER_DIED.search(first):
        return None
    kept = getattr(exc, KEPT_ATTR, None)
    next_command = getattr(exc, NEXT_ATTR, None) or rerun_command(argv)
    return (
        f"a data-loader worker died ({first.rstrip('. ')}): most likely the kernel's out-of-memory killer."
        f"{f' {kept.rstrip(chr(46))}.' if kept else ''} Use fewer --workers or a smaller --batch "
        f"(or free memory), then run `{next_command}`."
    )


# A command that ends with an exit code it has already explained (a training stopped by Ctrl-C or
# SIGTERM printed its checkpoint and `vocseg resume` command) marks it, so that the CLI does not add
# its generic Ctrl-C line: Typer returns a Ctrl-C as the same exit code 130.
_EXIT_REPORTED = [False]


def mark_exit_reported(reported: bool = True) -> None:
    """Note (or, with False, forget at the start of a command) that the exit code was explained;
    forgetting also forgets an interruption's continuing command (`interrupted_next_command`)."""
    _EXIT_REPORTED[0] = reported
    if not reported:
        _INTERRUPT_NEXT[0] = ""


# The command that continues after an interruption, noted by the innermost `FaultContext` the
# interruption passed through (training: `vocseg resume RUN`, or `vocseg train RUN/config.py`
# before the first checkpoint); "" when none did: the CLI then suggests the same command again.
_INTERRUPT_NEXT = [""]


def interrupted_next_command() -> str:
    """The continuing command a `FaultContext` noted for this command's interruption, or ""."""
    return _INTERRUPT_NEXT[0]


def exit_was_reported() -> bool:
    return _EXIT_REPORTED[0]


# ---------------------------------------------------------------- SIGTERM is a Ctrl-C with its own exit code


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread by the handler `sigterm_as_interrupt` installs: every
    command stops as on Ctrl-C (its own cleanup runs; the CLI prints what was finished and the
    command that continues) and exits 143 (128 + SIGTERM, the shell's convention) instead of 130.
    A KeyboardInterrupt, so code that handles Ctrl-C handles it too."""


_TERMINATED = [False]  # set by the SIGTERM handler: click may hand back only Exit(130)'s code


def interruption_behind(exc: BaseException | None) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt (Ctrl-C, or SIGTERM's `Terminated`) that `exc` is or was raised while
    handling (its `__cause__` / `__context__` chain, 8 links deep), else None: a library that
    catches everything (MMEngine's config formatting, click) turns an interruption into its own error."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, KeyboardInterrupt):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def interrupt_exit_code(exc: BaseException | None = None) -> int:
    """143 when the stop was a SIGTERM (`exc`, or what caused it, is `Terminated`: click turns a
    KeyboardInterrupt into Abort / Exit(130); or the handler fired during this command), else 130
    (Ctrl-C)."""
    if _TERMINATED[0]:
        return 143
    return 143 if isinstance(interruption_behind(exc), Terminated) else 130


class sigterm_as_interrupt:  # noqa: N801 - used as a context manager, like contextlib's
    """While active (in the main thread, where SIGTERM still has its default action), SIGTERM
    raises `Terminated` in this process. A child forked meanwhile (a multiprocessing pool worker,
    a data-loader worker) keeps the default: it dies of the signal as before. Training replaces the
    handler with its own stop request (`vocseg.training.stop.StopRequest`) for as long as it
    trains and puts this one back afterwards; the previous handler is restored on exit.

    A SIGTERM after the command's work is done (`finished()`: its outputs written, its success
    text printed) no longer interrupts: the command ends with its own exit code (0 after a
    success), as the work it was asked for is complete. With `process_ends` (the `vocseg`
    executable, not a test calling `vocseg.cli.run`), a SIGTERM after the block, while the
    interpreter shuts down (seconds after torch or onnxruntime), ends the process at once with the
    command's exit code (`exit_code`, set by the caller), instead of killing it with exit code 143
    and no line after a success; a shutdown that hangs still ends on SIGTERM."""

    def __init__(self, *, process_ends: bool = False) -> None:
        self._pid = os.getpid()
        self._previous: object = None
        self._installed = False
        self._finished = False
        self._process_ends = process_ends
        self.exit_code = 1  # the command's, for a SIGTERM during shutdown (`process_ends`): set when it returns; an exception escaping it is a failure

    def finished(self) -> None:
        """The command's work is done: a SIGTERM from now on is ignored (the exit code stays the command's)."""
        self._finished = True

    def _exit_now(self, signum: int, frame: object) -> None:
        """SIGTERM while the interpreter shuts down after the command: its exit code, at once."""
        import sys

        if os.getpid() != self._pid:
            os._exit(128 + signum)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001, S112 - a closed or broken stream: nothing more to say
                continue
        os._exit(self.exit_code)

    def _handle(self, signum: int, frame: object) -> None:
        import signal

        if os.getpid() != self._pid:  # a forked child: the default action, as if never installed
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        if self._finished:  # nothing left to stop: the outputs are written, the success printed
            return
        _TERMINATED[0] = True
        raise Terminated()

    def __enter__(self) -> sigterm_as_interrupt:
        import signal
        import threading

        _TERMINATED[0] = False
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        import signal

        if self._installed:
            signal.signal(signal.SIGTERM, self._exit_now if self._process_ends else self._previous)  # type: ignore[arg-type]
            self._installed = False
