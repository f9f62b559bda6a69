"""Experiment trackers (`--log-to`): the real TensorBoard, W&B (offline) and MLflow (local file
store), read back from what they wrote; one tracker run per run folder across a resume; a
missing extra is a one-line error before anything is written."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import TINY_TRAIN
from vocseg.errors import VocsegError
from vocseg.recipe.recipe import Recipe
from vocseg.recipe.trackers import check_installed, parse_log_to

pytestmark = pytest.mark.usefixtures("one_thread")
ALL = "tensorboard,wandb,mlflow"
VAL_STEPS = [2, 4]


def test_log_to_names_and_missing_extras(cli, demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_log_to("mlflow, TensorBoard") == ("tensorboard", "mlflow")
    assert parse_log_to("none") == parse_log_to("") == ()
    with pytest.raises(VocsegError, match="unknown tracker 'neptune'"):
        parse_log_to("wandb,neptune")
    # Recipes and configs without trackers are as before the field existed (golden configs, recipe.json).
    assert "log_to" not in Recipe().to_json()
    assert Recipe.from_json(Recipe(log_to=("wandb",)).to_json()).log_to == ("wandb",)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(VocsegError) as info:
        check_installed(("tensorboard", "wandb"))
    assert 'pip install "vocseg[wandb]"' in str(info.value)
    work = tmp_path / "run"
    r = cli("train", "--data-root", demo_root, *TINY_TRAIN, "--iters", "2", "--log-to", "tensorboard,wandb", "--work-dir", work)
    assert r.code == 2 and "vocseg[wandb]" in r.err and len(r.err.strip().splitlines()) == 1, r.err
    assert not work.exists()  # checked before anything is written
    r = cli("train", "--data-root", demo_root, *TINY_TRAIN, "--iters", "2", "--log-to", "tensorbord", "--work-dir", work)
    assert r.code == 2 and "unknown tracker 'tensorbord'" in r.err


def test_config_names_the_backends_only_when_asked(cli, demo_root: Path) -> None:
    plain = cli("config", "--data-root", demo_root, *TINY_TRAIN, "--iters", "4").out
    tracked = cli("config", "--data-root", demo_root, *TINY_TRAIN, "--iters", "4", "--log-to", ALL).out
    assert "VisBackend'}" in tracked and "VocsegTrackerHook" in tracked and '"log_to"' in tracked
    for name in ("VocsegTensorboardVisBackend", "VocsegWandbVisBackend", "VocsegMLflowVisBackend"):
        assert name not in plain and tracked.count(name) == 2  # vis_backends and the visualizer's
    assert "VocsegTrackerHook" not in plain and "log_to" not in plain


def _wandb_records(path: Path) -> list:
    """Records of a W&B `.wandb` file (LevelDB log format after a 7-byte `:W&B` header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, frag, out = 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL, LAST
            raw, frag = frag + chunk, b""
            record = pb.Record()
            record.ParseFromString(raw)
            out.append(record)
        elif kind in (2, 3):  # FIRST, MIDDLE
            frag += chunk
    return out


def _wandb_history(folder: Path) -> tuple[str, list[dict]]:
    run_id, history = "", []
    for record in _wandb_records(next(folder.glob("run-*.wandb"))):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run_id = record.run.run_id
        elif kind == "history":
            history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
    return run_id, history


def test_three_trackers_log_and_a_resume_continues_the_same_runs(cli, demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Offline, silent, nothing sent or cached outside the test's folder.
    for var, value in (("WANDB_MODE", "offline"), ("WANDB_SILENT", "true"), ("WANDB_ERROR_REPORTING", "false"),
                       ("WANDB_CACHE_DIR", tmp_path / "wandb-cache"), ("WANDB_CONFIG_DIR", tmp_path / "wandb-config"),
                       ("WANDB_DATA_DIR", tmp_path / "wandb-data"), ("MLFLOW_ALLOW_FILE_STORE", "true")):
        monkeypatch.setenv(var, str(value))
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "WANDB_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    run = tmp_path / "run"
    r = cli("train", "--data-root", demo_root, *TINY_TRAIN, "--iters", "4", "--val-interval", "2", "--ckpt-interval", "2",
            "--keep", "5", "--log-to", ALL, "--work-dir", run)
    assert r.code == 0, r.err
    ids = json.loads((run / "trackers.json").read_text())
    # As a run killed after iteration 4 but before its last checkpoint leaves it: resume from 2.
    from vocseg.files import owned_delete, owned_write_text

    owned_delete(run / "iter_4.pth")  # (through vocseg.files: the run's files stay vocseg's)
    owned_write_text(run / "last_checkpoint", str(run / "iter_2.pth"), role="run")
    r = cli("resume", run)
    assert r.code == 0, r.err
    assert json.loads((run / "trackers.json").read_text()) == ids  # the same tracker runs

    # TensorBoard: one folder, one event file per start; iterations 3-4 of the first start are
    # purged by the resume's, so each step appears once.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    for tag in ("train/loss", "train/lr", "val/mIoU", "val/mAcc", "val/aAcc", "val/IoU.background"):
        assert tag in scalars, scalars
    assert [e.step for e in events.Scalars("val/mIoU")] == VAL_STEPS
    assert [e.step for e in events.Scalars("train/loss")] == sorted({e.step for e in events.Scalars("train/loss")})
    assert events.PluginTagToContent("hparams")  # the recipe as hyper-parameters

    # W&B (offline): two local runs, one id; the resume's history continues the same run.
    folders = sorted((run / "wandb").glob("offline-run-*"))
    assert len(folders) == 2
    (first_id, first), (second_id, second) = (_wandb_history(f) for f in folders)
    assert first_id == second_id == ids["wandb"]["id"]
    assert [h["iteration"] for h in first if "val/mIoU" in h] == VAL_STEPS
    assert [h["iteration"] for h in second if "val/mIoU" in h] == [4]
    assert any("val/IoU.background" in h for h in second) and any("train/lr" in h for h in second)

    # MLflow (file store in the run folder): one run, its metrics from both starts, the recipe as params.
    import mlflow

    mlflow.set_tracking_uri((run / "mlruns").as_uri())
    runs = mlflow.search_runs(experiment_names=["vocseg"], output_format="list")
    assert [r.info.run_id for r in runs] == [ids["mlflow"]["run_id"]]
    found = runs[0]
    assert found.info.status == "FINISHED"
    assert found.data.params["model"] == "tiny" and found.data.params["log_to"] == ALL and "lr" in found.data.params
    history = mlflow.MlflowClient().get_metric_history(found.info.run_id, "val/mIoU")
    assert sorted({m.step for m in history}) == VAL_STEPS
    assert "val/IoU.background" in found.data.metrics and "train/loss" in found.data.metrics


def test_resume_log_to_replaces_the_configs_trackers(request: pytest.FixtureRequest, tmp_path: Path, cli) -> None:
    """`vocseg resume RUN --log-to tensorboard` on a run trained without trackers: recorded in
    RUN/trackers.json (config.py stays as written), and the resumed part is logged."""
    trained_run = request.getfixturevalue("trained_run")
    run = tmp_path / "run"
    from vocseg.files import owned_write_text

    shutil.copytree(trained_run, run)
    owned_write_text(run / "last_checkpoint", str(run / "iter_6.pth"), role="run")  # as a run stopped at 6 leaves it
    config = (run / "config.py").read_text()
    r = cli("resume", run, "--log-to", "tensorboard")
    assert r.code == 0, r.err
    assert json.loads((run / "trackers.json").read_text())["log_to"] == ["tensorboard"]
    assert (run / "config.py").read_text() == config
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert max(e.step for e in events.Scalars("train/loss")) == 8
