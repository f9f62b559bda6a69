"""Pretrained weights: downloaded once into the cache, hash-checked, checked against the backbone."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TINY_TRAIN


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
    r = cli("train", "--data-root", demo_root, *TINY_TRAIN, "--iters", "1", "--pretrained", "http://127.0.0.1:9/w-12345678.pth", "--work-dir", tmp_path / "run")
    assert r.code != 0 and "Could not download" in r.err and len(r.err.strip().splitlines()) == 1
