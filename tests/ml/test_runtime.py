"""Float32 serving through ONNX Runtime gives PyTorch's probabilities, and PyTorch still serves
when ONNX Runtime is asked not to or cannot."""

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from inference.ml.networks import native_bf16
from inference.ml.predict import Predictor
from inference.ml.runtime import OrtModel, resolve_runtime
from inference.ml.train import TrainConfig, train

from .test_pipeline import FAST


@pytest.fixture
def model_dir(tmp_path, taxonomy_file, tiny_data):
    return train(
        TrainConfig(
            data=str(tiny_data),
            taxonomy=str(taxonomy_file),
            out=str(tmp_path / "m"),
            **{**FAST, "fine_models": 2, "freeze_transferred": False},
        )
    )


def test_onnxruntime_serves_the_probabilities_of_pytorch(model_dir, monkeypatch):
    monkeypatch.delenv("DERM_ML_RUNTIME", raising=False)
    ort = Predictor.load(model_dir, precision="fp32")
    eager = Predictor.load(model_dir, precision="fp32", runtime="torch")
    assert (ort.runtime, eager.runtime) == ("onnxruntime", "torch")
    assert all(isinstance(m, OrtModel) for m in [*ort._fast_fines, ort._fast_coarse])
    assert len(ort._fast_fines) == 2
    g = torch.Generator().manual_seed(0)
    for n, size in [(1, 32), (5, 32), (3, 48)]:  # batch, height and width are free
        u8 = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
        for a, b in zip(ort.probabilities(u8), eager.probabilities(u8)):
            assert a.shape == b.shape and a.dtype == np.float32
            np.testing.assert_allclose(a, b, atol=1e-5)
    # the whole ranked differential, with the OOD score from the features
    photos = [np.random.default_rng(i).integers(0, 256, (40, 40, 3), dtype=np.uint8) for i in range(3)]
    photos = [Image.fromarray(p) for p in photos]
    for da, db in zip(ort.predict(photos), eager.predict(photos)):
        assert [r.sub_class for r in da.ranked] == [r.sub_class for r in db.ranked]
        assert da.ood_score == pytest.approx(db.ood_score, abs=1e-5)


def test_one_session_per_thread_count(model_dir):
    P = Predictor.load(model_dir, precision="fp32", runtime="onnxruntime")
    m = P._fast_coarse
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        x = torch.rand(2, 3, 32, 32)
        one = m(x)[0]
        torch.set_num_threads(2)
        two = m(x)[0]
    finally:
        torch.set_num_threads(before)
    assert {1, 2} <= set(m._sessions)
    assert m._sessions[1].get_session_options().intra_op_num_threads == 1
    torch.testing.assert_close(one, two, atol=1e-5, rtol=0)


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_probabilities_are_arrays_of_their_own(model_dir, runtime):
    """Triage calibration keeps every held-out photo's features; views on torch's batch buffers made
    each kept batch hold about 6 MB of freed working memory (1.4 GB over 5,000 photos at 224 px)."""
    P = Predictor.load(model_dir, precision="fp32", runtime=runtime)
    out = P.probabilities(torch.zeros(3, 3, 32, 32, dtype=torch.uint8))
    assert [a.shape[0] for a in out] == [3, 3, 3]
    assert all(a.flags.owndata for a in out)


def test_runtime_setting_and_fallback(model_dir, monkeypatch, caplog):
    monkeypatch.delenv("DERM_ML_RUNTIME", raising=False)
    assert resolve_runtime() == "onnxruntime" and resolve_runtime("TORCH") == "torch"
    monkeypatch.setenv("DERM_ML_RUNTIME", "torch")
    assert Predictor.load(model_dir, precision="fp32").runtime == "torch"
    with pytest.raises(ValueError, match="runtime must be one of auto, onnxruntime, torch, not 'tvm'"):
        resolve_runtime("tvm")
    # "auto" serves float32 through ONNX Runtime; with PyTorch's kernels, bfloat16 where the CPU has it
    with_torch = "bf16" if native_bf16() else "fp32"
    P = Predictor.load(model_dir)
    assert (P.precision, P.runtime) == (with_torch, "torch")
    monkeypatch.delenv("DERM_ML_RUNTIME")
    P = Predictor.load(model_dir)
    assert (P.precision, P.runtime) == ("fp32", "onnxruntime")
    assert Predictor.load(model_dir, runtime="torch").precision == with_torch
    # bfloat16 and int8 copies are PyTorch's own
    assert Predictor.load(model_dir, precision="bf16", runtime="onnxruntime").runtime == "torch"
    # without ONNX Runtime the predictor says so and serves with PyTorch
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    P = Predictor.load(model_dir, precision="fp32")
    assert P.runtime == "torch"
    assert "ONNX Runtime unavailable" in caplog.text and "serving with PyTorch" in caplog.text
    assert P.predict([Image.new("RGB", (40, 40))])[0].ranked


@pytest.fixture
def frozen_dir(tmp_path, taxonomy_file, tiny_data):
    return train(
        TrainConfig(
            data=str(tiny_data),
            taxonomy=str(taxonomy_file),
            out=str(tmp_path / "frozen"),
            **{**FAST, "fine_models": 2, "freeze_transferred": True},
        )
    )


@pytest.mark.parametrize("runtime", ["onnxruntime", "torch"])
def test_frozen_transfer_is_served_with_one_shared_trunk(frozen_dir, model_dir, runtime):
    shared = Predictor.load(frozen_dir, precision="fp32", runtime=runtime)
    apart = Predictor.load(frozen_dir, precision="fp32", runtime=runtime, share_trunk=False)
    # tiny backbone: 4 blocks, cut 3 -> the stem and 3 blocks are the fine model's, unchanged
    assert (shared.shared_depth, apart.shared_depth) == (4, 0)
    assert shared.runtime == runtime and shared._fast_coarse is None and len(shared._fast_fines) == 1
    g = torch.Generator().manual_seed(1)
    for n, size in [(1, 32), (6, 32), (2, 40)]:
        u8 = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
        for a, b in zip(shared.probabilities(u8), apart.probabilities(u8)):
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, atol=1e-5)
    one = Predictor.load(frozen_dir, precision="fp32", runtime=runtime, members=1)
    assert one.shared_depth == 4 and one._fast_fines == [] and one._fast_fine is None
    u8 = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=g)
    ref = Predictor.load(frozen_dir, precision="fp32", runtime=runtime, members=1, share_trunk=False)
    for a, b in zip(one.probabilities(u8), ref.probabilities(u8)):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # a coarse model trained whole after the transfer shares nothing: its stem's statistics moved
    assert Predictor.load(model_dir, precision="fp32", runtime=runtime).shared_depth == 0
