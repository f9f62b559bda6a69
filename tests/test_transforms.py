"""vocseg's training transforms (vocseg.data.transforms) against MMSeg's, for the same random draws.

Each vocseg transform claims MMSeg's output bit for bit: every test seeds NumPy's global generator,
runs MMSeg's transform and vocseg's on copies of the same input, and compares the arrays and the
generator's state afterwards (the same numbers were drawn). Inputs are photo-like (gradients,
texture, noise) with VOC-like masks, including masks dominated by one class (cat_max_ratio retries).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

SEEDS = range(60)


@pytest.fixture(autouse=True, scope="module")
def stack() -> None:
    """mmseg imports need vocseg's stack fixes first (as every config's custom_imports applies them)."""
    import vocseg.mmseg_plugin  # noqa: F401


def photo(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w, 3) uint8 BGR: a gradient, blurred texture, noise, a few saturated regions and clipped highlights."""
    import cv2

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([rng.uniform(0, 255) + rng.uniform(-90, 90) * xx / w + rng.uniform(-90, 90) * yy / h for _ in range(3)], -1)
    texture = cv2.GaussianBlur(rng.normal(0, 40, (h, w, 3)).astype(np.float32), (0, 0), 1.5)
    return np.clip(base + texture + rng.normal(0, 15, (h, w, 3)), 0, 255).astype(np.uint8)


def voc_mask(rng: np.random.Generator, h: int, w: int, dominant: bool) -> np.ndarray:
    """(h, w) uint8 labels: background 0, 1-3 elliptic regions of classes 1-20, 255 borders."""
    yy, xx = np.mgrid[0:h, 0:w]
    mask = np.zeros((h, w), np.uint8)
    for _ in range(1 if dominant else int(rng.integers(1, 4))):
        lo, hi = (0.4, 0.7) if dominant else (0.1, 0.35)
        cx, cy, ax, ay = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h, rng.uniform(lo, hi) * w, rng.uniform(lo, hi) * h
        region = ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1
        mask[region] = rng.integers(1, 21)
    edge = (np.abs(np.diff(mask.astype(int), axis=0, prepend=0)) > 0) | (np.abs(np.diff(mask.astype(int), axis=1, prepend=0)) > 0)
    mask[edge] = 255
    return mask


def sample(seed: int, h: int = 300, w: int = 400) -> dict:
    rng = np.random.default_rng(seed)
    return dict(
        img=photo(rng, h, w),
        gt_seg_map=voc_mask(rng, h, w, dominant=seed % 3 == 0),
        seg_fields=["gt_seg_map"],
        img_shape=(h, w),
        ori_shape=(h, w),
    )


def run_both(stock, ours, results: dict, seed: int) -> tuple[dict, dict]:
    """Both transforms on copies of `results` from the same seed; asserts they drew the same numbers."""
    np.random.seed(seed)
    a = stock.transform(copy.deepcopy(results))
    state_a = np.random.get_state()
    np.random.seed(seed)
    b = ours.transform(copy.deepcopy(results))
    state_b = np.random.get_state()
    assert np.array_equal(state_a[1], state_b[1]) and state_a[2] == state_b[2], "a different number of random draws"
    return a, b


def assert_same(a: dict, b: dict, keys: tuple[str, ...] = ("img", "gt_seg_map")) -> None:
    for key in keys:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        assert np.array_equal(a[key], b[key]), key


@pytest.mark.parametrize("seed", SEEDS)
def test_random_crop_is_mmsegs_for_the_same_draws(seed: int) -> None:
    from mmseg.datasets.transforms import RandomCrop

    from vocseg.data.transforms import VocsegRandomCrop

    results = sample(seed, *((600, 700) if seed % 2 else (300, 400)))
    crop = (256, 256) if seed % 4 < 2 else (512, 512)
    a, b = run_both(RandomCrop(crop, cat_max_ratio=0.75), VocsegRandomCrop(crop, cat_max_ratio=0.75), results, seed)
    assert_same(a, b)
    assert a["img_shape"] == b["img_shape"]


def test_crop_test_counts_as_np_unique_does() -> None:
    from vocseg.data.transforms import crop_accepted

    rng = np.random.default_rng(0)
    for trial in range(300):
        labels = rng.choice([0, 3, 7, 255], size=(40, 50), p=rng.dirichlet(np.ones(4) * 0.3)).astype(np.uint8)
        uniq, cnt = np.unique(labels, return_counts=True)
        cnt = cnt[uniq != 255]
        expected = len(cnt) > 1 and np.max(cnt) / np.sum(cnt) < 0.75
        assert crop_accepted(labels, 0.75, 255) == expected, trial


@pytest.mark.parametrize("seed", SEEDS)
def test_photometric_distortion_is_mmsegs_for_the_same_draws(seed: int) -> None:
    from mmseg.datasets.transforms import PhotoMetricDistortion

    from vocseg.data.transforms import VocsegPhotoMetricDistortion

    results = sample(seed)
    if seed % 5 == 0:  # a flipped view, as RandomFlip hands it on
        results["img"] = results["img"][:, ::-1]
    a, b = run_both(PhotoMetricDistortion(), VocsegPhotoMetricDistortion(exact_hsv=True), results, seed)
    assert_same(a, b, ("img",))


def test_photometric_one_hsv_round_trip_is_within_a_few_levels_and_keeps_the_distribution() -> None:
    """The default (one HSV round trip when both saturation and hue are drawn) against MMSeg over
    400 draws: bit for bit whenever at most one of them is drawn; otherwise within
    HSV_MERGE_MAX_DIFF levels, and the photometric outputs' statistics (per-channel mean and
    spread, range, HSV saturation and hue means) are MMSeg's within a fraction of a level.
    docs/performance.md states these figures."""
    import cv2
    from mmseg.datasets.transforms import PhotoMetricDistortion

    from vocseg.data.transforms import HSV_MERGE_MAX_DIFF, VocsegPhotoMetricDistortion

    stock, ours = PhotoMetricDistortion(), VocsegPhotoMetricDistortion()
    base = [sample(seed) for seed in range(8)]
    merged, worst, means = 0, 0, []
    outs: dict[str, list[np.ndarray]] = {"mmseg": [], "vocseg": []}
    for seed in range(400):
        a, b = run_both(stock, ours, base[seed % len(base)], seed)
        diff = np.abs(a["img"].astype(np.int16) - b["img"])
        if diff.any():
            merged += 1
            worst = max(worst, int(diff.max()))
            means.append(float(diff.mean()))
        for name, out in (("mmseg", a), ("vocseg", b)):
            outs[name].append(out["img"])
    assert 60 < merged < 140  # about a quarter of the draws take both HSV steps
    assert worst <= HSV_MERGE_MAX_DIFF and np.mean(means) < 0.3
    x, y = (np.stack(outs[name]).reshape(-1, 3).astype(np.float64) for name in ("mmseg", "vocseg"))
    assert np.allclose(x.mean(0), y.mean(0), atol=0.1) and np.allclose(x.std(0), y.std(0), atol=0.1)  # measured: +0.05, 0.02
    assert x.min() == y.min() and x.max() == y.max()
    hsv = {name: np.stack([cv2.cvtColor(img, cv2.COLOR_BGR2HSV) for img in outs[name]]).reshape(-1, 3).astype(np.float64) for name in outs}
    assert np.allclose(hsv["mmseg"].mean(0), hsv["vocseg"].mean(0), atol=0.25)  # measured: H 0.002, S -0.12, V 0 (of 180, 255, 255)


def test_a_table_applied_as_a_saturating_add_gives_the_lookups_pixels() -> None:
    """apply_table against cv2.LUT for MMSeg's brightness, contrast and composed tables, on an image
    holding every value (also a non-contiguous view, and 1- and 3-channel)."""
    import cv2

    from vocseg.data.transforms import apply_table, compose, convert_lut

    rng = np.random.default_rng(0)
    every = np.tile(np.arange(256, dtype=np.uint8), (30, 3)).reshape(30, 256, 3)
    adds = 0
    for trial in range(400):
        brightness = convert_lut(1, rng.uniform(-32, 32))
        contrast = convert_lut(rng.uniform(0.5, 1.5), 0)
        table = (brightness, contrast, compose(brightness, contrast))[trial % 3]
        for img in (every, every[:, ::-1], every[..., 0], photo(rng, 20, 33)):
            assert np.array_equal(apply_table(img, table), cv2.LUT(img, table)), trial
        c = int(table[128]) - 128
        adds += trial % 3 == 0 and c != 0 and np.array_equal(table, np.clip(np.arange(256) + c, 0, 255))
    assert adds > 120  # most brightness tables took the saturating add (the branch apply_table takes)


def test_photometric_lookup_tables_reproduce_convert_on_every_value() -> None:
    from mmseg.datasets.transforms import PhotoMetricDistortion

    from vocseg.data.transforms import convert_lut, hue_lut

    values = np.arange(256, dtype=np.uint8)
    stock = PhotoMetricDistortion()
    rng = np.random.default_rng(1)
    for _ in range(500):
        alpha, beta = float(rng.uniform(0.5, 1.5)), float(rng.uniform(-32, 32))
        assert np.array_equal(convert_lut(1, beta), stock.convert(values, beta=beta))
        assert np.array_equal(convert_lut(alpha, 0), stock.convert(values, alpha=alpha))
    for delta in range(-18, 18):
        assert np.array_equal(hue_lut(delta)[:180], (values[:180].astype(int) + delta) % 180)


@pytest.mark.parametrize("seed", range(20))
def test_random_flip_is_mmcvs_for_the_same_draws(seed: int) -> None:
    from mmcv.transforms import RandomFlip

    from vocseg.data.transforms import VocsegRandomFlip

    results = sample(seed)
    direction = ["horizontal", "vertical", "diagonal"][seed % 3]
    a, b = run_both(RandomFlip(prob=0.5, direction=direction), VocsegRandomFlip(prob=0.5, direction=direction), results, seed)
    assert_same(a, b)
    assert a["flip"] == b["flip"] and a["flip_direction"] == b["flip_direction"]
    assert b["img"].flags.c_contiguous


@pytest.mark.parametrize("seed", range(6))
def test_pack_gives_mmsegs_values_without_the_transposing_copy(seed: int) -> None:
    import torch
    from mmseg.datasets.transforms import PackSegInputs

    from vocseg.data.transforms import VocsegPackSegInputs

    results = sample(seed)
    results.update(img_path="x.jpg", seg_map_path="x.png", scale_factor=(1.0, 1.0), flip=False, flip_direction=None, reduce_zero_label=False)
    if seed % 2:
        results["img"] = results["img"][10:200, 20:300]  # a crop: a view with row strides
        results["gt_seg_map"] = results["gt_seg_map"][10:200, 20:300]
    a = PackSegInputs().transform(copy.deepcopy(results))
    b = VocsegPackSegInputs().transform(copy.deepcopy(results))
    assert a["inputs"].dtype == b["inputs"].dtype == torch.uint8
    assert torch.equal(a["inputs"], b["inputs"])
    assert torch.equal(a["data_samples"].gt_sem_seg.data, b["data_samples"].gt_sem_seg.data)
    assert a["data_samples"].metainfo.keys() == b["data_samples"].metainfo.keys()


def test_preprocessed_batches_are_the_same_as_from_mmsegs_packing() -> None:
    """SegDataPreProcessor (as the model gets it) turns both packings into the same float batch."""
    import torch
    from mmseg.datasets.transforms import PackSegInputs
    from mmseg.models.data_preprocessor import SegDataPreProcessor

    from vocseg.data.transforms import VocsegPackSegInputs

    pre = SegDataPreProcessor(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True, size=(320, 320), seg_pad_val=255)
    batches = []
    for pack in (PackSegInputs(), VocsegPackSegInputs()):
        items = [pack.transform(sample(seed)) for seed in range(4)]
        batches.append(pre(dict(inputs=[i["inputs"] for i in items], data_samples=[i["data_samples"] for i in items]), training=True))
    assert torch.equal(batches[0]["inputs"], batches[1]["inputs"])
    for x, y in zip(batches[0]["data_samples"], batches[1]["data_samples"]):
        assert torch.equal(x.gt_sem_seg.data, y.gt_sem_seg.data)


def packed_batch(seeds: range, sizes: list[tuple[int, int]]) -> dict:
    from vocseg.data.transforms import VocsegPackSegInputs

    items = [VocsegPackSegInputs().transform(sample(seed, *size)) for seed, size in zip(seeds, sizes)]
    return dict(inputs=[i["inputs"] for i in items], data_samples=[i["data_samples"] for i in items])


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("sizes", [[(320, 320)] * 4, [(320, 320), (200, 320), (320, 250), (100, 90)]])
def test_fast_preprocessor_gives_mmsegs_batch(channels_last: bool, sizes: list[tuple[int, int]]) -> None:
    """VocsegFastSegDataPreProcessor against SegDataPreProcessor (+ a channels-last copy): same floats, labels, metainfo, training and evaluation."""
    import torch
    from mmseg.models.data_preprocessor import SegDataPreProcessor

    from vocseg.data.batches import VocsegFastSegDataPreProcessor

    kwargs = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size=(320, 320))
    a = SegDataPreProcessor(**kwargs)(packed_batch(range(4), sizes), training=True)
    b = VocsegFastSegDataPreProcessor(channels_last=channels_last, **kwargs)(packed_batch(range(4), sizes), training=True)
    assert b["inputs"].is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    assert a["inputs"].dtype == b["inputs"].dtype and torch.equal(a["inputs"], b["inputs"])
    for x, y in zip(a["data_samples"], b["data_samples"]):
        assert torch.equal(x.gt_sem_seg.data, y.gt_sem_seg.data)
        assert x.metainfo == y.metainfo
    # the loader's own batch is left as it was (MMSeg's forward works on new sample objects)
    loaded = packed_batch(range(4), sizes)
    shapes = [s.gt_sem_seg.data.shape for s in loaded["data_samples"]]
    VocsegFastSegDataPreProcessor(channels_last=channels_last, **kwargs)(loaded, training=True)
    assert [s.gt_sem_seg.data.shape for s in loaded["data_samples"]] == shapes
    # contiguous (3, H, W) images (MMSeg's PackSegInputs) are looked up plane by plane: the same batch
    planar = packed_batch(range(4), sizes)
    planar["inputs"] = [t.contiguous() for t in planar["inputs"]]
    e = VocsegFastSegDataPreProcessor(channels_last=channels_last, **kwargs)(planar, training=True)
    assert torch.equal(a["inputs"], e["inputs"])
    # evaluation batches (same-sized images, no test-time padding) are MMSeg's stack, bit for bit
    for n, contiguous in ((1, False), (1, True), (3, True)):
        batch = packed_batch(range(n), sizes[:1] * n)
        if contiguous:
            batch["inputs"] = [t.contiguous() for t in batch["inputs"]]
        c = VocsegFastSegDataPreProcessor(channels_last=channels_last, **kwargs)(batch, training=False)
        d = SegDataPreProcessor(**kwargs)(packed_batch(range(n), sizes[:1] * n), training=False)
        assert c["inputs"].shape == d["inputs"].shape and torch.equal(c["inputs"], d["inputs"])
        assert c["inputs"].is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    # test-time padding goes through MMSeg's own code
    padded = dict(kwargs, test_cfg=dict(size_divisor=64))
    c = VocsegFastSegDataPreProcessor(**padded)(packed_batch(range(1), [(100, 90)]), training=False)
    d = SegDataPreProcessor(**padded)(packed_batch(range(1), [(100, 90)]), training=False)
    assert c["inputs"].shape == d["inputs"].shape == (1, 3, 128, 128) and torch.equal(c["inputs"], d["inputs"])


@pytest.mark.parametrize(("mean", "std"), [(123.675, 58.395), (116.28, 57.12), (103.53, 57.375), (127.5, 127.5), (0.5, 0.25), (1e-3, 3.3e-7)])
def test_opencv_normalisation_is_numpys_for_every_uint8_value(mean: float, std: float) -> None:
    """cv_normalised_into (cv2.subtract, cv2.divide) against NumPy's float32 `- mean`, `/ std`:
    every uint8 value, in runs of several lengths (OpenCV's vector and scalar loops), into a
    padded slot of a batch (a strided view), bit for bit; written in place, nothing around it."""
    from vocseg.data.batches import cv_normalised_into, normalise_into

    m, s = np.float32(mean), np.float32(std)
    rng = np.random.default_rng(0)
    for width in (1, 7, 16, 33, 256, 1001):
        rows = -(-256 // width) + 1  # every value at least once, in rows of this width
        values = np.concatenate([rng.permutation(256), rng.integers(0, 256, rows * width - 256)]).astype(np.uint8)
        plane = np.ascontiguousarray(values.reshape(rows, width))
        assert len(np.unique(plane)) == 256
        expected = np.divide(np.subtract(plane, m, dtype=np.float32), s, dtype=np.float32)
        batch = np.full((2, 3, rows + 2, width + 3), -7.0, dtype=np.float32)
        target = batch[1, 2, 1 : rows + 1, :width]
        assert cv_normalised_into(plane, m, s, target)
        assert np.array_equal(target.view(np.uint32), expected.view(np.uint32))
        around = batch.copy()
        around[1, 2, 1 : rows + 1, :width] = -7.0
        assert (around == -7.0).all()
    every = np.arange(256, dtype=np.uint8).reshape(16, 16)
    out = np.empty((16, 16), dtype=np.float32)
    normalise_into(every, m, s, out)
    assert np.array_equal(out, (every.astype(np.float32) - m) / s)
    # three planes interleaved into a padded NHWC slot (channels-last batches), nothing around it
    from vocseg.data.batches import merge_into

    planes = [rng.standard_normal((7, 31)).astype(np.float32) for _ in range(3)]
    nhwc = np.full((2, 9, 40, 3), -7.0, dtype=np.float32)
    merge_into(planes, nhwc[1, :7, :31])
    assert np.array_equal(nhwc[1, :7, :31], np.stack(planes, axis=-1))
    assert (nhwc[0] == -7.0).all() and (nhwc[1, 7:] == -7.0).all() and (nhwc[1, :, 31:] == -7.0).all()
    apart = np.zeros((7, 62, 3), dtype=np.float32)[:, ::2]  # pixels apart: NumPy's stack
    merge_into(planes, apart)
    assert np.array_equal(apart, np.stack(planes, axis=-1))
    # a mean OpenCV would clamp (beyond the int16 range) is left to NumPy
    big = np.empty((16, 16), dtype=np.float32)
    assert not cv_normalised_into(every, np.float32(1e5), s, big)
    normalise_into(every, np.float32(1e5), s, big)
    assert np.array_equal(big, (every.astype(np.float32) - np.float32(1e5)) / s)
    # a target OpenCV cannot write into (columns apart) is left to NumPy: False, still the same result
    strided = np.zeros((16, 32), dtype=np.float32)[:, ::2]
    assert not cv_normalised_into(every, m, s, strided)
    normalise_into(every, m, s, strided)
    assert np.array_equal(strided, out)


def stock_resize_crop(crop: tuple[int, int]):
    from mmcv.transforms import Compose, RandomResize
    from mmseg.datasets.transforms import RandomCrop

    return Compose([RandomResize(scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True), RandomCrop(crop, cat_max_ratio=0.75)])


@pytest.mark.parametrize("exact", [False, True])
def test_resize_crop_draws_and_labels_are_mmsegs_and_pixels_within_one_level(exact: bool) -> None:
    """VocsegRandomResizeCrop against RandomResize + RandomCrop over many seeds: the same draws,
    windows and label maps bit for bit; the image bit for bit with exact_resize, else within 1 level."""
    from vocseg.data.transforms import VocsegRandomResizeCrop

    crop = (512, 512)
    ours = VocsegRandomResizeCrop(scale=(2048, 512), ratio_range=(0.5, 2.0), crop_size=crop, cat_max_ratio=0.75, exact_resize=exact)
    stock = stock_resize_crop(crop)
    worst, means, differing = 0, [], []
    for seed in range(40 if exact else 80):
        size = (375, 500) if seed % 3 else (500, 375)
        a, b = run_both(stock, ours, sample(seed, *size), seed)
        assert_same(a, b, ("gt_seg_map",))
        for key in ("img_shape", "scale", "scale_factor", "keep_ratio"):
            assert tuple(np.atleast_1d(a[key])) == tuple(np.atleast_1d(b[key])), key
        assert a["img"].shape == b["img"].shape and a["img"].dtype == b["img"].dtype
        diff = np.abs(a["img"].astype(np.int16) - b["img"])
        worst = max(worst, int(diff.max()))
        means.append(float(diff.mean()))
        differing.append(float((diff > 0).mean()))
    if exact:
        assert worst == 0
    else:  # docs/performance.md states these figures
        assert worst <= 1 and np.mean(means) < 0.2 and np.mean(differing) < 0.2


def test_resize_crop_keeps_the_crop_distribution() -> None:
    """Over 300 draws: crop sizes, cat_max_ratio acceptances (tries per image) and class shares of
    the cropped labels are MMSeg's, since windows and labels are identical draw for draw."""
    from vocseg.data.transforms import VocsegRandomResizeCrop, crop_accepted

    ours = VocsegRandomResizeCrop(scale=(2048, 512), ratio_range=(0.5, 2.0), crop_size=(512, 512), cat_max_ratio=0.75)
    stock = stock_resize_crop((512, 512))
    base = [sample(seed, 375, 500) for seed in range(6)]
    shares = {"mmseg": np.zeros(256), "vocseg": np.zeros(256)}
    accepted = {"mmseg": 0, "vocseg": 0}
    for i in range(300):
        for name, transform in (("mmseg", stock), ("vocseg", ours)):
            np.random.seed(10_000 + i)
            out = transform.transform(copy.deepcopy(base[i % len(base)]))
            shares[name] += np.bincount(out["gt_seg_map"].ravel(), minlength=256)
            accepted[name] += crop_accepted(out["gt_seg_map"], 0.75, 255)
    assert accepted["mmseg"] == accepted["vocseg"] and 0 < accepted["vocseg"] < 300
    assert np.array_equal(shares["mmseg"], shares["vocseg"])


def test_fast_label_check_agrees_with_mask_problem() -> None:
    from vocseg.data.images import mask_problem
    from vocseg.data.loading import valid_labels_held

    rng = np.random.default_rng(0)
    for trial in range(200):
        mask = rng.choice([0, 5, 20, 255, int(rng.integers(21, 255))], size=(30, 40), p=[0.4, 0.3, 0.1, 0.19, 0.01]).astype(np.uint8)
        if trial % 2:
            mask[mask > 20] = 255
        assert (valid_labels_held(mask) is not None) == (mask_problem(mask, 21, 255) is None), trial
    assert valid_labels_held(np.zeros((4, 4, 3), np.uint8)) is None


@pytest.fixture(scope="module")
def voc_like_files(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Six VOC-sized JPEG/palette-PNG pairs, two dominated by one class."""
    from PIL import Image

    from vocseg.data.voc import PALETTE

    folder = tmp_path_factory.mktemp("voc_like")
    palette = [c for rgb in PALETTE for c in rgb]
    items = []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        h, w = (375, 500) if seed % 2 else (500, 375)
        img, mask = photo(rng, h, w), voc_mask(rng, h, w, dominant=seed % 3 == 0)
        Image.fromarray(img[..., ::-1]).save(folder / f"{seed}.jpg", quality=80)
        label = Image.fromarray(mask, "P")
        label.putpalette(palette + [0] * (768 - len(palette)))
        label.save(folder / f"{seed}.png")
        items.append(dict(img_path=str(folder / f"{seed}.jpg"), seg_map_path=str(folder / f"{seed}.png"), reduce_zero_label=False, seg_fields=[]))
    return items


def run_pipeline(pipeline: list[dict], item: dict, seed: int, fused: bool = False) -> dict:
    """`pipeline` built and run on a copy of `item` from `seed`; `fused`: with the resize-crop,
    flip and distortion fused as vocseg's dataset runs them (vocseg.data.fused)."""
    from mmcv.transforms import Compose
    from mmseg.registry import TRANSFORMS

    from vocseg.data.fused import fuse_steps

    steps = [TRANSFORMS.build(step) for step in pipeline]
    transforms = Compose(fuse_steps(steps) if fused else steps)
    np.random.seed(seed)
    return transforms(copy.deepcopy(item))


def stock_voc_pipeline() -> list[dict]:
    """MMSeg's own `_base_/datasets/pascal_voc12.py` train pipeline, read from the mmseg wheel."""
    from pathlib import Path

    import mmseg
    from mmengine.config import Config

    cfg = Config.fromfile(str(Path(mmseg.__file__).parent / ".mim" / "configs" / "_base_" / "datasets" / "pascal_voc12.py"))
    return [dict(step) for step in cfg.train_pipeline]


def test_written_pipeline_with_exact_resize_is_mmsegs_stock_pipeline_bit_for_bit(voc_like_files: list[dict]) -> None:
    """From the files to the packed tensors: vocseg's written train pipeline, with exact_resize
    and exact_hsv, against MMSeg's stock pascal_voc12 pipeline, for the same seeds."""
    import torch

    from vocseg.recipe.mmconfig import train_pipeline

    ours = train_pipeline(512, (2048, 512))
    ours[2]["exact_resize"] = True
    ours[4]["exact_hsv"] = True
    stock = stock_voc_pipeline()
    for i in range(24):
        item = voc_like_files[i % len(voc_like_files)]
        a, b = run_pipeline(stock, item, i), run_pipeline(ours, item, i)
        assert torch.equal(a["inputs"], b["inputs"]), i
        assert torch.equal(a["data_samples"].gt_sem_seg.data, b["data_samples"].gt_sem_seg.data), i
        assert a["data_samples"].flip == b["data_samples"].flip


def test_written_pipeline_keeps_the_stock_distribution(voc_like_files: list[dict]) -> None:
    """vocseg's written train pipeline as its dataset runs it (image resized only inside the crop,
    the distortion on the fewer pixels: vocseg.data.fused) against the stock pipeline over 48
    draws: the same labels, crop sizes and flips draw for draw, and pixel statistics (per-channel
    mean and spread, photometric range) within a fraction of a level."""
    import torch

    from vocseg.recipe.mmconfig import train_pipeline

    ours, stock = train_pipeline(512, (2048, 512)), stock_voc_pipeline()
    stats: dict[str, list[torch.Tensor]] = {"mmseg": [], "vocseg": []}
    diffs = []
    for i in range(48):
        item = voc_like_files[i % len(voc_like_files)]
        a, b = run_pipeline(stock, item, 500 + i), run_pipeline(ours, item, 500 + i, fused=True)
        assert torch.equal(a["data_samples"].gt_sem_seg.data, b["data_samples"].gt_sem_seg.data), i
        assert a["inputs"].shape == b["inputs"].shape and a["data_samples"].flip == b["data_samples"].flip
        for name, out in (("mmseg", a), ("vocseg", b)):
            stats[name].append(out["inputs"].float().flatten(1))
        diffs.append((a["inputs"].int() - b["inputs"].int()).abs().float().mean().item())
    x, y = torch.cat(stats["mmseg"], 1), torch.cat(stats["vocseg"], 1)
    assert torch.allclose(x.mean(1), y.mean(1), atol=0.5) and torch.allclose(x.std(1), y.std(1), atol=0.5)
    assert x.min() == y.min() == 0 and x.max() == y.max() == 255
    assert np.mean(diffs) < 1.0


@pytest.mark.parametrize("classes", [1, 2, 4, 8])
def test_crop_counting_only_the_labels_the_mask_holds_is_mmsegs(classes: int) -> None:
    """With the loader's label set (SEG_LABELS_KEY) the crop counts only those labels (one
    comparison each, none for a single class, a full count above five): the same draws, windows
    and labels as MMSeg's RandomResize + RandomCrop, over masks of 1 to 8 classes."""
    from vocseg.data.transforms import SEG_LABELS_KEY, VocsegRandomResizeCrop

    ours = VocsegRandomResizeCrop(scale=(2048, 512), ratio_range=(0.5, 2.0), crop_size=(512, 512), cat_max_ratio=0.75)
    stock = stock_resize_crop((512, 512))
    for seed in range(25):
        rng = np.random.default_rng(seed)
        results = sample(seed, 375, 500)
        seg = results["gt_seg_map"]
        values = rng.choice(np.arange(1, 21), size=classes, replace=False)
        seg[:] = np.where(seg == 255, 255, values[np.minimum(seg, classes - 1) % classes] if classes > 1 else values[0])
        if classes > 2:  # stripes of every class, so each window holds several
            seg[:, ::7] = values[np.arange(seg.shape[0]) % classes][:, None]
        held = tuple(int(v) for v in np.unique(seg))
        results[SEG_LABELS_KEY] = (seg, held)
        a, b = run_both(stock, ours, results, seed)
        assert_same(a, b, ("gt_seg_map",))
        assert a["img"].shape == b["img"].shape


def test_the_written_pipeline_counts_crops_with_the_loaders_label_set(voc_like_files: list[dict], monkeypatch: pytest.MonkeyPatch) -> None:
    """From the files: every crop try of the written pipeline gets the label set that
    VocsegLoadAnnotations recorded (so the fast count is what runs), and no record is made for a
    dataset whose labels the loader changes (reduce_zero_label)."""
    from vocseg.data import transforms
    from vocseg.recipe.mmconfig import train_pipeline

    seen: list[object] = []
    original = transforms.crop_accepted
    monkeypatch.setattr(transforms, "crop_accepted", lambda *args: seen.append(args[3]) or original(*args))
    for i in range(6):
        run_pipeline(train_pipeline(512, (2048, 512)), voc_like_files[i], i)
    assert seen and all(present is not None for present in seen)
    seen.clear()
    item = dict(voc_like_files[0], reduce_zero_label=True)
    run_pipeline(train_pipeline(512, (2048, 512)), item, 0)
    assert seen and all(present is None for present in seen)


def test_a_mask_changed_in_place_after_loading_is_counted_in_full(voc_like_files: list[dict]) -> None:
    """MMSeg's RandomCutOut fills label rectangles in place, after VocsegLoadAnnotations recorded
    the mask's labels: the crop must then count in full and make MMSeg's decisions."""
    import torch

    from vocseg.recipe.mmconfig import train_pipeline

    cutout = dict(type="RandomCutOut", prob=1.0, n_holes=(3, 6), cutout_shape=[(80, 80), (160, 120)], seg_fill_in=7)
    for i in range(12):
        stock, ours = stock_voc_pipeline(), train_pipeline(512, (2048, 512))
        ours[2]["exact_resize"], ours[4]["exact_hsv"] = True, True
        stock.insert(2, dict(cutout))
        ours.insert(2, dict(cutout))
        item = voc_like_files[i % len(voc_like_files)]
        a, b = run_pipeline(stock, item, 900 + i), run_pipeline(ours, item, 900 + i)
        assert torch.equal(a["data_samples"].gt_sem_seg.data, b["data_samples"].gt_sem_seg.data), i
        assert torch.equal(a["inputs"], b["inputs"]), i


def test_a_label_set_of_another_map_is_not_trusted() -> None:
    """A SEG_LABELS_KEY whose map is not the one being cropped (a transform in between replaced
    it) is ignored: the windows are counted in full, MMSeg's decisions."""
    from vocseg.data.transforms import SEG_LABELS_KEY, VocsegRandomCrop, present_labels

    results = sample(3)
    results[SEG_LABELS_KEY] = (results["gt_seg_map"].copy(), (0,))  # a wrong set, for another array
    assert present_labels(results, results["gt_seg_map"]) is None
    from mmseg.datasets.transforms import RandomCrop

    a, b = run_both(RandomCrop((256, 256), cat_max_ratio=0.75), VocsegRandomCrop((256, 256), cat_max_ratio=0.75), results, 3)
    assert_same(a, b)


def test_samples_filled_without_deep_copies_equal_mmengines() -> None:
    """vocseg.data.samples: set_metainfo gives MMEngine's fields and values; fresh_copy gives what
    .to('cpu') gives, and changing the copy leaves the original as it was."""
    import torch
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    from vocseg.data.samples import fresh_copy, is_immutable, set_metainfo

    meta = {"img_path": "a.jpg", "ori_shape": (375, 500), "scale_factor": (1.5, 1.5), "flip": True, "flip_direction": None,
            "img_shape": torch.Size([512, 512]), "extra": [1, 2], "arr": np.arange(3)}
    ours, theirs = SegDataSample(), SegDataSample()
    set_metainfo(ours, meta)
    theirs.set_metainfo(meta)
    assert ours.metainfo_keys() == theirs.metainfo_keys()
    for key in meta:
        assert str(ours.metainfo[key]) == str(theirs.metainfo[key]), key
    assert ours.extra is not meta["extra"] and ours.arr is not meta["arr"]  # mutable values are still copied
    assert is_immutable(torch.Size([2, 3])) and not is_immutable((1, [2]))
    ours.gt_sem_seg = PixelData(metainfo={"note": "x"}, data=torch.zeros(1, 4, 4, dtype=torch.int64))
    copy_ = fresh_copy(ours)
    reference = ours.to("cpu")
    assert type(copy_) is type(reference) and copy_.metainfo_keys() == reference.metainfo_keys()
    assert copy_.gt_sem_seg.data is ours.gt_sem_seg.data and copy_.gt_sem_seg is not ours.gt_sem_seg
    del copy_.gt_sem_seg.data
    copy_.gt_sem_seg.data = torch.ones(1, 5, 5, dtype=torch.int64)
    set_metainfo(copy_, {"img_shape": (5, 5)})
    assert ours.gt_sem_seg.shape == (4, 4) and ours.img_shape == torch.Size([512, 512])


def fused_and_three_steps(exact_resize: bool = False):
    from vocseg.data.fused import FusedResizeCropFlipPhotometric
    from vocseg.data.transforms import VocsegPhotoMetricDistortion, VocsegRandomFlip, VocsegRandomResizeCrop

    steps = (
        VocsegRandomResizeCrop(scale=(2048, 512), ratio_range=(0.5, 2.0), crop_size=(512, 512), cat_max_ratio=0.75, exact_resize=exact_resize),
        VocsegRandomFlip(prob=0.5),
        VocsegPhotoMetricDistortion(),
    )

    class Three:
        def transform(self, results: dict) -> dict:
            for step in steps:
                results = step(results)
            return results

    return FusedResizeCropFlipPhotometric(*steps), Three()


def test_fused_step_makes_the_three_steps_draws_labels_and_keys() -> None:
    """FusedResizeCropFlipPhotometric against VocsegRandomResizeCrop, VocsegRandomFlip and
    VocsegPhotoMetricDistortion run one after the other, over 60 seeds: the same random draws, label
    maps, flips and results keys; the image bit for bit where the distortion runs on the window
    (fewer window pixels than source pixels under it), else within the bounds docs/performance.md
    states (the distortion before the interpolation: rounding, colours mixed at edges)."""
    from vocseg.data.transforms import CropWindow

    fused, three = fused_and_three_steps()
    means, worst, before = [], 0, 0
    for seed in range(60):
        results = sample(seed, *((375, 500) if seed % 2 else (500, 375)))
        a, b = run_both(three, fused, results, seed)
        assert_same(a, b, ("gt_seg_map",))
        assert sorted(a) == sorted(b)
        for key in ("flip", "flip_direction", "scale", "scale_factor", "keep_ratio", "img_shape"):
            assert str(a[key]) == str(b[key]), key
        assert a["img"].shape == b["img"].shape and a["img"].dtype == b["img"].dtype
        diff = np.abs(a["img"].astype(np.int16) - b["img"])
        h, w = results["img"].shape[:2]
        new_h, new_w = int(h * a["scale_factor"][1] + 0.5), int(w * a["scale_factor"][0] + 0.5)
        out_h, out_w = a["img"].shape[:2]
        x0, y0, x1, y1 = CropWindow(0, 0, out_w, out_h, w / new_w, h / new_h).source_box(w, h)  # the fused step's rule, at any offset's size
        if (x1 - x0) * (y1 - y0) >= out_w * out_h * 1.02:  # at least as many source pixels: distorted after, as the three steps
            assert not diff.any(), seed
        else:
            before += 1
            means.append(float(diff.mean()))
            worst = max(worst, int(diff.max()))
    assert before > 20
    assert np.mean(means) < 1.5 and worst <= 80


def test_fused_step_with_exact_resize_is_the_three_steps_bit_for_bit() -> None:
    """exact_resize=True keeps MMSeg's order (resize, crop, flip, distort): the fused step then
    gives the three steps' image bit for bit."""
    fused, three = fused_and_three_steps(exact_resize=True)
    for seed in range(12):
        a, b = run_both(three, fused, sample(seed, 375, 500), seed)
        assert_same(a, b)


def test_only_the_exact_three_steps_are_fused(voc_like_files: list[dict], tmp_path) -> None:
    """fuse_steps replaces exactly VocsegRandomResizeCrop, VocsegRandomFlip,
    VocsegPhotoMetricDistortion in that order (not subclasses, not another order); the dataset
    built from the written config runs the fused step while its config keeps the three."""
    from mmcv.transforms import RandomFlip

    from vocseg.data.fused import FusedResizeCropFlipPhotometric, fuse_steps
    from vocseg.data.transforms import VocsegPackSegInputs, VocsegPhotoMetricDistortion, VocsegRandomFlip, VocsegRandomResizeCrop

    def parts() -> list:
        return [VocsegRandomResizeCrop(scale=(2048, 512), ratio_range=(0.5, 2.0), crop_size=(64, 64)), VocsegRandomFlip(prob=0.5), VocsegPhotoMetricDistortion()]

    class OwnFlip(VocsegRandomFlip):
        pass

    def kinds(steps: list) -> list[str]:
        return [type(step).__name__ for step in fuse_steps(steps)]

    assert kinds([*parts(), VocsegPackSegInputs()]) == ["FusedResizeCropFlipPhotometric", "VocsegPackSegInputs"]
    assert kinds(parts() + parts()) == ["FusedResizeCropFlipPhotometric"] * 2
    rc, flip, pm = parts()
    assert kinds([rc, pm, flip]) == ["VocsegRandomResizeCrop", "VocsegPhotoMetricDistortion", "VocsegRandomFlip"]
    assert kinds([rc, OwnFlip(prob=0.5), pm])[0] == "VocsegRandomResizeCrop"
    assert kinds([rc, RandomFlip(prob=0.5), pm])[0] == "VocsegRandomResizeCrop"

    from mmseg.registry import DATASETS

    from vocseg.recipe.mmconfig import train_pipeline

    voc = tmp_path / "VOCdevkit" / "VOC2012"
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "JPEGImages").mkdir()
    (voc / "SegmentationClass").mkdir()
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("a\n")
    written = train_pipeline(512, (2048, 512))
    from mmengine.registry import DefaultScope

    with DefaultScope.overwrite_default_scope("mmseg"):
        dataset = DATASETS.build(dict(type="VocsegVOCDataset", data_root=str(voc), data_prefix=dict(img_path="JPEGImages", seg_map_path="SegmentationClass"),
                                      ann_file="ImageSets/Segmentation/train.txt", pipeline=written, lazy_init=True))
    assert [type(t).__name__ for t in dataset.pipeline.transforms] == [
        "VocsegLoadImageFromFile", "VocsegLoadAnnotations", "FusedResizeCropFlipPhotometric", "VocsegPackSegInputs"]
    assert isinstance(dataset.pipeline.transforms[2], FusedResizeCropFlipPhotometric)
    assert [step["type"] for step in written][2:5] == ["VocsegRandomResizeCrop", "VocsegRandomFlip", "VocsegPhotoMetricDistortion"]


def test_batch_memory_is_written_again_only_when_nothing_holds_it() -> None:
    """VocsegFastSegDataPreProcessor hands out the last batch's memory again only when the batch
    it returned (and anything made from it) is gone: a batch, or a part of one, still held keeps
    its values; a batch written into reused memory is the same batch as into new memory."""
    import torch

    from vocseg.data.batches import VocsegFastSegDataPreProcessor

    kwargs = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size=(320, 320))

    def batch(first: int) -> dict:
        return packed_batch(range(first, first + 4), [(320, 320), (300, 320), (320, 250), (100, 90)])

    for channels_last in (False, True):
        pre = VocsegFastSegDataPreProcessor(channels_last=channels_last, **kwargs)
        a = pre(batch(0), training=True)["inputs"]
        kept_a = a.clone()
        b = pre(batch(4), training=True)["inputs"]  # a is held: new memory
        assert torch.equal(a, kept_a) and b.data_ptr() != a.data_ptr()
        del a
        part, kept_part, at_b = b[:, :1], b[:, :1].clone(), b.data_ptr()
        del b
        c = pre(batch(8), training=True)["inputs"]  # a part of b is held: new memory
        assert c.data_ptr() != at_b and torch.equal(part, kept_part)
        at_c = c.data_ptr()
        del c, part
        d = pre(batch(12), training=True)["inputs"]  # nothing holds c: its memory again
        assert d.data_ptr() == at_c
        assert torch.equal(d, VocsegFastSegDataPreProcessor(channels_last=channels_last, **kwargs)(batch(12), training=True)["inputs"])
        # a convolution's output keeps its input for the backward pass: that batch is held too
        weight = torch.ones((1, 3, 1, 1), requires_grad=True)
        out = torch.nn.functional.conv2d(d, weight)
        at_d = d.data_ptr()
        kept_d = d.clone()
        del d
        e = pre(batch(16), training=True)["inputs"]
        assert e.data_ptr() != at_d
        out.sum().backward()
        assert torch.allclose(weight.grad, kept_d.sum(dim=(0, 2, 3)).reshape(1, 3, 1, 1), rtol=1e-4)  # the kept batch, not e
        del out, e


def test_the_source_box_holds_every_pixel_the_warp_reads() -> None:
    """CropWindow.source_box: the window interpolated from only those source pixels (as the fused
    step does after distorting them) is the window interpolated from the whole image, bit for bit,
    over windows of many scales, positions and sizes, at the image's edges and inside it."""
    from vocseg.data.transforms import CropWindow

    rng = np.random.default_rng(5)
    img = photo(rng, 375, 500)
    checked = 0
    for _ in range(300):
        scale = float(rng.uniform(0.5, 3.0))
        new_w, new_h = int(500 * scale + 0.5), int(375 * scale + 0.5)
        cw, ch = int(rng.integers(1, 513)), int(rng.integers(1, 513))
        x1, y1 = int(rng.integers(0, max(new_w - cw, 0) + 1)), int(rng.integers(0, max(new_h - ch, 0) + 1))
        window = CropWindow(x1, y1, min(x1 + cw, new_w), min(y1 + ch, new_h), 500 / new_w, 375 / new_h)
        x0, y0, xe, ye = window.source_box(500, 375)
        assert np.array_equal(window.warp(img[y0:ye, x0:xe], origin=(x0, y0)), window.warp(img))
        checked += (x0, y0, xe, ye) != (0, 0, 500, 375)
    assert checked > 200


def test_contrast_scaled_by_opencv_only_where_it_is_the_table() -> None:
    """apply_table with a contrast's alpha: cv2.convertScaleAbs where it gives MMSeg's table for
    every value, else the lookup; either way the lookup's pixels, on whole images and parts of
    them (odd widths: OpenCV's scalar tail), over 300 draws and the ties (alpha 1.3: 10 x 1.3 is 13)."""
    import cv2

    from vocseg.data.transforms import apply_table, convert_lut, scales_like

    rng = np.random.default_rng(11)
    img = rng.integers(0, 256, (67, 131, 3), dtype=np.uint8)
    alphas = [1.3, 0.5, 1.5, 1.0, *rng.uniform(0.5, 1.5, 300).tolist()]
    scaled = 0
    for alpha in alphas:
        table = convert_lut(alpha, 0)
        scaled += scales_like(table, alpha)
        for part in (img, img[3:60, 5:126]):
            assert np.array_equal(apply_table(part, table, alpha), cv2.LUT(part, table)), alpha
    assert not scales_like(convert_lut(1.3, 0), 1.3)
    assert scaled > 250  # the fast path is the common one
