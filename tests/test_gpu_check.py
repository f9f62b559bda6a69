"""The GPU check (benchmarks/gpu/) cannot rot unnoticed: its dry run goes through every step on
the CPU (real tiny trainings, resume, torchrun restart, eval, predict, gpu_train.py --smoke) and
must leave a valid gpu.json with every step; wheels.sh fails loudly, naming the package, and its
closure check finds a requirement that neither the carried wheels nor the GPU image meet."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / "benchmarks" / "gpu"
STEPS = ("install", "environment", "prepare", "train", "interrupt", "resume", "eval", "predict", "gpu_train", "restart")


def load(name: str) -> ModuleType:
    """A module of benchmarks/gpu/ (not a package), imported from its file."""
    spec = importlib.util.spec_from_file_location(f"gpu_check_{name}", GPU / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(*args: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """`bash ARGS` in its own process group; past `timeout` (a hang guard, not a speed limit) the
    whole group is killed, so no training process outlives the test."""
    proc = subprocess.Popen(["bash", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"bash {' '.join(args)} still ran after {timeout} s: {out[-2000:]}{err[-2000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.slow
def test_dry_run_goes_through_every_step(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "TMPDIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    r = run_script(str(GPU / "check.sh"), "--dry-run", env=env, timeout=2400)  # ~3 min on 2 quiet cores; 15 min seen at load 17
    log = (out / "check.log").read_text() if (out / "check.log").is_file() else ""
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:] + log[-4000:]
    doc = json.loads((out / "gpu.json").read_text())
    assert doc["dry_run"] is True and doc["failed_steps"] == 0 and "finished" in doc
    assert list(doc["steps"]) == list(STEPS)
    for name, step in doc["steps"].items():
        assert step["status"] in ("ok", "skipped"), (name, step)
        assert step["status"] == "ok" or step["reason"], (name, step)
    steps = {name: step["result"] for name, step in doc["steps"].items()}
    assert steps["environment"]["cuda_available"] in (False, True) and steps["environment"]["vocseg_from"] == str(ROOT / "src" / "vocseg")
    assert steps["train"]["final_iter"] == 6 and "mIoU" in steps["train"]["last_val"]
    assert steps["interrupt"]["stop"]["sigterm_sent"] and steps["interrupt"]["final_iter"] < 6
    assert steps["resume"]["final_iter"] == 6 and steps["resume"]["weights_vs_other"]["same_keys"]
    assert steps["resume"]["weights_vs_other"]["bitwise_equal"]  # on the CPU a resume is exact
    assert 0 <= steps["eval"]["mIoU"] <= 100 and steps["predict"]["overlays"] == 6
    assert steps["restart"]["stop"]["restart_line"] and steps["restart"]["final_iter"] == 8
    assert steps["gpu_train"]["errors"] == {} and "train_ratio" in steps["gpu_train"]
    assert (out / "predict_overlay.png").is_file() and (out / "train_curves.png").is_file()
    assert len(list(out.iterdir())) <= 8  # the device tool brings back at most 8 files
    assert not list(tmp_path.glob("vocseg-gpu-check.*"))  # its temporary folder is removed


def test_without_a_gpu_the_cuda_steps_are_skipped_with_a_reason(tmp_path: Path) -> None:
    """Not a dry run, on a machine without CUDA: nothing trains, and gpu.json says why."""
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "TMPDIR": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}
    r = run_script(str(GPU / "check.sh"), env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    doc = json.loads((out / "gpu.json").read_text())
    assert doc["dry_run"] is False and doc["steps"]["environment"]["result"]["cuda_available"] is False
    assert list(doc["steps"]) == list(STEPS)
    for name in STEPS[2:]:
        assert doc["steps"][name]["status"] == "skipped" and "no CUDA GPU" in doc["steps"][name]["reason"]


def test_check_needs_out(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    r = run_script(str(GPU / "check.sh"), "--dry-run", env=env, timeout=60)
    assert r.returncode == 2 and "OUT is not set" in r.stderr and "\n" not in r.stderr.strip()


def test_record_keeps_valid_json_and_marks_a_silent_step_failed(tmp_path: Path) -> None:
    record = load("record")
    path = tmp_path / "gpu.json"
    assert record.main(["init", str(path), "--dry-run", "--set", "iters=4"]) == 0
    result = tmp_path / "r.json"
    result.write_text(json.dumps({"mIoU": 12.5}))
    record.main(["step", str(path), "train", "--status", "ok", "--seconds", "3.14159", "--exit-code", "0", "--data", str(result)])
    record.main(["step", str(path), "eval", "--status", "ok", "--data", str(tmp_path / "missing.json")])
    doc = json.loads(path.read_text())
    assert doc["meta"] == {"iters": 4} and "finished" not in doc
    assert doc["steps"]["train"] == {"status": "ok", "seconds": 3.14, "exit_code": 0, "reason": None, "result": {"mIoU": 12.5}}
    assert doc["steps"]["eval"]["status"] == "failed" and "missing.json" in doc["steps"]["eval"]["reason"]
    assert "mIoU 12.5" in record.summary(doc)


def test_wheels_sh_fails_naming_the_package(tmp_path: Path) -> None:
    """No network needed: pip looks only in an empty folder, so the download fails."""
    pins = tmp_path / "pins.txt"
    pins.write_text("# a package that is nowhere\nvocseg-test-nowhere==0.0.1\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "PYTHON": sys.executable, "VOCSEG_WHEEL_LIST": str(pins), "VOCSEG_WHEEL_DIR": str(tmp_path / "whl"),
           "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(empty)}
    r = run_script(str(GPU / "wheels.sh"), env=env, timeout=120)
    assert r.returncode == 1
    assert "could not download vocseg-test-nowhere==0.0.1" in r.stderr


def fake_wheel(folder: Path, name: str, version: str, requires: list[str]) -> Path:
    path = folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    meta = "Metadata-Version: 2.1\n" f"Name: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name.replace('-', '_')}-{version}.dist-info/METADATA", meta)
    return path


def test_closure_names_what_neither_the_wheels_nor_the_image_provide(tmp_path: Path) -> None:
    wheel_closure = load("wheel_closure")
    wheels = tmp_path / "whl"
    wheels.mkdir()
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\ndependencies = ["alpha>=1", "numpy"]\n')
    image = tmp_path / "image.txt"
    image.write_text("numpy\nopencv-python-headless\n")
    pins = tmp_path / "pins.txt"
    pins.write_text("alpha==1.0\n")
    fake_wheel(wheels, "alpha", "1.0", ["opencv-python>=3", "beta-missing", "tomli; python_version < '3.11'", "gamma; extra == 'all'"])
    fake_wheel(wheels, "alpha", "0.9", [])  # an earlier download: removed
    problems, notes = wheel_closure.check(wheels, pins, image, pyproject, remove_stale=True)
    assert problems == ["beta-missing (needed by alpha-1.0-py3-none-any.whl: beta-missing) is neither carried nor in the image: add beta-missing==VERSION to pins.txt"]
    assert any("opencv-python-headless" in n for n in notes) and any("removed alpha-0.9" in n for n in notes)
    assert sorted(p.name for p in wheels.iterdir()) == ["alpha-1.0-py3-none-any.whl"]
    pins.write_text("alpha==2.0\n")
    problems, _ = wheel_closure.check(wheels, pins, image, pyproject)
    assert any("alpha-1.0-py3-none-any.whl: alpha is pinned at 2.0" in p for p in problems)


def test_pins_and_image_cover_pyproject() -> None:
    """A dependency added to pyproject.toml must be added to wheels.txt too (or be in the image)."""
    wheel_closure = load("wheel_closure")
    problems, _ = wheel_closure.check(None, GPU / "wheels.txt", GPU / "image-packages.txt", ROOT / "pyproject.toml")
    assert problems == []
