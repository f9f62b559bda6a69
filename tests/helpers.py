"""Shared test helpers (tests import them from here, never from another test file): CLI results,
the demo dataset, tiny-training flags, file trees, a local archive server, bitwise checkpoint
comparison and the one rule for a missing extra."""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

TINY_TRAIN = ("--model", "tiny", "--device", "cpu", "--batch", "2", "--workers", "0")


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def make_demo(root: Path, **sizes: int) -> Path:
    from vocseg.data.demo import write_demo_dataset
    from vocseg.data.sbd import convert_sbd, write_aug_lists

    write_demo_dataset(root, **sizes)
    convert_sbd(root, workers=1)
    write_aug_lists(root)
    return root


def file_tree(folder: Path) -> dict[str, str]:
    """Every path under `folder` -> sha256 of its bytes ('dir' for folders, 'link:' for links)."""
    out: dict[str, str] = {}
    if not folder.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(folder))
            if path.is_symlink():
                out[rel] = "link:" + os.readlink(path)
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def require_extra(extra: str, *modules: str) -> None:
    """Skip the test when an optional extra (`pip install "vocseg[EXTRA]"`) is not installed; under
    `CI=true` fail instead: the CI session installs every extra, so a missing one must not pass as a skip."""
    import importlib.util

    missing = [m for m in (modules or (extra,)) if importlib.util.find_spec(m) is None]
    if not missing:
        return
    message = f"needs vocseg[{extra}] ({', '.join(missing)} not installed): pip install 'vocseg[{extra}]'"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


def assert_bitwise_equal(a: Path, b: Path) -> None:
    """Two checkpoints hold the same tensors, bit for bit."""
    from vocseg.stack.compat import load_checkpoint_file

    wa, wb = load_checkpoint_file(a)["state_dict"], load_checkpoint_file(b)["state_dict"]
    assert wa.keys() == wb.keys()
    import torch

    differ = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not differ, f"{len(differ)} of {len(wa)} tensors differ, e.g. {differ[:3]}"


class ArchiveServer:
    """Serves `files` on 127.0.0.1 with Range support; can cut responses halfway or ignore Range."""

    MAX_REQUESTS = 200
    SETTLE_S = 60.0  # the longest a test waits for a handler to finish before failing

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.log: list[tuple[str, str | None, int]] = []  # (path, Range header, status)
        # Handlers run in their own threads and the client may read its last byte before the
        # handler has counted it: the count is kept under a lock and read through `bytes_sent`,
        # which waits until every handler has finished (no sleeps, no races under load).
        self._settled = threading.Condition()
        self._active = 0
        self._bytes_sent = 0
        self.plan: list[str] = []  # what the next requests get, in order: "cut" (half the body, then close), "503"; then "ok"
        self.ignore_range = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def bytes_sent(self) -> int:
        """Archive bytes written by handlers that have finished, once none is running."""
        with self._settled:
            if not self._settled.wait_for(lambda: self._active == 0, timeout=self.SETTLE_S):
                raise AssertionError(f"a request handler was still running after {self.SETTLE_S:.0f} s")
            return self._bytes_sent

    def handle(self, req: BaseHTTPRequestHandler) -> None:
        with self._settled:
            self._active += 1
        try:
            self._handle(req)
        finally:
            with self._settled:
                self._active -= 1
                self._settled.notify_all()

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        path, rng = req.path, req.headers.get("Range")
        if len(self.log) >= self.MAX_REQUESTS:
            self._reply(req, path, rng, 429, b"")
            return
        with self._settled:
            step = self.plan.pop(0) if self.plan else "ok"
        if step == "503":
            self._reply(req, path, rng, 503, b"busy")
            return
        data = self.files.get(path)
        if data is None:
            self._reply(req, path, rng, 404, b"not here")
            return
        start = 0
        if rng and not self.ignore_range:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self._reply(req, path, rng, 416, b"", {"Content-Range": f"bytes */{len(data)}"})
                return
        body = data[start:]
        headers = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"} if start else {}
        self._reply(req, path, rng, 206 if start else 200, body, headers, cut=step == "cut")

    def _reply(self, req, path, rng, status, body, headers=None, cut=False) -> None:  # noqa: ANN001
        with self._settled:
            self.log.append((path, rng, status))
        req.send_response(status)
        req.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            req.send_header(k, v)
        req.end_headers()
        sent = body[: len(body) // 2] if cut else body
        req.wfile.write(sent)
        req.wfile.flush()
        req.close_connection = True
        if status in (200, 206):  # archive bytes only
            with self._settled:
                self._bytes_sent += len(sent)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()




def copy_run(src: Path, dst: Path) -> Path:
    """A private copy of a run folder for a test that writes into it: checkpoints and ONNX files
    hard-linked (vocseg replaces a file by renaming a new one onto it, so the original is never
    written through the link), everything else copied (vocseg's records are appended in place)."""
    import shutil

    def copy(s: str, d: str) -> None:
        if s.endswith((".pth", ".onnx")):
            os.link(s, d)
        else:
            shutil.copy2(s, d)

    shutil.copytree(src, dst, copy_function=copy, symlinks=True)
    return dst
