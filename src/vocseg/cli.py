"""The `vocseg` command: parses, prints, and turns every known failure into one line and an exit code.

Each verb lives in `vocseg.commands.<verb>`; heavy imports (torch, mmseg) happen inside the
verbs, never here, so `vocseg --help` stays fast.
"""

from __future__ import annotations

import errno
import os
import re
import shlex
import sys

import typer

from vocseg import __version__
from vocseg.commands import compare, config, evaluate, predict, prepare, resume, train
from vocseg.errors import VocsegError

app = typer.Typer(
    name="vocseg",
    help="PASCAL VOC 2012 semantic segmentation on MMSegmentation: prepare, config, train, resume, eval, predict, compare.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: typer's rich help renderer costs ~45 ms of imports at every `--help`.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

for module in (prepare, config, train, resume, evaluate, predict, compare):
    module.register(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vocseg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    verbose: bool = typer.Option(False, "--verbose", help="On an error, also print the Python traceback (after the one-line message)."),
) -> None:
    """PASCAL VOC 2012 semantic segmentation on MMSegmentation."""


# ---------------------------------------------------------------- file-system faults in one line

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
    errno.EMFILE: ("too many open files", "Raise `ulimit -n`, or use fewer --num-workers"),
    errno.ENFILE: ("too many open files on this machine", "Close other programs, or use fewer --num-workers"),
    errno.ENOMEM: ("out of memory", "Use a smaller --batch or fewer --num-workers"),
    errno.ELOOP: ("too many levels of links", "Check the path for a link loop"),
}

# PyTorch's words when the kernel kills a data-loader worker (typically the out-of-memory killer).
_WORKER_DIED = re.compile(r"DataLoader worker \(pid\(?s?\)? ?[^)]*\) (is killed by signal|exited unexpectedly)")


def rerun_command(argv: list[str]) -> str:
    return "vocseg " + " ".join(shlex.quote(a) for a in argv) if argv else "vocseg"


def describe_os_error(exc: OSError, argv: list[str]) -> str:
    """One line: what happened, at which path, what was kept, and the command that continues."""
    from vocseg.errors import KEPT_ATTR, NEXT_ATTR, WHERE_ATTR

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
        return f"{exc}{at}. Check that file, or re-run with --verbose for the traceback."
    kept = getattr(exc, KEPT_ATTR, None)
    kept_text = f" {kept.rstrip('.')}." if kept else ""
    next_command = getattr(exc, NEXT_ATTR, None) or rerun_command(argv)
    return f"{kind}{at} ({exc.strerror or exc}).{kept_text} {fix}, then run `{next_command}`."


def describe_worker_death(exc: BaseException, argv: list[str]) -> str | None:
    """One line for a data-loader worker killed by the kernel, or None for other errors."""
    from vocseg.errors import KEPT_ATTR, NEXT_ATTR

    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if not _WORKER_DIED.search(first):
        return None
    kept = getattr(exc, KEPT_ATTR, None)
    next_command = getattr(exc, NEXT_ATTR, None) or rerun_command(argv)
    return (
        f"a data-loader worker died ({first.rstrip('. ')}): most likely the kernel's out-of-memory killer."
        f"{f' {kept.rstrip(chr(46))}.' if kept else ''} Use fewer --num-workers or a smaller --batch "
        f"(or free memory), then run `{next_command}`."
    )


def fail(message: str, code: int) -> int:
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold red]error:[/] {message}", markup=True)
    return code


def _cli_exception_types() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """(usage errors, exits, aborts): typer >= 0.2x vendors click, older typer uses click itself."""
    usage: list[type] = [getattr(typer, "TyperException", ())] if hasattr(typer, "TyperException") else []
    exits: list[type] = [typer.Exit]
    aborts: list[type] = [typer.Abort]
    try:
        import click

        usage.append(click.ClickException)
        exits.append(click.exceptions.Exit)
        aborts.append(click.exceptions.Abort)
    except ImportError:
        pass
    return tuple(usage), tuple(exits), tuple(aborts)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code (tests call this, `main` exits with it)."""
    command = typer.main.get_command(app)
    usage_errors, exits, aborts = _cli_exception_types()
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in args or "-v" in args
    try:
        result = command.main(args=args, prog_name="vocseg", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except VocsegError as exc:
        from rich.markup import escape

        if verbose and exc.__cause__ is not None:
            _print_traceback(exc.__cause__)
        return fail(escape(str(exc)), exc.exit_code)
    except OSError as exc:
        from rich.markup import escape

        if verbose:
            _print_traceback(exc)
        return fail(escape(describe_os_error(exc, args)), 1)
    except RuntimeError as exc:
        line = describe_worker_death(exc, args)
        if line is None:
            raise
        from rich.markup import escape

        if verbose:
            _print_traceback(exc)
        return fail(escape(line), 1)
    except exits as exc:
        return int(getattr(exc, "exit_code", 0))
    except aborts:
        return fail("interrupted.", 130)
    except usage_errors as exc:
        from rich.markup import escape

        ctx = getattr(exc, "ctx", None)
        name = getattr(getattr(ctx, "command", None), "name", None)
        hint = f" (see `vocseg {name} --help`)" if name and name != "vocseg" else " (see `vocseg --help`)"
        return fail(escape(exc.format_message()) + hint, int(getattr(exc, "exit_code", 2)))
    except KeyboardInterrupt:
        return fail("interrupted.", 130)


def _print_traceback(exc: BaseException) -> None:
    import traceback

    traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
