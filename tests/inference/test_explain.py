"""Grad-CAM helpers (pure, no Django): heat-map mass in boxes on hand-made maps, shared colour
scale, overlay geometry, and Grad-CAM on a tiny trained model."""

import numpy as np
import pytest
import torch
from PIL import Image

from inference.ml.explain import (
    HeatMap,
    _cams,
    crop_square,
    explain,
    heatmap_mass_in_boxes,
    render_overlay,
    shared_scale,
)


def test_mass_in_boxes_hand_made_square_photo():
    # 4x4 map over a 400x400 photo: every cell is 100x100 px.
    hm = np.zeros((4, 4))
    hm[0, 0] = 3.0  # cell centre (50, 50)
    hm[3, 3] = 1.0  # cell centre (350, 350)
    assert heatmap_mass_in_boxes(hm, [(0, 0, 100, 100)], (400, 400)) == pytest.approx(0.75)
    assert heatmap_mass_in_boxes(hm, [(300, 300, 400, 400)], (400, 400)) == pytest.approx(0.25)
    # union of two boxes, overlapping boxes are not counted twice
    assert heatmap_mass_in_boxes(
        hm, [(0, 0, 100, 100), (0, 0, 60, 60), (300, 300, 400, 400)], (400, 400)
    ) == pytest.approx(1.0)
    # box given with swapped corners
    assert heatmap_mass_in_boxes(hm, [(100, 100, 0, 0)], (400, 400)) == pytest.approx(0.75)
    # nothing inside
    assert heatmap_mass_in_boxes(hm, [(120, 120, 280, 280)], (400, 400)) == 0.0


def test_mass_in_boxes_landscape_photo_uses_centre_square():
    # 600x400 photo: the model sees x in [100, 500); a 2x2 map has cells of 200 px.
    hm = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert crop_square((600, 400)) == (100.0, 0.0, 400.0)
    # left-top cell centre is (200, 100) in photo pixels
    assert heatmap_mass_in_boxes(hm, [(150, 50, 250, 150)], (600, 400)) == pytest.approx(0.5)
    # a box in the cropped-away left margin holds nothing
    assert heatmap_mass_in_boxes(hm, [(0, 0, 100, 400)], (600, 400)) == 0.0


def test_mass_in_boxes_none_without_boxes_or_heat():
    assert heatmap_mass_in_boxes(np.ones((3, 3)), [], (10, 10)) is None
    assert heatmap_mass_in_boxes(np.zeros((3, 3)), [(0, 0, 5, 5)], (10, 10)) is None


def test_shared_scale_and_overlay_geometry():
    a = HeatMap("sub", "mel", 0, np.full((8, 8), 0.5, np.float32))
    b = HeatMap("meta", "melanocytic", 0, np.full((8, 8), 2.0, np.float32))
    assert shared_scale([a, b]) == 2.0
    ov = render_overlay(a.cam, 2.0, (1200, 800), max_side=600)
    assert ov.mode == "RGBA" and ov.size == (600, 400)
    px = np.asarray(ov)
    assert px[:, :100, 3].max() == 0 and px[:, 500:, 3].max() == 0  # outside the centre square
    assert px[200, 300, 3] > 0
    # the same raw value gives the same colour on a shared scale; a hotter map is more opaque
    hot = np.asarray(render_overlay(b.cam, 2.0, (1200, 800), max_side=600))
    assert hot[200, 300, 3] > px[200, 300, 3]


def test_gradcam_on_tiny_model(tiny_model_dir):
    from inference.ml.predict import Predictor

    P = Predictor.load(tiny_model_dir)
    img = Image.new("RGB", (50, 40), (120, 70, 40))
    subs = P.taxonomy.sub_classes[:3]
    maps = explain(P, img, subs, [P.taxonomy.meta_classes[0]])
    assert [(m.kind, m.target, m.rank) for m in maps] == [("sub", s, i) for i, s in enumerate(subs)] + [
        ("meta", P.taxonomy.meta_classes[0], 0)
    ]
    assert all(m.cam.shape == (32, 32) and (m.cam >= 0).all() for m in maps)
    # weights stay frozen after Grad-CAM
    assert not any(p.requires_grad for p in P.fine_model.parameters())
    assert not any(p.requires_grad for p in P.coarse_model.parameters())


def test_trunk_once_equals_plain_batched_gradcam(tiny_model_dir):
    """The fast path (trunk once, targets batched after it) gives the same maps as pytorch-grad-cam
    on a plain batched input."""
    from inference.ml.predict import Predictor

    P = Predictor.load(tiny_model_dir)

    class Plain(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(x)

    x = P.preprocess(Image.new("RGB", (40, 40), (30, 20, 20)))
    targets = list(range(len(P.taxonomy.sub_classes)))
    fast = _cams(P.fine_model, P.gradcam_layer_name, x, targets)
    slow = _cams(Plain(P.fine_model), "m." + P.gradcam_layer_name, x, targets)
    np.testing.assert_allclose(fast, slow, rtol=1e-4, atol=1e-7)
    assert fast.max() > 0
    assert len({m.tobytes() for m in fast}) > 1  # different targets, different maps


@pytest.mark.parametrize(
    "spec",
    [
        "gradcam@head",
        "gradcam++@head",
        "layercam@head",
        "hirescam@head",
        "layercam@block:-2",
        "layercam@stride:16",
        "gradcam@head+block:1",
        "hirescam@head,flip,smooth=0.05",
    ],
)
def test_every_cam_setting_gives_maps_of_the_model_input_size(tiny_model_dir, spec):
    from inference.ml.explain import CamSettings
    from inference.ml.predict import Predictor

    P = Predictor.load(tiny_model_dir)
    img = Image.new("RGB", (50, 40), (120, 70, 40))
    img.paste((30, 20, 20), (15, 10, 35, 30))
    subs = P.taxonomy.sub_classes[:3]
    cfg = CamSettings.parse(spec)
    assert cfg.spec == spec
    maps = explain(P, img, subs, [P.taxonomy.meta_classes[0]], cfg)
    assert [(m.kind, m.target) for m in maps] == [("sub", s) for s in subs] + [("meta", P.taxonomy.meta_classes[0])]
    assert all(m.cam.shape == (P.size, P.size) and m.cam.dtype == np.float32 and (m.cam >= 0).all() for m in maps)
    assert not any(p.requires_grad for p in P.fine_model.parameters())


def test_default_settings_are_the_plain_call(tiny_model_dir):
    from inference.ml.explain import DEFAULT
    from inference.ml.predict import Predictor

    P = Predictor.load(tiny_model_dir)
    img = Image.new("RGB", (40, 40), (160, 90, 60))
    a = explain(P, img, P.taxonomy.sub_classes[:2])
    b = explain(P, img, P.taxonomy.sub_classes[:2], (), DEFAULT)
    assert all(np.array_equal(x.cam, y.cam) for x, y in zip(a, b))


def test_flip_averaged_map_of_a_mirrored_photo_is_the_mirrored_map(tiny_model_dir):
    from inference.ml.explain import CamSettings
    from inference.ml.predict import Predictor

    P = Predictor.load(tiny_model_dir)
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    cfg = CamSettings(flip=True)
    a = explain(P, img, P.taxonomy.sub_classes[:2], (), cfg)
    b = explain(P, img.transpose(Image.FLIP_LEFT_RIGHT), P.taxonomy.sub_classes[:2], (), cfg)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.cam, y.cam[:, ::-1], rtol=1e-4, atol=1e-6)
    plain = explain(P, img, P.taxonomy.sub_classes[:2])
    assert any(not np.allclose(x.cam, p.cam) for x, p in zip(a, plain))  # flip changes the map


def test_trunk_once_equals_plain_batched_at_an_earlier_block_and_for_several_layers(tiny_model_dir):
    """With target layers inside the blocks, only the blocks before the first one run without grad;
    the maps equal pytorch-grad-cam on a plain batched input, for every method."""
    from inference.ml.explain import METHODS, _OnceTrunk
    from inference.ml.predict import Predictor

    P = Predictor.load(tiny_model_dir)

    class Plain(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(x)

    assert _OnceTrunk.cut_for(P.fine_model, ["backbone.head", "backbone.blocks.2"]) == 2
    assert _OnceTrunk.cut_for(Plain(P.fine_model), ["m.backbone.head"]) is None
    x = P.preprocess(Image.fromarray(np.random.default_rng(2).integers(0, 255, (40, 40, 3), dtype=np.uint8)))
    targets = list(range(len(P.taxonomy.sub_classes)))
    for method in METHODS:
        for names in (["backbone.blocks.2"], ["backbone.blocks.1", "backbone.head"]):
            fast = _cams(P.fine_model, names, x, targets, method)
            slow = _cams(Plain(P.fine_model), ["m." + n for n in names], x, targets, method)
            np.testing.assert_allclose(fast, slow, rtol=1e-4, atol=1e-6, err_msg=f"{method} {names}")
            assert fast.shape == (len(targets), P.size, P.size)


def test_cam_settings_refuse_bad_specs(tiny_model_dir):
    from inference.ml.explain import CamSettings, layer_names
    from inference.ml.predict import Predictor

    with pytest.raises(ValueError, match="unknown CAM method 'scorecam'"):
        CamSettings.parse("scorecam@head")
    assert CamSettings.parse("layercam@stride:16").layers == ("stride:16",)
    with pytest.raises(ValueError, match="layer 'conv3'"):
        CamSettings.parse("gradcam@conv3")
    with pytest.raises(ValueError, match="unknown option 'blur'"):
        CamSettings.parse("gradcam@head,blur")
    with pytest.raises(ValueError, match="smooth must be"):
        CamSettings(smooth=1.5)
    P = Predictor.load(tiny_model_dir)
    n = len(P.fine_model.backbone.blocks)
    assert layer_names(P.fine_model, ["head", "block:-1", "block:0"]) == [
        "backbone.head",
        f"backbone.blocks.{n - 1}",
        "backbone.blocks.0",
    ]
    with pytest.raises(ValueError, match=f"the model has {n} blocks"):
        layer_names(P.fine_model, [f"block:{n}"])
    # tiny network: stem stride 2, then blocks of stride 1, 2, 2, 2
    assert layer_names(P.fine_model, ["stride:16", "stride:8", "stride:2"]) == [
        "backbone.blocks.3",
        "backbone.blocks.2",
        "backbone.blocks.0",
    ]
    with pytest.raises(ValueError, match=r"output strides \[2, 4, 8, 16\]"):
        layer_names(P.fine_model, ["stride:32"])


def test_environment_chooses_the_default_settings(tiny_model_dir, monkeypatch):
    from inference.ml.explain import DEFAULT, ENV, CamSettings, default_settings
    from inference.ml.predict import Predictor

    monkeypatch.delenv(ENV, raising=False)
    assert default_settings() == DEFAULT
    monkeypatch.setenv(ENV, "layercam@head,flip")
    assert default_settings() == CamSettings("layercam", ("head",), flip=True) != DEFAULT
    P = Predictor.load(tiny_model_dir)
    img = Image.fromarray(np.random.default_rng(3).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    a = explain(P, img, P.taxonomy.sub_classes[:2])
    b = explain(P, img, P.taxonomy.sub_classes[:2], (), CamSettings("layercam", ("head",), flip=True))
    assert all(np.array_equal(x.cam, y.cam) for x, y in zip(a, b))
    monkeypatch.setenv(ENV, "scorecam@head")
    with pytest.raises(ValueError, match="DERM_ML_CAM='scorecam@head': unknown CAM method"):
        explain(P, img, P.taxonomy.sub_classes[:1])
