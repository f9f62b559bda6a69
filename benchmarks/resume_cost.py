"""Resume cost: time from `vocseg resume` to the end of the first new iteration, at iteration 20
and at iteration 2000 of a tiny-model run on the demo data, and MMEngine's own
`IterBasedTrainLoop` resume at the same points for comparison.

Setup: `vocseg prepare --demo`, then `vocseg train` of the tiny model for 20 iterations gives a
real checkpoint. Each measured run folder holds that checkpoint with its loop position set to 20
or 2000 (training 2000 iterations first would take many minutes and changes nothing a resume
does: the cost of skipping depends on the position only) and a config with more iterations to go.
MMEngine's variant differs only in `train_cfg` (IterBasedTrainLoop) and the sampler
(InfiniteSampler); the dataset and its pipeline are the same, so both pay the same per batch.

The clock starts just before `vocseg resume RUN` is started (a fresh process: imports included)
and stops when a probe hook (this file, imported through the config's `custom_imports`) sees the
first new iteration finish; the probe then ends the process. Ratios are printed, not absolute
times: this machine is shared.

Run: python benchmarks/resume_cost.py [--repeat 3] [--workers 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROBE_ENV = "VOCSEG_BENCH_PROBE_OUT"


def _register_probe() -> None:
    """Imported by the config under test: record when the first new iteration ends, then exit."""
    from mmengine.hooks import Hook
    from mmseg.registry import HOOKS

    @HOOKS.register_module(name="ResumeProbeHook", force=True)
    class ResumeProbeHook(Hook):
        priority = "VERY_HIGH"

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:  # noqa: ANN001
            Path(os.environ[PROBE_ENV]).write_text(json.dumps({"t": time.time(), "iter": runner.iter + 1}))
            os._exit(0)


if __name__ != "__main__" and os.environ.get(PROBE_ENV):
    _register_probe()


def vocseg(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vocseg.cli", *args], env=env, cwd=cwd, capture_output=True, text=True)


def make_run(base: Path, src_ckpt: Path, recipe_json: str, position: int, mmengine_loop: bool, probe_out: Path) -> Path:
    """A run folder whose checkpoint sits at `position`, with 100 iterations left to train."""
    import dataclasses

    import torch

    from vocseg.recipe.mmconfig import build_config_text
    from vocseg.recipe.recipe import Recipe, plan
    from vocseg.stack.compat import ensure_stack, load_checkpoint_file

    ensure_stack()
    run = base / f"{'mmengine' if mmengine_loop else 'vocseg'}-at-{position}"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    recipe = dataclasses.replace(Recipe.from_json(recipe_json), iters=position + 100)
    text = build_config_text(recipe, plan(recipe), run)
    if mmengine_loop:
        text += (
            "\n# benchmark: MMEngine's own loop and sampler (same dataset and pipeline)\n"
            "train_cfg = dict(type='IterBasedTrainLoop', max_iters=train_cfg['max_iters'], val_interval=train_cfg['val_interval'])\n"
            "train_dataloader['sampler'] = dict(type='InfiniteSampler', shuffle=True, seed=randomness['seed'])\n"
        )
    text += (
        "\n# benchmark probe: ends the process after the first new iteration\n"
        "custom_imports = dict(imports=['vocseg.mmseg_plugin', 'resume_cost'], allow_failed_imports=False)\n"
        "custom_hooks = custom_hooks + [dict(type='ResumeProbeHook')]\n"
    )
    (run / "config.py").write_text(text)
    (run / "recipe.json").write_text(recipe.to_json() + "\n")
    state = load_checkpoint_file(src_ckpt)
    state["meta"]["iter"] = position
    ckpt = run / f"iter_{position}.pth"
    torch.save(state, ckpt)
    (run / "last_checkpoint").write_text(str(ckpt))
    return run


def time_resume(run: Path, env: dict[str, str], probe_out: Path) -> float:
    probe_out.unlink(missing_ok=True)
    t0 = time.time()
    proc = vocseg("resume", str(run), env={**env, PROBE_ENV: str(probe_out)}, cwd=run.parent)
    if not probe_out.is_file():
        raise SystemExit(f"resume of {run} did not reach an iteration:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    probe = json.loads(probe_out.read_text())
    expected = int(run.name.rsplit("-", 1)[1]) + 1
    if probe["iter"] != expected:
        raise SystemExit(f"{run.name}: first new iteration was {probe['iter']}, expected {expected}")
    return probe["t"] - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per vocseg case (MMEngine: 1 at 20, 2 at 2000)")
    parser.add_argument("--workers", type=int, default=2, help="data-loader workers")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()

    base = args.keep or Path(tempfile.mkdtemp(prefix="vocseg-resume-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    data = base / "data"
    if not (data / "VOCdevkit").is_dir():
        r = vocseg("prepare", "--demo", "--data-root", str(data), env=env, cwd=base)
        if r.returncode:
            raise SystemExit(r.stderr)
    source = base / "source"
    if not (source / "iter_20.pth").is_file():
        shutil.rmtree(source, ignore_errors=True)
        r = vocseg("train", "--data-root", str(data), "--model", "tiny", "--device", "cpu", "--batch", "2",
                   "--workers", str(args.workers), "--iters", "20", "--val-interval", "20", "--ckpt-interval", "20",
                   "--work-dir", str(source), env=env, cwd=base)
        if r.returncode:
            raise SystemExit(r.stderr[-3000:])
    recipe_json = (source / "recipe.json").read_text()
    probe_out = base / "probe.json"
    cases = [(False, 20, args.repeat), (False, 2000, args.repeat), (True, 20, 1), (True, 2000, 2)]
    runs = {(mm, pos): make_run(base, source / "iter_20.pth", recipe_json, pos, mm, probe_out) for mm, pos, _ in cases}
    times: dict[tuple[bool, int], list[float]] = {key: [] for key in runs}
    # Interleaved rounds: load from other jobs on the machine hits every case alike.
    for round_ in range(max(n for _, _, n in cases)):
        for mm, pos, n in cases:
            if round_ < n:
                times[(mm, pos)].append(time_resume(runs[(mm, pos)], env, probe_out))
    med = {key: statistics.median(v) for key, v in times.items()}
    print(f"resume -> end of first new iteration (tiny model, demo data, {args.workers} loader workers, fresh process each)")
    for (mm, pos), values in times.items():
        loop = "MMEngine IterBasedTrainLoop" if mm else "vocseg ResumableIterLoop  "
        print(f"  {loop} at iter {pos:>4}: median {med[(mm, pos)]:6.2f} s   runs: {', '.join(f'{v:.2f}' for v in values)}")
    print(f"vocseg  at 2000 / vocseg at 20:   {med[(False, 2000)] / med[(False, 20)]:.2f}  (1.00 = skipping costs nothing)")
    print(f"MMEngine at 2000 / MMEngine at 20: {med[(True, 2000)] / med[(True, 20)]:.2f}")
    print(f"MMEngine at 2000 / vocseg at 2000: {med[(True, 2000)] / med[(False, 2000)]:.2f}")
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
