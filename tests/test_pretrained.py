"""Pretrained weights: downloaded once into the cache (resumable, retried: prepare's downloader),
hash-checked, checked against the backbone."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import TINY_TRAIN, ArchiveServer
from vocseg.data import download
from vocseg.errors import VocsegError
from vocseg.recipe import pretrained


def _tiny_backbone_weights(path: Path) -> None:
    import torch

    from vocseg.stack.compat import ensure_stack

    ensure_stack()
    from mmengine.registry import init_default_scope

    init_default_scope("mmseg")
    import mmseg.models  # noqa: F401
    from mmseg.registry import MODELS

    from vocseg.recipe.models import PRESETS, model_config

    cfg = dict(model_config(PRESETS["tiny"], sync_bn=False, pretrained_checkpoint=None)["backbone"])
    torch.manual_seed(0)
    torch.save({"state_dict": MODELS.build(cfg).state_dict()}, path)


@pytest.fixture
def weight_server(tmp_path: Path) -> Iterator[tuple[str, Path, dict[str, int]]]:
    """A local HTTP server on 127.0.0.1 serving tmp_path/www; counts requests per path."""
    www = tmp_path / "www"
    www.mkdir()
    hits: dict[str, int] = {}

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(www), **kw)

        def do_GET(self) -> None:  # noqa: N802
            hits[self.path] = hits.get(self.path, 0) + 1
            super().do_GET()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", www, hits
    finally:
        server.shutdown()
        server.server_close()


def test_url_weights_are_downloaded_once_checked_and_used(cli, demo_root: Path, tmp_path: Path, weight_server, monkeypatch) -> None:
    base, www, hits = weight_server
    monkeypatch.setenv("VOCSEG_CACHE_DIR", str(tmp_path / "cache"))
    raw = tmp_path / "w.pth"
    _tiny_backbone_weights(raw)
    sha8 = hashlib.sha256(raw.read_bytes()).hexdigest()[:8]
    name = f"tiny_v1c-{sha8}.pth"
    (www / name).write_bytes(raw.read_bytes())
    url = f"{base}/{name}"

    run1 = tmp_path / "run1"
    r = cli("train", "--data-root", demo_root, *TINY_TRAIN, "--iters", "1", "--pretrained", url, "--work-dir", run1)
    assert r.code == 0, r.err
    cached = tmp_path / "cache" / "pretrained" / name
    assert cached.is_file()
    assert str(cached) in (run1 / "config.py").read_text()  # the run does not need the network again
    r = cli("train", "--data-root", demo_root, *TINY_TRAIN, "--iters", "1", "--pretrained", url, "--work-dir", tmp_path / "run2")
    assert r.code == 0, r.err
    assert hits[f"/{name}"] == 1  # the second run used the cache


def test_hash_mismatch_is_refused_and_not_cached(cli, demo_root: Path, tmp_path: Path, weight_server, monkeypatch) -> None:
    base, www, _ = weight_server
    monkeypatch.setenv("VOCSEG_CACHE_DIR", str(tmp_path / "cache"))
    raw = tmp_path / "w.pth"
    _tiny_backbone_weights(raw)
    name = "tiny_v1c-00000000.pth"
    (www / name).write_bytes(raw.read_bytes())
    r = cli("train", "--data-root", demo_root, *TINY_TRAIN, "--iters", "1", "--pretrained", f"{base}/{name}", "--work-dir", tmp_path / "run")
    assert r.code != 0 and "sha256" in r.err
    assert not list((tmp_path / "cache").rglob("*.pth*"))
    assert not (tmp_path / "run").exists()


def test_unreachable_url_is_one_line(cli, demo_root: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("VOCSEG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(download, "BACKOFF_S", 0.01)
    r = cli("train", "--data-root", demo_root, *TINY_TRAIN, "--iters", "1", "--pretrained", "http://127.0.0.1:9/w-12345678.pth", "--work-dir", tmp_path / "run")
    errors = [line for line in r.err.splitlines() if line.startswith("error:")]
    assert r.code != 0 and len(errors) == 1 and "Could not download pretrained weights w-12345678.pth" in errors[0]
    assert "retrying" in r.err  # connection refused is retried (with backoff) before giving up
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- the resumable downloader (shared with prepare)


@pytest.fixture
def cutting_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[ArchiveServer]:
    """test_fetch's Range-capable server (it can cut a transfer halfway); no real waits, a private cache."""
    srv = ArchiveServer()
    monkeypatch.setattr(download, "BACKOFF_S", 0.01)
    monkeypatch.setattr(download, "TIMEOUT_S", 10.0)
    monkeypatch.setenv("VOCSEG_CACHE_DIR", str(tmp_path / "cache"))
    yield srv
    srv.stop()


def weights_file(size: int = 300_000) -> tuple[bytes, str]:
    """Bytes standing in for a checkpoint and the mmseg-style name that carries their sha256 prefix."""
    data = bytes(range(256)) * (size // 256)
    return data, f"resnet_v1c-{hashlib.sha256(data).hexdigest()[:8]}.pth"


def test_a_cut_download_resumes_in_the_same_run(cutting_server: ArchiveServer, tmp_path: Path) -> None:
    data, name = weights_file()
    cutting_server.files[f"/w/{name}"] = data
    cutting_server.plan = ["cut"]
    path = pretrained.fetch_pretrained(f"{cutting_server.url}/w/{name}", quiet=True)
    assert path == tmp_path / "cache" / "pretrained" / name and path.read_bytes() == data
    (_, first_range, _), (_, second_range, status) = cutting_server.log
    assert first_range is None and second_range == f"bytes={len(data) // 2}-" and status == 206
    assert cutting_server.bytes_sent == len(data)  # the rest only, not the whole file again
    assert not path.with_name(f"{name}.part").exists()


def test_a_download_given_up_resumes_on_the_next_run_then_the_cache_serves(cutting_server: ArchiveServer, tmp_path: Path, monkeypatch) -> None:
    data, name = weights_file()
    cutting_server.files[f"/w/{name}"] = data
    monkeypatch.setattr(download, "ATTEMPTS", 2)
    cutting_server.plan = ["cut", "503", "503"]
    with pytest.raises(VocsegError) as err:
        pretrained.fetch_pretrained(f"{cutting_server.url}/w/{name}", quiet=True)
    part = tmp_path / "cache" / "pretrained" / f"{name}.part"
    assert "HTTP 503" in err.value.message and f"Re-run to resume ({len(data) // 2:,} bytes kept in {part})" in err.value.hint
    assert part.stat().st_size == len(data) // 2
    assert not part.with_name(name).exists()  # nothing unverified under the real name

    path = pretrained.fetch_pretrained(f"{cutting_server.url}/w/{name}", quiet=True)
    assert path.read_bytes() == data and not part.exists()
    assert cutting_server.log[-1][1:] == (f"bytes={len(data) // 2}-", 206) and cutting_server.bytes_sent == len(data)
    requests = len(cutting_server.log)
    assert pretrained.fetch_pretrained(f"{cutting_server.url}/w/{name}", quiet=True) == path
    assert len(cutting_server.log) == requests  # verified copy (stamped): no request


def test_a_kept_part_of_another_file_is_fetched_again_whole(cutting_server: ArchiveServer, tmp_path: Path) -> None:
    data, name = weights_file()
    cutting_server.files[f"/w/{name}"] = data
    part = tmp_path / "cache" / "pretrained" / f"{name}.part"
    from vocseg.files import open_append

    with open_append(part) as f:  # left by an older download of a file of the same name (recorded by vocseg)
        f.write(b"\0" * 1000)
    assert pretrained.fetch_pretrained(f"{cutting_server.url}/w/{name}", quiet=True).read_bytes() == data
    assert [(r, s) for _, r, s in cutting_server.log] == [("bytes=1000-", 206), (None, 200)]
