"""Int8 serving: post-training static quantization of the fine and coarse models.

Opt-in, for CPUs without bfloat16 dot-product instructions (AVX2-only x86), which serve in
float32. Static int8 quantization (PyTorch FX graph mode, x86 backend: per-channel int8 weights,
uint8 activations, Conv+BN folded) of everything after the stem and the first FLOAT_BLOCKS blocks.
Measured on one HAM10000 model (bench/RESULTS.md, `int8-serving`): 1.25x the float32 photos/s on a 2-core AVX2
EPYC, the same first class for 97.5 % of the hold-out photos, product macro F1 -0.012. So it is
never chosen by "auto", and training stores a calibration only when asked
(``int8_calibration_images``).

Calibration: the ranges of the quantized activations are observed on a few hundred *training*
images (never the held-out split) and stored in the artefact as ``int8.safetensors`` (observer
buffers only, no image data). ``Predictor.load(precision="int8")`` rebuilds the same observed
graph from the float weights, loads those buffers and converts it, so the artefact keeps one
copy of the weights. Grad-CAM always runs the float32 models.

Upstream status: PyTorch marks ``torch.ao.quantization`` and its quantized CPU kernels as
deprecated (moving to torchao, whose x86 int8 path needs ``torch.compile``). The pinned torch
2.14.1 has them; should an upgrade remove them, ``precision="int8"`` fails with a message that
says so and float serving is unaffected.

    state = calibration_state(model, batches, size)   # `inference.ml calibrate` (or at training time)
    qmodel = quantized(model, state, size)            # at load time; qmodel(x) -> (logits, features)
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable

import torch
from torch import nn

from .errors import ArtefactError
from .networks import Classifier

ENGINE = "x86"
FILE = "int8.safetensors"
_OBSERVER = "activation_post_process"


class WithFeatures(nn.Module):
    """Traceable wrapper: ``forward(x) -> (logits, pooled features)``, named ``OUTPUTS`` for the ONNX
    export (eval: dropout is identity)."""

    OUTPUTS = ("logits", "features")

    def __init__(self, model: Classifier):
        super().__init__()
        self.model = model

    def forward(self, x):
        f = self.model.features(x)
        return self.model.fc(f), f


# The stem and the first MBConv blocks stay in float32: folding the ImageNet checkpoint's
# BatchNorms into them gives per-tensor activation ranges that int8 cannot carry (HAM10000 hold-out,
# one fine model: all layers int8 ranked the same first class as float32 for 81.5 % of the photos,
# balanced accuracy -0.33; with the stem + 4 blocks in float, 97.5 %, balanced accuracy +0.009).
FLOAT_BLOCKS = 4


def _prepared(model: Classifier, size: int):
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx

    torch.backends.quantized.engine = ENGINE
    m = WithFeatures(copy.deepcopy(model).float().eval())
    qmap = get_default_qconfig_mapping(ENGINE).set_module_name("model.backbone.stem", None)
    for i in range(min(FLOAT_BLOCKS, model.num_blocks)):
        qmap = qmap.set_module_name(f"model.backbone.blocks.{i}", None)
    example = (torch.zeros(1, 3, size, size),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
        return prepare_fx(m, qmap, example)


@torch.no_grad()  # not inference_mode: the observer buffers are loaded into another graph later
def calibration_state(model: Classifier, batches: Iterable[torch.Tensor], size: int) -> dict[str, torch.Tensor]:
    """Observe the activation ranges of ``model`` on normalised float batches (N, 3, S, S)."""
    prepared = _prepared(model, size)
    n = 0
    for x in batches:
        prepared(x.float().contiguous())
        n += len(x)
    if n == 0:
        raise ValueError("int8 calibration needs at least one image")
    return {k: v.detach().clone() for k, v in prepared.state_dict().items() if _OBSERVER in k}


def quantized(model: Classifier, state: dict[str, torch.Tensor], size: int) -> nn.Module:
    """Int8 copy of ``model`` from its stored calibration; returns (logits, features) in float32."""
    try:
        from torch.ao.quantization.quantize_fx import convert_fx
    except ImportError as e:
        raise ValueError(
            f"int8 serving needs torch.ao.quantization, which torch {torch.__version__} "
            f"does not have ({e}); serve with precision fp32 or bf16"
        ) from e
    prepared = _prepared(model, size)
    want = {k for k in prepared.state_dict() if _OBSERVER in k}
    if set(state) != want:
        raise ArtefactError(
            f"int8 calibration does not fit this model ({len(state)} observer tensors stored, "
            f"{len(want)} expected); re-run `python -m inference.ml calibrate`"
        )
    prepared.load_state_dict(state, strict=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = convert_fx(prepared)
    q.eval()
    return q


def pack(states: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """{"fine.0": state, "coarse": state} -> one flat dict for safetensors."""
    return {f"{name}/{k}": v.contiguous() for name, st in states.items() for k, v in st.items()}


def unpack(flat: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, v in flat.items():
        name, k = key.split("/", 1)
        out.setdefault(name, {})[k] = v
    return out


def calibrate_models(
    fines: list[Classifier], coarse: Classifier, images_u8: torch.Tensor, mean, std, size: int, batch_size: int = 32
) -> dict[str, torch.Tensor]:
    """Calibration of every served model on the same uint8 training images; flat dict for ``FILE``."""
    from .data import normalise

    def batches():
        for s in range(0, len(images_u8), batch_size):
            yield normalise(images_u8[s : s + batch_size], mean, std)

    states = {f"fine.{k}": calibration_state(m, batches(), size) for k, m in enumerate(fines)}
    states["coarse"] = calibration_state(coarse, batches(), size)
    return pack(states)
