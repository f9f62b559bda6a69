"""The GPU check's results file (`$OUT/gpu.json`): created once, then one entry per step.

Every write replaces the whole file atomically (a temporary file, then `os.replace`), so a run
killed at any moment (the device command's time limit, a crash) leaves valid JSON holding the
steps finished so far. Standard library only: it runs before anything is installed.

    python3 record.py init FILE [--dry-run] [--set KEY=JSON ...]
    python3 record.py step FILE NAME --status ok|failed|skipped|timeout [--seconds S] [--exit-code N]
                           [--reason TEXT] [--data RESULT.json] [--set KEY=JSON ...]
    python3 record.py finish FILE --seconds S --failed N   # the run's end: total time, failed steps
    python3 record.py summary FILE        # one line per step, for the log

Layout of FILE:
    {"schema": 1, "dry_run": bool, "started": ISO time (UTC), "updated": ISO time,
     "meta": {...},                                  # from init's --set
     "finished": ISO time | absent, "seconds": float, "failed_steps": int,   # from finish (absent: cut short)
     "steps": {NAME: {"status": ..., "seconds": float, "exit_code": int | null,
                      "reason": str | null, "result": {...}}}}   # in the order run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

SCHEMA = 1
STATUSES = ("ok", "failed", "skipped", "timeout")


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def write_atomic(path: Path, doc: dict[str, Any]) -> None:
    """Replace `path` by `doc` as indented JSON, never leaving a half-written file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=False, allow_nan=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """KEY=VALUE pairs; VALUE is read as JSON where it parses (numbers, true, null, lists), else kept as text."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"record.py: --set expects KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def init(path: Path, dry_run: bool, meta: dict[str, Any]) -> dict[str, Any]:
    doc = {"schema": SCHEMA, "dry_run": dry_run, "started": now(), "updated": now(), "meta": meta, "steps": {}}
    write_atomic(path, doc)
    return doc


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def read_result(path: Path | None) -> tuple[dict[str, Any], str | None]:
    """A step's result file as a dict: ({}, why) when it is missing or is not a JSON object."""
    if path is None:
        return {}, None
    if not path.is_file():
        return {}, f"the step wrote no result file ({path.name})"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return {}, f"its result file {path.name} is not valid JSON: {exc}"
    if not isinstance(data, dict):
        return {}, f"its result file {path.name} holds a {type(data).__name__}, not an object"
    return data, None


def add_step(path: Path, name: str, status: str, *, seconds: float | None = None, exit_code: int | None = None,
             reason: str | None = None, result: dict[str, Any] | None = None) -> dict[str, Any]:
    """Add (or replace) one step's entry; returns the whole document."""
    if status not in STATUSES:
        raise SystemExit(f"record.py: --status must be one of {', '.join(STATUSES)}, got {status!r}")
    doc = load(path)
    entry: dict[str, Any] = {"status": status, "seconds": None if seconds is None else round(seconds, 2),
                             "exit_code": exit_code, "reason": reason, "result": result or {}}
    doc["steps"].pop(name, None)  # a re-recorded step moves to the end: the order is the order run
    doc["steps"][name] = entry
    doc["updated"] = now()
    write_atomic(path, doc)
    return doc


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def headline(result: dict[str, Any]) -> str:
    """The few figures of a step's result worth a glance (the rest stays in the JSON)."""
    keys = {
        "gpu": ("gpu",), "torch": ("torch",), "bf16": ("bf16_supported",), "iter": ("final_iter",),
        "s/iter": ("iter_time_s_median",), "data s/iter": ("data_time_s_median",), "MiB": ("max_memory_mib",),
        "val mIoU": ("last_val", "mIoU"), "mIoU": ("mIoU",), "stopped at": ("stop", "sigterm_at_progress_iter"),
        "agent": ("stop", "restart_line"), "bitwise": ("weights_vs_other", "bitwise_equal"),
        "max |diff|": ("weights_vs_other", "max_abs_diff"), "overlays": ("overlays",),
        "train ratio": ("train_ratio",), "infer ratio": ("infer_ratio",), "pipeline keeps up": ("pipeline", "keeps_up"),
        "loss within noise": ("loss_curves", "within_noise"),
    }
    parts = []
    for label, path in keys.items():
        value: Any = result
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            parts.append(f"{label} {_fmt(value)}")
    return ", ".join(parts)


def summary(doc: dict[str, Any]) -> str:
    lines = []
    for name, step in doc["steps"].items():
        extra = f" ({step['reason']})" if step.get("reason") else ""
        secs = f" {step['seconds']:.0f} s" if isinstance(step.get("seconds"), (int, float)) else ""
        figures = headline(step.get("result") or {})
        lines.append(f"{name:<12} {step['status']:<8}{secs:>6}{extra}{': ' + figures if figures else ''}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="The GPU check's results file.")
    sub = p.add_subparsers(dest="cmd", required=True)
    pi = sub.add_parser("init")
    pi.add_argument("file", type=Path)
    pi.add_argument("--dry-run", action="store_true")
    pi.add_argument("--set", dest="sets", action="append", default=[])
    ps = sub.add_parser("step")
    ps.add_argument("file", type=Path)
    ps.add_argument("name")
    ps.add_argument("--status", required=True)
    ps.add_argument("--seconds", type=float)
    ps.add_argument("--exit-code", type=int)
    ps.add_argument("--reason")
    ps.add_argument("--data", type=Path, help="a JSON object the step wrote: stored as the step's result")
    ps.add_argument("--set", dest="sets", action="append", default=[])
    pf = sub.add_parser("finish")
    pf.add_argument("file", type=Path)
    pf.add_argument("--seconds", type=float, required=True)
    pf.add_argument("--failed", type=int, required=True)
    pm = sub.add_parser("summary")
    pm.add_argument("file", type=Path)
    args = p.parse_args(argv)

    if args.cmd == "init":
        init(args.file, args.dry_run, parse_sets(args.sets))
    elif args.cmd == "step":
        result, problem = read_result(args.data)
        result.update(parse_sets(args.sets))
        reason = args.reason
        status = args.status
        if problem and status == "ok":  # a step that says ok but left no readable result did not do its job
            status, reason = "failed", problem
        elif problem:
            result.setdefault("result_file", problem)
        add_step(args.file, args.name, status, seconds=args.seconds, exit_code=args.exit_code, reason=reason, result=result)
    elif args.cmd == "finish":
        doc = load(args.file)
        doc.update(finished=now(), updated=now(), seconds=round(args.seconds, 1), failed_steps=args.failed)
        write_atomic(args.file, doc)
    else:
        print(summary(load(args.file)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
