"""Resuming a run: find it, check its checkpoint, and handle a change in the number of processes.

Everything here happens before any training process starts, so a bad run folder gives a
one-line error and nothing in it changes (apart from deleting half-written `.tmp` files of
killed processes).

Another number of processes, or another per-process batch in config.py, changes the total batch.
Without `--rescale-lr` that is refused, naming what changed; with it, the run's recipe.json records
the new count and batch (so the next resume uses it) and the
training processes scale the LR schedule carried by the checkpoint (optimizer and scheduler
state) by new/old total batch (`VocsegBatchGuardHook`). config.py is left as it is, hand edits
included: the LR it names is only the starting value, which the checkpoint's state replaces.
The iteration count stays, so the samples seen change with the batch; the data order
continues from the same iteration, not bitwise as it would have been.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

from vocseg.console import command
from vocseg.errors import FaultContext, VocsegError
from vocseg.recipe.recipe import Recipe, parse_gpus, validate
from vocseg.runs.folders import CONFIG_NAME, RECIPE_NAME, RUNS_ROOT, iter_checkpoints, latest_checkpoint, remove_stale_temp_files, run_holder, runs_newest_first
from vocseg.stack.checkpoints import VAL_PENDING_KEY


@dataclass(frozen=True)
class ResumeTarget:
    config_path: Path
    recipe: Recipe | None  # None for a run trained from a config vocseg did not write
    checkpoint: Path
    iteration: int
    max_iters: int | None
    rescale_lr: bool  # the process count changed and the LR is rescaled
    original_recipe: Recipe | None = None  # recipe.json as found (before --gpus/--nproc)
    val_pending: bool = False  # a stop cut off the validation of `iteration`: the resume runs it

    @property
    def run_dir(self) -> Path:
        return self.config_path.parent

    @property
    def finished(self) -> bool:
        return self.max_iters is not None and self.iteration >= self.max_iters and not self.val_pending


RESTORE_HINT = "Fix the file, or restore it from the run's timestamped log folder (vis_data/config.py)."


def _max_iters(config_path: Path) -> int | None:
    return _config_numbers(config_path)[0]


def _config_numbers(config_path: Path) -> tuple[int | None, int | None]:
    """(max_iters, per-process batch) as the run's config.py says now (hand edits included)."""
    from vocseg.runs.run_config import read_config

    cfg = read_config(config_path, import_custom_modules=False, hint=RESTORE_HINT)
    train_cfg = cfg.get("train_cfg") or {}
    value = train_cfg.get("max_iters")
    batch = (cfg.get("train_dataloader") or {}).get("batch_size")
    return (int(value) if value is not None else None), (int(batch) if isinstance(batch, int) and batch > 0 else None)


def check_fits_run_model(config_path: Path, state: dict, checkpoint: Path) -> None:
    """Refuse, in one line, a checkpoint whose weights do not fit the model of the run's config
    (keys and shapes, as eval and predict check them: `vocseg.stack.checkpoints`). Reads only.

    Without it, MMEngine loads such a file non-strictly and fails much later in the optimizer,
    after the run folder was written to.
    """
    from vocseg.runs.run_config import read_config
    from vocseg.stack.checkpoints import compare_state_dicts, describe_misfit, state_dict_of

    cfg = read_config(config_path, hint=RESTORE_HINT)
    try:
        from mmengine.registry import init_default_scope

        init_default_scope(cfg.get("default_scope", "mmseg"))
        import mmseg.models  # noqa: F401  (registers the model classes)
        from mmseg.registry import MODELS

        model_cfg = cfg.model.copy()
        model_cfg.pop("pretrained", None)
        if isinstance(model_cfg.get("backbone"), dict):
            model_cfg.backbone.pop("init_cfg", None)
        for key in ("backbone", "decode_head", "auxiliary_head"):
            part = model_cfg.get(key)
            if isinstance(part, dict) and part.get("norm_cfg", {}).get("type") == "SyncBN":
                part.norm_cfg = dict(type="BN", requires_grad=True)  # same parameters and buffers, no process group
        model = MODELS.build(model_cfg)
    except Exception as exc:  # noqa: BLE001 - a config the user edited
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise VocsegError(f"Cannot build the model of {config_path}: {first}.", RESTORE_HINT) from None
    try:
        weights = state_dict_of(state)
    except VocsegError as exc:
        raise VocsegError(f"{checkpoint}: {exc.message}", _previous_hint(checkpoint, config_path.parent)) from None
    report = compare_state_dicts(model.state_dict(), weights)
    if not report.fits:
        raise VocsegError(
            f"{checkpoint} does not belong to this run's model ({describe_misfit(report)}); nothing was changed.",
            _previous_hint(checkpoint, config_path.parent),
        )


def _previous_hint(checkpoint: Path, run_dir: Path) -> str:
    older = [p.name for _, p in iter_checkpoints(run_dir) if p != checkpoint]
    if older:
        return f"Move {checkpoint.name} out of the folder to resume from the previous one ({older[-1]})."
    return f"No other checkpoint is in the folder: start again with `{command('train', run_dir / CONFIG_NAME)}`."


def _load_checked(checkpoint: Path, run_dir: Path) -> dict:
    """The checkpoint's contents, refused unless it is a training checkpoint (`meta.iter`)."""
    from vocseg.stack.compat import load_checkpoint_file

    try:
        state = load_checkpoint_file(checkpoint)
    except VocsegError as exc:
        raise VocsegError(exc.message, _previous_hint(checkpoint, run_dir)) from None
    meta = state.get("meta") if isinstance(state, dict) else None
    iteration = meta.get("iter") if isinstance(meta, dict) else None
    if not isinstance(iteration, int) or isinstance(iteration, bool) or iteration < 0:
        what = "a training checkpoint (no meta.iter)" if isinstance(state, dict) else f"a training checkpoint (it holds a {type(state).__name__}, not a dict)"
        raise VocsegError(f"{checkpoint} is not {what}.", _previous_hint(checkpoint, run_dir))
    return state


def _val_pending(state: dict, iteration: int) -> bool:
    """Whether a stop cut off (or came before) the validation of `iteration` (see engine.py)."""
    hub = state.get("message_hub")
    info = hub.get("runtime_info") if isinstance(hub, dict) else None
    return isinstance(info, dict) and info.get(VAL_PENDING_KEY) == iteration


def _read_recipe(path: Path) -> Recipe | None:
    if not path.is_file():
        return None
    try:
        recipe = Recipe.from_json(path.read_text())
        validate(recipe)  # wrong types and values fail here, not in the middle of the launch
        return recipe
    except Exception as exc:  # noqa: BLE001 - any damage to a user-editable file
        text = exc.message if isinstance(exc, VocsegError) else str(exc)
        first = text.strip().splitlines()[0][:160].rstrip(".") if text.strip() else type(exc).__name__
        raise VocsegError(
            f"Cannot read {path}: {first}.",
            f"Restore it from the \"vocseg_recipe\" line of {path.parent / CONFIG_NAME} (with the process count of any later "
            "--rescale-lr resume), or move it away to resume with config.py's settings.",
        ) from None


_ITER_NAME = re.compile(r"iter_(\d+)\.pth$")


@dataclass(frozen=True)
class RunPick:
    """The run `vocseg resume` without RUN continues, and why the newer ones were passed over."""

    run: Path
    passed: tuple[str, ...]  # "runs/b (finished: 40/40)", "runs/c (being trained by pid 123)"

    def line(self) -> str:
        from vocseg.console import shown

        skipped = f"; passed over: {shown(', '.join(self.passed))}" if self.passed else ""
        return f"no RUN given: resuming the newest unfinished run, {shown(self.run)}{skipped}"


def checkpoint_iteration(checkpoint: Path) -> int | None:
    """The iteration in an `iter_N.pth` name (None for other names: read the file to know)."""
    m = _ITER_NAME.search(checkpoint.name)
    return int(m.group(1)) if m else None


def pick_unfinished_run(root: Path = RUNS_ROOT) -> RunPick:
    """The run folder under `root` that trained last among those with a checkpoint, fewer
    iterations than their config's `max_iters`, and no other process training them (the run
    lock). Reads only: names of checkpoints, configs, the lock. Raises VocsegError naming the
    runs it passed over when none is left."""
    runs = runs_newest_first(root)
    if not runs:
        raise VocsegError(f"No run folder under {root}/.", f"Pass the run folder (`{command('resume', 'RUN')}`), or start one with `{command('train')}`.")
    passed: list[str] = []
    for run in runs:
        checkpoint = latest_checkpoint(run)
        if checkpoint is None:
            passed.append(f"{run} (no checkpoint yet)")
            continue
        holder = run_holder(run)
        if holder is not None:
            passed.append(f"{run} (being trained by {'pid ' + holder if holder.isdigit() else 'another process'})")
            continue
        iteration = checkpoint_iteration(checkpoint)
        try:
            max_iters = _max_iters(run / CONFIG_NAME)
        except VocsegError:
            passed.append(f"{run} ({CONFIG_NAME} unreadable)")
            continue
        if iteration is not None and max_iters is not None and iteration >= max_iters:
            passed.append(f"{run} (finished: {iteration}/{max_iters})")
            continue
        return RunPick(run, tuple(passed))
    shown_runs = "; ".join(passed[:5]) + (f"; and {len(passed) - 5} more" if len(passed) > 5 else "")
    raise VocsegError(
        f"No unfinished run under {root}/ to resume: {shown_runs}.",
        f"Name one to resume (`{command('resume', 'RUN')}`; a run being trained continues by itself), or train longer in a new run (`{command('train', '--iters', 'N')}`).",
    )


def prepare_resume(
    run_dir: Path | None, *, gpus: str | None, nproc: int | None, rescale_lr: bool, nnodes: int | None = None, cleanup: bool = True
) -> ResumeTarget:
    """Find the run and its checkpoint; with another process count, plan the LR rescale or refuse.

    Writes nothing (see `commit_rescale`); `cleanup` deletes `.tmp` files of killed processes.
    """
    if run_dir is None:
        run_dir = pick_unfinished_run().run
    run_dir = run_dir.expanduser().resolve()
    config_path = run_dir / CONFIG_NAME
    if not config_path.is_file():
        raise VocsegError(f"{run_dir} is not a vocseg run folder (no {CONFIG_NAME}).", "Pass the folder `vocseg train` printed.")
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise VocsegError(f"{run_dir} has no checkpoint to resume from.", f"Start it again with `{command('train', config_path)}`.")
    # Refuses a truncated or foreign file before any process starts and before anything is written.
    state = _load_checked(checkpoint, run_dir)
    iteration = int(state["meta"]["iter"])
    max_iters, config_batch = _config_numbers(config_path)
    recipe = _read_recipe(run_dir / RECIPE_NAME)
    check_fits_run_model(config_path, state, checkpoint)
    if cleanup:
        remove_stale_temp_files(run_dir)
    target = ResumeTarget(config_path, recipe, checkpoint, iteration, max_iters, rescale_lr=False, original_recipe=recipe,
                          val_pending=_val_pending(state, iteration))
    if target.finished:
        return target
    if recipe is None:
        if gpus is not None or nproc is not None or (nnodes or 1) > 1:
            raise VocsegError(f"{run_dir} has no {RECIPE_NAME} (a config vocseg did not write): --gpus/--nproc/--nnodes cannot change it.", "Resume without them.")
        return target
    if gpus is not None and recipe.device != "cuda":
        raise VocsegError("--gpus: this run trains on the CPU.", "Use --nproc N to change its number of CPU processes.")
    if nproc is not None and recipe.device != "cpu":
        raise VocsegError("--nproc: this run trains on GPUs.", "Use --gpus to change them.")
    # The per-process batch is config.py's (a hand edit before the resume counts); the process count the flags'.
    changed = dataclasses.replace(recipe, gpus=str(parse_gpus(gpus)) if gpus else recipe.gpus, nproc=nproc or recipe.nproc,
                                  nnodes=nnodes or recipe.nnodes, batch=config_batch or recipe.batch)
    # What the checkpoint was trained with (recorded by VocsegBatchGuardHook), else the recipe's.
    saved = state.get("vocseg_batch") or {}
    saved_total = int(saved.get("total") or recipe.total_batch)
    saved_world = int(saved.get("world_size") or recipe.world_size)
    saved_batch = int(saved.get("batch") or recipe.batch)
    if changed.total_batch == saved_total:
        return dataclasses.replace(target, recipe=changed)
    if not rescale_lr:
        raise VocsegError(
            f"The checkpoint was trained with total batch {saved_total} ({saved_world} process(es) x {saved_batch}); this resume "
            f"has {changed.total_batch} ({batch_change(saved_world, saved_batch, changed.world_size, changed.batch, config_path)}).",
            "Pass --rescale-lr to rescale the LR linearly to the new total batch, or resume with the original "
            + ("process count." if changed.batch == saved_batch else f"batch_size {saved_batch} in {config_path.name}."),
        )
    return dataclasses.replace(target, recipe=changed, rescale_lr=True)


def batch_change(saved_world: int, saved_batch: int, world: int, batch: int, config_path: Path) -> str:
    """What changed the total batch, in words: the process count, the per-process batch, or both."""
    parts = []
    if world != saved_world:
        parts.append(f"processes {saved_world} -> {world}")
    if batch != saved_batch:
        parts.append(f"per-process batch {saved_batch} -> {batch} in {config_path.name}")
    return ", ".join(parts) or "unchanged"


def fault_context(run_dir: Path, *, interruptions: bool = False) -> FaultContext:
    """What a file-system fault or a dead loader worker during training leaves: the newest complete
    checkpoint (the one `last_checkpoint` names: a save cut short never replaces it) and the
    command that continues (`vocseg resume RUN`, or `vocseg train RUN/config.py` before the first,
    which reuses RUN; nothing, i.e. the same command again, before config.py is written). With
    `interruptions` (`vocseg train`, whose same command line would start a new folder), the same
    command is what an interruption (Ctrl-C, SIGTERM) inside suggests; `vocseg resume` is
    interrupted and run again as it is (its flags kept)."""

    def kept() -> str | None:
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            return f"No checkpoint was written yet; {run_dir / CONFIG_NAME} is kept" if (run_dir / CONFIG_NAME).is_file() else None
        return f"Run folder {run_dir} is consistent: checkpoint {ckpt.name} (the newest complete one) is intact"

    def next_command() -> str:
        if latest_checkpoint(run_dir) is not None:
            return command("resume", run_dir)
        if (run_dir / CONFIG_NAME).is_file():
            return command("train", run_dir / CONFIG_NAME)
        return ""

    return FaultContext(kept=kept, next_command=next_command, where=run_dir, interruptions=interruptions)


def commit_rescale(target: ResumeTarget) -> None:
    """Record the new process count in the run's recipe.json. Every launching process (each node,
    each Slurm task) calls this: the file is written only where it differs, through a temporary
    file, so a shared folder and one folder per machine both end up the same."""
    from vocseg.files import owned_write_bytes

    old, new = target.original_recipe, target.recipe
    if not target.rescale_lr or old is None or new is None or old == new:
        return
    path, text = target.run_dir / RECIPE_NAME, new.to_json() + "\n"
    if not path.is_file() or path.read_text() != text:
        owned_write_bytes(path, text.encode())
