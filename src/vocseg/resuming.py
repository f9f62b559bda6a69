"""Resuming a run: find it, check its checkpoint, and handle a change in the number of processes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from vocseg.errors import VocsegError
from vocseg.mmconfig import build_config_text, write_text_atomic
from vocseg.recipe import Recipe, parse_gpus, plan
from vocseg.runs import CONFIG_NAME, RECIPE_NAME, RUNS_ROOT, latest_checkpoint, latest_run_dir


def prepare_resume(run_dir: Path | None, *, gpus: str | None, nproc: int | None, rescale_lr: bool) -> tuple[Path, Recipe | None]:
    """Find the run and its checkpoint; with another process count, rescale the LR or refuse."""
    from vocseg.compat import load_checkpoint_file

    if run_dir is None:
        run_dir = latest_run_dir()
        if run_dir is None:
            raise VocsegError(f"No run folder under {RUNS_ROOT}/.", "Pass the run folder: vocseg resume RUN_DIR.")
    run_dir = run_dir.expanduser().resolve()
    config_path = run_dir / CONFIG_NAME
    if not config_path.is_file():
        raise VocsegError(f"{run_dir} is not a vocseg run folder (no {CONFIG_NAME}).", "Pass the folder `vocseg train` printed.")
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise VocsegError(f"{run_dir} has no checkpoint to resume from.", f"Start it again with `vocseg train {config_path}`.")
    load_checkpoint_file(checkpoint)  # refuses a truncated or foreign file before any process starts
    recipe_path = run_dir / RECIPE_NAME
    recipe = Recipe.from_json(recipe_path.read_text()) if recipe_path.is_file() else None
    if recipe is None or (gpus is None and nproc is None):
        return config_path, recipe
    changed = dataclasses.replace(recipe, gpus=str(parse_gpus(gpus)) if gpus else recipe.gpus, nproc=nproc or recipe.nproc)
    if changed.world_size == recipe.world_size:
        return config_path, changed
    if not rescale_lr:
        raise VocsegError(
            f"The run was trained with {recipe.world_size} process(es); resuming with {changed.world_size} changes the total batch.",
            "Pass --rescale-lr to rescale the LR to the new batch (linear rule), or resume with the original count.",
        )
    new_plan = plan(changed)
    old_plan = plan(recipe)
    # Same LR schedule shape, scaled; the iteration count stays, so samples seen change with the batch.
    text = build_config_text(dataclasses.replace(changed), dataclasses.replace(new_plan, max_iters=old_plan.max_iters), run_dir)
    write_text_atomic(config_path, text)
    write_text_atomic(recipe_path, changed.to_json() + "\n")
    return config_path, changed
