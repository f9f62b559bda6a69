"""`vocseg resume`: bitwise exact on the CPU, safe against SIGKILL while saving, clear about
process-count changes, finished runs and broken folders."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import assert_bitwise_equal
from vocseg.runs.folders import latest_checkpoint
from vocseg.stack.compat import load_checkpoint_file

EXACT = ("--model", "tiny", "--device", "cpu", "--deterministic", "--keep", "20")


pytestmark = pytest.mark.usefixtures("one_thread")  # in-process training: see conftest


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint_file(path)["state_dict"]


def copy_run_at(src: Path, dst: Path, iteration: int) -> Path:
    """A run folder as a run stopped at `iteration` leaves it: its config, recipe and that checkpoint."""
    from vocseg.files import owned_rmtree, owned_write_text

    shutil.copytree(src, dst)  # with vocseg's record: the copy's files are vocseg's, as a stopped run's are
    keep = {"config.py", "recipe.json", f"iter_{iteration}.pth", "last_checkpoint", ".vocseg-written.jsonl"}
    for p in sorted(dst.iterdir()):
        if p.name not in keep:
            owned_rmtree(p)
    owned_write_text(dst / "last_checkpoint", str(dst / f"iter_{iteration}.pth"), role="run")
    return dst


@pytest.mark.parametrize(
    "workers,schedule,stop_at,end",
    [
        # iteration-counted: the checkpoint of iteration 3 was written again after a validation
        # that found a new best (MMEngine does that), with validation in between.
        ("0", ("--batch", "2", "--iters", "6", "--val-interval", "3", "--ckpt-interval", "3"), 3, 6),
        ("2", ("--batch", "2", "--iters", "6", "--val-interval", "3", "--ckpt-interval", "3"), 3, 6),
        # epoch-counted (6 iterations per epoch: VOC train only at batch 4), resumed mid-epoch from
        # one of the periodic checkpoints (by default every tenth of the run, in iterations).
        ("0", ("--batch", "4", "--epochs", "1", "--no-aug", "--val-interval", "1"), 4, 6),
    ],
    ids=["iters-workers0", "iters-workers2", "epochs-mid-epoch"],
)
def test_resume_is_bitwise_exact(cli, demo_root: Path, tmp_path: Path, workers: str, schedule: tuple[str, ...], stop_at: int, end: int) -> None:
    straight = tmp_path / "straight"
    r = cli("train", "--data-root", demo_root, *EXACT, "--workers", workers, *schedule, "--work-dir", straight)
    assert r.code == 0, r.err
    resumed = copy_run_at(straight, tmp_path / "resumed", stop_at)
    r = cli("resume", resumed)
    assert r.code == 0, r.err
    assert f"at iteration {stop_at}/{end}" in r.out
    assert_bitwise_equal(straight / f"iter_{end}.pth", resumed / f"iter_{end}.pth")


VOCSEG = [sys.executable, "-m", "vocseg.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _kill_while_saving(proc: subprocess.Popen, work: Path, timeout: float = 180) -> bool:
    """Once the run has a complete checkpoint, SIGKILL it the moment a temporary file (a
    checkpoint or `last_checkpoint` being written) shows up. True if the kill landed mid-write."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        # `.NAME.PID.tmp`, written by this process (not one left by an earlier kill).
        writing = any(p.name.endswith(f".{proc.pid}.tmp") for p in os.scandir(work)) if work.is_dir() else False
        if writing and latest_checkpoint(work) is not None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.0005)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return False


def test_sigkill_while_saving_still_resumes(cli, demo_root: Path, tmp_path: Path) -> None:
    work = tmp_path / "killed"
    train = [*VOCSEG, "train", "--data-root", str(demo_root), "--model", "tiny", "--device", "cpu", "--batch", "2",
             "--workers", "0", "--iters", "16", "--ckpt-interval", "1", "--keep", "2", "--val-interval", "16",
             "--work-dir", str(work)]
    caught = 0
    for attempt in range(4):  # bounded: stop after two kills that landed mid-write
        cmd = train if attempt == 0 else [*VOCSEG, "resume", str(work)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV, start_new_session=True)
        caught += _kill_while_saving(proc, work)
        # Whatever the moment, the checkpoint a resume starts from is complete, and
        # `last_checkpoint` (absent only before its first write) names it.
        ckpt = latest_checkpoint(work)
        assert ckpt is not None and load_checkpoint_file(ckpt)["meta"]["iter"] >= 1
        if (work / "last_checkpoint").is_file():
            assert Path((work / "last_checkpoint").read_text().strip()) == ckpt
        if caught >= 2:
            break
    assert caught >= 1, "no kill landed while a checkpoint was being written"
    r = cli("resume", work)
    assert r.code == 0, r.err
    assert load_checkpoint_file(latest_checkpoint(work))["meta"]["iter"] == 16
    assert not list(work.glob(".*.tmp"))  # half-written files of the killed processes are gone


def _run_stopped_at(trained_run: Path, dst: Path, iteration: int) -> Path:
    from vocseg.files import owned_write_text

    shutil.copytree(trained_run, dst)
    owned_write_text(dst / "last_checkpoint", str(dst / f"iter_{iteration}.pth"), role="run")  # as vocseg leaves it
    return dst


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_another_process_count_is_refused_unless_rescale_lr(cli, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    trained_run = request.getfixturevalue("trained_run")  # built under one_thread if first used here
    run = _run_stopped_at(trained_run, tmp_path / "run", 6)
    before = _files(run)
    r = cli("resume", run, "--nproc", "2")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1
    assert "trained with total batch 2 (1 process(es) x 2)" in r.err and "processes 1 -> 2" in r.err and "--rescale-lr" in r.err
    assert _files(run) == before
    # With the flag: two processes through torchrun, LR schedule scaled by 4/2.
    config = run / "config.py"
    config.write_text(config.read_text() + "\n# a hand edit\n")
    edited = config.read_text()
    r = cli("resume", run, "--nproc", "2", "--rescale-lr")
    assert r.code == 0, r.err
    assert "LR rescaled" in r.out
    old, new = load_checkpoint_file(trained_run / "iter_8.pth"), load_checkpoint_file(run / "iter_8.pth")
    assert new["meta"]["iter"] == 8 and new["vocseg_batch"]["total"] == 4
    old_group, new_group = old["optimizer"]["param_groups"][0], new["optimizer"]["param_groups"][0]
    assert new_group["initial_lr"] == pytest.approx(2 * old_group["initial_lr"])
    assert new["param_schedulers"][0]["base_values"] == pytest.approx([2 * v for v in old["param_schedulers"][0]["base_values"]])
    assert '"nproc": 2' in (run / "recipe.json").read_text()
    assert config.read_text() == edited  # the config is kept as the user left it
    # The next resume of this run needs no flag: the checkpoint now says 2 processes.
    from vocseg.files import owned_write_text

    owned_write_text(run / "last_checkpoint", str(run / "iter_7.pth"), role="run")
    r = cli("resume", run, "--nproc", "1")
    assert r.code == 2 and "(2 process(es) x 2)" in r.err


def test_a_per_process_batch_edited_before_resume_is_rescaled_with_rescale_lr(cli, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    trained_run = request.getfixturevalue("trained_run")
    run = _run_stopped_at(trained_run, tmp_path / "run", 6)
    config = run / "config.py"
    config.write_text(config.read_text().replace("'batch_size': 2", "'batch_size': 4"))  # the train loader and its sampler
    r = cli("resume", run)
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1
    assert "per-process batch 2 -> 4 in config.py" in r.err and "processes 1 ->" not in r.err
    assert "--rescale-lr" in r.err and "batch_size 2 in config.py" in r.err
    r = cli("resume", run, "--rescale-lr")
    assert r.code == 0, r.err
    assert "LR rescaled" in r.out
    old, new = load_checkpoint_file(trained_run / "iter_8.pth"), load_checkpoint_file(run / "iter_8.pth")
    assert new["vocseg_batch"] == {"world_size": 1, "batch": 4, "total": 4}
    assert new["optimizer"]["param_groups"][0]["initial_lr"] == pytest.approx(2 * old["optimizer"]["param_groups"][0]["initial_lr"])
    assert '"batch": 4' in (run / "recipe.json").read_text()


def test_a_finished_run_is_not_retrained(cli, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trained_run = request.getfixturevalue("trained_run")
    shutil.copytree(trained_run, tmp_path / "runs" / "tiny")
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in (tmp_path / "runs" / "tiny").iterdir())
    r = cli("resume", Path("runs") / "tiny")
    assert r.code == 0, r.err
    assert "already finished: 8/8 iterations" in r.out and str(tmp_path / "runs" / "tiny") in r.out
    r = cli("resume")  # without RUN: only unfinished runs are candidates
    assert r.code == 2 and "No unfinished run under runs/" in r.err and "runs/tiny (finished: 8/8)" in r.err
    assert sorted(p.name for p in (tmp_path / "runs" / "tiny").iterdir()) == before


def test_resume_without_argument_finds_a_nested_run(cli, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`runs/demo/train` (the demo's layout) is found; of several runs, the one that trained last."""
    trained_run = request.getfixturevalue("trained_run")
    older, newer = tmp_path / "runs" / "tiny-old", tmp_path / "runs" / "demo" / "train"
    shutil.copytree(trained_run, older)
    shutil.copytree(trained_run, newer)
    (tmp_path / "runs" / "demo" / "data").mkdir()  # a dataset beside the run is not a run
    past = time.time() - 3600
    for p in older.rglob("*"):
        os.utime(p, (past, past))
    monkeypatch.chdir(tmp_path)
    r = cli("resume")  # both finished: named, the one that trained last first
    assert r.code == 2
    assert "runs/demo/train (finished: 8/8); runs/tiny-old (finished: 8/8)" in " ".join(r.err.split())
    from vocseg.runs.folders import find_run_dirs, latest_run_dir

    assert set(find_run_dirs(Path("runs"))) == {Path("runs/tiny-old"), Path("runs/demo/train")}
    assert latest_run_dir(Path("runs")) == Path("runs/demo/train")


def test_bad_run_folders_are_one_line_errors(cli, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trained_run = request.getfixturevalue("trained_run")
    monkeypatch.chdir(tmp_path)
    cases = []
    cases.append((None, "No run folder under runs/"))
    (tmp_path / "empty").mkdir()
    cases.append((tmp_path / "empty", "is not a vocseg run folder"))
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    for name in ("config.py", "recipe.json"):
        shutil.copy2(trained_run / name, fresh / name)
    cases.append((fresh, "has no checkpoint to resume from"))
    truncated = tmp_path / "truncated"
    shutil.copytree(trained_run, truncated)
    ckpt = truncated / "iter_8.pth"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    cases.append((truncated, "truncated"))
    for folder, needle in cases:
        before = _files(folder) if folder is not None else {}
        r = cli("resume", *([folder] if folder is not None else []))
        assert r.code == 2 and needle in r.err, r.err
        assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err
        if folder is not None:
            assert _files(folder) == before  # nothing lost, nothing changed
    r = cli("resume", truncated)
    assert "iter_7.pth" in r.err  # the hint names the previous checkpoint


# -- stops through the real signal path ------------------------------------------------------------


def test_sigterm_to_the_process_group_then_resume_is_bitwise_exact(cli, demo_root: Path, tmp_path: Path) -> None:
    """SIGTERM to the whole process group (main process, training and validation loader workers:
    the validation at iteration 2 started persistent workers), the stop's own checkpoint, a
    resume: bitwise the weights of the same run in one go. Where the stop lands (iteration 3,
    or 4 with its validation pending) does not change the result."""
    flags = [*EXACT, "--batch", "2", "--workers", "2", "--iters", "6", "--val-interval", "2", "--ckpt-interval", "6"]
    stopped = tmp_path / "stopped"
    proc = subprocess.Popen([*VOCSEG, "train", "--data-root", str(demo_root), *flags, "--work-dir", str(stopped)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, start_new_session=True)
    assert proc.stdout is not None and proc.stderr is not None
    out = ""
    for line in proc.stdout:
        out += line
        if line.startswith("iter 3/6"):
            os.killpg(proc.pid, signal.SIGTERM)
            break
    out += proc.stdout.read()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 143, out + err
    assert "Traceback" not in err and "exited unexpectedly" not in err, err
    assert f"checkpoint saved. Continue with: vocseg resume {stopped}" in out
    ckpt = latest_checkpoint(stopped)
    assert ckpt is not None and load_checkpoint_file(ckpt)["meta"]["iter"] in (3, 4)
    straight = tmp_path / "straight"
    r = cli("train", "--data-root", demo_root, *flags, "--work-dir", straight)
    assert r.code == 0, r.err
    r = cli("resume", stopped)
    assert r.code == 0, r.err
    assert_bitwise_equal(straight / "iter_6.pth", stopped / "iter_6.pth")


_STOPPED_VALIDATIONS: set[tuple[str, int]] = set()
_REMOVED: list[tuple[str, list[str]]] = []  # (file deleted by a checkpoint hook, best_* files then)


def _recording_delete(hook: object, delete: object) -> object:
    """A checkpoint hook's deletion that records what the folder held at each one."""

    def recorded_delete(runner: object, path: str) -> bool:
        own = hook._own(path)  # type: ignore[attr-defined]
        _REMOVED.append((own, sorted(p.name for p in Path(own).parent.glob("best_*.pth"))))
        return delete(runner, path)  # type: ignore[operator]

    return recorded_delete


def _register_stop_hook() -> str:
    from vocseg.stack.compat import ensure_stack

    ensure_stack()
    from mmengine.hooks import CheckpointHook, Hook
    from mmseg.registry import HOOKS

    name = "VocsegTestStopDuringValidation"
    if HOOKS.get(name) is None:

        class StopDuringValidation(Hook):
            """Sends this process SIGTERM during the validation of the given iterations (once each)."""

            priority = "LOWEST"  # after the checkpoint hook's before_train sets its file backend

            def __init__(self, at: list[int]) -> None:
                self.at = at

            def before_train(self, runner) -> None:
                for hook in runner.hooks:
                    if isinstance(hook, CheckpointHook):  # its deletions go through vocseg.files (`_delete`)
                        hook._delete = _recording_delete(hook, hook._delete)

            def before_val_iter(self, runner, batch_idx: int, data_batch=None) -> None:
                key = (str(runner.work_dir), runner.iter)
                if batch_idx == 1 and runner.iter in self.at and key not in _STOPPED_VALIDATIONS:
                    _STOPPED_VALIDATIONS.add(key)
                    os.kill(os.getpid(), signal.SIGTERM)

        HOOKS.register_module(name=name, module=StopDuringValidation)
    return name


def _val_pending(ckpt: Path) -> object:
    return load_checkpoint_file(ckpt)["message_hub"]["runtime_info"].get("vocseg_val_pending")


def test_stop_during_validation_is_validated_on_resume(cli, demo_root: Path, tmp_path: Path) -> None:
    """A stop between two validation batches: the checkpoint of that iteration is saved, the run
    exits 143 with the resume line, and the resume validates that iteration before training on;
    at the last iteration too (the run is not "finished" without its final validation). The
    result is bitwise that of the run in one go."""
    flags = ["--data-root", str(demo_root), *EXACT, "--batch", "2", "--workers", "0", "--iters", "4", "--val-interval", "2", "--ckpt-interval", "4"]
    plain_cfg, stop_cfg = tmp_path / "plain.py", tmp_path / "stop.py"
    assert cli("config", *flags, "-o", plain_cfg).code == 0
    hook = _register_stop_hook()
    stop_cfg.write_text(plain_cfg.read_text() + f"\ncustom_hooks = custom_hooks + [dict(type={hook!r}, at=[2, 4])]\n")
    straight, run = tmp_path / "straight", tmp_path / "run"
    assert cli("train", plain_cfg, "--work-dir", straight).code == 0

    r = cli("train", stop_cfg, "--work-dir", run)
    assert r.code == 143, r.out + r.err
    assert f"stopped at iteration 2; checkpoint saved. Continue with: vocseg resume {run}" in r.out
    assert "Traceback" not in r.err
    assert latest_checkpoint(run) == run / "iter_2.pth" and _val_pending(run / "iter_2.pth") == 2

    r = cli("resume", run)  # validates iteration 2 first, trains 3-4, stopped in the final validation
    assert r.code == 143, r.out + r.err
    assert "at iteration 2/4" in r.out and "stopped at iteration 4; checkpoint saved" in r.out
    assert latest_checkpoint(run) == run / "iter_4.pth" and _val_pending(run / "iter_4.pth") == 4

    r = cli("resume", run)  # not "already finished": the final validation is pending
    assert r.code == 0, r.err
    assert "at iteration 4/4" in r.out
    assert not _val_pending(run / "iter_4.pth")
    # Per start (MMEngine's log): iterations 1-2 and half a validation; the validation of 2 first,
    # then 3-4 and half a validation; the validation of 4.
    assert _events_per_segment(run) == [[1, 2], ["val", 3, 4], ["val"]]
    # The validation of 4 found a new best: written before the previous one was deleted.
    assert [p.name for p in run.glob("best_mIoU_iter_*.pth")] == ["best_mIoU_iter_4.pth"]
    assert (str(run / "best_mIoU_iter_2.pth"), ["best_mIoU_iter_2.pth", "best_mIoU_iter_4.pth"]) in _REMOVED
    r = cli("resume", run)
    assert r.code == 0 and "already finished: 4/4 iterations" in r.out
    assert_bitwise_equal(straight / "iter_4.pth", run / "iter_4.pth")


def _events_per_segment(run: Path) -> list[list[int | str]]:
    """Per start/resume of a run (its MMEngine logs): training iterations and finished validations."""
    segments = []
    for log in sorted(run.glob("*/*.log")):
        events: list[int | str] = []
        for line in log.read_text().splitlines():
            if m := re.search(r"Iter\(train\) \[\s*(\d+)/", line):
                events.append(int(m.group(1)))
            elif "Iter(val)" in line and "mIoU:" in line:
                events.append("val")
        segments.append(events)
    return segments


def test_foreign_checkpoint_and_damaged_recipe_are_one_line_errors(cli, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    trained_run = request.getfixturevalue("trained_run")
    cases = []
    for name, content in (("not-a-dict", [1, 2, 3]), ("no-meta", {"state_dict": {}})):
        folder = _run_stopped_at(trained_run, tmp_path / name, 8)
        torch.save(content, folder / "iter_8.pth")
        cases.append((folder, f"{folder / 'iter_8.pth'} is not a training checkpoint"))
    for name, text in (("bad-json", "{not json"), ("not-an-object", "[1, 2]"), ("wrong-type", '{"batch": "two"}')):
        folder = _run_stopped_at(trained_run, tmp_path / name, 6)
        (folder / "recipe.json").write_text(text)
        cases.append((folder, f"Cannot read {folder / 'recipe.json'}"))
    for folder, needle in cases:
        before = _files(folder)
        r = cli("resume", folder)
        assert r.code == 2 and needle in r.err, r.err
        assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err
        assert _files(folder) == before
    assert "iter_7.pth" in cli("resume", tmp_path / "not-a-dict").err  # the hint names the previous one
