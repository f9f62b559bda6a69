"""An experiment: a recipe, its plan, its run folder and its config text. Writes run folders.

`vocseg config`, `train` and `resume` all go through here, so the same recipe always gives the
same config, and a run folder always holds the config and recipe it was trained with.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vocseg.errors import VocsegError
from vocseg.files import OWN_NAMES, folder_record, owned_mkdir, owned_write_text, recorded, write_text_atomic
from vocseg.recipe.mmconfig import build_config_text
from vocseg.recipe.recipe import Plan, Recipe, plan
from vocseg.runs.folders import CONFIG_NAME, LOCK_NAME, RECIPE_NAME, RUNS_ROOT, latest_checkpoint, unique_run_dir


@dataclass(frozen=True)
class Experiment:
    recipe: Recipe | None  # None for a config file not written by vocseg
    plan: Plan | None
    work_dir: Path
    config_text: str


def plan_experiment(recipe: Recipe, *, work_dir: Path | None, check_pretrained: bool, new_run: bool = False) -> Experiment:
    """Validate, derive the plan, pick the run folder and render the config."""
    the_plan = plan(recipe)
    if check_pretrained and recipe.pretrained_checkpoint:
        from vocseg.recipe.pretrained import check_pretrained_choice, resolve_for_training

        if new_run:
            # Training starts soon: fetch (cached, hash-checked), check against the backbone, and
            # record the local file, so the run does not depend on the network again.
            recipe = dataclasses.replace(recipe, pretrained=resolve_for_training(recipe) or "none")
        else:
            check_pretrained_choice(recipe)
    if work_dir is None:
        name = recipe.name or recipe.default_name()
        work_dir = unique_run_dir(RUNS_ROOT, name) if new_run else RUNS_ROOT / name
    work_dir = work_dir.expanduser().resolve()
    return Experiment(recipe, the_plan, work_dir, build_config_text(recipe, the_plan, work_dir))


def write_config(experiment: Experiment, path: Path) -> None:
    write_text_atomic(path, experiment.config_text)


def load_mmengine_config(path: Path) -> Any:
    """mmengine's Config of a file, or a one-line error."""
    from vocseg.stack.compat import ensure_stack

    ensure_stack()
    from mmengine.config import Config

    try:
        return Config.fromfile(str(path))
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise VocsegError(f"Cannot read config {path}: {first}.", "Pass a config written by `vocseg config` or an mmseg config.") from None


def experiment_from_config_file(path: Path, flags: dict[str, Any]) -> Experiment:
    """`vocseg train CFG.py`: the file is trained as written; only --work-dir may be given beside it."""
    if not path.is_file():
        raise VocsegError(f"Config {path} does not exist.", "Write one with `vocseg config -o FILE`.")
    given = [k for k, v in flags.items() if v is not None and k != "work_dir"]
    if given:
        names = ", ".join("--" + k.replace("_", "-") for k in given)
        raise VocsegError(f"{names} cannot be combined with a config file: it is trained as written.", "Re-create the config with `vocseg config` and these flags, or drop them.")
    cfg = load_mmengine_config(path)
    embedded = cfg.get("vocseg_recipe")
    recipe = Recipe.from_json(embedded) if embedded else None  # None: a config not written by vocseg
    the_plan = plan(recipe) if recipe is not None else None
    text = path.read_text()
    flag_dir = flags.get("work_dir")
    if flag_dir is not None:
        work_dir = Path(flag_dir).expanduser().resolve()
        # The file stays as written (hand edits included); only the run folder changes.
        text += f"\n# set by `vocseg train --work-dir`\nwork_dir = {str(work_dir)!r}\n"
    elif cfg.get("work_dir"):
        work_dir = Path(cfg.work_dir).expanduser().resolve()
    else:
        work_dir = unique_run_dir(RUNS_ROOT, recipe.default_name() if recipe else path.stem).resolve()
        text += f"\nwork_dir = {str(work_dir)!r}\n"
    return Experiment(recipe, the_plan, work_dir, text)


def check_run_folder(experiment: Experiment) -> None:
    """Refuse, before anything is written, a --work-dir that holds files vocseg did not write there
    as a run folder (a user's own config.py, notes, data), or a run with checkpoints.

    An entry counts as the run's only when the record (`vocseg.files`) proves vocseg created it
    there and nobody changed it (files), or created it (folders: MMEngine's log folders, eval/,
    predict/), or when it already holds exactly what would be written; names alone prove nothing
    (a user's curves.png, eval/, *.pth or timestamp-named folder is the user's).
    """
    work_dir = experiment.work_dir
    if not work_dir.exists() and not work_dir.is_symlink():
        return
    if not work_dir.is_dir():
        raise VocsegError(f"--work-dir {work_dir} is a file, not a folder; it is left as it is.", "Pass a folder (a new one is created).")
    if latest_checkpoint(work_dir) is not None:
        raise VocsegError(f"{work_dir} already holds a run with checkpoints.", f"Continue it with `vocseg resume {work_dir}`, or pass another --work-dir.")
    planned = {CONFIG_NAME: experiment.config_text}
    if experiment.recipe is not None:
        planned[RECIPE_NAME] = experiment.recipe.to_json() + "\n"
    foreign = []
    temps = folder_record(work_dir).temps
    for entry in sorted(work_dir.iterdir()):
        name = entry.name
        if name in OWN_NAMES or name in temps or (name == LOCK_NAME and entry.is_file() and entry.stat().st_size <= 32):
            continue
        if recorded(entry) and (name not in planned or recorded(entry, role=RUN_ROLE)):  # a `config -o` file is the user's
            continue
        if entry.is_file() and not entry.is_symlink():
            if name in planned and entry.stat().st_size == len(planned[name].encode()) and entry.read_text(errors="replace") == planned[name]:
                continue
        foreign.append(name)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise VocsegError(
            f"--work-dir {work_dir} holds files vocseg did not write there ({shown}); nothing was written.",
            f"Pass a new or empty folder, e.g. --work-dir {work_dir / 'run'}.",
        )


RUN_ROLE = "run"


def start_run(experiment: Experiment) -> Path:
    """Create the run folder with config.py and recipe.json; never on top of a run that has
    checkpoints, nor over files vocseg did not write (`check_run_folder`)."""
    work_dir = experiment.work_dir
    check_run_folder(experiment)
    owned_mkdir(work_dir, role=RUN_ROLE)
    config_path = work_dir / CONFIG_NAME
    owned_write_text(config_path, experiment.config_text, role=RUN_ROLE)
    if experiment.recipe is not None:
        recipe_text = experiment.recipe.to_json() + "\n"
        owned_write_text(work_dir / RECIPE_NAME, recipe_text, role=RUN_ROLE)
    return config_path

