"""Nothing lost, nothing escapes (issue 12): user files are never replaced, run folders and data
roots stay consistent, file-system faults and dead loader workers are one line with what was
kept and the next command, nonsense flags are refused before anything is written.

Every test compares file trees before and after; archive escapes are in test_fetch.py.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import TINY_TRAIN
from tests.helpers import file_tree as tree
from vocseg.data.demo import DEMO_MARKER
from vocseg.data.voc import VOC_SUBDIR
from vocseg.files import MANIFEST_NAME, check_may_write, record_written, written_by_vocseg
from vocseg.runs.folders import latest_checkpoint


def one_line_error(result) -> str:  # noqa: ANN001 - conftest's CliResult
    assert result.code != 0, result.out + result.err
    assert "Traceback" not in result.err and "Traceback" not in result.out, result.err
    assert len(result.err.strip().splitlines()) == 1, result.err
    assert result.err.startswith("error:"), result.err
    return " ".join(result.err.split())


# ---------------------------------------------------------------- the shared rule


def test_the_rule_knows_what_vocseg_wrote(tmp_path: Path) -> None:
    mine = tmp_path / "mine.json"
    mine.write_text("{}")
    with pytest.raises(Exception, match="not written by vocseg"):
        check_may_write(mine)
    check_may_write(mine, force=True)  # --force
    check_may_write(mine, data=b"{}")  # writing the same bytes changes nothing
    check_may_write(tmp_path / "new.json")  # a new name

    ours = tmp_path / "ours.json"
    ours.write_text("[1]")
    record_written(ours)
    assert written_by_vocseg(ours) and (tmp_path / MANIFEST_NAME).is_file()
    check_may_write(ours)
    ours.write_text("[1, 'edited by hand']")  # changed since: the user's now
    assert not written_by_vocseg(ours)
    with pytest.raises(Exception, match="was changed since"):
        check_may_write(ours)
    with pytest.raises(Exception, match="one of this command's inputs"):
        check_may_write(mine, force=True, inputs=[mine])  # never an input, not even with --force
    with pytest.raises(Exception, match="is a folder"):
        check_may_write(tmp_path)


# ---------------------------------------------------------------- config, eval, compare outputs


def test_config_o_never_replaces_a_users_file_without_force(cli, demo_root: Path, tmp_path: Path) -> None:
    target = tmp_path / "my_config.py"
    target.write_text("# my own config\n")
    before = tree(tmp_path)
    message = one_line_error(cli("config", "--data-root", demo_root, "--model", "tiny", "-o", target))
    assert str(target) in message and "--force" in message
    assert tree(tmp_path) == before

    forced = cli("config", "--data-root", demo_root, "--model", "tiny", "-o", target, "--force")
    assert forced.code == 0, forced.err
    assert "vocseg_recipe" in target.read_text()
    # vocseg's own, unchanged file may be written again (a new plan); after a hand edit it may not.
    again = cli("config", "--data-root", demo_root, "--model", "tiny", "--iters", "5", "-o", target)
    assert again.code == 0, again.err
    target.write_text(target.read_text() + "# my edit\n")
    one_line_error(cli("config", "--data-root", demo_root, "--model", "tiny", "-o", target))
    assert target.read_text().endswith("# my edit\n")


def test_eval_outputs_never_replace_inputs_or_users_files(cli, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    trained_run = request.getfixturevalue("trained_run")
    users = tmp_path / "results.json"
    users.write_text('{"mine": true}\n')
    run_before, here_before = tree(trained_run), tree(tmp_path)
    for args in (("--json", users), ("--csv", users), ("--json", trained_run / "config.py"), ("--json", latest_checkpoint(trained_run))):
        message = one_line_error(cli("eval", trained_run, *args))
        assert str(args[1]) in message
    assert tree(trained_run) == run_before and tree(tmp_path) == here_before  # refused before evaluating

    out = tmp_path / "my_folder"
    out.mkdir()
    (out / "val.csv").write_text("my,own,table\n")
    before = tree(out)
    one_line_error(cli("eval", trained_run, "-o", out, "--no-plots", "--workers", "0"))
    assert tree(out) == before


def test_compare_never_replaces_an_input_or_a_users_chart(cli, tmp_path: Path) -> None:
    runs = Path(__file__).parent / "data" / "seed_runs.json"
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    shutil.copy(runs, a)
    shutil.copy(runs, b)
    record_written(a, b)  # even eval JSONs vocseg wrote are never replaced when they are inputs
    chart = tmp_path / "compare.png"
    chart.write_bytes(b"my own picture")
    before = tree(tmp_path)
    for extra in (("--chart", chart), ("--chart", tmp_path / "c.png", "--json", a), ("--chart", a, "--force")):
        one_line_error(cli("compare", a, b, *extra))
    assert tree(tmp_path) == before


# ---------------------------------------------------------------- train --work-dir


def test_train_work_dir_with_a_users_files_is_refused(cli, demo_root: Path, tmp_path: Path) -> None:
    project = tmp_path / "my_project"
    project.mkdir()
    (project / "config.py").write_text("# the user's own config\nmodel = dict()\n")
    before = tree(tmp_path)
    message = one_line_error(cli("train", "--data-root", demo_root, *TINY_TRAIN, "--iters", "1", "--work-dir", project))
    assert "config.py" in message and "--work-dir" in message
    assert tree(tmp_path) == before  # not even a lock file

    # Also a vocseg config the user wrote with `config -o`: it is the user's file now.
    assert cli("config", "--data-root", demo_root, "--model", "tiny", "-o", project / "config.py", "--force").code == 0
    before = tree(tmp_path)
    one_line_error(cli("train", "--data-root", demo_root, *TINY_TRAIN, "--iters", "1", "--work-dir", project))
    assert tree(tmp_path) == before


# ---------------------------------------------------------------- resume with a foreign checkpoint


def test_resume_refuses_another_models_checkpoint_and_changes_nothing(cli, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    import torch

    from vocseg.stack.compat import load_checkpoint_file

    trained_run = request.getfixturevalue("trained_run")
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.py", "recipe.json"):
        shutil.copy2(trained_run / name, run / name)
    state = load_checkpoint_file(trained_run / "iter_8.pth")
    weights = state["state_dict"]
    head = next(k for k in weights if k.endswith("conv_seg.weight"))
    weights[head] = torch.zeros((5, *weights[head].shape[1:]))  # a 5-class model's head
    weights[head.replace(".weight", ".bias")] = torch.zeros(5)
    state["meta"]["iter"] = 4
    torch.save(state, run / "iter_4.pth")
    (run / "last_checkpoint").write_text(str(run / "iter_4.pth"))
    before = tree(run)
    started = time.monotonic()
    message = one_line_error(cli("resume", run))
    assert "does not belong to this run's model" in message and "shape" in message and "iter_4.pth" in message
    assert tree(run) == before  # byte for byte
    assert time.monotonic() - started < 60  # refused up front, not after a training start


# ---------------------------------------------------------------- file-system faults in one line


def test_file_system_faults_are_one_line(cli, demo_root: Path, tmp_path: Path) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    base = ("config", "--data-root", demo_root, "--model", "tiny", "-o")
    message = one_line_error(cli(*base, a_file / "config.py"))  # a file where a folder is expected
    assert "a file stands where a folder is expected" in message and str(a_file) in message
    message = one_line_error(cli(*base, tmp_path / ("x" * 300 + ".py")))
    assert "file name too long" in message
    message = one_line_error(cli(*base, tmp_path))
    assert "is a folder" in message
    verbose = cli("--verbose", *base, a_file / "config.py")
    assert verbose.code != 0 and "Traceback" in verbose.err  # --verbose keeps the traceback
    assert tree(tmp_path) == {"a_file": hashlib.sha256(b"x").hexdigest()}


def test_faults_in_prepare_and_compare_are_one_line(cli, tmp_path: Path) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    message = one_line_error(cli("prepare", "--demo", "--data-root", a_file / "data"))
    assert "a file stands where a folder is expected" in message and str(a_file) in message
    runs = Path(__file__).parent / "data" / "seed_runs.json"
    message = one_line_error(cli("compare", runs, "--chart", a_file / "c.png"))
    assert "a file stands where a folder is expected" in message and "vocseg compare" in message
    assert tree(tmp_path) == {"a_file": hashlib.sha256(b"x").hexdigest()}


def test_injected_disk_full_is_one_line_everywhere(cli, demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC injected at the one place files are written (`vocseg.files`), so it runs on any machine."""
    import vocseg.files

    def full(path: object, data: bytes, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(vocseg.files, "owned_write_bytes", full)
    target = tmp_path / "out.py"
    message = one_line_error(cli("config", "--data-root", demo_root, "--model", "tiny", "-o", target))
    assert message.startswith("error: disk full at") and str(target) in message and "Free some space" in message
    assert "vocseg config" in message and not target.exists()


def test_disk_full_while_saving_a_checkpoint_keeps_the_run_resumable(
    cli, demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    import mmengine.runner.runner as mmengine_runner

    real_save = mmengine_runner.save_checkpoint

    def save(checkpoint: dict, filename: str, *args: object, **kwargs: object) -> None:
        if str(filename).endswith("iter_4.pth"):
            # A full disk leaves no partial checkpoint: vocseg.files writes a temporary file and removes it.
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(checkpoint, filename, *args, **kwargs)

    run = tmp_path / "run"
    args = ("train", "--data-root", demo_root, *TINY_TRAIN, "--no-aug", "--iters", "6", "--ckpt-interval", "2", "--val-interval", "100", "--work-dir", run)
    with monkeypatch.context() as patch:
        patch.setattr(mmengine_runner, "save_checkpoint", save)  # what the Runner calls for every checkpoint
        result = cli(*args)
    message = one_line_error(result)
    assert message.startswith("error: disk full while writing in") and str(run) in message
    assert "iter_2.pth" in message and "intact" in message and f"vocseg resume {run}" in message
    assert latest_checkpoint(run) == run / "iter_2.pth"
    resumed = cli("resume", run)
    assert resumed.code == 0, resumed.err
    assert latest_checkpoint(run) == run / "iter_6.pth"


def _tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True, capture_output=True)


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root to mount a small tmpfs (the injected ENOSPC tests cover the same path)")
    mount = tmp_path / "small"
    try:
        _tmpfs(mount, "600k")
    except (subprocess.CalledProcessError, OSError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False, capture_output=True)


def test_a_read_only_folder_is_one_line(cli, demo_root: Path, small_tmpfs: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    target = small_tmpfs / "cfg.py"
    message = one_line_error(cli("config", "--data-root", demo_root, "--model", "tiny", "-o", target))
    assert "read-only file system" in message and str(small_tmpfs) in message and "vocseg config" in message
    message = one_line_error(cli("prepare", "--demo", "--data-root", small_tmpfs / "data"))
    assert "read-only file system" in message


def test_real_disk_full_during_prepare_demo_is_redone_next_time(cli, small_tmpfs: Path) -> None:
    root = small_tmpfs / "data"
    message = one_line_error(cli("prepare", "--demo", "--data-root", root, "--workers", "1"))
    assert message.startswith("error: disk full") and str(root) in message and "marked unfinished" in message
    assert f"vocseg prepare --demo --data-root {root}" in message
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_tmpfs)], check=True)  # space again
    again = cli("prepare", "--demo", "--data-root", root, "--workers", "1")
    assert again.code == 0, again.out + again.err
    out = " ".join(again.out.split())
    assert "stopped halfway" in out and "is ready" in out


# ---------------------------------------------------------------- a loader worker killed by the kernel


def test_a_killed_loader_worker_is_one_line_with_the_resume_command(cli, demo_root: Path, tmp_path: Path, one_thread: None) -> None:
    from vocseg.training.launch import worker_pids

    run = tmp_path / "run"
    stop = threading.Event()
    # Children this process had before training (a multiprocessing resource tracker or fork
    # server left by an earlier test) are not loader workers: killing one of those instead let
    # the training finish in the whole suite.
    not_workers = set(worker_pids(os.getpid()))
    own_cmdline = Path(f"/proc/{os.getpid()}/cmdline").read_bytes()

    def kill_a_worker() -> None:  # as the out-of-memory killer does
        while not stop.is_set():
            if latest_checkpoint(run) is not None:
                for pid in set(worker_pids(os.getpid())) - not_workers:
                    try:
                        if Path(f"/proc/{pid}/cmdline").read_bytes() != own_cmdline:
                            continue  # forked loader workers share this process's command line
                        os.kill(pid, 9)
                        return
                    except (ProcessLookupError, FileNotFoundError):
                        pass
            time.sleep(0.05)

    killer = threading.Thread(target=kill_a_worker, daemon=True)
    killer.start()
    try:
        result = cli("train", "--data-root", demo_root, "--model", "tiny", "--device", "cpu", "--batch", "2", "--workers", "1",
                     "--no-aug", "--iters", "400", "--ckpt-interval", "2", "--val-interval", "1000", "--work-dir", run)
    finally:
        stop.set()
        killer.join()
    message = one_line_error(result)
    assert "data-loader worker died" in message and "out-of-memory" in message
    assert f"vocseg resume {run}" in message and "intact" in message


# ---------------------------------------------------------------- prepare: one at a time, interruptions


def test_two_prepares_on_one_data_root(cli, demo_copy: Path) -> None:
    from vocseg.data.prepare import prepare_lock

    before = tree(demo_copy)
    with prepare_lock(demo_copy):  # as another `vocseg prepare` holds it
        message = one_line_error(cli("prepare", "--demo", "--data-root", demo_copy))
    assert "is being prepared by another vocseg process" in message and f"pid {os.getpid()}" in message
    assert tree(demo_copy) == before  # not even a lock file left
    assert cli("prepare", "--check", "--data-root", demo_copy).code == 0  # free again


def test_a_prepare_in_another_process_holds_the_root(cli, tmp_path: Path) -> None:
    import sys

    root = tmp_path / "data"
    root.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from vocseg.data.prepare import prepare_lock\n"
         "with prepare_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)", str(root)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        message = one_line_error(cli("prepare", "--demo", "--data-root", root))
        assert f"pid {holder.pid}" in message
    finally:
        holder.kill()
        holder.wait()
    assert cli("prepare", "--demo", "--data-root", root, "--workers", "1").code == 0  # a killed holder leaves no lock


@pytest.mark.parametrize("stop", ["interrupt", "disk_full"])
def test_an_interrupted_demo_is_redone(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop: str) -> None:
    import vocseg.data.demo as demo

    real_save = demo.save_sbd_mat
    calls = {"n": 0}

    def stop_halfway(*args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 20:
            if stop == "interrupt":
                raise KeyboardInterrupt
            raise OSError(errno.ENOSPC, "No space left on device", str(args[1]))
        real_save(*args, **kwargs)  # type: ignore[arg-type]

    root = tmp_path / "data"
    with monkeypatch.context() as patch:
        patch.setattr(demo, "save_sbd_mat", stop_halfway)
        first = cli("prepare", "--demo", "--data-root", root, "--workers", "1")
    assert first.code != 0 and (root / VOC_SUBDIR).is_dir() and not (root / DEMO_MARKER).is_file()
    if stop == "disk_full":
        assert one_line_error(first).startswith("error: disk full at")
    again = cli("prepare", "--demo", "--data-root", root, "--workers", "1")
    assert again.code == 0, again.out + again.err
    assert "stopped halfway" in " ".join(again.out.split())
    forced = cli("prepare", "--demo", "--data-root", root, "--workers", "1", "--redo")
    assert forced.code == 0, forced.out + forced.err


def test_demo_never_replaces_a_real_voc_tree(cli, tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / VOC_SUBDIR / "JPEGImages").mkdir(parents=True)
    (root / VOC_SUBDIR / "JPEGImages" / "real.jpg").write_bytes(b"real photo")
    before = tree(root)
    for extra in ((), ("--redo",)):
        message = one_line_error(cli("prepare", "--demo", "--data-root", root, *extra))
        assert "not vocseg's demo dataset" in message
    assert {k: v for k, v in tree(root).items() if k != ".vocseg-prepare.lock"} == before


# ---------------------------------------------------------------- flags


@pytest.mark.parametrize(
    "flags,needle",
    [
        (("--lr", "nan"), "--lr nan is not a finite number"),
        (("--lr", "inf"), "--lr inf is not a finite number"),
        (("--base-lr", "-inf"), "--base-lr -inf is not a finite number"),
        (("--seed", "-1"), "--seed -1 is out of range"),
        (("--seed", str(2**32)), "is out of range"),
        (("--device", "cpu", "--gpus", "0,1"), "--gpus 0,1 cannot be used with --device cpu"),
        (("--device", "cuda", "--nproc", "2"), "--nproc 2 is for --device cpu"),
        (("--name", "../../elsewhere"), "cannot be a folder name"),
    ],
)
def test_nonsense_flags_are_refused_before_anything_is_written(cli, demo_root: Path, tmp_path: Path, flags: tuple[str, ...], needle: str) -> None:
    out = tmp_path / "cfg.py"
    for command in (("config", "-o", out), ("train", "--work-dir", tmp_path / "run")):
        message = one_line_error(cli(*command, "--data-root", demo_root, "--model", "tiny", *flags))
        assert needle in message
    assert tree(tmp_path) == {}


def test_every_accepted_recipe_makes_a_config_that_loads(tmp_path: Path) -> None:
    """Property test: whatever values validation lets through, mmengine's Config loads the result."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from vocseg.errors import VocsegError
    from vocseg.recipe.mmconfig import build_config_text
    from vocseg.recipe.models import PRESETS
    from vocseg.recipe.recipe import Recipe, plan
    from vocseg.stack.compat import ensure_stack

    ensure_stack()
    from mmengine.config import Config

    # Mostly values that pass (4 in 5 per field), some that must not: both sides of every rule get tried.
    def mostly(valid: st.SearchStrategy, invalid: st.SearchStrategy) -> st.SearchStrategy:
        return st.one_of(valid, valid, valid, valid, invalid)

    rates = st.one_of(st.none(), mostly(st.floats(min_value=1e-8, max_value=10.0), st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -1.0, 1e300])))
    counts = mostly(st.none() | st.integers(min_value=1, max_value=100_000), st.integers(min_value=-3, max_value=0))
    recipes = st.builds(
        Recipe,
        data_root=st.just(str(tmp_path)),
        model=st.sampled_from(sorted(PRESETS)),
        device=st.sampled_from(["cpu", "cuda"]),
        gpus=mostly(st.just("first:1"), st.sampled_from(["0", "0,1", "6,7", "first:3"])),
        nproc=mostly(st.just(1), st.sampled_from([2, 8, 0, -1])),
        batch=mostly(st.integers(min_value=1, max_value=64), st.integers(min_value=-2, max_value=0)),
        iters=counts,
        lr=rates,
        base_lr=rates,
        warmup_iters=mostly(st.integers(min_value=0, max_value=500), st.just(-1)),
        crop=mostly(st.none() | st.integers(min_value=1, max_value=64), st.integers(min_value=-1, max_value=4096)),
        seed=mostly(st.integers(min_value=0, max_value=2**32 - 1), st.integers(min_value=-(2**40), max_value=2**40)),
        keep=mostly(st.integers(min_value=1, max_value=5), st.integers(min_value=-1, max_value=0)),
        val_interval=counts,
        ckpt_interval=counts,
        name=mostly(st.none() | st.from_regex(r"[A-Za-z0-9_.-]{1,20}", fullmatch=True), st.text(max_size=20)),
        pretrained=st.just("none"),
    )
    cfg_path = tmp_path / "cfg.py"
    accepted = []

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(recipes)
    def check(recipe: Recipe) -> None:
        try:
            the_plan = plan(recipe, train_size=1464)
        except VocsegError:
            return  # refused in one line: nothing written
        cfg_path.write_text(build_config_text(recipe, the_plan, tmp_path / "run"))
        cfg = Config.fromfile(str(cfg_path))
        assert cfg.randomness["seed"] == recipe.seed
        assert Recipe.from_json(cfg.vocseg_recipe) == recipe
        accepted.append(recipe)

    check()
    assert len(accepted) >= 5  # the property was tried on accepted recipes, not only on refusals


def test_a_connection_broken_inside_the_loader_is_a_worker_death_not_a_disk_fault() -> None:
    """Under load, a worker killed while it hands over a batch surfaces in the main process as
    ConnectionResetError raised in multiprocessing under torch's DataLoader, before torch notices
    the death (seen once in a suite run beside two others): the same one line as a dead worker,
    not "Connection reset by peer while writing in RUN". Raised elsewhere it stays a fault."""
    from vocseg.errors import FaultContext, describe_os_error, describe_worker_death

    def raised_in(outer: str, inner: str, exc: BaseException) -> BaseException:
        scope: dict = {}
        exec(compile("def recv(exc):\n    raise exc\n", inner, "exec"), scope)  # noqa: S102 - frames whose files are
        exec(compile("def fetch(exc):\n    recv(exc)\n", outer, "exec"), scope)  # noqa: S102 - torch's and multiprocessing's
        try:
            with FaultContext(kept="The checkpoint of iteration 2 is intact", next_command="vocseg resume RUN", where="RUN"):
                scope["fetch"](exc)
        except BaseException as caught:  # noqa: BLE001
            return caught
        raise AssertionError("not raised")

    loader = "/venv/lib/python3.11/site-packages/torch/utils/data/dataloader.py"
    connection = "/usr/lib/python3.11/multiprocessing/connection.py"
    line = describe_worker_death(raised_in(loader, connection, ConnectionResetError(104, "Connection reset by peer")), ["train"])
    assert line is not None and "data-loader worker died" in line and "out-of-memory" in line
    assert "iteration 2 is intact" in line and "`vocseg resume RUN`" in line
    for outer, inner in ((loader, "/work/code/dataset.py"), ("/work/code/upload.py", "/work/code/net.py")):
        elsewhere = raised_in(outer, inner, ConnectionResetError(104, "Connection reset by peer"))
        assert describe_worker_death(elsewhere, ["train"]) is None
        assert "Connection reset by peer" in describe_os_error(elsewhere, ["train"])  # type: ignore[arg-type]
