"""The CLI's vocabulary: one option type per idea, shared by every command (docs/cli.md is its table).

A model is always `-c/--checkpoint MODEL`, an output `-o/--out`, overwriting `--force`, the device
`--device` (`auto`: cuda where a GPU is visible, else cpu), loader/pool workers `--workers`, images
per GPU `--batch`, MMEngine's log `--log` (the root `vocseg --verbose` shows tracebacks). Options
are grouped in `--help` by the panels below; fixed choices are `Literal`s, so Typer lists and checks
them. Old spellings still work for one version, with a deprecation line (`DEPRECATED`).

Light imports only: this module is imported by `vocseg --help`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer
from typer.core import TyperCommand

# Help panels, in the order `--help` shows them (options without a panel come first, as "Options").
MODEL = "Model"
DATA = "Data"
RECIPE = "Recipe"
HARDWARE = "Hardware"
LAUNCH = "Launch"
OUTPUT = "Output"

# Panels not listed here go between HARDWARE and LAUNCH (a command's own groups).
PANEL_ORDER = ("Options", MODEL, DATA, RECIPE, HARDWARE, LAUNCH, OUTPUT)

MODEL_HELP = ("The model: a run folder (its newest checkpoint), a checkpoint .pth, official:NAME (upernet-r50-40k, -r50-20k, "
              "-r101-20k, -r101-40k; downloaded once), or a .onnx from `vocseg export` (predict only). "
              "Default: the newest trained run under runs/ (said when used).")
DEVICE_HELP = "auto (cuda if a GPU is visible, else cpu), cpu, cuda or cuda:N (default: auto)."
FORCE_HELP = "Overwrite an output file that vocseg would otherwise refuse to replace (one it did not write, or edited since); never an input."
LOG_HELP = "Also show MMEngine's log (progress as plain lines)."
WORKERS_HELP = ("Worker processes: data loader workers per process (train, eval; 0: in the process itself), or conversion and check "
                "processes (prepare). Default: from the machine's cores (train: shared by its processes, at most 8; eval: the config's; prepare: all).")
DATA_ROOT_HELP = "Dataset root holding VOCdevkit/ (default: a given config's, else $VOCSEG_DATA_ROOT, else the user data folder)."
CONFIG_HELP = "The config the checkpoint was trained with (default: the run folder's)."

# Model reference: the option everywhere, the positional form where it existed (eval, export) as an alias.
CheckpointOpt = Annotated[Optional[str], typer.Option("--checkpoint", "-c", metavar="MODEL", help=MODEL_HELP, rich_help_panel=MODEL, show_default=False)]
ModelArg = Annotated[Optional[str], typer.Argument(metavar="MODEL", help="Same as -c/--checkpoint (the positional form is kept for scripts).", show_default=False)]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help=CONFIG_HELP, rich_help_panel=MODEL)]

DataRootOpt = Annotated[Optional[Path], typer.Option("--data-root", help=DATA_ROOT_HELP, rich_help_panel=DATA)]
CLASSES_HELP = ("Class names of an own dataset: one per line (background first), or a CVAT/Datumaro labelmap.txt "
                "(default: class_names.txt or labelmap.txt found in the data root; none: PASCAL VOC).")
ClassesOpt = Annotated[Optional[Path], typer.Option("--classes", help=CLASSES_HELP, rich_help_panel=DATA)]

ForceOpt = Annotated[bool, typer.Option("--force", help=FORCE_HELP, rich_help_panel=OUTPUT)]
LogOpt = Annotated[bool, typer.Option("--log", help=LOG_HELP, rich_help_panel=OUTPUT)]

DeviceOpt = Annotated[str, typer.Option("--device", metavar="auto|cpu|cuda|cuda:N", help=DEVICE_HELP, rich_help_panel=HARDWARE, show_default=False)]
WorkersOpt = Annotated[Optional[int], typer.Option("--workers", min=0, help=WORKERS_HELP, rich_help_panel=HARDWARE)]

Mode = Literal["whole", "slide"]
ModeOpt = Annotated[Mode, typer.Option("--mode", help="whole (the image at once, at the test scale) or slide (crop-size windows at the image's own resolution: for large images).", rich_help_panel=MODEL)]


def out_option(help: str, *names: str) -> Any:
    """`-o/--out`: where a command writes (a file or a folder, per command; the help says which)."""
    return typer.Option("--out", "-o", *names, help=help, rich_help_panel=OUTPUT, show_default=False)


def resolve_device(device: str | None) -> str:
    """`auto` -> "cuda" where torch sees a GPU, else "cpu"; any other value unchanged. Imports torch only for auto."""
    if device in (None, "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def model_of(positional: str | None, option: str | None, command: str, args: Sequence[object] = ()) -> str:
    """The one model reference of a command that takes it both as `-c MODEL` and positionally.
    Neither given: the newest trained run under runs/ (said on the console; `commands.default_model`),
    or one line naming `-c RUN`, `-c official:...` and `vocseg train` (`args`: the command's other
    arguments, kept in the suggested commands)."""
    from vocseg.errors import VocsegError

    if positional is not None and option is not None and positional != option:
        raise VocsegError(f"Two models given: {positional} and -c {option}.", f"Pass one: vocseg {command} -c {option}")
    model = option if option is not None else positional
    if model is None:
        from vocseg.commands.default_model import default_run

        return str(default_run(command, option="-c", args=args))
    return model


# Old spelling -> new, per command: still accepted for one version, with a deprecation line on stderr.
_LOG = {"-v": "--log", "--verbose": "--log"}
DEPRECATED: dict[str, dict[str, str]] = {
    "prepare": {"--force": "--redo"},
    "config": {"--num-workers": "--workers"},
    "train": {"--num-workers": "--workers", **_LOG},
    "resume": dict(_LOG),
    "eval": {"--num-workers": "--workers", **_LOG},
    "predict": {"--batch": "--frames-per-batch"},
    "report": dict(_LOG),
}


def replace_deprecated(command: str, args: list[str]) -> tuple[list[str], list[str]]:
    """(args with old spellings replaced, one deprecation line per old spelling used). Stops at `--`."""
    table = DEPRECATED.get(command, {})
    out: list[str] = []
    notes: list[str] = []
    for i, arg in enumerate(args):
        if arg == "--":
            out += args[i:]
            break
        name, eq, value = arg.partition("=")
        new = table.get(name)
        if new is None:
            out.append(arg)
            continue
        out.append(new + eq + value)
        line = f"deprecated: `vocseg {command} {name}` is now `{new}`; the old spelling goes in the next version."
        if line not in notes:
            notes.append(line)
    return out, notes


# Typer's type labels in `--help` (`<int range>`, `<list[str]>`) -> the placeholder a person types;
# fixed choices (`<whole|slide>`) stay as they are. A list option or argument names its own metavar.
_PLACEHOLDERS = {"int": "N", "int range": "N", "float": "X", "float range": "X", "path": "PATH", "str": "TEXT"}


def plain_metavars(name_column: str) -> str:
    """A help record's name column with Typer's type labels replaced by placeholders:
    "--workers <int range>" -> "--workers N", "--lr <float>" -> "--lr X" (X as in "[x>=0.0]"),
    "-o, --out <path>" -> "-o, --out PATH", "--name <str>" -> "--name TEXT"."""
    import re

    return re.sub(r"<(int range|int|float range|float|path|str)>", lambda m: _PLACEHOLDERS[m.group(1)], name_column)


def argument_name_column(param: Any, record_name: str) -> str:
    """An argument's name column: its metavar ("IMAGE..." for several values), without Typer's
    type label ("MODEL <str>", "images... <list[str]>"); one without a metavar as Typer shows it,
    placeholders plain."""
    metavar = getattr(param, "metavar", None)
    if metavar:
        return f"{metavar}..." if getattr(param, "nargs", 1) != 1 else str(metavar)
    return plain_metavars(record_name)


class VocsegCommand(TyperCommand):
    """A command whose plain `--help` shows its options grouped by `rich_help_panel` (Typer's plain
    formatter, used for start-up speed, lists them flat), with placeholders a person types
    (`plain_metavars`: `--workers N`, `IMAGE...`, not `<int range>`, `<list[str]>`), and that
    accepts the old spellings."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        args, notes = replace_deprecated(self.name or "", list(args))
        for line in notes:
            print(line, file=sys.stderr)
        return super().parse_args(ctx, args)

    def format_options(self, ctx: Any, formatter: Any) -> None:
        arguments: list[tuple[str, str]] = []
        panels: dict[str, list[tuple[str, str]]] = {"Options": []}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                arguments.append((argument_name_column(param, record[0]), record[1]))
            else:
                panels.setdefault(getattr(param, "rich_help_panel", None) or "Options", []).append((plain_metavars(record[0]), record[1]))
        if arguments:
            with formatter.section("Arguments"):
                formatter.write_dl(arguments)
        order = {title: i for i, title in enumerate(PANEL_ORDER)}
        for title, records in sorted(panels.items(), key=lambda item: order.get(item[0], len(PANEL_ORDER) - 2)):
            if records:
                with formatter.section(title):
                    formatter.write_dl(records)


def command(app: typer.Typer, name: str) -> Any:
    """`app.command(name)` with vocseg's grouped help and deprecated spellings."""
    return app.command(name, cls=VocsegCommand)
