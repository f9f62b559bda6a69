"""`VocsegProgressHook`: one live display on rank 0 (plain lines when not a terminal), and
`curves.png` in the run folder at each validation."""

from __future__ import annotations

import time
from typing import Any

from mmengine.dist import get_dist_info, is_main_process
from mmengine.hooks import Hook
from mmseg.registry import HOOKS

from vocseg.console import format_duration, format_rate


def fmt_eta(seconds: float) -> str:
    """H:MM:SS, "-" when unknown (the console's one duration format)."""
    return format_duration(seconds)


@HOOKS.register_module(name="VocsegProgressHook")
class ProgressHook(Hook):
    """Progress for the person at the terminal (rank 0): iteration, epoch, loss, LR, images/s,
    ETA and the last validation mIoU, as one rich live display on a terminal, or as plain lines
    every `interval` iterations when the output is a file or pipe (CI logs). Writes
    `curves.png` (loss, LR, val mIoU) to the run folder at each validation.

    The loss shown is the one MMEngine logs at the same iteration: the mean of the last
    `window` iterations' losses (`LogProcessor.window_size`, 10 by default), read from the same
    message-hub history, so the display and the log file never disagree. A header line at the
    start says so.
    """

    priority = "VERY_LOW"

    def __init__(self, interval: int | None = None, display: str = "auto", curves: bool = True) -> None:
        if display not in ("auto", "live", "plain"):
            raise ValueError(f"display must be auto, live or plain, got {display!r}")
        self.interval = interval
        self.display = display
        self.curves = curves
        self.live: Any = None
        self.console: Any = None
        self.best_miou: float | None = None
        self.last_val: tuple[int, float] | None = None
        self.iter = 0
        self.max_iters = 0
        self.iters_per_epoch = 1
        self.images_per_iter = 0
        self.loss = float("nan")
        self.loss_window = 10  # iterations averaged: MMEngine's LogProcessor.window_size
        self.lr = float("nan")
        self.iter_time: float | None = None  # moving average, seconds, validation excluded
        self.val_time = 0.0
        self.val_interval = 0
        self.val_progress: tuple[int, int] | None = None
        self._last_t = 0.0
        self._paused = 0.0
        self._val_t0 = 0.0
        self._seen = 0

    # -- rendering -------------------------------------------------------------------------
    def _speed(self) -> str:
        """Images per second, or seconds per image below 0.1 img/s (UPerNet-R50 on a CPU)."""
        return format_rate(self.images_per_iter, self.iter_time or 0.0)

    def _status_line(self) -> str:
        epoch = self.iter / self.iters_per_epoch
        return (
            f"iter {self.iter}/{self.max_iters}  epoch {epoch:.2f}  loss {self.loss:.4f}  lr {self.lr:.2e}  "
            f"{self._speed()}  ETA {fmt_eta(self.eta())}"
        )

    def _val_text(self) -> str:
        if self.last_val is None:
            return "val mIoU -"
        it, miou = self.last_val
        return f"val mIoU {miou:.2f} @ iter {it} (best {self.best_miou:.2f})"

    def _render(self) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        bar = Table.grid(padding=(0, 1))
        bar.add_column(no_wrap=True)
        bar.add_column(ratio=1)
        bar.add_column(no_wrap=True)
        bar.add_row(
            "[bold]train[/]",
            ProgressBar(total=max(1, self.max_iters), completed=self.iter),
            f"{self.iter}/{self.max_iters}  epoch {self.iter / self.iters_per_epoch:.2f}",
        )
        stats = (
            f"loss (mean of {self.loss_window}) [bold]{self.loss:.4f}[/]  lr {self.lr:.2e}  {self._speed()}  "
            f"ETA [bold]{fmt_eta(self.eta())}[/]  {self._val_text()}"
        )
        parts: list[Any] = [bar, stats]
        if self.val_progress is not None:
            done, total = self.val_progress
            parts.append(f"[cyan]validating {done}/{total}[/]")
        return Group(*parts)

    def eta(self) -> float:
        if self.iter_time is None:
            return float("inf")
        remaining = max(0, self.max_iters - self.iter)
        vals = 0
        if self.val_interval:
            vals = self.max_iters // self.val_interval - self.iter // self.val_interval
            vals += 1 if self.max_iters % self.val_interval else 0
        return remaining * self.iter_time + max(0, vals) * self.val_time

    def header(self) -> str:
        return (
            f"[dim]loss: mean of the last {self.loss_window} iterations (as MMEngine's log); "
            "img/s and ETA: moving average of the iteration time, validation excluded[/]"
        )

    def _print(self, text: str) -> None:
        if self.live is not None:
            self.live.console.print(text)
        elif self.console is not None:
            self.console.print(text, soft_wrap=True)  # one line per event in logs, never wrapped

    # -- hooks -----------------------------------------------------------------------------
    def before_train(self, runner: Any) -> None:
        if not is_main_process():
            return
        import sys

        from rich.console import Console

        # sys.stdout may be routed away from MMEngine's console log; print to the real one.
        self.console = Console(file=sys.__stdout__, highlight=False)
        self.iter = runner.iter
        self.max_iters = runner.max_iters
        self.iters_per_epoch = max(1, len(runner.train_dataloader))
        self.images_per_iter = int(getattr(runner.train_dataloader, "batch_size", 1) or 1) * get_dist_info()[1]
        self.val_interval = int(getattr(runner.train_loop, "val_interval", 0) or 0)
        best = runner.message_hub.get_info("best_score")
        self.best_miou = float(best) if best is not None else None
        if self.interval is None:
            self.interval = max(1, min(50, runner.max_iters // 20))
        window = getattr(getattr(runner, "log_processor", None), "window_size", 10)
        self.loss_window = window if isinstance(window, int) and window > 0 else 10
        self._print(self.header())
        self._last_t = time.perf_counter()
        live = self.display == "live" or (self.display == "auto" and self.console.is_terminal)
        if live:
            from rich.live import Live

            self.live = Live(get_renderable=self._render, console=self.console, refresh_per_second=2,
                             redirect_stdout=False, redirect_stderr=True)
            self.live.start()

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        if not is_main_process():
            return
        now = time.perf_counter()
        dt = now - self._last_t - self._paused
        self._last_t, self._paused = now, 0.0
        # Moving average of the iteration time; the first one after start-up is not counted.
        self._seen += 1
        if self._seen > 1 and dt > 0:
            self.iter_time = dt if self.iter_time is None else 0.9 * self.iter_time + 0.1 * dt
        self.iter = runner.iter + 1
        history = runner.message_hub.log_scalars.get("train/loss")
        if history is not None:  # what MMEngine's LogProcessor logs: the window's mean
            self.loss = float(history.mean(self.loss_window))
        elif outputs and "loss" in outputs:
            loss = outputs["loss"]
            self.loss = float(loss.detach()) if hasattr(loss, "detach") else float(loss)
        # The LR this iteration used (logged before the scheduler stepped), not the next one.
        logged = runner.message_hub.log_scalars.get("train/lr")
        self.lr = float(logged.current()) if logged is not None else float(runner.optim_wrapper.get_lr()["lr"][0])
        if self.live is None and (self.iter % self.interval == 0 or self.iter == self.max_iters):
            self._print(self._status_line())

    def before_val_epoch(self, runner: Any) -> None:
        if not is_main_process():
            return
        self._val_t0 = time.perf_counter()
        try:
            total = len(runner.val_dataloader)
        except Exception:  # noqa: BLE001 - a length is only for display
            total = 0
        self.val_progress = (0, total) if self.live is not None else None

    def after_val_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        if self.val_progress is not None:
            self.val_progress = (batch_idx + 1, self.val_progress[1])

    def after_val_epoch(self, runner: Any, metrics: dict | None = None) -> None:
        if not is_main_process():
            return
        if self._val_t0:
            spent = time.perf_counter() - self._val_t0
            self._paused += spent
            self.val_time = spent
            self._val_t0 = 0.0
        self.val_progress = None
        if not metrics or "mIoU" not in metrics:
            return
        miou = float(metrics["mIoU"])
        self.best_miou = miou if self.best_miou is None else max(self.best_miou, miou)
        self.last_val = (runner.iter, miou)
        self._print(
            f"[bold]val[/] iter {runner.iter}: mIoU {miou:.2f}  mAcc {float(metrics.get('mAcc', 0)):.2f}  "
            f"aAcc {float(metrics.get('aAcc', 0)):.2f}  (best {self.best_miou:.2f})"
        )
        self._write_curves(runner)

    def _write_curves(self, runner: Any) -> None:
        if not self.curves:
            return
        from vocseg.runs.curves import write_curves

        t0 = time.perf_counter()
        try:
            write_curves(runner.work_dir)
        except Exception as exc:  # noqa: BLE001 - a plot must never stop training
            self._print(f"[yellow]curves.png not updated: {type(exc).__name__}: {exc}[/]")
        self._paused += time.perf_counter() - t0

    def after_train(self, runner: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop the live display (also called when training ends with an exception)."""
        if self.live is not None:
            live, self.live = self.live, None
            live.stop()
