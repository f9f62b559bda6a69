"""vocseg predict on the files users really have: unusual pictures, symlink loops, long names,
outputs that must not replace the user's files, and where outputs go without -o."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vocseg.files import OWN_NAMES

CASES = Path(__file__).parent / "data" / "cases" / "predict-inputs"


@pytest.fixture(scope="module")
def run_copy(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private run folder (predict writes RUN/predict*/ into it), with the trained weights."""
    from vocseg.runs.folders import latest_checkpoint

    target = tmp_path_factory.mktemp("predict_inputs") / "run"
    target.mkdir()
    shutil.copy(trained_run / "config.py", target / "config.py")
    shutil.copy(latest_checkpoint(trained_run), target / "iter_8.pth")
    return target


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` but vocseg's record of what it wrote (vocseg.files)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink() and p.name not in OWN_NAMES}


def report(folder: Path) -> dict:
    return json.loads((folder / "predictions.json").read_text())


def test_cases_thin_images_and_16bit(cli, run_copy: Path, tmp_path: Path) -> None:
    """shared/cases/predict-inputs: 4000x2 and 3x4000 are segmented with the rest; 16-bit is scaled."""
    out = tmp_path / "out"
    names = ["wide.png", "tall.png", "good.jpg", "gray16.png"]
    r = cli("predict", *(CASES / n for n in names), "-c", run_copy, "-o", out)
    assert r.code == 0, r.err
    assert "Traceback" not in r.out + r.err and "4 input(s) segmented" in " ".join(r.out.split())
    items = {Path(i["image"]).name: i for i in report(out)["images"]}
    for name in names:
        item = items[name]
        assert item["error"] is None
        assert Image.open(item["label"]).size == Image.open(CASES / name).size == tuple(item["size"])
    assert any("16-bit" in note for note in items["gray16.png"]["notes"])


def test_one_bad_input_is_reported_and_the_batch_goes_on(cli, run_copy: Path, tmp_path: Path) -> None:
    """60000x2, a 250-byte file name, a damaged file, a symlink loop in the folder and in a recursive glob."""
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    shutil.copy(CASES / "good.jpg", photos / "good.jpg")
    Image.fromarray(np.tile(np.arange(60000, dtype=np.uint8)[None, :, None], (2, 1, 3))).save(photos / "thin.png")
    long_name = "a" * 246 + ".jpg"
    shutil.copy(CASES / "good.jpg", photos / "sub" / long_name)
    (photos / "sub" / "cut.jpg").write_bytes((CASES / "good.jpg").read_bytes()[:600])
    os.symlink("..", photos / "sub" / "up")  # a folder loop
    os.symlink("self.jpg", photos / "self.jpg")  # a file link to itself
    out = tmp_path / "out"
    r = cli("predict", photos, str(photos / "**" / "*.jpg"), "-c", run_copy, "-o", out)
    assert r.code == 0, r.err
    data = report(out)
    items = {Path(i["image"]).name: i for i in data["images"]}
    assert sorted(items) == sorted(["good.jpg", "thin.png", long_name, "cut.jpg", "self.jpg"])  # each once, the loop entered once
    assert items["thin.png"]["error"] is None and Image.open(items["thin.png"]["label"]).size == (60000, 2)
    assert items[long_name]["error"] is None and all(len(Path(p).name.encode()) <= 255 for p in data["files"])
    assert "damaged" in items["cut.jpg"]["error"] and "symbolic link" in items["self.jpg"]["error"]
    assert "3 input(s) segmented, 2 skipped" in " ".join(r.out.split())


def test_nothing_segmented_is_an_error(cli, run_copy: Path, tmp_path: Path) -> None:
    (tmp_path / "cut.png").write_bytes((CASES / "gray16.png").read_bytes()[:300])
    r = cli("predict", tmp_path / "cut.png", "-c", run_copy, "-o", tmp_path / "out")
    assert r.code != 0 and "None of the 1 inputs" in r.err and "Traceback" not in r.err
    assert report(tmp_path / "out")["images"][0]["error"]


def test_too_large_is_not_called_damaged(cli, run_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOCSEG_MAX_MEGAPIXELS", "0.01")
    r = cli("predict", CASES / "good.jpg", CASES / "wide.png", "-c", run_copy, "-o", tmp_path / "out")
    assert r.code == 0, r.err
    error = {Path(i["image"]).name: i["error"] for i in report(tmp_path / "out")["images"]}["good.jpg"]
    assert "too large" in error and "damaged or" not in error and "not damaged" in error


def test_never_overwrites_user_files(cli, run_copy: Path, tmp_path: Path) -> None:
    """`predict photos/ -o photos/`: the user's cat_label.png is neither replaced nor segmented; twice."""
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(CASES / "good.jpg", photos / "cat.jpg")
    Image.fromarray(np.full((20, 20, 3), 9, np.uint8)).save(photos / "cat_label.png")  # the user's own
    shutil.copy(CASES / "good.jpg", photos / "dog.jpg")
    before = tree(photos)
    for _ in range(2):
        r = cli("predict", photos, "-c", run_copy, "-o", photos)
        assert r.code == 0, r.err
        after = tree(photos)
        assert all(after[name] == data for name, data in before.items())  # every user file unchanged
        items = {Path(i["image"]).name: i for i in report(photos)["images"]}
        assert sorted(items) == ["cat.jpg", "cat_label.png", "dog.jpg"]  # vocseg's own outputs are not inputs
        assert "not segmented" in items["cat_label.png"]["error"]
        assert Path(items["cat.jpg"]["label"]).name == "cat-2_label.png" and "not vocseg's" in items["cat.jpg"]["notes"][0]
        assert Path(items["dog.jpg"]["label"]).name == "dog_label.png"
    assert sorted(after) == sorted([*before, "cat-2_label.png", "cat-2_overlay.png", "dog_label.png", "dog_overlay.png", "predictions.json"])
    # a predictions.json vocseg did not write: refused before anything is written
    other = tmp_path / "other"
    other.mkdir()
    (other / "predictions.json").write_text('{"mine": 1}\n')
    r = cli("predict", photos / "dog.jpg", "-c", run_copy, "-o", other)
    assert r.code != 0 and "not written by vocseg" in r.err and "Traceback" not in r.err
    assert tree(other) == {"predictions.json": b'{"mine": 1}\n'}


def test_outputs_go_under_the_run_or_runs_predict(cli, run_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    for expected in ("predict", "predict2"):
        r = cli("predict", CASES / "good.jpg", "-c", run_copy)
        assert r.code == 0, r.err
        assert (run_copy / expected / "good_label.png").is_file() and str(run_copy / expected) in " ".join(r.out.split()).replace(" ", "")
    assert list(cwd.iterdir()) == []  # the current folder stays clean
    loose = tmp_path / "loose"
    loose.mkdir()
    shutil.copy(run_copy / "iter_8.pth", loose / "model.pth")
    r = cli("predict", CASES / "good.jpg", "-c", loose / "model.pth", "--config", run_copy / "config.py")
    assert r.code == 0, r.err
    assert [p.name for p in cwd.iterdir()] == ["runs"] and (cwd / "runs" / "predict" / "good_overlay.png").is_file()


def test_whole_mode_equals_mmseg_and_slide_bounds_memory(run_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whole mode (also in chunks) is mmseg's inference_model; slide mode is mmseg's window arithmetic at native resolution."""
    import torch
    from mmengine.config import ConfigDict
    from mmseg.apis import inference_model

    from vocseg.inference import segmenter as seg

    model = seg.load_model(run_copy, device="cpu")
    head = model.model.decode_head.conv_seg
    g = torch.Generator().manual_seed(0)
    head.weight.data, head.bias.data = torch.randn(head.weight.shape, generator=g) * 3, torch.randn(head.bias.shape, generator=g) * 3
    rgb = np.kron(np.asarray(Image.open(CASES / "good.jpg").convert("RGB")), np.ones((2, 2, 1), np.uint8))[:230, :310]
    expected = inference_model(model.model, np.ascontiguousarray(rgb[:, :, ::-1])).pred_sem_seg.data[0].numpy()
    assert len(np.unique(expected)) > 2
    assert np.array_equal(seg.predict_array(model, rgb), expected)
    monkeypatch.setattr(seg, "LOGIT_CHUNK_ELEMENTS", 5000)  # the chunked path
    assert np.array_equal(seg.predict_array(model, rgb), expected)
    assert [len(x) for x in model.predict_batch([rgb, rgb[:100], rgb])] == [230, 100, 230]
    model.mode = "slide"
    got = seg.predict_array(model, rgb)
    model.model.test_cfg = ConfigDict(mode="slide", crop_size=model.crop, stride=model.stride)
    x = (torch.from_numpy(rgb.copy()).permute(2, 0, 1).float()[None] - model.model.data_preprocessor.mean) / model.model.data_preprocessor.std
    with torch.no_grad():
        reference = model.model.slide_inference(x, [dict(img_shape=rgb.shape[:2], ori_shape=rgb.shape[:2])]).argmax(1)[0].numpy()
    assert (got == reference).mean() > 0.9999
    assert seg.window_starts(230, 96, 64) == [0, 64, 128, 134] and seg.window_starts(50, 96, 64) == [0]


def test_disk_full_and_bad_output_folder_are_one_line(cli, run_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from vocseg.inference import predict as inference

    (tmp_path / "file").write_text("not a folder\n")
    r = cli("predict", CASES / "good.jpg", "-c", run_copy, "-o", tmp_path / "file" / "sub")
    assert r.code != 0 and "a file stands where a folder is expected" in r.err and str(tmp_path / "file") in r.err and "-o" in r.err and "Traceback" not in r.err

    def full(image: object, path: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(inference, "save_png_atomic", full)
    r = cli("predict", CASES / "good.jpg", CASES / "wide.png", "-c", run_copy, "-o", tmp_path / "out")
    assert r.code != 0 and "No space left on device" in r.err and "good_overlay.png" in r.err and "Traceback" not in r.err
    assert json.loads((tmp_path / "out" / "predictions.json").read_text())["images"] == []
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.name not in OWN_NAMES) == ["predictions.json"]  # no half pair
