"""`vocseg config`: recipe flags -> a standalone MMSeg config file, with the arithmetic shown."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from vocseg.commands.options import ForceOpt, command, out_option
from vocseg.commands.recipe_options import recipe_from_flags, with_recipe_options


def register(app: typer.Typer) -> None:
    command(app, "config")(config)


@with_recipe_options
def config(
    flags: dict[str, Any],
    output: Annotated[Optional[Path], out_option("Write the config file here (default: print it to stdout).", "--output")] = None,
    force: ForceOpt = False,
) -> None:
    """Write a complete MMSeg config: scaled LR, schedule equivalents, matching pretrained weights."""
    from vocseg.commands.render import print_plan
    from vocseg.console import console, err_console
    from vocseg.files import check_may_write, owned_write_text
    from vocseg.training.experiment import plan_experiment

    if output is not None:
        check_may_write(output, force=force, option="-o")  # before the plan is printed or weights are checked
    recipe = recipe_from_flags(flags)
    experiment = plan_experiment(recipe, work_dir=flags.get("work_dir"), check_pretrained=True, missing_data_ok=True)
    print_plan(experiment.recipe or recipe, experiment.plan, console if output else err_console)
    if output is None:
        sys.stdout.write(experiment.config_text)
        return
    owned_write_text(output, experiment.config_text, force=force, option="-o")
    from vocseg.console import command, shown

    console.print(f"wrote {shown(output)}  (train it: {shown(command('train', output))})", soft_wrap=True)
