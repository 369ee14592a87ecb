"""Int8 serving: stored calibration reproduces the direct conversion; artefacts carry it; the
predictor serves it close to float32; a missing calibration is a clear error; `calibrate` adds it."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from inference.ml import quantize as Q
from inference.ml.errors import ArtefactError
from inference.ml.networks import Classifier
from inference.ml.predict import Predictor
from inference.ml.train import TrainConfig, train

from .test_pipeline import FAST


def test_stored_calibration_gives_the_directly_converted_model():
    from torch.ao.quantization.quantize_fx import convert_fx

    torch.manual_seed(0)
    m = Classifier("tiny", 5).eval()
    xs = [torch.randn(6, 3, 32, 32) for _ in range(3)]
    state = Q.calibration_state(m, xs, 32)
    assert state and all("activation_post_process" in k for k in state)
    direct = Q._prepared(m, 32)
    with torch.no_grad():
        for x in xs:
            direct(x)
    direct = convert_fx(direct)
    q = Q.quantized(m, {k: v.clone() for k, v in state.items()}, 32)
    with torch.inference_mode():
        (lq, fq), (ld, fd) = q(xs[0]), direct(xs[0])
        lf, ff = Q.WithFeatures(m)(xs[0])
    assert torch.equal(lq, ld) and torch.equal(fq, fd)
    assert lq.dtype == torch.float32 and fq.shape == ff.shape
    assert not torch.equal(lq, lf)  # it is quantized ...
    assert (lq.softmax(1) - lf.softmax(1)).abs().max() < 0.05  # ... and close to float
    # round trip through the artefact's flat format
    assert Q.unpack(Q.pack({"fine.0": state}))["fine.0"].keys() == state.keys()
    with pytest.raises(ValueError, match="does not fit this model"):
        Q.quantized(Classifier("efficientnet_lite0", 5).eval(), state, 32)


def test_artefact_serves_int8(tmp_path, taxonomy_file, tiny_data):
    from inference.ml.cli import main

    plain = train(TrainConfig(data=str(tiny_data), taxonomy=str(taxonomy_file), out=str(tmp_path / "p"), **FAST))
    assert not (plain / Q.FILE).exists()  # opt-in: no calibration by default
    assert json.loads((plain / "model.json").read_text())["int8_calibration"] is None
    out = train(
        TrainConfig(
            data=str(tiny_data),
            taxonomy=str(taxonomy_file),
            out=str(tmp_path / "m"),
            int8_calibration_images=256,
            **FAST,
        )
    )
    man = json.loads((out / "model.json").read_text())
    assert (out / Q.FILE).is_file()
    assert man["int8_calibration"] == {"file": Q.FILE, "images": man["data"]["n_train"], "source": "training split"}
    imgs = [Image.open(p).convert("RGB") for p in sorted((tiny_data / "images").glob("*.jpg"))]
    P32, P8 = Predictor.load(out, precision="fp32"), Predictor.load(out, precision="int8")
    assert P8.precision == "int8"
    u8 = torch.stack([P32.to_uint8(im) for im in imgs])
    f32, c32, _ = P32.probabilities(u8)
    f8, c8, feat8 = P8.probabilities(u8)
    assert np.abs(f8 - f32).max() > 0  # int8 ran
    assert np.abs(f8 - f32).max() < 0.1 and np.abs(c8 - c32).max() < 0.1
    assert (f8.argmax(1) == f32.argmax(1)).mean() >= 0.9
    d = P8.predict_one(imgs[0])
    assert abs(sum(r.probability for r in d.ranked) - 1) < 1e-4 and np.isfinite(d.ood_score)

    (out / Q.FILE).unlink()
    with pytest.raises(ArtefactError, match="int8.safetensors is missing.*inference.ml calibrate"):
        Predictor.load(out, precision="int8")
    assert Predictor.load(out, precision="fp32").precision == "fp32"  # float serving does not need it
    with pytest.MonkeyPatch.context() as mp:  # a server-wide preference falls back
        mp.setenv("DERM_ML_PRECISION", "int8")
        assert Predictor.load(out).precision in ("fp32", "bf16")
    assert main(["calibrate", "--model", str(out), "--data", str(tiny_data), "--images", "12"]) == 0
    man = json.loads((out / "model.json").read_text())
    assert man["int8_calibration"] == {"file": Q.FILE, "images": 12, "source": "training split"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DERM_ML_PRECISION", "int8")
        assert Predictor.load(out).precision == "int8"
    f8b, _, _ = Predictor.load(out, precision="int8").probabilities(u8)
    assert np.abs(f8b - f32).max() < 0.1
