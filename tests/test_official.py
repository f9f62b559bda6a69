"""official:NAME checkpoints: download from a (local) server, hash check, cache, config, predict and eval."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import pickle
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from vocseg.data.voc import VOC_SUBDIR
from vocseg.recipe import official


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An HTTP server on 127.0.0.1 serving a folder laid out like download.openmmlab.com; vocseg points at it."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv(official.MIRROR_ENV, f"http://127.0.0.1:{httpd.server_address[1]}")
    monkeypatch.setenv("VOCSEG_CACHE_DIR", str(tmp_path / "cache"))
    yield root
    httpd.shutdown()
    httpd.server_close()


def publish(root: Path, model: official.OfficialModel, data: bytes) -> Path:
    path = root / model.config_name / model.filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_catalogue_names_the_published_upernet_voc_checkpoints() -> None:
    assert set(official.CATALOGUE) == {"upernet-r50-20k", "upernet-r50-40k", "upernet-r101-20k", "upernet-r101-40k"}
    r50 = official.lookup("official:upernet-r50-40k")
    assert r50.url(official.BASE_URL) == (
        "https://download.openmmlab.com/mmsegmentation/v0.5/upernet/upernet_r50_512x512_40k_voc12aug/upernet_r50_512x512_40k_voc12aug_20200613_162257-ca9bcc6b.pth"
    )
    assert r50.sha256_prefix == "ca9bcc6b" and (r50.miou, r50.miou_ms_flip) == (75.92, 77.44)
    assert {m.preset for m in official.CATALOGUE.values()} == {"r50", "r101"}


@pytest.mark.parametrize("key", ["upernet-r50-40k", "upernet-r101-20k"])
def test_config_is_the_mmseg_upernet_for_one_process(key: str, tmp_path: Path) -> None:
    from mmengine.config import Config

    from vocseg.stack.compat import ensure_stack

    ensure_stack()
    path = tmp_path / "cfg.py"
    path.write_text(official.config_text(official.lookup(key)))
    cfg = Config.fromfile(str(path))
    model = cfg.model
    assert model.backbone.type == "ResNetV1c" and model.backbone.depth == (50 if "r50" in key else 101)
    assert model.decode_head.type == "UPerHead" and model.decode_head.num_classes == 21 and model.decode_head.channels == 512
    assert model.auxiliary_head.num_classes == 21 and model.auxiliary_head.in_channels == 1024
    assert model.backbone.norm_cfg.type == "BN" and "init_cfg" not in model.backbone
    resize = [t for t in cfg.test_pipeline if t["type"] == "Resize"][0]
    assert tuple(resize["scale"]) == (2048, 512) and resize["keep_ratio"]
    assert cfg.tta_pipeline[1]["type"] == "TestTimeAug"


def test_unknown_name_and_unreachable_server(cli, server: Path, demo_root: Path, tmp_path: Path) -> None:
    r = cli("predict", tmp_path, "-c", "official:upernet-r18-40k")
    assert r.code != 0 and "Unknown official checkpoint" in r.err and "official:upernet-r50-40k" in r.err
    r = cli("eval", "official:upernet-r50-40k", "--data-root", demo_root)  # the server has no such file: 404
    assert r.code != 0 and "Could not download official:upernet-r50-40k" in r.err and "VOCSEG_OFFICIAL_URL" in r.err
    assert not list((tmp_path / "cache").rglob("*.pth*"))


def test_a_file_that_does_not_match_the_published_hash_is_refused(cli, server: Path, demo_root: Path, tmp_path: Path) -> None:
    model = official.lookup("upernet-r50-40k")
    publish(server, model, b"this is not the published checkpoint" * 1000)
    r = cli("eval", "official:upernet-r50-40k", "--data-root", demo_root, "--out", tmp_path / "o")
    assert r.code != 0 and "does not match its published hash" in r.err and "ca9bcc6b" in r.err
    assert not list((tmp_path / "cache").rglob("*.pth*"))  # nothing half-trusted left in the cache


@pytest.fixture
def tiny_official(trained_run: Path, server: Path, monkeypatch: pytest.MonkeyPatch) -> official.OfficialModel:
    """The tiny trained model published like an official one (same path layout, hash prefix in the name)."""
    from vocseg.runs.folders import latest_checkpoint

    data = latest_checkpoint(trained_run).read_bytes()
    prefix = hashlib.sha256(data).hexdigest()[:8]
    model = official.OfficialModel("tiny-test", "tiny", "tiny_voc12aug", f"tiny_voc12aug_20240101-{prefix}.pth", 0.0, 0.0)
    monkeypatch.setitem(official.CATALOGUE, model.key, model)
    publish(server, model, data)
    return model


def test_download_cache_then_predict_and_eval(cli, tiny_official: official.OfficialModel, server: Path, demo_root: Path, tmp_path: Path) -> None:
    photo = sorted((demo_root / VOC_SUBDIR / "JPEGImages").glob("*.jpg"))[0]
    r = cli("predict", photo, "-c", "official:tiny-test", "-o", tmp_path / "pred")
    assert r.code == 0, r.err
    cached = tmp_path / "cache" / "official" / tiny_official.filename
    assert cached.is_file() and (cached.parent / "tiny-test.py").is_file()
    assert (tmp_path / "pred" / f"{photo.stem}_overlay.png").is_file()
    shutil.rmtree(server / tiny_official.config_name)  # offline now: the cache must serve
    r = cli("eval", "official:tiny-test", "--data-root", demo_root, "--out", tmp_path / "ev", "--no-plots")
    assert r.code == 0, r.err
    result = json.loads((tmp_path / "ev" / "val.json").read_text())
    assert result["checkpoint"] == "official:tiny-test" and result["num_images"] == 12
    # a cached file changed since vocseg wrote it is noticed, named and left alone (vocseg.files' rule:
    # a file that is no longer what vocseg wrote is never deleted), with the way on
    cached.write_bytes(b"damaged")
    r = cli("eval", "official:tiny-test", "--data-root", demo_root, "--out", tmp_path / "ev")
    assert r.code != 0 and cached.name in r.err and "away yourself" in r.err and "Traceback" not in r.err
    assert cached.read_bytes() == b"damaged"


def test_a_cut_download_resumes_on_the_next_run(cli, trained_run: Path, demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The official checkpoints go through prepare's downloader: a transfer cut and given up keeps its
    part, the next command asks for the rest only (HTTP Range)."""
    from tests.helpers import ArchiveServer
    from vocseg.data import download
    from vocseg.runs.folders import latest_checkpoint

    data = latest_checkpoint(trained_run).read_bytes()
    model = official.OfficialModel("cut-test", "tiny", "tiny_voc12aug", f"tiny_voc12aug_20240101-{hashlib.sha256(data).hexdigest()[:8]}.pth", 0.0, 0.0)
    monkeypatch.setitem(official.CATALOGUE, model.key, model)
    srv = ArchiveServer()
    srv.files[f"/{model.config_name}/{model.filename}"] = data
    monkeypatch.setenv(official.MIRROR_ENV, srv.url)
    monkeypatch.setenv("VOCSEG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(download, "BACKOFF_S", 0.01)
    monkeypatch.setattr(download, "ATTEMPTS", 2)
    photo = sorted((demo_root / VOC_SUBDIR / "JPEGImages").glob("*.jpg"))[0]
    try:
        srv.plan = ["cut", "503", "503"]
        r = cli("predict", photo, "-c", "official:cut-test", "-o", tmp_path / "pred")
        errors = [line for line in r.err.splitlines() if line.startswith("error:")]
        assert r.code != 0 and len(errors) == 1 and "Could not download official:cut-test" in errors[0] and "HTTP 503" in errors[0]
        assert "Re-run to resume" in " ".join(r.err.split())
        cached = tmp_path / "cache" / "official" / model.filename
        assert not cached.exists() and cached.with_name(f"{model.filename}.part").stat().st_size == len(data) // 2

        r = cli("predict", photo, "-c", "official:cut-test", "-o", tmp_path / "pred")
        assert r.code == 0, r.err
        assert cached.read_bytes() == data and srv.log[-1][1:] == (f"bytes={len(data) // 2}-", 206) and srv.bytes_sent == len(data)
    finally:
        srv.stop()


class Payload:
    """Anything outside mmengine's checkpoint types: unpickling it could run code."""


def test_a_checkpoint_with_other_pickled_objects_is_refused(cli, trained_run: Path, server: Path, monkeypatch: pytest.MonkeyPatch, demo_root: Path, tmp_path: Path) -> None:
    import torch

    from vocseg.runs.folders import latest_checkpoint
    from vocseg.stack.compat import load_checkpoint_file

    checkpoint = load_checkpoint_file(latest_checkpoint(trained_run))
    checkpoint["meta"]["extra"] = Payload()
    path = tmp_path / "evil.pth"
    torch.save(checkpoint, path, pickle_module=pickle)
    data = path.read_bytes()
    model = official.OfficialModel("evil-test", "tiny", "evil", f"evil-{hashlib.sha256(data).hexdigest()[:8]}.pth", 0.0, 0.0)
    monkeypatch.setitem(official.CATALOGUE, model.key, model)
    publish(server, model, data)
    r = cli("eval", "official:evil-test", "--data-root", demo_root, "--out", tmp_path / "o")
    assert r.code != 0 and "Refused to load" in r.err and "allow-list" in r.err
