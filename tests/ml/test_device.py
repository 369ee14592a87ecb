"""Where the engine computes (device.py): the choice is tested on any machine; the CUDA runs where PyTorch
sees a GPU, and are skipped, saying so, where it does not."""

import contextlib
import json

import numpy as np
import pytest
import torch

from inference.ml.device import DeviceError, autocast, grad_scaler, resolve_device
from inference.ml.predict import Predictor
from inference.ml.train import TrainConfig, train

FAST = dict(backbone="tiny", pretrained=False, image_size=32, epochs=1, coarse_epochs=1, batch_size=8, threads=1)
HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU; PyTorch sees none on this machine")


def test_cpu_and_auto(monkeypatch):
    monkeypatch.delenv("DERM_ML_DEVICE", raising=False)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("CPU ") == torch.device("cpu")
    assert resolve_device("auto") == (torch.device("cuda", 0) if HAS_CUDA else torch.device("cpu"))
    assert resolve_device(None) == resolve_device("auto")


def test_the_environment_chooses_unless_the_command_does(monkeypatch):
    monkeypatch.setenv("DERM_ML_DEVICE", "cpu")
    assert resolve_device(None) == torch.device("cpu")
    monkeypatch.setenv("DERM_ML_DEVICE", "tpu")
    with pytest.raises(DeviceError, match="'tpu' \\(from DERM_ML_DEVICE\\) is unknown; choose auto, cpu, cuda"):
        resolve_device(None)
    assert resolve_device("cpu") == torch.device("cpu")  # an explicit choice wins


@pytest.mark.parametrize(
    "spec,message",
    [
        ("gpu", "unknown; choose auto, cpu, cuda or cuda:N"),
        ("cuda:x", "GPU index must be a whole number"),
        ("cuda:99", "cuda:0..cuda:" if HAS_CUDA else "sees no CUDA GPU"),
    ],
)
def test_devices_that_do_not_exist_here_are_refused_by_name(spec, message):
    with pytest.raises(DeviceError, match=message) as e:
        resolve_device(spec)
    assert repr(spec) in str(e.value)


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a CUDA GPU: asking for one is no error here")
def test_asking_for_cuda_without_a_gpu_says_so():
    with pytest.raises(DeviceError, match="PyTorch sees no CUDA GPU on this machine; use cpu or auto"):
        resolve_device("cuda")


def test_cpu_computes_as_before_mixed_precision_only_on_cuda():
    assert isinstance(autocast(torch.device("cpu")), contextlib.nullcontext)
    assert grad_scaler(torch.device("cpu")) is None
    assert torch.get_autocast_dtype("cuda") is not None  # the float16 path exists in this build


def _train(tmp_path, taxonomy_file, tiny_data, device, name):
    return train(
        TrainConfig(data=str(tiny_data), taxonomy=str(taxonomy_file), out=str(tmp_path / name), device=device, **FAST)
    )


def test_training_records_its_device_but_not_as_a_setting(tmp_path, taxonomy_file, tiny_data):
    out = _train(tmp_path, taxonomy_file, tiny_data, "cpu", "m")
    man = json.loads((out / "model.json").read_text())
    assert man["training"]["device"] == "cpu" and man["training"]["device"] is not None
    P = Predictor.load(out, device="cpu")
    assert P.device == torch.device("cpu") and next(P.fine_model.parameters()).device.type == "cpu"


def test_an_unknown_device_is_refused_before_training(tmp_path, taxonomy_file, tiny_data):
    with pytest.raises(DeviceError, match="'npu' is unknown"):
        _train(tmp_path, taxonomy_file, tiny_data, "npu", "m")
    assert not (tmp_path / "m").exists()  # refused before the work directory or any decoding


@needs_cuda
def test_a_model_trained_on_the_gpu_serves_on_the_cpu(tmp_path, taxonomy_file, tiny_data):
    out = _train(tmp_path, taxonomy_file, tiny_data, "cuda", "gpu")
    assert json.loads((out / "model.json").read_text())["training"]["device"].startswith("cuda")
    from PIL import Image

    img = Image.open(next((tiny_data / "images").iterdir()))
    on_cpu = Predictor.load(out, device="cpu", precision="fp32", runtime="torch")
    on_gpu = Predictor.load(out, device="cuda")
    a, b = on_cpu.probabilities(on_cpu.to_uint8(img)[None]), on_gpu.probabilities(on_gpu.to_uint8(img)[None])
    assert np.allclose(a[0], b[0], atol=1e-3) and np.allclose(a[1], b[1], atol=1e-3)
