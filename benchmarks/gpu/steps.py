"""The GPU check's steps that need more than one command line (check.sh calls them).

Each subcommand writes one JSON object to `--result FILE` (check.sh stores it in gpu.json through
record.py) and exits non-zero when the step failed. Output of the commands it runs goes to this
process's stdout (check.sh appends it to check.log).

    python3 steps.py env --result F                      # Python, torch, CUDA, GPU, package versions
    python3 steps.py interrupt --stop-at N --result F -- CMD...
        # run CMD (a `vocseg train`), SIGTERM it once its progress line reaches iteration N
    python3 steps.py kill-worker --after FILE --result F -- CMD...
        # run CMD (a `vocseg train --max-restarts 1`), SIGKILL the training process once FILE exists
    python3 steps.py run-info RUN --result F [--against OTHER_RUN]
        # the run's settings (AMP, layout, cuDNN, loader), iteration times and memory from
        # MMEngine's scalars, last validation, final checkpoint; with --against, its final
        # weights compared with OTHER_RUN's
    python3 steps.py eval-info EVAL_JSON --result F     # mIoU, mAcc, aAcc from `vocseg eval --json`
    python3 steps.py predict-info OUT_DIR --result F    # what `vocseg predict -o OUT_DIR` wrote
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "numpy", "mmengine", "mmsegmentation", "mmcv-lite", "mmcv", "opencv-python-headless", "opencv-python",
            "typer", "rich", "jinja2", "platformdirs", "ftfy", "regex", "yapf", "addict", "termcolor", "prettytable",
            "matplotlib", "scipy", "pillow", "pydantic", "typing-extensions")
PROGRESS = re.compile(r"^iter (\d+)/(\d+)\b")


def write(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=1, allow_nan=True) + "\n")


def versions() -> dict[str, str | None]:
    """Installed distribution versions (None: not installed), and where vocseg is imported from."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def env_info() -> dict[str, Any]:
    """The machine as the check sees it. CUDA fields are None where there is no GPU."""
    import torch

    import vocseg

    info: dict[str, Any] = {
        "python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform(),
        "cpus": os.cpu_count(), "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "vocseg_from": str(Path(vocseg.__file__).parent), "versions": versions(),
        "torch": torch.__version__, "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
        "gpu": None, "gpu_capability": None, "gpu_memory_gib": None, "bf16_supported": None, "cudnn": None,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_capability=f"{props.major}.{props.minor}", gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    bf16_supported=torch.cuda.is_bf16_supported(), cudnn=torch.backends.cudnn.version(), gpu_count=torch.cuda.device_count())
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,memory.used,utilization.gpu", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        info["nvidia_smi"] = smi.stdout.strip() if smi.returncode == 0 else f"exit {smi.returncode}: {smi.stderr.strip()[:200]}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        info["nvidia_smi"] = f"not run: {exc}"
    return info


def _stream(proc: subprocess.Popen[str], on_line: Any) -> None:
    """Copy the child's merged output to ours line by line, calling on_line(line) for each."""
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        on_line(line)


def interrupt(cmd: list[str], stop_at: int) -> tuple[dict[str, Any], bool]:
    """Run `cmd`; SIGTERM it when a progress line reports iteration >= stop_at. vocseg finishes the
    iteration, saves a checkpoint and exits (143 for SIGTERM: a stop, not a crash)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sent: dict[str, Any] = {}

    def on_line(line: str) -> None:
        m = PROGRESS.match(line.strip())
        if m and not sent and int(m.group(1)) >= stop_at:
            proc.send_signal(signal.SIGTERM)
            sent.update(at_iter=int(m.group(1)), at_s=round(time.monotonic() - t0, 2))

    try:
        _stream(proc, on_line)
        code = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    result = {"exit_code": code, "sigterm_sent": bool(sent), "sigterm_at_progress_iter": sent.get("at_iter"), "sigterm_after_s": sent.get("at_s")}
    # 143 = 128 + SIGTERM: vocseg's exit after a clean stop; 0 if the run ended before the signal mattered
    return result, bool(sent) and code in (0, 143)


def kill_worker(cmd: list[str], after: Path, timeout_s: float) -> tuple[dict[str, Any], bool]:
    """Run `cmd` (vocseg -> torchrun -> training process); once `after` exists, SIGKILL the
    training process. torchrun's agent should restart it, and it should resume and finish."""
    from vocseg.training.launch import worker_pids

    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: dict[str, Any] = {"restart_line": None}

    def on_line(line: str) -> None:
        if "restart 1 after a failed process" in line:
            seen["restart_line"] = line.strip()

    import threading

    reader = threading.Thread(target=_stream, args=(proc, on_line), daemon=True)
    reader.start()
    killed: list[int] = []
    try:
        while proc.poll() is None and not after.is_file() and time.monotonic() - t0 < timeout_s:
            time.sleep(0.2)
        if proc.poll() is None and after.is_file():
            trainers = [pid for agent in worker_pids(proc.pid) for pid in worker_pids(agent)]
            if trainers:
                victim = max(trainers)
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)
        code = proc.wait(timeout=max(1.0, timeout_s - (time.monotonic() - t0)))
    finally:
        if proc.poll() is None:
            proc.kill()
            code = proc.wait()
    reader.join(timeout=10)
    result = {"exit_code": code, "killed_pid": killed[0] if killed else None, "killed_after": after.name,
              "restart_line": seen["restart_line"], "seconds": round(time.monotonic() - t0, 1)}
    ok = code == 0 and bool(killed) and seen["restart_line"] is not None
    return result, ok


def _scalars(run: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in sorted(run.glob("*/vis_data/scalars.json")):
        for line in path.read_text().splitlines():
            if line.strip():
                rows.append(json.loads(line))
    return rows


def run_settings(run: Path) -> dict[str, Any]:
    """What the run's config.py asked for: the CUDA defaults as written."""
    from mmengine.config import Config

    cfg = Config.fromfile(str(run / "config.py"))
    loader = cfg.get("train_dataloader", {})
    optim = cfg.get("optim_wrapper", {})
    return {
        "optim_wrapper": optim.get("type"), "amp_dtype": optim.get("dtype"),
        "cudnn_benchmark": cfg.get("env_cfg", {}).get("cudnn_benchmark"),
        "data_preprocessor": cfg.model.data_preprocessor.get("type"),
        "channels_last": cfg.model.data_preprocessor.get("channels_last"),
        "norm": cfg.model.backbone.get("norm_cfg", {}).get("type"),
        "num_workers": loader.get("num_workers"), "pin_memory": loader.get("pin_memory"), "persistent_workers": loader.get("persistent_workers"),
        "custom_hooks": [h.get("type") for h in cfg.get("custom_hooks", [])],
    }


def run_info(run: Path) -> dict[str, Any]:
    """Settings, MMEngine's per-iteration figures (training rows: median of the second half), last val, final checkpoint."""
    from vocseg.runs.folders import latest_checkpoint
    from vocseg.stack.compat import load_checkpoint_file

    info: dict[str, Any] = {"run": str(run)}
    try:
        info["settings"] = run_settings(run)
    except Exception as exc:  # noqa: BLE001  a missing/odd config is reported, not fatal
        info["settings"] = f"unreadable: {exc}"
    rows = _scalars(run)
    train = [r for r in rows if "loss" in r and "iter" in r]
    vals = [r for r in rows if "mIoU" in r]
    if train:
        tail = train[len(train) // 2:]
        info["iter_time_s_median"] = statistics.median(r["time"] for r in tail)
        info["data_time_s_median"] = statistics.median(r["data_time"] for r in tail)
        info["last_loss"] = train[-1]["loss"]
        mem = [r["memory"] for r in train if "memory" in r]
        info["max_memory_mib"] = max(mem) if mem else None  # MMEngine logs torch.cuda.max_memory_allocated on CUDA only
    if vals:
        info["last_val"] = {k: vals[-1][k] for k in ("mIoU", "mAcc", "aAcc", "step") if k in vals[-1]}
    ckpt = latest_checkpoint(run)
    info["final_checkpoint"] = ckpt.name if ckpt else None
    if ckpt:
        info["final_iter"] = load_checkpoint_file(ckpt)["meta"].get("iter")
    return info


def compare_weights(a: Path, b: Path) -> dict[str, Any]:
    """Final weights of two runs: how many tensors differ and by how much (float tensors only for the sizes).

    max_abs_diff: max |a - b| over all elements; max_rel_diff: max over tensors of
    max |a - b| / max |a| (0 where a is all zeros)."""
    import torch

    from vocseg.stack.compat import load_checkpoint_file

    wa, wb = load_checkpoint_file(a)["state_dict"], load_checkpoint_file(b)["state_dict"]
    if wa.keys() != wb.keys():
        return {"a": str(a), "b": str(b), "same_keys": False, "only_in_a": sorted(set(wa) - set(wb))[:5], "only_in_b": sorted(set(wb) - set(wa))[:5]}
    differ, max_abs, max_rel = [], 0.0, 0.0
    for key in wa:
        x, y = wa[key], wb[key]
        if torch.equal(x, y):
            continue
        differ.append(key)
        if x.is_floating_point():
            d = (x.double() - y.double()).abs().max().item()
            scale = x.double().abs().max().item()
            max_abs, max_rel = max(max_abs, d), max(max_rel, d / scale if scale else 0.0)
    return {"a": str(a), "b": str(b), "same_keys": True, "tensors": len(wa), "tensors_differing": len(differ),
            "bitwise_equal": not differ, "max_abs_diff": max_abs, "max_rel_diff": max_rel, "differing_examples": differ[:3]}


def eval_info(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    picked = {k: data[k] for k in ("mIoU", "mAcc", "aAcc", "num_images", "checkpoint", "split") if isinstance(data, dict) and k in data}
    if not picked:  # the layout changed: keep the top-level keys so a reader sees what there was
        picked = {"keys": sorted(data)[:20] if isinstance(data, dict) else type(data).__name__}
    return picked


def predict_info(out: Path) -> dict[str, Any]:
    overlays = sorted(p.name for p in out.glob("*_overlay.png"))
    labels = sorted(p.name for p in out.glob("*_label.png"))
    listing = out / "predictions.json"
    errors = None
    if listing.is_file():
        images = json.loads(listing.read_text()).get("images", [])
        errors = sum(1 for entry in images if entry.get("error"))
    return {"overlays": len(overlays), "labels": len(labels), "predictions_json": listing.is_file(), "errors": errors, "examples": overlays[:3]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("env", "interrupt", "kill-worker", "run-info", "eval-info", "predict-info"):
        sp = sub.add_parser(name)
        sp.add_argument("--result", type=Path, required=True)
        if name == "interrupt":
            sp.add_argument("--stop-at", type=int, required=True)
        if name == "kill-worker":
            sp.add_argument("--after", type=Path, required=True)
            sp.add_argument("--timeout", type=float, default=600)
        if name in ("interrupt", "kill-worker"):
            sp.add_argument("command", nargs=argparse.REMAINDER)
        if name == "run-info":
            sp.add_argument("run", type=Path)
            sp.add_argument("--against", type=Path, help="another run: compare the final weights")
            sp.add_argument("--stop-info", type=Path, help="the result file of `interrupt` / `kill-worker`: stored as `stop`")
        if name in ("eval-info", "predict-info"):
            sp.add_argument("path", type=Path)
    args = p.parse_args(argv)
    command = [c for c in getattr(args, "command", []) if c != "--"] if hasattr(args, "command") else []

    ok = True
    if args.cmd == "env":
        result = env_info()
    elif args.cmd == "interrupt":
        result, ok = interrupt(command, args.stop_at)
    elif args.cmd == "kill-worker":
        result, ok = kill_worker(command, args.after, args.timeout)
    elif args.cmd == "run-info":
        from vocseg.runs.folders import latest_checkpoint

        result = run_info(args.run)
        if args.stop_info:
            stop = json.loads(args.stop_info.read_text()) if args.stop_info.is_file() else f"{args.stop_info.name} was not written"
            result["stop"] = stop
            ok = isinstance(stop, dict)
        if args.against:
            mine, theirs = latest_checkpoint(args.run), latest_checkpoint(args.against)
            if mine is None or theirs is None:
                result["weights_vs_other"] = f"no checkpoint in {args.run if mine is None else args.against}"
                ok = False
            else:
                result["weights_vs_other"] = compare_weights(theirs, mine)
        ok = ok and result.get("final_checkpoint") is not None
    elif args.cmd == "eval-info":
        result = eval_info(args.path)
        ok = "mIoU" in result
    else:
        result = predict_info(args.path)
        ok = result["overlays"] > 0 and not result["errors"]
    write(args.result, result)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
