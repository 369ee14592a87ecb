import numpy as np
import pytest
import torch

from inference.ml.data import (
    AugmentConfig,
    Augmenter,
    BatchMixer,
    data_fingerprint,
    filter_to_taxonomy,
    holdout_split,
    kfold_split,
    read_dataset,
)
from inference.ml.taxonomy import Taxonomy

from .conftest import TAX, make_dataset


def _records(n_cases=60, seed=0):
    from inference.ml.data import Record

    rng = np.random.default_rng(seed)
    recs = []
    for c in range(n_cases):
        lab = ["a", "b", "c"][c % 3] if c % 7 else "rare"
        for j in range(int(rng.integers(1, 4))):
            recs.append(Record(f"{c}_{j}.jpg", f"/x/{c}_{j}.jpg", lab, f"case{c}"))
    return recs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_splits_never_leak_a_case(seed):
    recs = _records(seed=seed)
    tr, te = holdout_split(recs, 0.2, seed)
    assert not {recs[i].case_id for i in tr} & {recs[i].case_id for i in te}
    assert len(tr) + len(te) == len(recs) and len(te) > 0
    seen = set()
    for f in range(5):
        tr, te = kfold_split(recs, 5, f, seed)
        assert not {recs[i].case_id for i in tr} & {recs[i].case_id for i in te}
        seen |= set(te.tolist())
    assert seen == set(range(len(recs)))  # every image tested exactly once over the folds


def test_split_with_too_few_photos_per_class_raises_split_error():
    """Six cases of one photo, three per class, cannot be stratified into 5 folds: the typed SplitError
    (a DataError and a ValueError, so older callers still catch it), whereas too few cases in all is a
    plain data error."""
    from inference.ml.data import DatasetError, Record
    from inference.ml.errors import DataError, SplitError

    recs = [Record(f"{c}.jpg", f"/x/{c}.jpg", "ab"[c % 2], f"case{c}") for c in range(6)]
    with pytest.raises(SplitError, match="n_splits=5") as e:
        holdout_split(recs, 0.2, 0)
    assert isinstance(e.value, DataError) and isinstance(e.value, ValueError)
    with pytest.raises(DatasetError, match="need at least 5 cases for 5 folds, found 4") as e:
        holdout_split(recs[:4], 0.2, 0)
    assert isinstance(e.value, DataError) and not isinstance(e.value, SplitError)


def test_read_generic_and_ham(tmp_path):
    make_dataset(tmp_path / "g", n_per_class=4, extra_labels=("purple",))
    recs, info = read_dataset(tmp_path / "g")
    assert info["format"] == "generic" and len(recs) == 20
    kept, skipped = filter_to_taxonomy(recs, Taxonomy.from_dict(TAX))
    assert skipped == {"purple": 4} and len(kept) == 16
    make_dataset(tmp_path / "h", n_per_class=3, fmt="ham")
    recs, info = read_dataset(tmp_path / "h")
    assert info["format"] == "ham10000" and recs[0].case_id.startswith("case_")
    assert recs[0].meta["dx_type"] == "histo"
    assert data_fingerprint(recs) == data_fingerprint(list(reversed(recs)))


def test_augmenter_shapes_and_centre_sparing():
    x = torch.full((16, 3, 64, 64), 128, dtype=torch.uint8)
    cfg = AugmentConfig(
        hsv_h=0,
        hsv_s=0,
        hsv_v=0,
        degrees=0,
        translate=0,
        scale=0,
        shear=0,
        flip_h=0,
        flip_v=0,
        blur=0,
        noise=0,
        cutout_p=1.0,
    )
    y = Augmenter(cfg, (0.5,) * 3, (0.5,) * 3, seed=0)(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    base = Augmenter(AugmentConfig(**{**cfg.__dict__, "cutout_p": 0.0}), (0.5,) * 3, (0.5,) * 3)(x)
    changed = ((y - base).abs() > 1e-6).any(1).float().mean(0)  # fraction of images altered per pixel
    centre = changed[24:40, 24:40].mean()
    border = torch.cat([changed[:8].flatten(), changed[-8:].flatten()]).mean()
    assert centre < border
    y2 = Augmenter(AugmentConfig(), (0.5,) * 3, (0.5,) * 3, seed=1)(x)
    assert y2.shape == x.shape and torch.isfinite(y2).all()


def test_shades_of_gray_removes_a_colour_cast():
    from inference.ml.data import colour_constancy

    rng = np.random.default_rng(0)
    img = rng.integers(20, 180, (48, 48, 3)).astype(np.uint8)
    img[10:30, 10:30] = (150, 80, 60)  # a brownish "lesion"
    cast = np.clip(img * np.array([1.25, 1.0, 0.7]), 0, 255).astype(np.uint8)  # warm light, no clipping
    a, b = colour_constancy(img), colour_constancy(cast)
    assert a.dtype == np.uint8 and a.shape == img.shape
    k = b.astype(float).sum() / a.astype(float).sum()  # the cast is gone: what is left is
    assert 0.9 < k < 1.1  # one common brightness factor
    assert np.abs(k * a.astype(float) - b.astype(float)).max() <= 2
    assert np.abs(img.astype(int) - cast.astype(int)).max() > 40  # ... and it was there
    grey = np.full((8, 8, 3), 90, np.uint8)
    assert np.array_equal(colour_constancy(grey), grey)  # a grey photo stays as it is
    assert colour_constancy(img, "none") is img
    assert np.array_equal(colour_constancy(np.zeros((4, 4, 3), np.uint8)), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="'grey_world' is unknown"):
        colour_constancy(img, "grey_world")
    # the per-value lookup gives the per-pixel formula: Minkowski p=6 illuminant, grey gains
    x = cast.astype(np.float64)
    e = ((x / 255.0) ** 6).reshape(-1, 3).mean(0) ** (1 / 6)
    ref = np.clip(x * (np.linalg.norm(e) / (np.sqrt(3.0) * e)) + 0.5, 0, 255).astype(np.uint8)
    assert np.array_equal(b, ref)


def test_camera_augmentations_change_colour_balance_and_tone():
    x = torch.full((32, 3, 8, 8), 128, dtype=torch.uint8)
    off = dict(
        hsv_h=0,
        hsv_s=0,
        hsv_v=0,
        degrees=0,
        translate=0,
        scale=0,
        shear=0,
        flip_h=0,
        flip_v=0,
        cutout_p=0,
        blur=0,
        noise=0,
    )
    mean, std = (0.0,) * 3, (1.0,) * 3
    plain = Augmenter(AugmentConfig(**off), mean, std)(x)
    assert torch.allclose(plain, x.float() / 255)
    gains = Augmenter(AugmentConfig(**off, channel_gain=0.2), mean, std)(x)
    ratio = gains[:, :, 0, 0] / (128 / 255)  # per image and channel
    assert ratio.min() >= 0.8 - 1e-5 and ratio.max() <= 1.2 + 1e-5
    assert (ratio[:, 0] - ratio[:, 2]).abs().max() > 0.1  # channels move apart: a colour cast
    tone = Augmenter(AugmentConfig(**off, gamma=0.4), mean, std)(x)[:, :, 0, 0]
    assert torch.allclose(tone[:, 0], tone[:, 2])  # a tone curve keeps grey grey ...
    expo = torch.log(tone[:, 0]) / np.log(128 / 255)
    assert expo.min() >= 1 / 1.4 - 1e-4 and expo.max() <= 1.4 + 1e-4 and expo.max() - expo.min() > 0.2


def test_optics_augmentations_blur_and_add_noise():
    from inference.ml.data import gaussian_blur

    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 16, 16, generator=g)
    assert torch.allclose(gaussian_blur(x, torch.zeros(4)), x, atol=1e-6)  # sd 0: unchanged
    step = torch.zeros(2, 3, 16, 16)
    step[..., 8:] = 1.0
    out = gaussian_blur(step, torch.tensor([0.0, 2.0]))
    assert torch.equal(out[0], step[0])
    row = out[1, 0, 8]
    assert 0.05 < row[7] < 0.5 < row[8] < 0.95 and torch.allclose(row[:2], torch.zeros(2), atol=1e-3)
    assert torch.allclose(out.mean(), step.mean(), atol=1e-5)  # mass is kept
    off = dict(
        hsv_h=0,
        hsv_s=0,
        hsv_v=0,
        degrees=0,
        translate=0,
        scale=0,
        shear=0,
        flip_h=0,
        flip_v=0,
        cutout_p=0,
        blur=0,
        noise=0,
    )
    mean, std = (0.0,) * 3, (1.0,) * 3
    flat = torch.full((64, 3, 8, 8), 128, dtype=torch.uint8)
    noisy = Augmenter(AugmentConfig(**{**off, "noise": 0.05}), mean, std)(flat)
    sd = (noisy - 128 / 255).flatten(1).std(1)
    assert sd.max() <= 0.06 and sd.max() > 0.03 and sd.min() < 0.02  # per-image sd in [0, 0.05]
    edges = step.mul(255).to(torch.uint8).repeat(8, 1, 1, 1)
    a = Augmenter(AugmentConfig(**{**off, "blur": 1.5}), mean, std, seed=3)(edges)
    assert (a[:, 0, 8, 8] < 254 / 255).any() and (a[:, 0, 8, 8] > 0.9).any()  # some soft edges, some sharp


def test_jpeg_augmentation_recompresses_each_photo_at_its_own_quality():
    from inference.ml.data import jpeg_roundtrip

    yy, xx = np.mgrid[0:32, 0:32]
    im = np.stack([xx * 8 % 256, yy * 8 % 256, (xx + yy) * 4 % 256], -1).astype(np.uint8)  # ramps and a patch
    im[8:20, 10:24] = (200, 40, 60)
    err = {q: np.abs(jpeg_roundtrip(im, q).astype(int) - im).mean() for q in (20, 95)}
    assert 0 < err[95] < err[20]  # lossy, more so at low quality
    off = dict(
        hsv_h=0,
        hsv_s=0,
        hsv_v=0,
        degrees=0,
        translate=0,
        scale=0,
        shear=0,
        flip_h=0,
        flip_v=0,
        cutout_p=0,
        blur=0,
        noise=0,
    )
    x = torch.from_numpy(np.stack([im] * 16)).permute(0, 3, 1, 2).contiguous()
    mean, std = (0.0,) * 3, (1.0,) * 3
    out = Augmenter(AugmentConfig(**off, jpeg=20), mean, std, seed=5)(x)
    per_photo = (out * 255 - x.float()).abs().flatten(1).mean(1)
    assert per_photo.min() > 0 and per_photo.max() <= err[20] + 1e-3
    assert per_photo.max() - per_photo.min() > 0.2 * err[20]  # qualities drawn per photo
    assert torch.equal(out, Augmenter(AugmentConfig(**off, jpeg=20), mean, std, seed=5)(x))  # seeded


def test_optics_share_leaves_the_other_photos_clean():
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(64, 3, 16, 16, generator=g) * 255).to(torch.uint8)
    off = dict(hsv_h=0, hsv_s=0, hsv_v=0, degrees=0, translate=0, scale=0, shear=0, flip_h=0, flip_v=0, cutout_p=0)
    mean, std = (0.0,) * 3, (1.0,) * 3
    none = Augmenter(AugmentConfig(**off, blur=1.0, noise=0.05, optics_p=0.0), mean, std)(x)
    assert torch.allclose(none, x.float() / 255)
    half = Augmenter(AugmentConfig(**off, blur=1.0, noise=0.05, jpeg=30, optics_p=0.5), mean, std)(x)
    clean = torch.isclose(half, x.float() / 255).flatten(1).all(1)
    assert 16 <= int(clean.sum()) <= 48  # about half the photos untouched, the rest changed


def test_augmentation_overrides_refuse_unknown_names():
    assert AugmentConfig.from_overrides({"gamma": 0.4}).gamma == 0.4
    assert AugmentConfig.from_overrides(None) == AugmentConfig()
    with pytest.raises(ValueError, match="unknown augmentation setting.*'blurr'.*known: hsv_h"):
        AugmentConfig.from_overrides({"blurr": 1.0})
    with pytest.raises(ValueError, match="jpeg must be 0 .off. or a JPEG quality 1-95, not 100"):
        AugmentConfig.from_overrides({"jpeg": 100})
    with pytest.raises(ValueError, match="optics_p must be a share between 0 and 1, not 1.5"):
        AugmentConfig.from_overrides({"optics_p": 1.5})
    with pytest.raises(
        ValueError, match="cutmix_p and mixup_p must be shares with a sum of at most 1, not 0.7 and 0.5"
    ):
        AugmentConfig.from_overrides({"cutmix_p": 0.7, "mixup_p": 0.5})
    with pytest.raises(ValueError, match="mix_alpha must be positive, not 0.0"):
        AugmentConfig.from_overrides({"mix_alpha": 0})


def test_augmentation_overrides_refuse_wrong_types_naming_the_setting():
    a = AugmentConfig.from_overrides({"jpeg": 20.0, "blur": 1, "rot90": True, "cutout_scales": [0.25, 0.125]})
    assert (a.jpeg, type(a.jpeg), a.blur, type(a.blur), a.rot90, a.cutout_scales) == (
        20,
        int,
        1.0,
        float,
        True,
        (0.25, 0.125),
    )
    for bad, msg in (
        ({"blur": "1"}, "blur must be a number, not '1'"),
        ({"noise": True}, "noise must be a number, not True"),
        ({"jpeg": 20.5}, "jpeg must be a whole number, not 20.5"),
        ({"rot90": 1}, "rot90 must be true or false, not 1"),
        ({"cutout_scales": []}, "cutout_scales must be a list of numbers"),
        ({"optics_p": None}, "optics_p must be a number, not None"),
    ):
        with pytest.raises(ValueError, match=msg):
            AugmentConfig.from_overrides(bad)


def _distinct_photos(n=8, size=20):
    """n photos, each one constant value that no other photo has."""
    return torch.arange(1, n + 1, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, size, size).clone()


def test_cutmix_pastes_one_box_and_lam_is_the_share_outside_it():
    x = _distinct_photos()
    mixer = BatchMixer(AugmentConfig(cutmix_p=1.0), seed=3)
    lams = []
    for _ in range(20):
        out, (perm, lam) = mixer(x)
        assert sorted(perm.tolist()) == list(range(8)) and torch.equal(x, _distinct_photos())  # input untouched
        own = out == x  # pixels still from the photo itself
        pasted = out == x[perm]
        fixed = perm == torch.arange(8)  # a photo mixed with itself shows no box
        assert torch.all(own | pasted)
        moved = ~fixed
        if moved.any():
            # one box, the same place in every photo; lam = the share of pixels outside it
            assert torch.equal(pasted[moved][:, 0], pasted[moved][:1, 0].expand(int(moved.sum()), -1, -1))
            assert abs(float(own[moved][0, 0].float().mean()) - lam) < 1e-6
        lams.append(lam)
    assert min(lams) >= 0.0 and max(lams) <= 1.0 and len(set(lams)) > 10  # Beta(1, 1): spread out


def test_mixup_blends_whole_photos_and_off_leaves_the_batch_alone():
    x = _distinct_photos()
    out, (perm, lam) = BatchMixer(AugmentConfig(mixup_p=1.0, mix_alpha=0.4), seed=1)(x)
    assert torch.allclose(out, lam * x + (1 - lam) * x[perm])
    off = BatchMixer(AugmentConfig(), seed=1)
    assert not off.active and off(x)[1] is None and off(x)[0] is x
    # shares: about half the batches mixed, the rest left alone
    half = BatchMixer(AugmentConfig(cutmix_p=0.25, mixup_p=0.25), seed=0)
    mixed = sum(half(x)[1] is not None for _ in range(400))
    assert 160 <= mixed <= 240
