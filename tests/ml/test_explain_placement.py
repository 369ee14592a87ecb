"""Grad-CAM placement bench (bench/gradcam_placement.py, bench/_lesion_boxes.py): lesion boxes made
in code on generated photos, box files, the placement metrics on hand-made maps, and a run on a
tiny trained model."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inference.ml.explain import heatmap_mass_in_boxes, peak_in_boxes

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name):
    import sys

    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


boxes_mod = _load("_lesion_boxes")
placement = _load("gradcam_placement")


def skin_photo(w=300, h=225, disc=None, vignette=False, seed=0):
    """Noisy skin-coloured photo; ``disc`` = (cx, cy, r) draws a dark brown lesion."""
    rng = np.random.default_rng(seed)
    a = np.full((h, w, 3), (215, 165, 150), np.float32) + rng.normal(0, 8, (h, w, 3))
    yy, xx = np.mgrid[:h, :w]
    if disc:
        cx, cy, r = disc
        m = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        a[m] = np.array((95, 60, 45), np.float32) + rng.normal(0, 8, (int(m.sum()), 3))
    if vignette:  # the dermoscope's black field stop in the corners
        a[(xx - w / 2) ** 2 / (0.62 * w) ** 2 + (yy - h / 2) ** 2 / (0.62 * h) ** 2 > 1] = 5
    return Image.fromarray(a.clip(0, 255).astype(np.uint8))


@pytest.mark.parametrize("disc, vignette", [((150, 112, 40), False), ((130, 100, 25), False), ((165, 120, 45), True)])
def test_lesion_box_surrounds_a_dark_disc_on_skin(disc, vignette):
    cx, cy, r = disc
    box, status = boxes_mod.lesion_box(skin_photo(disc=disc, vignette=vignette))
    assert status == "ok"
    x0, y0, x1, y1 = box
    tol = 0.25 * r + 3  # smoothing at the working resolution widens the box a little
    for got, want in zip(box, (cx - r, cy - r, cx + r, cy + r)):
        assert abs(got - want) <= tol, (box, disc)
    assert x0 < cx < x1 and y0 < cy < y1


def test_lesion_box_gives_up_without_a_lesion():
    box, status = boxes_mod.lesion_box(skin_photo())
    assert box is None and status != "ok"


def test_read_boxes_from_voc_folder_and_csv(tmp_path):
    voc = tmp_path / "voc"
    voc.mkdir()
    (voc / "a.xml").write_text(
        "<annotation><filename>a.jpg</filename><object><name>mel</name><bndbox><xmin>1</xmin><ymin>2</ymin>"
        "<xmax>30</xmax><ymax>40</ymax></bndbox></object><object><name>nv</name><bndbox><xmin>5</xmin>"
        "<ymin>6</ymin><xmax>7</xmax><ymax>8</ymax></bndbox></object></annotation>"
    )
    assert boxes_mod.read_boxes(voc) == {"a.jpg": [(1, 2, 30, 40), (5, 6, 7, 8)]}
    rows = [
        {"image": "images/b.jpg", "width": 10, "height": 10, "x0": 1, "y0": 1, "x1": 9, "y1": 9, "status": "ok"},
        {
            "image": "images/c.jpg",
            "width": 10,
            "height": 10,
            "x0": "",
            "y0": "",
            "x1": "",
            "y1": "",
            "status": "no region above the threshold",
        },
    ]
    boxes_mod.write_boxes_csv(tmp_path / "boxes.csv", rows)
    assert boxes_mod.read_boxes(tmp_path / "boxes.csv") == {"b.jpg": [(1, 1, 9, 9)]}


def test_read_boxes_names_the_bad_file_and_row(tmp_path):
    (tmp_path / "bad.csv").write_text("image,x0,y0,x1,y1\na.jpg,1,2,3,4\nb.jpg,1,x,3,4\n")
    with pytest.raises(ValueError, match=r"bad.csv, row 3: x0/y0/x1/y1 must be numbers"):
        boxes_mod.read_boxes(tmp_path / "bad.csv")
    (tmp_path / "cols.csv").write_text("image,left\na.jpg,1\n")
    with pytest.raises(ValueError, match="needs columns"):
        boxes_mod.read_boxes(tmp_path / "cols.csv")
    voc = tmp_path / "voc"
    voc.mkdir()
    (voc / "x.xml").write_text("<annotation><object><bndbox><xmin>1</xmin></bndbox></object></annotation>")
    with pytest.raises(ValueError, match=r"x.xml: object 1 lacks a numeric bndbox"):
        boxes_mod.read_boxes(voc)


def test_placement_metrics_on_hand_made_maps():
    box = [(100, 100, 300, 300)]  # photo 400x400, map 8x8: cells of 50 px
    inside = np.zeros((8, 8))
    inside[3:5, 3:5] = 1.0
    inside[2, 2] = 0.5
    assert heatmap_mass_in_boxes(inside, box, (400, 400)) == pytest.approx(1.0)
    assert peak_in_boxes(inside, box, (400, 400)) == 1.0
    outside = inside.copy()
    outside[0, 7] = 3.0  # the peak is in the top-right corner
    assert peak_in_boxes(outside, box, (400, 400)) == 0.0
    assert heatmap_mass_in_boxes(outside, box, (400, 400)) == pytest.approx(4.5 / 7.5)
    flat = np.ones((8, 8))  # all cells tie: the share of them inside the box
    assert peak_in_boxes(flat, box, (400, 400)) == pytest.approx(16 / 64)
    assert peak_in_boxes(np.zeros((8, 8)), box, (400, 400)) is None
    assert peak_in_boxes(inside, [], (400, 400)) is None
    s = placement.map_scores([inside, outside, np.zeros((8, 8))], box, (400, 400))
    assert s["mass_sub1"] == pytest.approx(1.0) and s["hit_sub1"] == 1.0
    assert s["mass_meta"] == 0.0 and s["hit_meta"] == 0.0 and s["empty"] == 1  # empty map: 0 and a miss
    assert s["hit"] == pytest.approx(1 / 3)


def test_bootstrap_intervals():
    m, lo, hi = placement.bootstrap_ci([0.2, 0.4, 0.6, 0.8], boot=500)
    assert m == pytest.approx(0.5) and lo < 0.5 < hi
    d = placement.paired_ci([0.1, 0.5, 0.9], [0.3, 0.7, 1.1], boot=500)  # the same +0.2 on every photo
    assert d == pytest.approx((0.2, 0.2, 0.2))


def test_reference_maps_score_as_expected():
    refs = placement.reference_maps(64)
    box = [(16, 16, 48, 48)]  # the central quarter of a 64x64 photo
    assert heatmap_mass_in_boxes(refs["uniform"], box, (64, 64)) == pytest.approx(0.25)
    assert peak_in_boxes(refs["centre"], box, (64, 64)) == 1.0


def test_bench_runs_on_a_tiny_model(tmp_path, taxonomy_file):
    from inference.ml.train import TrainConfig, train

    from .conftest import make_dataset

    data = make_dataset(tmp_path / "data", n_per_class=8, size=48)
    model = train(
        TrainConfig(
            data=str(data),
            taxonomy=str(taxonomy_file),
            out=str(tmp_path / "model"),
            backbone="tiny",
            image_size=32,
            epochs=1,
            coarse_epochs=1,
            batch_size=8,
            cache_dir="",
            threads=1,
            fine_models=1,
        )
    )
    logs = []
    res = placement.run(
        model,
        data,
        n=3,
        variants=["gradcam@head", "layercam@head+block:-2,flip", "gradcam@block:-9"],
        results=tmp_path / "res",
        boot=200,
        log=logs.append,
    )
    assert any("skipping gradcam@block:-9" in line for line in logs)  # the tiny network has 4 blocks
    assert set(res["summary"]) == {"uniform", "centre", "gradcam@head", "layercam@head+block:-2,flip"}
    held_out = set(json.loads((model / "model.json").read_text())["split"]["test_cases"])
    assert 0 < res["n"] <= 3
    for row in res["photos"]:
        assert Path(row["image"]).name in _images_of_cases(data, held_out)  # held-out photos only
        for v in ("gradcam@head", "layercam@head+block:-2,flip"):
            s = row["variants"][v]
            assert (
                0 <= s["mass"] <= 1 and 0 <= s["hit"] <= 1 and s["serve_ms"] > s["cam_ms"] > 0 and s["serve_cpu_ms"] > 0
            )
    assert "d_mass" in res["summary"]["layercam@head+block:-2,flip"]
    saved = json.loads((tmp_path / "res" / "gradcam_placement_model.json").read_text())
    assert saved["n"] == res["n"]
    box_rows = (tmp_path / "res" / "gradcam_boxes_model.csv").read_text().splitlines()
    assert box_rows[0] == ",".join(boxes_mod.BOX_FIELDS) and len(box_rows) >= res["n"] + 1

    # the proposal bench on the same boxes (as a reader's CSV), also with the photos further away
    boxes_csv = tmp_path / "res" / "gradcam_boxes_model.csv"
    for extra in ([], ["--further-away"]):
        out = _load("proposal_iou").main(
            [str(model), str(data), "--n", "3", "--boxes", str(boxes_csv), "--results", str(tmp_path / "res"), *extra]
        )
        assert set(out) == {(k, m) for k in ("outline", 0.3, 0.5) for m in ("model", "centre")}
        assert all(len(v) == res["n"] and all(0 <= x <= 1 for x in v) for v in out.values())
    # contact sheets for drawing boxes by eye: the held-out photos, in the order the benches take them
    assert _load("box_sheets").main([str(model), str(data), "--n", "5", "--out", str(tmp_path / "sheets")]) == 0
    names = (tmp_path / "sheets" / "list.txt").read_text().split()
    assert 0 < len(names) <= 5 and set(names) <= set(_images_of_cases(data, held_out))
    assert (tmp_path / "sheets" / "sheet00.png").exists()
    assert (tmp_path / "sheets" / "boxes-template.csv").read_text().count("\n") == len(names) + 1


def _images_of_cases(data, cases):
    import csv

    with open(data / "labels.csv") as f:
        return [r["image"] for r in csv.DictReader(f) if r["case_id"] in cases]


def test_probe_artefact_keeps_the_held_out_cases_out(tmp_path):
    """bench/probe_artefact.py: heads fitted on training-split photos only; the artefact loads and
    its held-out photos are what the placement bench measures."""
    import csv

    from inference.ml.evaluate import artefact_records
    from inference.ml.predict import Predictor

    probe = _load("probe_artefact")
    rng = np.random.default_rng(0)
    (tmp_path / "data" / "images").mkdir(parents=True)
    colours = {
        "nv": (120, 70, 40),
        "mel": (30, 20, 20),
        "akiec": (200, 90, 90),
        "bcc": (230, 180, 190),
        "bkl": (150, 120, 60),
        "df": (170, 110, 90),
        "vasc": (190, 20, 60),
    }
    rows = []
    for label, c in colours.items():
        for i in range(10):
            a = np.full((40, 40, 3), (205, 160, 140), np.float32) + rng.normal(0, 10, (40, 40, 3))
            a[12:28, 12:28] = c
            name = f"{label}_{i}.jpg"
            Image.fromarray(a.clip(0, 255).astype(np.uint8)).save(tmp_path / "data" / "images" / name)
            rows.append((name, label, f"{label}_case{i}"))
    with open(tmp_path / "data" / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows([("image", "label", "case_id"), *rows])
    logs = []
    out = probe.build(tmp_path / "data", tmp_path / "probe", per_class=3, size=64, log=logs.append)
    man = json.loads((out / "model.json").read_text())
    held_out = set(man["split"]["test_cases"])
    assert 0 < len(held_out) < len(rows)
    P = Predictor.load(out)
    recs, scope, _ = artefact_records(P, tmp_path / "data", "test")
    assert scope == "held-out split of the training data" and {r.case_id for r in recs} == held_out
    d = P.predict_one(Image.open(tmp_path / "data" / "images" / "mel_0.jpg"))
    assert abs(sum(r.probability for r in d.ranked) - 1) < 1e-4
    assert "balanced accuracy" in logs[-1]
