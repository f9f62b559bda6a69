"""Sessions: `tests` (ruff + pytest), `demo` (the whole pipeline on the built-in demo dataset), `lint`, `bench`.

torch==2.13.0 is installed before vocseg in every session: installed afterwards, pip would pick
the newest CUDA build of torch (several GB).
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests"]

TORCH = "torch==2.13.0"
DEMO = "runs/demo"
# The optional features are tested too: ONNX export, video, experiment trackers (pyproject.toml extras).
TEST_EXTRAS = "test,export,video,trackers"


def install(session: nox.Session, extras: str = "") -> None:
    session.install(TORCH)
    session.install("-e", f".[{extras}]" if extras else ".")


@nox.session
def tests(session: nox.Session) -> None:
    install(session, TEST_EXTRAS)
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py")
    session.run("pytest", *(session.posargs or ["-q"]))


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "--diff", "src", success_codes=[0, 1])


@nox.session
def demo(session: nox.Session) -> None:
    """prepare -> train (tiny model, CPU) -> predict -> eval -> report, in runs/demo/.

    An earlier runs/demo/ (with anything the user added to it) is kept: it is renamed to
    runs/demo-previous, runs/demo-previous2, ... and the log says so. Nothing is deleted.
    """
    install(session)
    # One torch intra-op thread whatever the machine: the thread count changes the order of float
    # sums in CPU convolutions, so a 2-core and a 16-core machine would train different demo models
    # from the same seed (docs/performance.md, "The demo's figure"). One thread is what vocseg picks
    # on a 2-core machine beside 2 loader workers anyway.
    session.env["OMP_NUM_THREADS"] = "1"
    keep_earlier_demo(session, Path(DEMO))
    data = f"{DEMO}/data"
    session.run("vocseg", "prepare", "--demo", "--data-root", data)
    session.run(
        "vocseg", "train", "--data-root", data, "--model", "tiny", "--device", "cpu",
        "--batch", "8", "--iters", "3000", "--workers", "2", "--work-dir", f"{DEMO}/train",
    )
    session.run("vocseg", "predict", f"{data}/VOCdevkit/VOC2012/JPEGImages/2026_00008[1-6].jpg", "--checkpoint", f"{DEMO}/train", "--out", f"{DEMO}/predictions")
    session.run("vocseg", "eval", f"{DEMO}/train", "--json", f"{DEMO}/eval.json")
    session.run("vocseg", "report", f"{DEMO}/train")
    session.log(f"Overlay pictures: {DEMO}/predictions/*_overlay.png   results: {DEMO}/eval.json")
    session.log(f"Report (open it in a browser): {DEMO}/train/report.html")


def keep_earlier_demo(session: nox.Session, demo: Path) -> None:
    """Move an earlier demo folder aside under a new numbered name; never delete it."""
    if not demo.exists():
        return
    n = 1
    while True:
        target = demo.with_name(f"{demo.name}-previous{'' if n == 1 else n}")
        if not target.exists():
            break
        n += 1
    demo.rename(target)
    session.log(f"Kept the earlier {demo}/ as {target}/ (delete it when you no longer need it: rm -r {target}).")


@nox.session
def bench(session: nox.Session) -> None:
    install(session, TEST_EXTRAS)
    for script in sorted(session.posargs or ["benchmarks/startup.py"]):
        session.run("python", script)
