"""An experiment: a recipe, its plan, its run folder and its config text. Writes run folders.

`vocseg config`, `train` and `resume` all go through here, so the same recipe always gives the
same config, and a run folder always holds the config and recipe it was trained with.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vocseg.console import command
from vocseg.errors import VocsegError
from vocseg.files import OWN_NAMES, folder_record, owned_mkdir, owned_write_text, recorded
from vocseg.recipe.mmconfig import build_config_text
from vocseg.recipe.recipe import Plan, Recipe, plan
from vocseg.runs.folders import CONFIG_NAME, LOCK_NAME, RECIPE_NAME, RUNS_ROOT, latest_checkpoint, unique_run_dir


@dataclass(frozen=True)
class Experiment:
    recipe: Recipe | None  # None for a config file not written by vocseg
    plan: Plan | None
    work_dir: Path
    config_text: str


def plan_experiment(recipe: Recipe, *, work_dir: Path | None, check_pretrained: bool, new_run: bool = False, missing_data_ok: bool = False) -> Experiment:
    """Validate, derive the plan, pick the run folder and render the config (`missing_data_ok`:
    `vocseg config` before the data exist plans with VOC's official split sizes)."""
    the_plan = plan(recipe, missing_data_ok=missing_data_ok)
    weights: list[str] = []
    prefix: str | None = None
    if check_pretrained and recipe.pretrained_checkpoint:
        from vocseg.recipe.pretrained import check_pretrained_choice, pretrained_summary, resolve_for_training, url_prefix

        if new_run:
            # Training starts soon: fetch (cached, hash-checked), check against the backbone, and
            # record the local file, so the run does not depend on the network again.
            recipe = dataclasses.replace(recipe, pretrained=resolve_for_training(recipe) or "none")
        else:
            check_pretrained_choice(recipe)
        source = recipe.pretrained_checkpoint
        if source and "://" not in source:
            prefix, line = pretrained_summary(Path(source).expanduser(), recipe)
            weights.append(line)
        elif source:
            prefix = url_prefix(source)
    if recipe.load_from:
        from vocseg.training.finetune import check_load_from, resolve_load_from

        # The local file goes into the config and recipe.json: the run never depends on the network again.
        checkpoint = resolve_load_from(recipe.load_from)
        recipe = dataclasses.replace(recipe, load_from=str(checkpoint))
        weights.append(check_load_from(recipe, checkpoint)[1])
    recipe = with_class_weights(recipe)
    if recipe.class_weights:
        weights.append(class_weight_line(recipe))
    the_plan = dataclasses.replace(the_plan, weights=tuple(weights))
    if work_dir is None:
        name = recipe.name or recipe.default_name()
        work_dir = unique_run_dir(RUNS_ROOT, name) if new_run else RUNS_ROOT / name
    work_dir = work_dir.expanduser().resolve()
    return Experiment(recipe, the_plan, work_dir, build_config_text(recipe, the_plan, work_dir, pretrained_prefix=prefix))


def with_class_weights(recipe: Recipe) -> Recipe:
    """The recipe with `class_weight_values` filled: parsed from the flag, or for `auto` counted
    from the training split's masks (once; cached beside the pre-check's cache)."""
    if recipe.class_weight == "none":
        return dataclasses.replace(recipe, class_weight_values=())
    if recipe.class_weight != "auto":
        from vocseg.recipe.recipe import parse_class_weights

        return dataclasses.replace(recipe, class_weight_values=parse_class_weights(recipe.class_weight, len(recipe.class_names)))
    if recipe.class_weight_values:
        return recipe
    from vocseg.data.class_pixels import class_pixel_counts, median_frequency_weights
    from vocseg.data.precheck import specs_from_dataset
    from vocseg.recipe.mmconfig import train_dataset

    counts = class_pixel_counts(specs_from_dataset(train_dataset(recipe)), num_classes=len(recipe.class_names))
    return dataclasses.replace(recipe, class_weight_values=median_frequency_weights(counts))


def class_weight_line(recipe: Recipe) -> str:
    """The plan's line: where the weights come from and each class's weight."""
    values = recipe.class_weights or ()
    origin = ("--class-weight auto, median-frequency balancing of the training split's pixels (Eigen & Fergus 2015)"
              if recipe.class_weight == "auto" else "--class-weight")
    listed = ", ".join(f"{name} {w:g}" for name, w in zip(recipe.class_names, values))
    absent = "; 0: absent from the training split" if recipe.class_weight == "auto" and 0.0 in values else ""
    return f"class weights: {origin}: {listed}{absent}"


def load_mmengine_config(path: Path) -> Any:
    """mmengine's Config of a file, or a one-line error."""
    from vocseg.runs.run_config import read_config

    return read_config(path)


def experiment_from_config_file(path: Path, flags: dict[str, Any]) -> Experiment:
    """`vocseg train CFG.py`: the file is trained as written; only --work-dir may be given beside it."""
    if not path.is_file():
        raise VocsegError(f"Config {path} does not exist.", "Write one with `vocseg config -o FILE`.")
    given = [k for k, v in flags.items() if v is not None and k != "work_dir"]
    if given:
        names = ", ".join("--" + ("workers" if k == "num_workers" else k).replace("_", "-") for k in given)  # the recipe field num_workers is --workers
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
    checkpoint = latest_checkpoint(work_dir)
    if checkpoint is not None and recorded(checkpoint):  # a user's file named iter_6.pth (or a FIFO) is no run to resume
        raise VocsegError(f"{work_dir} already holds a run with checkpoints.", f"Continue it with `{command('resume', work_dir)}`, or pass another --work-dir.")
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

