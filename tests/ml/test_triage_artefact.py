"""Triage through a real (tiny) artefact: fit_triage writes triage.json + held-out outputs + detector,
the predictor serves calibrated probabilities and a tier, a clinical photo against a dermoscopic model
abstains, thresholds recompute from the stored outputs, older artefacts keep working, CLI contract."""

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from inference.ml import triage as tri
from inference.ml.predict import Predictor
from inference.ml.train import TrainConfig, train
from inference.ml.triage_fit import fit_triage

from .conftest import make_dataset

FAST = {
    "backbone": "tiny",
    "image_size": 32,
    "epochs": 2,
    "coarse_epochs": 1,
    "batch_size": 8,
    "cache_dir": "",
    "threads": 1,
    "fine_models": 1,
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, request):
    import json as _json

    from .conftest import TAX

    root = tmp_path_factory.mktemp("triage")
    data = make_dataset(root / "data", n_per_class=12)
    (root / "tax.json").write_text(_json.dumps(TAX))
    out = train(
        TrainConfig(data=str(data), taxonomy=str(root / "tax.json"), out=str(root / "plain"), triage=False, **FAST)
    )
    return root, data, out


def test_training_writes_the_triage_calibration(trained, tmp_path):
    """train() ends with fit_triage on its held-out split: the artefact serves tiers without a calibrate step."""
    root, data, _plain = trained
    out = train(
        TrainConfig(
            data=str(data), taxonomy=str(root / "tax.json"), out=str(tmp_path / "t"), modality="clinical", **FAST
        )
    )
    stored = json.loads((out / tri.FILE).read_text())
    assert stored["modality"] == "clinical" and stored["modality_source"] == "given"
    d = Predictor.load(out).predict_one(photo(), modality="clinical")
    assert d.calibrated is True and d.triage["abstain"] in (None, "unfamiliar")
    assert Predictor.load(out).predict_one(photo(), modality="dermoscopic").triage["abstain"] == "modality"


def photo(colour=(200, 40, 40), size=40):
    im = np.full((size, size, 3), 128, np.uint8)
    im[10:30, 10:30] = colour
    return Image.fromarray(im)


def test_fit_triage_round_trip_and_predictor_contract(trained, tmp_path):
    _root, data, plain = trained
    m = tmp_path / "m"
    shutil.copytree(plain, m)
    # an artefact without triage.json serves as before, tier None with the reason
    d0 = Predictor.load(m).predict_one(photo())
    assert d0.triage["tier"] is None and d0.triage["reason"] == tri.NO_CALIBRATION and d0.calibrated is False
    assert d0.ranked[0].uncalibrated_probability is None
    cfg = fit_triage(m, data)
    for f in (tri.FILE, tri.HELDOUT_FILE, tri.OOD_FILE):
        assert (m / f).is_file()
    stored = json.loads((m / tri.FILE).read_text())
    assert stored["modality"] == "dermoscopic" and stored["modality_source"].startswith("default")
    assert stored["temperature"] == pytest.approx(cfg["temperature"]) and stored["temperature"] > 0
    c = stored["calibration"]
    assert 0 <= c["ece_after"] <= 1 and 0 <= c["ece_before"] <= 1 and c["nll_after"] <= c["nll_before"] + 1e-9
    assert (
        len(c["reliability_after"]) == 15 and sum(b["count"] for b in c["reliability_after"]) == stored["heldout"]["n"]
    )
    assert stored["targets"] == {"urgent": 0.9, "malignant": 0.95, "high_grade": 0.98}
    assert stored["heldout"]["high_grade"]["threshold"] == stored["thresholds"]["malignant"]
    assert set(stored["thresholds"]) == {"urgent", "malignant"}
    assert stored["heldout"]["urgent"]["n_pos"] > 0 and stored["ood"]["heldout_false_alarm"] <= 0.05
    assert stored["tiers"]["urgent"] == ["red"] and stored["tiers"]["refer"] == ["red", "blue"]
    # the stored held-out outputs give back the stored thresholds, and other targets move them
    again = tri.thresholds_for_targets(m, urgent=0.9, malignant=0.95)
    assert again["thresholds"] == pytest.approx(stored["thresholds"])
    strict = tri.thresholds_for_targets(m, urgent=1.0, malignant=1.0)
    assert strict["urgent"]["sensitivity"] == 1.0 and strict["malignant"]["sensitivity"] == 1.0
    h = tri.load_heldout(m)
    assert stored["with_metadata"] is False and np.array_equal(h["log_fused"], h["log_fused_photo"])
    assert h["log_fused"].shape == (stored["heldout"]["n"], 4) and h["labels"].shape == (stored["heldout"]["n"],)
    # the predictor: calibrated probabilities, a tier, abstention for another modality
    P = Predictor.load(m)
    d = P.predict_one(photo())
    assert d.calibrated is True and d.triage["tier"] in ("urgent", "refer", "routine", None)
    assert sum(r.probability for r in d.ranked) == pytest.approx(1.0, abs=1e-6)
    assert d.ranked[0].uncalibrated_probability is not None
    assert d.triage["model_modality"] == "dermoscopic" and d.triage["thresholds"] == pytest.approx(stored["thresholds"])
    assert d.triage["unfamiliar_threshold"] == pytest.approx(stored["ood"]["threshold"])
    if d.triage["tier"] is not None and d.ranked[0].sub_class == "red":
        assert d.triage["tier"] == "urgent"
    cl = P.predict_one(photo(), modality="clinical")
    assert cl.triage["tier"] is None and cl.triage["abstain"] == "modality"
    assert "this model was trained on dermoscopic photos" in cl.triage["reason"]
    assert P.predict_one(photo(), modality="Dermoscopy").triage["abstain"] != "modality"
    # per-site thresholds: at 0 everything graded is urgent, the block echoes them
    ds = P.predict([photo(), photo((40, 180, 60))], thresholds={"urgent": 0.0, "malignant": 0.0})
    for x in ds:
        assert x.triage["thresholds"] == {"urgent": 0.0, "malignant": 0.0}
        assert x.triage["tier"] in ("urgent", None)
    as_dict = d.to_dict()
    assert as_dict["calibrated"] is True and {"tier", "reason", "thresholds"} <= set(as_dict["triage"])
    json.dumps(as_dict)
    # a noise picture the detector calls unfamiliar gets no tier
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    dn = P.predict_one(noise)
    assert dn.looks_unfamiliar == dn.triage["unfamiliar"]
    if dn.triage["unfamiliar"]:
        assert dn.triage["tier"] is None and dn.triage["abstain"] == "unfamiliar"


def test_modality_column_and_bad_data(trained, tmp_path):
    _root, data, plain = trained
    m = tmp_path / "m"
    shutil.copytree(plain, m)
    d2 = tmp_path / "data"
    shutil.copytree(data, d2)
    with open(d2 / "labels.csv", newline="") as f:
        rows = list(csv.reader(f))
    with open(d2 / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(rows[0] + ["modality"])
        w.writerows(r + ["clinical"] for r in rows[1:])
    with pytest.raises(ValueError, match="disagrees with the data's modality column"):
        fit_triage(m, d2, modality="dermoscopic")
    assert not (m / tri.FILE).exists()
    cfg = fit_triage(m, d2)
    assert cfg["modality"] == "clinical" and cfg["modalities"] == ["clinical"]
    d = Predictor.load(m).predict_one(photo(), modality="dermoscopic")
    assert d.triage["tier"] is None and "trained on clinical photos" in d.triage["reason"]
    other = make_dataset(tmp_path / "other", n_per_class=5, seed=3)
    with pytest.raises(ValueError, match="not this model's training data"):
        fit_triage(m, other)


def test_cli_calibrate_and_predict_json(trained, tmp_path, capsys):
    from inference.ml.cli import main

    _root, data, plain = trained
    m = tmp_path / "m"
    shutil.copytree(plain, m)
    img = tmp_path / "x.png"
    photo().save(img)
    assert main(["predict", "--model", str(m), "--json", str(img)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["triage"]["tier"] is None and out[0]["triage"]["reason"] == tri.NO_CALIBRATION
    assert main(["calibrate", "--model", str(m), "--data", str(data), "--urgent-sensitivity", "0.8"]) == 0
    r = capsys.readouterr().out
    assert "ECE" in r and "urgent" in r and not (m / "int8.safetensors").exists()
    assert json.loads((m / tri.FILE).read_text())["targets"]["urgent"] == 0.8
    assert main(["predict", "--model", str(m), "--json", "--modality", "clinical", str(img)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["calibrated"] is True and out[0]["triage"]["tier"] is None
    assert "trained on dermoscopic photos" in out[0]["triage"]["reason"]
    assert main(["predict", "--model", str(m), str(img)]) == 0
    assert "triage:" in capsys.readouterr().out


def test_bench_triage_runs_on_a_calibrated_artefact(trained, tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "bench_triage", Path(__file__).resolve().parents[2] / "bench" / "triage.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    _root, data, plain = trained
    m = tmp_path / "m"
    shutil.copytree(plain, m)
    fit_triage(m, data)
    res = bench.main(
        [str(m), str(data), "--repeats", "2", "--limit", "6", "--far", "2", "--json", str(tmp_path / "b.json")]
    )
    out = capsys.readouterr().out
    assert "in-sample" in out and "cross-fitted" in out and "far | drawing of a house" in out
    # cross-fitting: every held-out photo judged once per repeat, by settings fitted on the other half
    assert len(res["crossfit"]) == 2 and len(res["crossfit"][0]["temperatures"]) == 2
    assert res["in_sample"]["urgent_sensitivity"] >= 0.9
    for name, s in res["shifts"].items():
        if name != "in_distribution_flagged":
            assert 0 <= s["auroc"]["combined"] <= 1 and s["n"] > 0
    assert json.loads((tmp_path / "b.json").read_text())["targets_met"].keys() == res["targets_met"].keys()


def test_fit_triage_with_a_metadata_model(tmp_path, taxonomy_file):
    data = make_dataset(tmp_path / "ham", n_per_class=8, fmt="ham10000")
    out = train(TrainConfig(data=str(data), taxonomy=str(taxonomy_file), out=str(tmp_path / "m"), **FAST))
    assert (out / "metadata.json").is_file()
    cfg = fit_triage(out, data)
    h = tri.load_heldout(out)
    assert cfg["with_metadata"] is True and h["log_fused"].shape == h["log_fused_photo"].shape
    d = Predictor.load(out).predict_one(photo(), metadata={"age": 50, "sex": "male", "site": "trunk"})
    assert d.calibrated and "metadata_used" in d.extra
