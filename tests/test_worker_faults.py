"""A training process started by torchrun reports file-system faults in one line, as the CLI does."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

import vocseg.training.worker as worker


def test_full_disk_in_a_training_process_is_one_line_with_the_resume_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.py"
    config.write_text("x = 1\n")

    def full_disk(*args: object, **kwargs: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "iter_4.pth"))

    monkeypatch.setattr(worker, "run_worker", full_disk)
    with pytest.raises(SystemExit) as stop:
        worker.main([str(config)])
    err = capsys.readouterr().err
    assert stop.value.code == 1
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "disk full" in err and f"vocseg train {config}" in err  # no checkpoint yet: start it again

    (tmp_path / "iter_4.pth").write_bytes(b"x")
    (tmp_path / "last_checkpoint").write_text(str(tmp_path / "iter_4.pth"))
    with pytest.raises(SystemExit):
        worker.main([str(config)])
    err = capsys.readouterr().err
    assert "iter_4.pth" in err and f"vocseg resume {tmp_path}" in err


def test_an_unknown_runtime_error_still_shows_its_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.py"
    config.write_text("x = 1\n")

    def bug(*args: object, **kwargs: object) -> int:
        raise RuntimeError("a bug, not the user's fault")

    monkeypatch.setattr(worker, "run_worker", bug)
    with pytest.raises(RuntimeError):
        worker.main([str(config)])
