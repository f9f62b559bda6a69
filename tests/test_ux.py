"""What a user sees: progress, pasteable next commands, names printed as data, the default model
and run, and hints that work on the machine that prints them (issues 20 and 23).

One shared tiny run (conftest's `trained_run`) is copied into folders whose names hold spaces,
an accent and `$` signs; nothing here trains.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vocseg.console import command, format_rate, shell_quote, shown

CASES = Path(__file__).parent / "data" / "cases" / "predict-inputs"
ODD_NAME = "my run $HOME $x é"  # spaces, `$` twice (mathtext, shell), an accent
SRC = str(Path(__file__).resolve().parents[1] / "src")


def copy_run(trained_run: Path, target: Path) -> Path:
    """A private run folder with the trained weights (config.py, recipe.json, iter_8.pth)."""
    from vocseg.runs.folders import latest_checkpoint

    target.mkdir(parents=True)
    for name in ("config.py", "recipe.json"):
        shutil.copy(trained_run / name, target / name)
    shutil.copy(latest_checkpoint(trained_run), target / "iter_8.pth")
    return target


def env_with_src() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", "2")
    env.pop("NO_COLOR", None)
    return env


def vocseg_argv(*args: object) -> list[str]:
    return [sys.executable, "-c", "import sys; from vocseg.cli import main; sys.argv[0] = 'vocseg'; main()", *map(str, args)]


def run_in_pty(argv: list[str], cwd: Path) -> tuple[int, str]:
    """Run `argv` with stdout and stderr on a pseudo-terminal (as in a terminal window)."""
    import pty

    out = bytearray()

    def read(fd: int) -> bytes:
        data = os.read(fd, 65536)
        out.extend(data)
        return data

    env = env_with_src()
    env.update(COLUMNS="120", LINES="40", TERM="xterm-256color")
    old = os.getcwd()
    os.chdir(cwd)
    try:
        saved = dict(os.environ)
        os.environ.update(env)
        try:
            status = pty.spawn(argv, read)
        finally:
            os.environ.clear()
            os.environ.update(saved)
    finally:
        os.chdir(old)
    return os.waitstatus_to_exitcode(status), out.decode("utf-8", "replace")


# ---------------------------------------------------------------- pasteable commands


@pytest.mark.parametrize("name", [ODD_NAME, "quote ' and \" and \\", "tab\tand\nnewline", "esc \x1b[31mred", os.fsdecode(b"caf\xe9 latin-1")])
def test_a_printed_command_pasted_into_bash_gives_the_same_path(name: str) -> None:
    line = command("predict", "IMAGE", "-c", Path("runs") / name)
    assert "\n" not in line and "\x1b" not in line  # one visible line
    printed = subprocess.run(["bash", "-c", line.replace("vocseg", "printf '%s\\0'", 1)], capture_output=True, check=True).stdout
    assert printed.split(b"\0")[:-1] == [b"predict", b"IMAGE", b"-c", os.fsencode(str(Path("runs") / name))]
    if name.isprintable():
        assert shlex.split(line)[-1] == f"runs/{name}"


def test_shown_names_never_reach_the_terminal_as_markup_or_control() -> None:
    import io

    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf, force_terminal=True, highlight=False, width=200).print(shown("[bold]x\x1b[2J"))
    assert buf.getvalue() == "[bold]x\\x1b[2J\n"  # as written, the escape made visible
    assert shown(os.fsdecode(b"caf\xe9")) == "caf\\xe9"
    assert shell_quote("plain/path.jpg") == "plain/path.jpg"


def test_speed_is_readable_at_any_rate() -> None:
    assert format_rate(2, 40.0) == "20 s/img"  # UPerNet-R50 on a CPU: never "0.0 img/s"
    assert format_rate(8, 1.0) == "8 img/s"
    assert format_rate(1, 2.0) == "0.5 img/s"
    assert format_rate(64, 2.0) == "32.0 img/s"
    assert format_rate(1, 0.0) == "-"


def test_plan_says_when_it_validates_in_words() -> None:
    from vocseg.commands.render import interval_text

    assert interval_text(2, 2) == "once, at the end (iteration 2)"
    assert interval_text(1, 2) == "every iteration (2 times)"
    assert interval_text(500, 1000) == "every 500 iterations (2 times)"
    assert interval_text(300, 1000) == "every 300 iterations (4 times, and at the end)"


def test_bare_vocseg_prints_the_help_without_error(cli) -> None:
    r = cli()
    assert r.code == 0
    assert r.out.startswith("Usage: vocseg") and "error:" not in r.out + r.err


# ---------------------------------------------------------------- hints valid on this machine


def test_no_gpu_hint_for_a_config_file_and_a_run_does_not_say_device_cpu(tmp_path: Path) -> None:
    from vocseg.errors import VocsegError
    from vocseg.recipe.recipe import Recipe
    from vocseg.training.launch import LaunchOptions, cpu_way_for, select_gpus

    with pytest.raises(VocsegError) as flags:
        select_gpus(Recipe(gpus="0"), [], None, LaunchOptions().cpu_way)
    assert "--device cpu" in flags.value.hint
    config = tmp_path / "my config.py"
    with pytest.raises(VocsegError) as from_file:
        select_gpus(Recipe(gpus="0"), [], None, cpu_way_for(config_file=config))
    hint = from_file.value.hint
    suggested = hint.split("`")[1]
    assert shlex.split(suggested)[:4] == ["vocseg", "config", "--device", "cpu"]  # config accepts --device; train CFG does not
    assert shlex.split(suggested)[-1] == str(tmp_path / "my config-cpu.py")
    with pytest.raises(VocsegError) as resumed:
        select_gpus(Recipe(gpus="0"), [], None, cpu_way_for(run_dir=tmp_path / "run"))
    assert "Resume it on a machine with a GPU" in resumed.value.hint


# ---------------------------------------------------------------- default model, default run


def test_predict_without_a_model_and_without_runs_names_the_ways(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = cli("predict", CASES / "good.jpg")
    assert r.code == 2
    lines = [line for line in r.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in r.err
    assert "-c RUN" in r.err and "-c official:upernet-r50-40k" in r.err and "`vocseg train`" in r.err
    for verb in ("eval", "export"):
        r = cli(verb)
        assert r.code == 2 and "official:upernet-r50-40k" in r.err and "`vocseg train`" in r.err
    r = cli("report")
    assert r.code == 2 and "`vocseg train`" in r.err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_predict_without_a_model_uses_the_newest_trained_run(cli, trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    older = copy_run(trained_run, tmp_path / "runs" / "older")
    newest = copy_run(trained_run, tmp_path / "runs" / ODD_NAME)
    os.utime(older / "iter_8.pth", (1_000_000_000, 1_000_000_000))
    r = cli("predict", CASES / "good.jpg")
    assert r.code == 0, r.err
    assert f"using the newest trained run, runs/{ODD_NAME} (iter_8.pth)" in r.out
    assert (newest / "predict" / "good_overlay.png").is_file()
    assert not (older / "predict").exists()


def write_max_iters(run: Path, max_iters: int) -> None:
    config = run / "config.py"
    text = config.read_text()
    assert "'max_iters': 8" in text
    config.write_text(text.replace("'max_iters': 8", f"'max_iters': {max_iters}"))


def test_resume_without_a_run_picks_the_newest_unfinished_one_not_being_trained(trained_run: Path, tmp_path: Path) -> None:
    from vocseg.errors import VocsegError
    from vocseg.files import exclusive_lock
    from vocseg.runs.folders import LOCK_NAME
    from vocseg.training.resuming import pick_unfinished_run

    root = tmp_path / "runs"
    unfinished = copy_run(trained_run, root / "unfinished")
    write_max_iters(unfinished, 16)
    finished = copy_run(trained_run, root / "finished")  # 8/8: newer, but nothing to resume
    training = copy_run(trained_run, root / "training")
    write_max_iters(training, 16)
    for age, run in enumerate((unfinished, finished, training)):
        os.utime(run / "iter_8.pth", (1_000_000_000 + age, 1_000_000_000 + age))
    with exclusive_lock(training / LOCK_NAME):  # another training holds it (flock: per open file)
        pick = pick_unfinished_run(root)
        assert pick.run == unfinished
        line = pick.line()
        assert "training (being trained by pid" in line and "finished (finished: 8/8)" in line
    assert pick_unfinished_run(root).run == training  # the lock went with its holder
    shutil.rmtree(unfinished)
    shutil.rmtree(training)
    with pytest.raises(VocsegError) as none_left:
        pick_unfinished_run(root)
    assert "finished: 8/8" in none_left.value.message and "vocseg resume" in none_left.value.hint


# ---------------------------------------------------------------- names are data


@pytest.mark.slow
def test_odd_file_names_print_as_data_and_round_trip_in_predictions_json(cli, trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = copy_run(trained_run, tmp_path / ODD_NAME)
    photos = tmp_path / "photos"
    photos.mkdir()
    names = [b"a$b_$c \x1b[31mred.jpg", b"caf\xe9.jpg", b"big.jpg"]
    for name in names:
        shutil.copy(CASES / "good.jpg", os.path.join(os.fsencode(photos), name))
    out = tmp_path / "out"
    r = cli("predict", photos / os.fsdecode(names[0]), photos / os.fsdecode(names[1]), "-c", run, "-o", out)
    assert r.code == 0, r.err
    assert "\x1b" not in r.out + r.err  # shown as \x1b, never sent raw
    report = json.loads((out / "predictions.json").read_bytes())
    assert (out / "predictions.json").read_bytes().isascii()
    assert sorted(os.fsencode(Path(i["image"]).name) for i in report["images"]) == sorted(names[:2])
    monkeypatch.setenv("VOCSEG_MAX_MEGAPIXELS", "0.01")  # above the limit: skipped, with the way out
    r = cli("predict", photos / "big.jpg", "-c", run, "-o", tmp_path / "out2")
    assert r.code != 0 and "VOCSEG_MAX_MEGAPIXELS" in r.err and "Traceback" not in r.err


@pytest.mark.slow
def test_eval_and_report_of_a_run_named_with_dollars(cli, trained_run: Path, demo_root: Path, tmp_path: Path) -> None:
    run = copy_run(trained_run, tmp_path / ODD_NAME)
    r = cli("eval", run, "--data-root", demo_root)
    assert r.code == 0, r.err
    assert (run / "eval" / "val_iou.png").is_file() and (run / "eval" / "val_confusion.png").is_file()
    r = cli("report", run)
    assert r.code == 0, r.err
    html = (run / "report.html").read_text()
    assert "$HOME $x" in html


def test_report_names_a_malformed_eval_file_in_one_line(cli, trained_run: Path, tmp_path: Path) -> None:
    run = copy_run(trained_run, tmp_path / "run")
    (run / "eval").mkdir()
    bad = run / "eval" / "val.json"
    bad.write_text(json.dumps({"mIoU": "high", "mAcc": 1.0, "aAcc": 2.0, "per_class": {"background": {"IoU": 1.0, "Acc": 2.0}}, "split": "val"}))
    r = cli("report", run)
    assert r.code == 2 and "Traceback" not in r.err
    assert str(bad) in r.err and "mIoU is 'high', not a number" in r.err
    bad.write_text(json.dumps({"mIoU": 1.0, "mAcc": 1.0, "per_class": {"background": {"IoU": 1.0, "Acc": 2.0}}, "confusion": {"pixels": [[1, 2]]}}))
    r = cli("report", run)
    assert r.code == 2 and "confusion.pixels is not a 1 x 1 matrix" in r.err


def test_gallery_file_of_the_wrong_shape_is_named(tmp_path: Path) -> None:
    from vocseg.errors import VocsegError
    from vocseg.evaluation.galleries import load_gallery_document

    path = tmp_path / "val_images.json"
    path.write_text(json.dumps({"classes": ["background"], "images": {}, "galleries": {"cat": []}, "predictions": {}}))
    with pytest.raises(VocsegError, match="gallery 'cat' is not one of its classes"):
        load_gallery_document(path)


# ---------------------------------------------------------------- progress


@pytest.mark.slow
def test_predict_and_eval_progress_bar_on_a_terminal_plain_lines_in_a_pipe(trained_run: Path, demo_root: Path, tmp_path: Path) -> None:
    run = copy_run(trained_run, tmp_path / "run")
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        shutil.copy(CASES / "good.jpg", photos / f"p{i}.jpg")
    piped = subprocess.run(vocseg_argv("predict", photos, "-c", run, "-o", tmp_path / "o1"), capture_output=True, text=True, env=env_with_src(), cwd=tmp_path)
    assert piped.returncode == 0, piped.stderr
    assert "predict: 3/3 inputs (100%)" in piped.stderr and "\r" not in piped.stderr
    code, text = run_in_pty(vocseg_argv("predict", photos, "-c", run, "-o", tmp_path / "o2"), tmp_path)
    assert code == 0, text
    assert "predict: 3/3" not in text  # no plain lines on a terminal
    assert "\x1b[" in text and "3/3" in text and "━" in text.split("Predictions")[0]  # rich's bar, before the table
    piped = subprocess.run(vocseg_argv("eval", run, "--data-root", demo_root, "--tta", "--no-plots", "-o", tmp_path / "e1"), capture_output=True, text=True, env=env_with_src(), cwd=tmp_path)
    assert piped.returncode == 0, piped.stderr
    assert "eval val + TTA: 12/12 images (100%)" in piped.stderr
    code, text = run_in_pty(vocseg_argv("eval", run, "--data-root", demo_root, "--no-plots", "-o", tmp_path / "e2"), tmp_path)
    assert code == 0, text
    assert "eval val: 12/12" not in text and "eval val" in text and "/12" in text
