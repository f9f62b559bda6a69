"""The `vocseg` command: parses, prints, and turns every known failure into one line and an exit code.

Each verb lives in `vocseg.commands.<verb>`; heavy imports (torch, mmseg) happen inside the
verbs, never here, so `vocseg --help` stays fast.
"""

from __future__ import annotations

import sys

import typer

from vocseg import __version__
from vocseg.commands import compare, config, evaluate, export, predict, prepare, report, resume, train
from vocseg.errors import (
    VocsegError,
    describe_os_error,
    describe_worker_death,
    exit_was_reported,
    interrupt_exit_code,
    mark_exit_reported,
    sigterm_as_interrupt,
)

app = typer.Typer(
    name="vocseg",
    help="PASCAL VOC 2012 semantic segmentation on MMSegmentation: prepare, config, train, resume, eval, predict, compare, report, export.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: typer's rich help renderer costs ~45 ms of imports at every `--help`.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

for module in (prepare, config, train, resume, evaluate, predict, compare, report, export):
    module.register(app)


def _summary(doc: str | None) -> str | None:
    """A command's whole first paragraph, on one line: click would cut it with "..." to fit the
    terminal (`vocseg --help` then wraps it instead)."""
    if not doc:
        return None
    return " ".join(doc.strip().split("\n\n")[0].split())


for _info in app.registered_commands:
    if _info.short_help is None and _info.callback is not None:
        _info.short_help = _summary(_info.callback.__doc__)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vocseg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    verbose: bool = typer.Option(False, "--verbose", help="On an error, also print the Python traceback (after the one-line message). MMEngine's log is a command's --log."),
) -> None:
    """PASCAL VOC 2012 semantic segmentation on MMSegmentation."""


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


def run(argv: list[str] | None = None, *, process_ends: bool = False) -> int:
    """Run the CLI; return the exit code (tests call this, `main` exits with it). SIGTERM stops a
    command as Ctrl-C does (one line: what was finished, how to continue), with exit code 143;
    once the command has returned (its outputs written, its last line printed) a SIGTERM no longer
    stops anything and the exit code stays the command's, also while the interpreter shuts down
    (`process_ends`, `main`): a success never ends as a silent 143."""
    with sigterm_as_interrupt(process_ends=process_ends) as sigterm:
        sigterm.exit_code = _run(argv, sigterm)
        return sigterm.exit_code


def _run(argv: list[str] | None, sigterm: sigterm_as_interrupt | None = None) -> int:
    command = typer.main.get_command(app)
    usage_errors, exits, aborts = _cli_exception_types()
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in args  # `vocseg --verbose CMD`; after CMD it is also the old spelling of --log (MMEngine's log)
    if not args:  # bare `vocseg`: the help is what was asked for, not an error
        with click_context(command) as ctx:
            typer.echo(command.get_help(ctx))
        return 0
    mark_exit_reported(False)  # per call: tests run several commands in one process
    try:
        result = command.main(args=args, prog_name="vocseg", standalone_mode=False)
        if sigterm is not None:
            sigterm.finished()

        if result == 130 and not exit_was_reported():  # Ctrl-C or SIGTERM: Typer returns it as Exit(130)'s code
            return interrupted(args)
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
        return fail(escape(describe_worker_death(exc, args) or describe_os_error(exc, args)), 1)
    except RuntimeError as exc:
        line = describe_worker_death(exc, args)
        if line is None:
            raise
        from rich.markup import escape

        if verbose:
            _print_traceback(exc)
        return fail(escape(line), 1)
    except exits as exc:
        code = int(getattr(exc, "exit_code", 0))
        if code == 0 and sigterm is not None:  # typer.Exit(): the command (or --version) ended normally
            sigterm.finished()
        if code == 130 and isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt):  # typer's Exit(130) for a Ctrl-C (or SIGTERM)
            return interrupted(args, exc)
        return code  # a command's own exit code (a stopped training printed its resume command already)
    except aborts as exc:
        return interrupted(args, exc)
    except usage_errors as exc:
        from rich.markup import escape

        ctx = getattr(exc, "ctx", None)
        name = getattr(getattr(ctx, "command", None), "name", None)
        hint = f" (see `vocseg {name} --help`)" if name and name != "vocseg" else " (see `vocseg --help`)"
        return fail(escape(plain_usage_message(exc.format_message(), args)) + hint, int(getattr(exc, "exit_code", 2)))
    except KeyboardInterrupt as exc:
        return interrupted(args, exc)


def interrupted(args: list[str], exc: BaseException | None = None) -> int:
    """Print the interrupted line and return its exit code: 143 for SIGTERM, 130 for Ctrl-C."""
    code = interrupt_exit_code(exc)
    return fail(escape_line(interrupted_line(args, code)), code)


# pydantic's wording (Typer >= 0.2x checks values with it) -> what a person reads
_PYDANTIC_PHRASES = {
    "Input should be a valid integer, unable to parse string as an integer": "is not a whole number",
    "Input should be a valid integer, got a number with a fractional part": "is not a whole number",
    "Input should be a valid number, unable to parse string as a number": "is not a number",
    "Input should be a valid boolean, unable to interpret input": "is not true or false",
}


def plain_usage_message(message: str, args: list[str]) -> str:
    """Click's "Invalid value for '--iters': <pydantic's sentence>" as "--iters abc is not a whole
    number", the flag as the user spelled it (`-b x is not a whole number`, also for `-bx`);
    pydantic's "Value error, " prefix dropped. Other messages (Click's own, such as a fixed
    choice's "'foo' is not one of ...") are returned as they are."""
    import re
    import shlex

    message = message.replace("Value error, ", "")
    match = re.match(r"Invalid value for '(--[\w-]+)'(?: / '(-\w)')?: (.+)$", message)
    if not match:
        return message
    option, short, reason = match.group(1), match.group(2), match.group(3)
    if reason not in _PYDANTIC_PHRASES:
        return message
    phrase = _PYDANTIC_PHRASES[reason]
    given = _given_value(args, [option, *([short] if short else [])])
    if given is None:
        return f"{option}: the value {phrase}"
    spelled, value = given
    return f"{spelled} {shlex.quote(value)} {phrase}"


def _given_value(args: list[str], names: list[str]) -> tuple[str, str] | None:
    """(the spelling used, the value) of the last of `names` in `args`: `--batch x`, `--batch=x`,
    `-b x`, `-bx`; None when not found (or no value follows). Stops at `--`."""
    found: tuple[str, str] | None = None
    for i, arg in enumerate(args):
        if arg == "--":
            break
        for name in names:
            if arg == name and i + 1 < len(args):
                found = (name, args[i + 1])
            elif name.startswith("--") and arg.startswith(name + "="):
                found = (name, arg[len(name) + 1:])
            elif len(name) == 2 and arg.startswith(name) and len(arg) > 2 and not arg.startswith("--"):
                found = (name, arg[2:])
    return found


def interrupted_line(args: list[str], code: int = 130) -> str:
    """Ctrl-C (code 130) or SIGTERM (143): what was finished (the files written completely,
    `vocseg.files`) and how to go on: the continuing command the interrupted work noted
    (`vocseg.errors.interrupted_next_command`: a training run's `vocseg resume RUN`, or `vocseg
    train RUN/config.py` before its first checkpoint, which reuse the run folder), else the same
    command again."""
    import shlex

    from vocseg.errors import interrupted_next_command
    from vocseg.files import written_this_process

    count, folders = written_this_process()
    done = f"{count} file{'' if count == 1 else 's'} written completely in {folders[0]}{' and other folders' if len(folders) > 1 else ''}" if count else "nothing written"
    how = "interrupted" if code == 130 else "stopped by SIGTERM"
    continuing = interrupted_next_command()
    if continuing:
        return f"{how}: {done}, no half-written file left; run `{continuing}` to finish."
    return f"{how}: {done}, no half-written file left; run `vocseg {shlex.join(args)}` again to finish."


def escape_line(line: str) -> str:
    from rich.markup import escape

    return escape(line)


def click_context(command: object) -> object:
    """The root command's context (for its help text)."""
    return command.make_context("vocseg", [], resilient_parsing=True)  # type: ignore[attr-defined]


def _print_traceback(exc: BaseException) -> None:
    import traceback

    traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)


def main() -> None:
    sys.exit(run(process_ends=True))


if __name__ == "__main__":
    main()
