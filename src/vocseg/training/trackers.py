"""Experiment trackers: MMEngine's TensorBoard, W&B and MLflow visualization backends, made to
log one run per run folder, across every resume.

What each receives (rank 0 only, as MMEngine's Visualizer does):

- `train/loss`, `train/lr`, `train/decode.loss_ce`, ... every logging interval, and
  `val/mIoU`, `val/mAcc`, `val/aAcc`, ... after each validation: what MMEngine's LoggerHook sends
  to every backend (the same values `scalars.json` gets), with a `train/` or `val/` prefix;
- `val/IoU.<class>` after each validation (`VocsegTrackerHook`, from vocseg's metric);
- the recipe as hyper-parameters (every `Recipe` field, plus the LR and iterations of the config).

Where it goes and how a resume continues the same tracker run:

- TensorBoard: `RUN/tensorboard/` for every start of the run. A resumed run opens a new event
  file there with `purge_step` at its first step, so what a killed run logged after its last
  checkpoint is hidden (TensorBoard's own restart rule).
- W&B: the run id is chosen at the first start and kept in `RUN/trackers.json`; every resume
  calls `wandb.init(id=..., resume="allow")`. Files under `RUN/wandb/`. Scalars are plotted
  against `iteration` (W&B's own step only grows, a resume re-trains from its checkpoint).
- MLflow: a local file store `RUN/mlruns` unless `MLFLOW_TRACKING_URI` is set; the run id is
  kept in `RUN/trackers.json` and resumed with `mlflow.start_run(run_id=...)`.

The trackers start at the first scalar, not when MMEngine's Runner is built: `vocseg eval` and
`predict` build a Runner from the run's config too, and must not open a tracker run.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import string
from pathlib import Path
from typing import Any

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.visualization import MLflowVisBackend, TensorboardVisBackend, WandbVisBackend
from mmseg.registry import HOOKS, VISBACKENDS

from vocseg.recipe.trackers import TRACKER_HOOK, TRACKERS, backend_configs
from vocseg.training.tracker_state import read_state, update_state

TENSORBOARD_DIR = "tensorboard"
MLFLOW_DIR = "mlruns"
SUMMARY_KEYS = ("aAcc", "mIoU", "mAcc", "mDice", "mFscore", "mPrecision", "mRecall")
VAL_TIMINGS = ("time", "data_time")
LOOP_POSITION = ("iter", "epoch")  # the step itself


def tracker_scalars(scalars: dict[str, Any]) -> dict[str, float]:
    """LoggerHook's scalars -> tracker names: `train/<key>`, or `val/<metric>` for a validation's
    summary (recognised by its metric keys; its timings are left out). Keys that already hold a
    `/` are kept as they are (vocseg's own, e.g. `val/IoU.cat`)."""
    values = {k: float(v) for k, v in scalars.items() if isinstance(v, (int, float)) or hasattr(v, "item")}
    if any(k in values for k in SUMMARY_KEYS):
        return {(k if "/" in k else f"val/{k}"): v for k, v in values.items() if k not in VAL_TIMINGS}
    return {(k if "/" in k else f"train/{k}"): v for k, v in values.items() if k not in LOOP_POSITION}


def hyperparameters(cfg: Any) -> dict[str, str | int | float | bool]:
    """The recipe behind a config as flat hyper-parameters (None -> "default"), plus the LR and
    the iterations the config trains; a config vocseg did not write gives the latter only."""
    params: dict[str, str | int | float | bool] = {}
    embedded = cfg.get("vocseg_recipe") if cfg is not None else None
    if embedded:
        for key, value in json.loads(embedded).items():
            if key == "gpus_grammar":
                continue
            if isinstance(value, dict):
                params.update({f"{key}.{k}": v if isinstance(v, (str, int, float, bool)) else str(v) for k, v in value.items()})
            elif isinstance(value, list):
                params[key] = ",".join(map(str, value))
            else:
                params[key] = "default" if value is None else value
    try:
        params["lr"] = float(cfg.optim_wrapper.optimizer.lr)
        params["max_iters"] = int(cfg.train_cfg.max_iters)
    except (AttributeError, KeyError, TypeError, ValueError):
        pass
    return params


class _Tracker:
    """What the three backends share: start at the first scalar (in the run folder), tracker names."""

    def __init__(self, save_dir: str, **kwargs: Any) -> None:
        super().__init__(save_dir, **kwargs)  # type: ignore[call-arg]
        self._cfg: Any = None
        self._first_step = 0

    @property
    def run_dir(self) -> Path:
        """The run folder: the config's work_dir (MMEngine's save_dir is a per-start log folder)."""
        work_dir = self._cfg.get("work_dir") if self._cfg is not None else None
        return Path(work_dir) if work_dir else Path(self._save_dir).parent.parent

    def add_config(self, config: Any, **kwargs: Any) -> None:
        self._cfg = config  # the tracker starts at the first scalar (see the module docstring)

    def add_image(self, name: str, image: Any, step: int = 0, **kwargs: Any) -> None:
        return None  # vocseg's validation draws nothing; no image reaches a tracker

    def add_scalar(self, name: str, value: Any, step: int = 0, **kwargs: Any) -> None:
        self.add_scalars({name: value}, step)

    def add_scalars(self, scalar_dict: dict, step: int = 0, file_path: str | None = None, **kwargs: Any) -> None:
        scalars = tracker_scalars(scalar_dict)
        if not scalars:
            return
        if not getattr(self, "_env_initialized", False):
            self._first_step = step
            self._init_env()  # type: ignore[attr-defined]
            self._env_initialized = True
        self._write(scalars, step)

    def _write(self, scalars: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def end(self, *, interrupted: bool) -> None:
        """Flush and close what was opened (a stop or the end of training)."""
        self.close()


@VISBACKENDS.register_module(name="VocsegTensorboardVisBackend")
class VocsegTensorboardVisBackend(_Tracker, TensorboardVisBackend):
    """MMEngine's TensorboardVisBackend writing to `RUN/tensorboard/` for every start of a run."""

    def _init_env(self) -> None:
        from torch.utils.tensorboard import SummaryWriter

        folder = self.run_dir / TENSORBOARD_DIR
        resumed = folder.is_dir() and any(folder.glob("events.out.tfevents.*"))
        # A resume re-trains from its checkpoint: what the stopped run logged from there on is hidden.
        self._tensorboard = SummaryWriter(str(folder), purge_step=self._first_step if resumed else None)
        if not resumed:
            self._log_hyperparameters()

    def _log_hyperparameters(self) -> None:
        from torch.utils.tensorboard.summary import hparams

        params = hyperparameters(self._cfg)
        if not params:
            return
        metrics = {f"val/{k}": 0.0 for k in ("mIoU", "mAcc", "aAcc")}  # names only: the values come as scalars
        for summary in hparams(params, metrics):
            self._tensorboard.file_writer.add_summary(summary)
        if self._cfg is not None:
            self._tensorboard.add_text("config", f"```\n{self._cfg.pretty_text}\n```")

    def _write(self, scalars: dict[str, float], step: int) -> None:
        for name, value in scalars.items():
            self._tensorboard.add_scalar(name, value, step)

    def close(self) -> None:
        if hasattr(self, "_tensorboard"):
            self._tensorboard.close()
            del self._tensorboard
            self._env_initialized = False


@VISBACKENDS.register_module(name="VocsegWandbVisBackend")
class VocsegWandbVisBackend(_Tracker, WandbVisBackend):
    """MMEngine's WandbVisBackend with one W&B run per run folder (id kept in `RUN/trackers.json`).

    `init_kwargs` (config) are passed to `wandb.init`; the project defaults to $WANDB_PROJECT,
    else "vocseg"; the run's name is the run folder's. WANDB_MODE=offline works as usual.
    """

    def _init_env(self) -> None:
        import wandb

        run_dir = self.run_dir
        state = read_state(run_dir)
        run_id = (state.get("wandb") or {}).get("id")
        if not run_id:
            run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))  # W&B's own id format
            update_state(run_dir, wandb={"id": run_id})  # before init: a crash during it still resumes this id
        kwargs: dict[str, Any] = dict(project=os.environ.get("WANDB_PROJECT") or "vocseg", name=run_dir.name, dir=str(run_dir))
        kwargs.update(self._init_kwargs or {})
        kwargs.update(id=run_id, resume="allow")
        wandb.init(**kwargs)
        wandb.define_metric("iteration")
        for prefix in ("train/*", "val/*"):
            wandb.define_metric(prefix, step_metric="iteration")
        wandb.config.update(hyperparameters(self._cfg), allow_val_change=True)
        self._wandb = wandb

    def _write(self, scalars: dict[str, float], step: int) -> None:
        self._wandb.log({**scalars, "iteration": step}, commit=self._commit)

    def close(self) -> None:
        if hasattr(self, "_wandb"):
            self._wandb.finish(exit_code=0)
            del self._wandb
            self._env_initialized = False


@VISBACKENDS.register_module(name="VocsegMLflowVisBackend")
class VocsegMLflowVisBackend(_Tracker, MLflowVisBackend):
    """MMEngine's MLflowVisBackend with one MLflow run per run folder (id kept in `RUN/trackers.json`).

    Tracking URI: `tracking_uri` (config), else $MLFLOW_TRACKING_URI, else the file store
    `RUN/mlruns`. Experiment: `exp_name`, else $MLFLOW_EXPERIMENT_NAME, else "vocseg".
    """

    def _init_env(self) -> None:
        import mlflow

        run_dir = self.run_dir
        uri = self._tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            uri = (run_dir / MLFLOW_DIR).resolve().as_uri()
            # MLflow 3 keeps its file store working but asks for this opt-in; a database or a server
            # (MLFLOW_TRACKING_URI=sqlite:///... or http://...) needs no such switch.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri(uri)
        exp_name = self._exp_name or os.environ.get("MLFLOW_EXPERIMENT_NAME") or "vocseg"
        if mlflow.get_experiment_by_name(exp_name) is None:
            mlflow.create_experiment(exp_name, artifact_location=self._artifact_location)
        mlflow.set_experiment(exp_name)
        saved = read_state(run_dir).get("mlflow") or {}
        run = None
        if saved.get("run_id") and saved.get("tracking_uri") == uri:
            run = mlflow.start_run(run_id=saved["run_id"])
        if run is None:
            run = mlflow.start_run(run_name=self._run_name or run_dir.name)
            update_state(run_dir, mlflow={"run_id": run.info.run_id, "tracking_uri": uri})
        if self._tags:
            mlflow.set_tags(self._tags)
        # Parameters cannot change in an MLflow run: a resume adds only those it has not logged.
        logged = mlflow.get_run(run.info.run_id).data.params
        params = {**hyperparameters(self._cfg), **(self._params or {})}
        new = {k: v for k, v in params.items() if k not in logged}
        if new:
            mlflow.log_params(new)
        self._mlflow = mlflow

    def _write(self, scalars: dict[str, float], step: int) -> None:
        self._mlflow.log_metrics(scalars, step=step)

    def close(self) -> None:
        self.end(interrupted=False)

    def end(self, *, interrupted: bool) -> None:
        if not hasattr(self, "_mlflow"):
            return
        for name in ("config.py", "recipe.json"):
            if (self.run_dir / name).is_file():
                self._mlflow.log_artifact(str(self.run_dir / name))
        self._mlflow.end_run(status="KILLED" if interrupted else "FINISHED")
        del self._mlflow
        self._env_initialized = False


TRACKER_BACKENDS = (VocsegTensorboardVisBackend, VocsegWandbVisBackend, VocsegMLflowVisBackend)


def tracker_backends(visualizer: Any) -> list[_Tracker]:
    """The tracker backends of MMEngine's Visualizer (by their names: the class names)."""
    found = [visualizer.get_backend(cls.__name__) for cls in TRACKER_BACKENDS] if visualizer is not None else []
    return [b for b in found if isinstance(b, _Tracker)]


def end_trackers(runner: Any, *, interrupted: bool) -> None:
    """Flush and close the trackers when training stops (MMEngine closes them only at the end)."""
    if is_main_process():
        for backend in tracker_backends(getattr(runner, "visualizer", None)):
            backend.end(interrupted=interrupted)


@HOOKS.register_module(name=TRACKER_HOOK)
class TrackerHook(Hook):
    """After each validation: per-class IoU (`val/IoU.<class>`, percent) to the trackers."""

    priority = "VERY_LOW"  # after LoggerHook (BELOW_NORMAL) has sent the summary of the same validation

    def after_val_epoch(self, runner: Any, metrics: dict | None = None) -> None:
        if not is_main_process():
            return
        backends = tracker_backends(runner.visualizer)
        per_class: dict[str, dict[str, float]] = {}
        for metric in getattr(runner.val_evaluator, "metrics", []):
            per_class.update(getattr(metric, "per_class", {}) or {})
        scalars = {f"val/IoU.{name}": values["IoU"] for name, values in per_class.items()
                   if isinstance(values.get("IoU"), float) and not math.isnan(values["IoU"])}
        if not scalars:
            return
        for backend in backends:
            backend.add_scalars(scalars, step=runner.iter)


def apply_log_to_override(cfg: Any, run_dir: Path) -> None:
    """`vocseg resume RUN --log-to ...` recorded its choice in `RUN/trackers.json`: it replaces the
    trackers config.py names (config.py itself stays as written)."""
    chosen = read_state(run_dir).get("log_to")
    if not isinstance(chosen, list) or any(n not in TRACKERS for n in chosen):
        return
    names = {t.backend for t in TRACKERS.values()}
    visualizer = cfg.get("visualizer")
    if not isinstance(visualizer, dict):
        return
    kept = [b for b in visualizer.get("vis_backends", []) if not (isinstance(b, dict) and b.get("type") in names)]
    visualizer["vis_backends"] = kept + backend_configs(chosen)
    hooks = [h for h in cfg.get("custom_hooks", []) if h.get("type") != TRACKER_HOOK]
    if chosen:
        hooks.append(dict(type=TRACKER_HOOK))
    cfg.custom_hooks = hooks
