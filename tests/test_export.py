"""vocseg export: the tiny trained model as ONNX, onnx.checker, onnxruntime parity with vocseg's PyTorch
inference on the demo val images, and `vocseg predict --checkpoint model.onnx` without mmseg."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import vocseg
from tests.helpers import require_extra
from vocseg.data.voc import VOC_SUBDIR

SRC = str(Path(vocseg.__file__).resolve().parents[1])


@pytest.fixture(autouse=True)
def _export_extra() -> None:
    require_extra("export", "onnx", "onnxruntime")  # the nox session installs it: under CI a missing one fails


def val_images(demo_root: Path) -> list[Path]:
    voc = demo_root / VOC_SUBDIR
    ids = (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    return [voc / "JPEGImages" / f"{i}.jpg" for i in ids]


@pytest.fixture(scope="module")
def exported(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's tiny trained run exported once (into a private folder: the run is read-only)."""
    from vocseg.cli import run

    path = tmp_path_factory.mktemp("export") / "tiny.onnx"
    assert run(["export", str(trained_run), "-o", str(path)]) == 0
    return path


def test_export_writes_a_checked_model_and_its_figures(cli, trained_run: Path, tmp_path: Path) -> None:
    import onnx

    out = tmp_path / "model.onnx"
    r = cli("export", trained_run, "-o", out)
    assert r.code == 0, r.err
    text = " ".join(r.out.split())
    assert "onnx.checker: ok" in text and "onnxruntime vs PyTorch on 10 images" in text and "max |logit difference|" in text
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    meta = json.loads((tmp_path / "model.onnx.json").read_text())
    parity = meta["parity"]
    assert parity["images"] == 10 and parity["pixel_agreement_percent"] >= 99.9 and parity["max_logit_diff"] < 1e-3
    assert meta["input"]["channels"] == "RGB" and meta["normalisation"]["inside_model"] and meta["resize"]["scale"] == [384, 96]
    assert len(meta["classes"]) == 21 and meta["output"]["shape"] == ["N", 21, "H", "W"]
    inside = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(inside["vocseg"])["parity"] == parity  # the .onnx alone is enough
    graph = onnx.load(str(out)).graph
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]  # any batch and image size


def test_onnxruntime_agrees_with_pytorch_on_the_val_images_and_other_sizes(exported: Path, trained_run: Path, demo_root: Path) -> None:
    """Independent of the export's own check: vocseg's PyTorch predict path vs the ONNX runner,
    on every demo val image and on sizes the export never saw (portrait, very wide, smaller than the test scale)."""
    from PIL import Image

    from vocseg.inference.onnx_model import load_onnx_model
    from vocseg.inference.predict import read_rgb
    from vocseg.inference.segmenter import load_model, predict_array

    torch_model = load_model(trained_run, device="cpu")
    onnx_model = load_onnx_model(exported, device="cpu")
    images = [read_rgb(p) for p in val_images(demo_root)]
    first = Image.fromarray(images[0])
    images += [np.asarray(first.resize(size)) for size in ((97, 301), (500, 40), (30, 30), (1000, 700))]
    same = total = 0
    for rgb in images:
        expected, got = predict_array(torch_model, rgb), predict_array(onnx_model, rgb)
        assert got.shape == expected.shape == rgb.shape[:2] and got.dtype == np.uint8
        same += int((got == expected).sum())
        total += got.size
    assert same / total >= 0.999, f"{same / total:.5f}"


def test_predict_with_the_onnx_model_imports_no_mmseg(exported: Path, demo_root: Path, tmp_path: Path) -> None:
    photos = [str(p) for p in val_images(demo_root)[:3]]
    code = (
        "import sys\nfrom vocseg.cli import run\ncode = run(sys.argv[1:])\n"
        "print('LOADED', [m for m in ('mmseg', 'mmengine', 'mmcv', 'torch') if m in sys.modules]); sys.exit(code)"
    )
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", code, "predict", *photos, "-c", str(exported), "-o", str(tmp_path / "p")], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout
    report = json.loads((tmp_path / "p" / "predictions.json").read_text())
    assert report["checkpoint"] == str(exported) and all(item["error"] is None and item["shares"] for item in report["images"])
    assert len(list((tmp_path / "p").glob("*_overlay.png"))) == 3


def test_a_file_vocseg_did_not_write_is_not_overwritten(cli, exported: Path, trained_run: Path, tmp_path: Path) -> None:
    mine = tmp_path / "model.onnx"
    mine.write_bytes(b"my own model, not vocseg's")
    r = cli("export", trained_run, "-o", mine)
    assert r.code != 0 and "was not written by vocseg" in r.err and "--force" in r.err and "Traceback" not in r.err
    assert mine.read_bytes() == b"my own model, not vocseg's" and not (tmp_path / "model.onnx.json").exists()

    # its own earlier export is replaced without --force (a re-export)
    own = tmp_path / "own.onnx"  # (a copy made by hand is the user's file: the record says so, not the format)
    assert cli("export", trained_run, "-o", own, "--check-count", "2").code == 0
    r = cli("export", trained_run, "-o", own, "--check-count", "2")
    assert r.code == 0 and "replaced" in r.out, r.err

    # a foreign JSON where the sidecar goes is protected too
    (tmp_path / "second.onnx.json").write_text('{"notes": "mine"}')
    r = cli("export", trained_run, "-o", tmp_path / "second.onnx")
    assert r.code != 0 and "second.onnx.json exists" in " ".join(r.err.split())
    r = cli("export", trained_run, "-o", mine, "--force", "--check-count", "2")
    assert r.code == 0, r.err
    assert mine.read_bytes()[:64] != b"my own model, not vocseg's"[:64]


def test_bad_inputs_are_one_line(cli, trained_run: Path, tmp_path: Path) -> None:
    r = cli("export", trained_run, "-o", tmp_path / "model.pt")
    assert r.code != 0 and "ends in .onnx" in r.err
    r = cli("export", trained_run, "--format", "torchscript", "-o", tmp_path / "m.onnx")
    assert r.code != 0 and "is not one of 'onnx'" in r.err  # a fixed choice, checked by the CLI
    r = cli("export", tmp_path / "nothing-here", "-o", tmp_path / "m.onnx")
    assert r.code != 0 and "does not exist" in r.err
    r = cli("export", trained_run, "-o", tmp_path / "m.onnx", "--check-images", tmp_path / "empty*")
    assert r.code != 0 and "--check-images" in r.err
    assert not list(tmp_path.glob("*.onnx*"))
    for r in (
        cli("predict", tmp_path, "-c", tmp_path / "absent.onnx"),
        cli("predict", tmp_path, "-c", trained_run / "x.onnx", "--mode", "slide"),
    ):
        assert r.code != 0 and len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err


def test_predict_refuses_onnx_files_it_cannot_use(cli, exported: Path, demo_root: Path, tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    photo = val_images(demo_root)[0]
    foreign = tmp_path / "foreign.onnx"
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["logits"])], "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 4, 4])], [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 4, 4])])
    onnx.save(helper.make_model(graph), str(foreign))
    r = cli("predict", photo, "-c", foreign, "-o", tmp_path / "p")
    assert r.code != 0 and "was not written by `vocseg export`" in " ".join(r.err.split())
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(exported.read_bytes()[:5000])
    r = cli("predict", photo, "-c", broken, "-o", tmp_path / "p")
    assert r.code != 0 and "onnxruntime cannot load" in r.err and len(r.err.strip().splitlines()) == 1
    r = cli("predict", photo, "-c", exported, "--mode", "slide", "-o", tmp_path / "p")
    assert r.code != 0 and "whole images only" in r.err
    r = cli("predict", photo, "-c", exported, "--config", tmp_path / "cfg.py", "-o", tmp_path / "p")
    assert r.code != 0 and "--config does not apply" in r.err


def test_missing_packages_name_the_extra(cli, trained_run: Path, exported: Path, demo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    r = cli("predict", val_images(demo_root)[0], "-c", exported, "-o", tmp_path / "p")
    assert r.code != 0 and "pip install 'vocseg[export]'" in r.err and "onnxruntime" in r.err
    monkeypatch.setitem(sys.modules, "onnx", None)
    r = cli("export", trained_run, "-o", tmp_path / "m.onnx")
    assert r.code != 0 and "pip install 'vocseg[export]'" in r.err and not (tmp_path / "m.onnx").exists()


def test_export_help_imports_nothing_heavy() -> None:
    code = "import sys\nfrom vocseg.cli import run\ncode = run(['export', '--help'])\nprint('HEAVY', [m for m in ('torch', 'mmseg', 'mmengine', 'onnx', 'onnxruntime', 'cv2') if m in sys.modules])"
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert "Usage" in out.stdout and "HEAVY []" in out.stdout, out.stdout + out.stderr


# ---------------------------------------------------------------- the pieces, against the libraries they copy


@pytest.mark.parametrize("size", [(160, 120), (500, 375), (97, 301), (30, 30), (4000, 30), (2049, 513)])
@pytest.mark.parametrize("scale", [(384, 96), (2048, 512)])
def test_rescale_size_is_mmcvs(size: tuple[int, int], scale: tuple[int, int]) -> None:
    import mmcv

    from vocseg.inference.onnx_model import rescale_size

    image = np.zeros((size[1], size[0], 3), np.uint8)
    expected = mmcv.imrescale(image, scale).shape
    assert rescale_size(*size, scale) == (expected[1], expected[0])
    assert rescale_size(4000, 3, (384, 96)) == (384, 1)  # where mmcv's size is 0 (and OpenCV fails), one pixel


def test_resize_matches_mmcv_for_images_and_torch_for_logits() -> None:
    import mmcv
    import torch
    import torch.nn.functional as F

    from vocseg.inference.onnx_model import resize_bilinear

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    assert np.array_equal(resize_bilinear(image, 80, 21), mmcv.imresize(image, (80, 21), interpolation="bilinear"))
    logits = rng.normal(size=(21, 24, 32)).astype(np.float32)
    for width, height in ((160, 120), (17, 11), (32, 24)):  # up, down, same
        expected = F.interpolate(torch.from_numpy(logits)[None], size=(height, width), mode="bilinear", align_corners=False)[0].numpy()
        got = resize_bilinear(np.ascontiguousarray(logits.transpose(1, 2, 0)), width, height).transpose(2, 0, 1)
        assert np.abs(got - expected).max() < 1e-4


def test_exportable_pooling_equals_adaptive_average_pooling() -> None:
    import torch
    from torch import nn

    from vocseg.export.onnx_graph import exportable

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pools = nn.ModuleList([nn.AdaptiveAvgPool2d(s) for s in (1, 2, 3, 6)])

    pre = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "model_channels": "RGB", "resize": None}
    wrapped = exportable(Net(), pre)
    torch.manual_seed(0)
    for h, w in ((7, 11), (12, 12), (5, 3), (24, 32), (1, 1)):
        x = torch.randn(2, 4, h, w)
        for pool, original in zip(wrapped.model.pools, (1, 2, 3, 6)):
            assert not isinstance(pool, nn.AdaptiveAvgPool2d)
            assert torch.allclose(pool(x), nn.functional.adaptive_avg_pool2d(x, original), atol=1e-6)


def test_an_export_of_a_demo_model_keeps_the_demo_caveat(cli, exported: Path, trained_run: Path, demo_root: Path, tmp_path: Path) -> None:
    """The tiny run trained on the demo data: its `.onnx` (metadata and sidecar) carries the caveat,
    and predict with it says what predict with the run says (table title, overlay legend, predictions.json)."""
    import onnx
    from PIL import Image

    from vocseg.runs.provenance import DEMO_CAVEAT

    assert json.loads(Path(f"{exported}.json").read_text())["model_caveat"] == DEMO_CAVEAT
    inside = {p.key: p.value for p in onnx.load(str(exported)).metadata_props}
    assert json.loads(inside["vocseg"])["model_caveat"] == DEMO_CAVEAT  # the .onnx alone is enough
    photo = val_images(demo_root)[0]
    overlays = {}
    for name, model in (("onnx", exported), ("pth", trained_run)):
        r = cli("predict", photo, "-c", model, "-o", tmp_path / name)
        assert r.code == 0, r.err
        assert "demo model" in " ".join(r.out.split()), name
        assert json.loads((tmp_path / name / "predictions.json").read_text())["images"][0]["model_caveat"] == DEMO_CAVEAT
        (overlay,) = (tmp_path / name).glob("*_overlay.png")
        overlays[name] = Image.open(overlay).size
    assert overlays["onnx"] == overlays["pth"]  # the same legend, caveat lines included
