"""Download, verify and extract: archives built here, served by a local HTTP server on 127.0.0.1
that supports Range and can cut a transfer halfway."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import os
import shutil
import tarfile
import urllib.request
from pathlib import Path

import pytest
from rich.console import Console

from tests.helpers import ArchiveServer, file_tree
from vocseg.data import download, extract, fetch
from vocseg.data.demo import DEMO_MARKER
from vocseg.data.voc import ARCHIVES, SBD_ARCHIVE, SBD_SUBDIR, SPLITS_SUBDIR, VOC_ARCHIVE, VOC_SUBDIR
from vocseg.errors import VocsegError
from vocseg.files import RECORD_NAME

QUIET = Console(file=io.StringIO(), width=120)


# ---------------------------------------------------------------- archives


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def build_voc_tar(demo: Path, out: Path) -> Path:
    """A VOC-structured tar of the demo data: what VOCtrainval_11-May-2012.tar unpacks to."""
    voc = demo / VOC_SUBDIR
    with tarfile.open(out, "w") as tar:
        for sub in ("JPEGImages", "SegmentationClass"):
            tar.add(voc / sub, f"{VOC_SUBDIR}/{sub}")
        for name in ("train", "val", "trainval"):
            tar.add(voc / SPLITS_SUBDIR / f"{name}.txt", f"{VOC_SUBDIR}/{SPLITS_SUBDIR}/{name}.txt")
    return out


def build_sbd_tgz(demo: Path, out: Path) -> Path:
    """An SBD-structured .tgz (benchmark_RELEASE/dataset with real scipy-written .mat files)."""
    with tarfile.open(out, "w:gz") as tar:
        tar.add(demo / SBD_SUBDIR, SBD_SUBDIR)
        readme = tarfile.TarInfo("benchmark_RELEASE/README")
        text = b"SBD test archive\n"
        readme.size = len(text)
        tar.addfile(readme, io.BytesIO(text))
    return out


@pytest.fixture(scope="session")
def archives(demo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("archives")
    return {"voc": build_voc_tar(demo_root, folder / VOC_ARCHIVE), "sbd": build_sbd_tgz(demo_root, folder / SBD_ARCHIVE)}


def md5_flags(archives: dict[str, Path]) -> list[str]:
    return ["--md5", f"{VOC_ARCHIVE}={md5(archives['voc'])}", "--md5", f"{SBD_ARCHIVE}={md5(archives['sbd'])}"]


@pytest.fixture
def fresh_root(tmp_path: Path, demo_root: Path) -> Path:
    """An empty data root that knows the demo's split sizes (the test archives hold the demo data)."""
    root = tmp_path / "data"
    root.mkdir()
    shutil.copy(demo_root / DEMO_MARKER, root / DEMO_MARKER)
    return root


# ---------------------------------------------------------------- the server


@pytest.fixture(autouse=True)
def no_real_sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reaches the internet or the user's cache: official URLs point at a closed local port."""
    for key, archive in ARCHIVES.items():
        monkeypatch.setitem(ARCHIVES, key, dataclasses.replace(archive, urls=(f"http://127.0.0.1:9/nowhere/{archive.name}",)))
    monkeypatch.setenv("VOCSEG_CACHE_DIR", str(tmp_path / "user-cache"))
    monkeypatch.setattr(download, "BACKOFF_S", 0.01)


@pytest.fixture
def server(archives: dict[str, Path], monkeypatch: pytest.MonkeyPatch):
    """The server, with the 'official' URLs of both archives pointed at it; no real waits."""
    srv = ArchiveServer()
    for key, path in archives.items():
        srv.files[f"/official/{path.name}"] = path.read_bytes()
        archive = ARCHIVES[key]
        monkeypatch.setitem(ARCHIVES, key, dataclasses.replace(archive, urls=(f"{srv.url}/official/{path.name}",)))
    monkeypatch.setattr(download, "BACKOFF_S", 0.01)
    monkeypatch.setattr(download, "TIMEOUT_S", 10.0)
    yield srv
    srv.stop()


def get_voc(cache: Path, md5_value: str, **kw: object) -> Path:
    kw = {"from_dir": None, "mirror": None, "force": False, **kw}
    return fetch.locate_archive(ARCHIVES["voc"], md5_value, cache=cache, console=QUIET, **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------- download


def test_prepare_downloads_verifies_extracts_and_reuses_the_cache(cli, server: ArchiveServer, archives, fresh_root: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    args = ["prepare", "--aug", "--data-root", fresh_root, "--cache-dir", cache, *md5_flags(archives)]
    result = cli(*args)
    assert result.code == 0, result.out + result.err
    assert [(p, s) for p, _, s in server.log] == [(f"/official/{VOC_ARCHIVE}", 200), (f"/official/{SBD_ARCHIVE}", 200)]
    for key in ("voc", "sbd"):  # kept under the name of what they are: not the official md5
        archive = ARCHIVES[key]
        kept = fetch.cached_path(cache, archive, md5(archives[key]))
        assert kept.read_bytes() == archives[key].read_bytes()
        marker = extract.extracted_marker(fresh_root, archive)
        assert marker and (marker["archive"], marker["md5"]) == (archive.name, md5(archives[key]))
    assert (fresh_root / VOC_SUBDIR / SPLITS_SUBDIR / "trainaug.txt").is_file()
    assert not any(p.name.startswith(extract.STAGING_PREFIX) for p in fresh_root.iterdir())
    assert "ok:" in result.out

    # Again: every step is complete, nothing is fetched.
    again = cli(*args)
    assert again.code == 0 and len(server.log) == 2
    assert "used as is" in again.out and "already converted" in again.out

    # Another data root, same cache: extracted from the cached archives, no download.
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(fresh_root / DEMO_MARKER, other)
    third = cli("prepare", "--aug", "--data-root", other, "--cache-dir", cache, *md5_flags(archives))
    assert third.code == 0, third.out + third.err
    assert len(server.log) == 2 and "verified copy" in third.out


def test_download_resumes_after_a_cut_in_the_same_run(server: ArchiveServer, archives, tmp_path: Path) -> None:
    data = archives["voc"].read_bytes()
    server.plan = ["cut"]
    path = get_voc(tmp_path, md5(archives["voc"]))
    assert path.read_bytes() == data
    (first, first_range, _), (second, second_range, status) = server.log
    assert first_range is None and second_range == f"bytes={len(data) // 2}-" and status == 206
    assert server.bytes_sent == len(data)  # the second request sent only the rest


def test_interrupted_download_resumes_on_the_next_run(server: ArchiveServer, archives, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = archives["voc"].read_bytes()
    part = tmp_path / f"{VOC_ARCHIVE}.part"
    # The transfer is cut, then the server keeps failing: the source is given up, the part is kept.
    monkeypatch.setattr(download, "ATTEMPTS", 2)
    server.plan = ["cut", "503", "503"]
    with pytest.raises(VocsegError) as err:
        get_voc(tmp_path, md5(archives["voc"]))
    assert "HTTP 503" in err.value.message and f"re-run to resume ({len(data) // 2:,} bytes kept" in err.value.hint
    assert part.stat().st_size == len(data) // 2

    # Next run: one Range request for the rest.
    path = get_voc(tmp_path, md5(archives["voc"]))
    assert path.read_bytes() == data
    assert server.log[-1][1:] == (f"bytes={len(data) // 2}-", 206) and server.bytes_sent == len(data)
    assert not part.exists()


def test_ctrl_c_during_a_download_keeps_the_part(server: ArchiveServer, archives, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    data = archives["voc"].read_bytes()
    server.plan = ["cut"]
    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(download.time, "sleep", interrupted)  # Ctrl-C while waiting to retry
        get_voc(tmp_path, md5(archives["voc"]))
    assert get_voc(tmp_path, md5(archives["voc"])).read_bytes() == data
    assert server.bytes_sent == len(data)


def test_transient_server_errors_are_retried(server: ArchiveServer, archives, tmp_path: Path) -> None:
    server.plan = ["503", "503"]
    assert get_voc(tmp_path, md5(archives["voc"])).read_bytes() == archives["voc"].read_bytes()
    assert [s for _, _, s in server.log] == [503, 503, 200]


def kept_part(path: Path, data: bytes) -> None:
    """A part file an earlier vocseg download left (recorded by vocseg.files as it was created)."""
    from vocseg.files import open_append

    with open_append(path) as f:
        f.write(data)


def test_a_kept_part_that_does_not_fit_is_dropped_when_the_server_ignores_range(server: ArchiveServer, archives, tmp_path: Path) -> None:
    server.ignore_range = True
    kept_part(tmp_path / f"{VOC_ARCHIVE}.part", b"garbage from some other file" * 100)
    assert get_voc(tmp_path, md5(archives["voc"])).read_bytes() == archives["voc"].read_bytes()
    assert server.log[0][1] is not None and server.log[0][2] == 200  # asked to resume, got the whole file


def test_a_resumed_download_that_does_not_verify_is_fetched_again_whole(server: ArchiveServer, archives, tmp_path: Path) -> None:
    data = archives["voc"].read_bytes()
    kept_part(tmp_path / f"{VOC_ARCHIVE}.part", b"\0" * 1000)  # kept from some other file
    assert get_voc(tmp_path, md5(archives["voc"])).read_bytes() == data
    assert [(r, s) for _, r, s in server.log] == [("bytes=1000-", 206), (None, 200)]


def test_wrong_md5_is_refused_then_accepted_only_when_named(cli, server: ArchiveServer, archives, fresh_root: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    got = md5(archives["voc"])
    result = cli("prepare", "--no-aug", "--data-root", fresh_root, "--cache-dir", cache)  # strict: expects the official md5
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1  # one line
    message = " ".join(result.err.split())
    assert f"{VOC_ARCHIVE} from {server.url}/official/{VOC_ARCHIVE} has md5 {got}" in message
    assert f"={got}" not in message and "--md5" not in message  # no paste-ready bypass
    assert "tampered" in message and "--from-dir" in message and ARCHIVES["voc"].md5 in message
    assert not (fresh_root / VOC_SUBDIR).exists()
    assert fetch.cached_path(cache, ARCHIVES["voc"], got).is_file()  # kept for an explicit yes

    accepted = cli("prepare", "--no-aug", "--data-root", fresh_root, "--cache-dir", cache, "--md5", f"{VOC_ARCHIVE}={got}")
    assert accepted.code == 0, accepted.out + accepted.err
    assert len(server.log) == 1  # no second download


def test_mirror_is_tried_first_then_the_official_source(server: ArchiveServer, archives, tmp_path: Path) -> None:
    get_voc(tmp_path, md5(archives["voc"]), mirror=f"{server.url}/mirror/")
    assert [(p, s) for p, _, s in server.log] == [(f"/mirror/{VOC_ARCHIVE}", 404), (f"/official/{VOC_ARCHIVE}", 200)]


def test_no_source_gives_a_one_line_error_with_what_to_do(cli, server: ArchiveServer, fresh_root: Path, tmp_path: Path) -> None:
    server.files.clear()
    result = cli("prepare", "--no-aug", "--data-root", fresh_root, "--cache-dir", tmp_path / "cache", "--mirror", f"{server.url}/m")
    assert result.code == 2
    message = " ".join(result.err.split())
    assert f"Could not download {VOC_ARCHIVE}" in message and "HTTP 404" in message and "--from-dir" in message
    assert "Traceback" not in result.err


def test_disk_full_while_downloading_keeps_nothing_broken(server: ArchiveServer, archives, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    import vocseg.files

    (tmp_path / f"{VOC_ARCHIVE}.part").symlink_to("/dev/full")  # a link at the part's name: never written through
    with pytest.raises(VocsegError) as err:
        get_voc(tmp_path, md5(archives["voc"]))
    assert "symbolic link" in err.value.message and os.path.islink(tmp_path / f"{VOC_ARCHIVE}.part")
    (tmp_path / f"{VOC_ARCHIVE}.part").unlink()
    monkeypatch.setattr(vocseg.files, "open_append", lambda path, **kw: open("/dev/full", "ab"))  # every write fails with ENOSPC
    with pytest.raises(VocsegError) as err:
        get_voc(tmp_path, md5(archives["voc"]))
    assert err.value.message.startswith("Disk full while writing") and "re-run" in err.value.hint


# ---------------------------------------------------------------- --from-dir


def test_from_dir_uses_no_network(cli, archives, fresh_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("no download with --from-dir")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    folder = archives["voc"].parent
    result = cli("prepare", "--aug", "--data-root", fresh_root, "--from-dir", folder, "--cache-dir", tmp_path / "cache", *md5_flags(archives))
    assert result.code == 0, result.out + result.err
    assert (fresh_root / VOC_SUBDIR / "SegmentationClassAug").is_dir()
    assert not (tmp_path / "cache").exists()  # nothing copied, nothing stamped


def test_from_dir_refuses_a_truncated_or_missing_archive(cli, archives, fresh_root: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    assert cli("prepare", "--no-aug", "--data-root", fresh_root, "--from-dir", folder).code == 2
    data = archives["voc"].read_bytes()
    (folder / VOC_ARCHIVE).write_bytes(data[: len(data) // 2])
    result = cli("prepare", "--no-aug", "--data-root", fresh_root, "--from-dir", folder, "--md5", f"voc={md5(archives['voc'])}")
    message = " ".join(result.err.split())
    assert result.code == 2 and f"from {folder / VOC_ARCHIVE} has md5 {md5(folder / VOC_ARCHIVE)}" in message and "truncated" in message
    assert f"={md5(folder / VOC_ARCHIVE)}" not in message

    # Even when its md5 is named, a truncated archive is caught by extraction and leaves no tree.
    forced = cli("prepare", "--no-aug", "--data-root", fresh_root, "--from-dir", folder, "--md5", f"voc={md5(folder / VOC_ARCHIVE)}")
    assert forced.code == 2 and "truncated or damaged" in forced.err
    assert not (fresh_root / VOC_SUBDIR).exists()
    assert not any(p.name.startswith(extract.STAGING_PREFIX) for p in fresh_root.iterdir())


def test_an_archive_of_something_else_is_refused(cli, fresh_root: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    with tarfile.open(folder / VOC_ARCHIVE, "w") as tar:
        info = tarfile.TarInfo("holiday/photo.jpg")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    result = cli("prepare", "--no-aug", "--data-root", fresh_root, "--from-dir", folder, "--md5", f"voc={md5(folder / VOC_ARCHIVE)}")
    assert result.code == 2 and "is not the PASCAL VOC 2012 trainval archive" in " ".join(result.err.split())

    (folder / VOC_ARCHIVE).write_bytes(b"<html>Moved</html>" * 40)
    result = cli("prepare", "--no-aug", "--data-root", fresh_root, "--from-dir", folder, "--md5", f"voc={md5(folder / VOC_ARCHIVE)}")
    assert result.code == 2 and "is not a tar archive" in " ".join(result.err.split())
    assert not (fresh_root / VOC_SUBDIR).exists()


def test_bad_md5_options_fail_before_anything(cli, fresh_root: Path) -> None:
    for bad in ("nonsense", "other.tar=6cd6e144f989b92b3379bac3b3de84fd", "voc=xyz"):
        result = cli("prepare", "--no-aug", "--data-root", fresh_root, "--md5", bad)
        assert result.code == 2 and "--md5" in result.err


# ---------------------------------------------------------------- extraction


def malicious_tar(path: Path, kind: str) -> Path:
    with tarfile.open(path, "w") as tar:
        ok = tarfile.TarInfo(f"{VOC_SUBDIR}/JPEGImages/fine.jpg")
        ok.size = 1
        tar.addfile(ok, io.BytesIO(b"x"))
        bad = tarfile.TarInfo({"absolute": "/tmp/vocseg-evil.txt", "dotdot": f"{VOC_SUBDIR}/../../../evil.txt"}.get(kind, f"{VOC_SUBDIR}/JPEGImages/link"))
        if kind == "symlink":
            bad.type, bad.linkname = tarfile.SYMTYPE, "../../../../outside"
        elif kind == "abs_symlink":
            bad.type, bad.linkname = tarfile.SYMTYPE, "/etc"
        elif kind == "hardlink":
            bad.type, bad.linkname = tarfile.LNKTYPE, "../outside"
        elif kind == "device":
            bad.type = tarfile.CHRTYPE
        else:
            bad.size = 4
        tar.addfile(bad, io.BytesIO(b"evil") if bad.isfile() else None)
    return path


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink", "abs_symlink", "hardlink", "device"])
def test_malicious_members_are_refused(kind: str, tmp_path: Path) -> None:
    archive = malicious_tar(tmp_path / VOC_ARCHIVE, kind)
    root = tmp_path / "root" / "data"
    with pytest.raises(VocsegError) as err:
        extract.extract_archive(archive, ARCHIVES["voc"], md5(archive), root, replace=False, console=QUIET)
    assert "unsafe member" in err.value.message and str(archive) in err.value.message
    assert sorted(p.name for p in root.iterdir()) == [RECORD_NAME]  # no tree, no staging left (the root is vocseg's)
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == [RECORD_NAME, "data"]  # vocseg made root too
    assert not Path("/tmp/vocseg-evil.txt").exists()


def test_interrupted_extraction_never_looks_complete(archives, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "data"
    calls = {"n": 0}
    real_extract = extract.write_member

    def stop_halfway(tar: tarfile.TarFile, member: tarfile.TarInfo, staging: Path) -> None:
        calls["n"] += 1
        if calls["n"] == 30:
            raise KeyboardInterrupt
        real_extract(tar, member, staging)

    monkeypatch.setattr(extract, "write_member", stop_halfway)
    voc = ARCHIVES["voc"]
    with pytest.raises(KeyboardInterrupt):
        extract.extract_archive(archives["voc"], voc, md5(archives["voc"]), root, replace=False, console=QUIET)
    assert extract.tree_state(root, voc) == "absent"

    # A hard kill leaves the staging folder behind: still not a tree, and cleaned up next time.
    from vocseg.files import STAGING_ROLE, owned_mkdir

    owned_mkdir(root / f"{extract.STAGING_PREFIX}voc", role=STAGING_ROLE)
    (root / f"{extract.STAGING_PREFIX}voc" / VOC_SUBDIR / "JPEGImages").mkdir(parents=True)
    monkeypatch.setattr(extract, "write_member", real_extract)
    extract.recover_interrupted(root)
    assert extract.tree_state(root, voc) == "absent" and not (root / f"{extract.STAGING_PREFIX}voc").exists()
    extract.extract_archive(archives["voc"], voc, md5(archives["voc"]), root, replace=False, console=QUIET)
    assert extract.tree_state(root, voc) == "complete"


def test_disk_full_while_extracting_keeps_the_verified_archive(
    cli, server: ArchiveServer, archives, fresh_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    cache = tmp_path / "cache"
    args = ("prepare", "--no-aug", "--data-root", fresh_root, "--cache-dir", cache, "--md5", f"voc={md5(archives['voc'])}")
    with monkeypatch.context() as patch:
        patch.setattr(extract, "write_member", full)
        result = cli(*args)
    assert result.code == 2 and "Disk full while writing" in result.err and "verified archive is kept" in " ".join(result.err.split())
    assert extract.tree_state(fresh_root, ARCHIVES["voc"]) == "absent"
    again = cli(*args)  # space again
    assert again.code == 0, again.out + again.err
    assert "verified copy" in again.out and len(server.log) == 1


def test_a_partial_tree_is_refused_unless_forced(cli, fresh_root: Path) -> None:
    (fresh_root / VOC_SUBDIR / "JPEGImages").mkdir(parents=True)
    result = cli("prepare", "--no-aug", "--data-root", fresh_root)
    assert result.code == 2 and "an incomplete copy" in result.err and "--redo" in result.err


def test_force_replaces_the_trees_and_converts_again(cli, archives, fresh_root: Path) -> None:
    args = ("prepare", "--aug", "--data-root", fresh_root, "--from-dir", archives["voc"].parent, *md5_flags(archives))
    assert cli(*args).code == 0
    sentinel = fresh_root / VOC_SUBDIR / "added-by-hand.txt"
    sentinel.write_text("x")
    pngs = fresh_root / VOC_SUBDIR / "SegmentationClassAug"
    before = {p.name: p.stat().st_mtime_ns for p in pngs.iterdir()}
    result = cli(*args, "--redo")  # VOC plus a file of the user's: never replaced, --redo included
    assert result.code != 0 and "added-by-hand.txt" in result.err and "mv " in result.err and sentinel.read_text() == "x"
    sentinel.unlink()
    result = cli(*args, "--redo")
    assert result.code == 0, result.out + result.err
    after = {p.name: p.stat().st_mtime_ns for p in pngs.iterdir()}
    assert after.keys() == before.keys() and all(after[k] != before[k] for k in after)
    assert sorted(p.name for p in fresh_root.iterdir() if p.name != RECORD_NAME) == sorted(["VOCdevkit", "benchmark_RELEASE", DEMO_MARKER])  # no lock file left


def test_with_voc_in_place_only_sbd_is_fetched(cli, server: ArchiveServer, archives, fresh_root: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert cli("prepare", "--no-aug", "--data-root", fresh_root, "--cache-dir", cache, *md5_flags(archives)).code == 0
    assert not (fresh_root / "benchmark_RELEASE").exists()
    result = cli("prepare", "--aug", "--data-root", fresh_root, "--cache-dir", cache, *md5_flags(archives))
    assert result.code == 0, result.out + result.err
    assert [p for p, _, _ in server.log] == [f"/official/{VOC_ARCHIVE}", f"/official/{SBD_ARCHIVE}"]
    assert "used as is" in result.out


# ---------------------------------------------------------------- links: nothing escapes, whatever the Python


def add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    tar.addfile(info)


def add_link(tar: tarfile.TarFile, name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    tar.addfile(info)


def add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def escape_tar(path: Path, kind: str, outside: Path) -> Path:
    """A VOC-named tar (with a valid VOC tree) that tries to write `outside/pwned.txt` or to change `outside/victim.txt`."""
    top = VOC_SUBDIR
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("train", "val"):
            add_file(tar, f"{top}/{SPLITS_SUBDIR}/{name}.txt", b"2026_000001\n")
        add_dir(tar, f"{top}/JPEGImages")
        add_dir(tar, f"{top}/SegmentationClass")
        if kind == "chain":
            # b -> . : every path component looks like a folder to a naive check, so
            # x -> b/b/b/b/../../../../../../../.. counts as "inside" yet climbs out.
            add_dir(tar, f"{top}/a")
            add_link(tar, f"{top}/a/b", ".")
            depth = len(Path(outside).parts) + 8
            add_link(tar, f"{top}/a/x", "b/" * depth + "../" * depth + str(outside).lstrip("/"))
            add_file(tar, f"{top}/a/x/pwned.txt", b"escaped")
        elif kind == "path_max":
            # CVE-2025-4517: long folder names chained by links until realpath() gives up at PATH_MAX.
            comp = "d" * 247
            steps = "abcdefghijklmnop"
            here = f"{top}/JPEGImages"
            for step in steps:
                add_dir(tar, f"{here}/{comp}")
                add_link(tar, f"{here}/{step}", comp)
                here = f"{here}/{comp}"
            long_link = f"{top}/JPEGImages/" + "/".join(steps) + "/" + "l" * 254
            add_link(tar, long_link, "../" * len(steps))
            add_link(tar, f"{top}/JPEGImages/escape", "/".join(steps) + "/" + "l" * 254 + "/" + "../" * 12 + str(outside).lstrip("/"))
            add_file(tar, f"{top}/JPEGImages/escape/pwned.txt", b"escaped")
        elif kind == "hardlink_outside":
            add_link(tar, f"{top}/JPEGImages/victim.jpg", str(outside / "victim.txt"), tarfile.LNKTYPE)
            add_file(tar, f"{top}/JPEGImages/victim.jpg", b"overwritten through a hard link")
        elif kind == "hardlink_relative":
            add_link(tar, f"{top}/JPEGImages/victim.jpg", "../" * 6 + "victim.txt", tarfile.LNKTYPE)
            add_file(tar, f"{top}/JPEGImages/victim.jpg", b"overwritten through a hard link")
        elif kind == "link_then_write":
            add_link(tar, f"{top}/JPEGImages/photos", str(outside))
            add_file(tar, f"{top}/JPEGImages/photos/pwned.txt", b"escaped")
        elif kind == "inside_link":
            # Points inside the tree: harmless on its own, still refused (the genuine archive has no link).
            add_file(tar, f"{top}/JPEGImages/2026_000001.jpg", b"jpeg")
            add_link(tar, f"{top}/JPEGImages/copy.jpg", "2026_000001.jpg")
    return path


@pytest.mark.parametrize("kind", ["chain", "path_max", "hardlink_outside", "hardlink_relative", "link_then_write", "inside_link"])
def test_link_escapes_are_refused_and_nothing_outside_changes(cli, kind: str, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("the user's file\n")
    folder = tmp_path / "archives"
    folder.mkdir()
    archive = escape_tar(folder / VOC_ARCHIVE, kind, outside)
    root = tmp_path / "data"
    before = file_tree(tmp_path)
    result = cli("prepare", "--no-aug", "--data-root", root, "--from-dir", folder, "--md5", f"voc={md5(archive)}")
    assert result.code == 2, result.out + result.err
    assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err
    message = " ".join(result.err.split())
    assert "unsafe member" in message and "nothing was extracted" in message
    after = file_tree(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("data")} == before  # nothing outside the data root
    assert sorted(p.name for p in root.iterdir()) == [RECORD_NAME]  # no tree, no staging folder, no lock file


def test_a_member_is_never_written_through_a_link(tmp_path: Path) -> None:
    """The second wall: even a link that got into the staging folder is not followed."""
    outside = tmp_path / "outside"
    outside.mkdir()
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "JPEGImages").symlink_to(outside)
    (staging / "file.jpg").symlink_to(outside / "victim.txt")
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tar:
        add_file(tar, "JPEGImages/pwned.txt", b"escaped")
        add_file(tar, "file.jpg", b"escaped")
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        with pytest.raises(tarfile.ReadError):
            extract.write_member(tar, members[0], staging)
        with pytest.raises(OSError):
            extract.write_member(tar, members[1], staging)
    assert list(outside.iterdir()) == []


def test_genuine_layout_has_no_link_and_extracts(archives, tmp_path: Path) -> None:
    """The test archives are built like the genuine ones (folders and regular files only)."""
    for key, path in archives.items():
        with tarfile.open(path) as tar:
            assert all(m.isfile() or m.isdir() for m in tar), key
            assert all(extract.unsafe_reason(m) is None for m in tar)
