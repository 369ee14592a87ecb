"""Grad-CAM heat maps for the hierarchy: top sub-classes (fine model) and top meta-class
(coarse model), with pytorch-grad-cam. Pure PyTorch/NumPy: never imports Django.

Public API:

    from inference.ml.explain import explain, shared_scale, render_overlay, heatmap_mass_in_boxes, peak_in_boxes
    maps = explain(predictor, pil_image, sub_targets=["mel", "nv", "bkl"], meta_targets=["melanocytic"])
    vmax = shared_scale(maps)                      # one colour scale for all maps of the photo
    rgba = render_overlay(maps[0].cam, vmax, photo.size)    # PIL RGBA, photo's aspect ratio
    share = heatmap_mass_in_boxes(maps[0].cam, [(x0, y0, x1, y1)], photo.size)
    hit = peak_in_boxes(maps[0].cam, [(x0, y0, x1, y1)], photo.size)    # pointing game: 1.0 / 0.0

How the maps are made (``CamSettings``; ``DEFAULT`` unless ``explain(..., settings=...)`` or the
environment variable ``DERM_ML_CAM`` says otherwise, e.g. ``DERM_ML_CAM=gradcam@head`` for Grad-CAM
at the last conv block): the CAM
method (Grad-CAM, Grad-CAM++, LayerCAM, HiResCAM), the target layer(s), averaging with the
mirrored photo's map, Gaussian smoothing. ``bench/gradcam_placement.py`` measures how much heat
each choice puts on the lesion and what it costs.

How it stays fast (target: one photo, 3 + 1 targets, < 300 ms on 2 CPU cores):
- weights stay frozen (``requires_grad`` False everywhere). The trunk (stem + the MBConv blocks
  before the first target layer, all of them for ``backbone.head``) runs once, under ``no_grad``,
  on the one photo; its output is the only tensor that requires grad, so the backward pass stops
  at the first target layer instead of running through the whole network.
- targets are batched: the trunk output is expanded (no copy) to one row per target, so the
  target layer and classifier run once on a batch of N rows and one backward gives all N maps.

With an ensemble of fine models, a sub-class map is the mean of the members' maps (the members
see the same photo and their probabilities are averaged the same way).

Heat maps are *raw* CAM values (ReLU of the gradient-weighted activations, no per-map
min-max scaling as pytorch-grad-cam does by default), so all maps of one photo can share one colour
scale: ``shared_scale`` is the maximum over them.

Geometry: the model sees the centre square of the photo (shorter side resized to the input size,
centre crop; see ``data.load_image``). ``cam`` arrays cover that square; ``crop_square`` gives it in
original photo pixels, which is how overlays and box masses are placed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from scipy import ndimage

from .heatmaps import box_mask, crop_square, heatmap_mass_in_boxes, peak_in_boxes  # noqa: F401 (public API)
from .networks import GRADCAM_LAYER


@dataclass
class HeatMap:
    kind: str  # "sub" (fine model) | "meta" (coarse model)
    target: str  # class code
    rank: int  # 0 = top-ranked of its kind
    cam: np.ndarray  # float32 (S, S), raw Grad-CAM (>= 0) at the model's input resolution

    @property
    def peak(self) -> float:
        return float(self.cam.max()) if self.cam.size else 0.0


METHODS = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "layercam": LayerCAM, "hirescam": HiResCAM}


@dataclass(frozen=True)
class CamSettings:
    """How heat maps are made. ``layers``: "head" (the last conv block, ``Predictor.gradcam_layer_name``)
    and/or "block:K" (MBConv block K; negative K counts from the end) and/or "stride:N" (the last
    block whose output is 1/N of the input's side, e.g. stride:16 = the last 14 x 14 layer at 224
    px, block 10 of Lite0, the same stage in Lite1/Lite2), averaged after each earlier
    layer is rescaled to the deepest one's mean; ``flip``: average with the mirrored photo's map
    (mirrored back), as the differential averages the flipped view; ``smooth``: Gaussian blur of
    the map, sigma as a fraction of its side (0 = off).

    ``CamSettings.parse("layercam@head+block:-6,flip,smooth=0.03")`` reads the bench notation
    (``spec`` writes it)."""

    method: str = "gradcam"
    layers: tuple[str, ...] = ("head",)
    flip: bool = False
    smooth: float = 0.0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown CAM method {self.method!r}; choose from {sorted(METHODS)}")
        if not self.layers:
            raise ValueError("CamSettings.layers is empty")
        for name in self.layers:
            if name != "head" and not re.fullmatch(r"block:-?\d+|stride:\d+", name):
                raise ValueError(f"layer {name!r}: use 'head', 'block:K' or 'stride:N'")
        if not 0 <= self.smooth < 1:
            raise ValueError(f"smooth must be from 0 (off) to below 1, not {self.smooth!r}")

    @classmethod
    def parse(cls, spec: str) -> CamSettings:
        head, *opts = [p.strip() for p in spec.split(",")]
        method, _, layers = head.partition("@")
        kw: dict = {"method": method.strip().lower(), "layers": tuple(layers.split("+")) if layers else ("head",)}
        for o in opts:
            if o == "flip":
                kw["flip"] = True
            elif o.startswith("smooth="):
                kw["smooth"] = float(o.split("=", 1)[1])
            else:
                raise ValueError(f"{spec!r}: unknown option {o!r} (flip, smooth=F)")
        return cls(**kw)

    @property
    def spec(self) -> str:
        s = f"{self.method}@{'+'.join(self.layers)}"
        return s + (",flip" if self.flip else "") + (f",smooth={self.smooth:g}" if self.smooth else "")


# LayerCAM at the last block of stride 8: against lesion boxes drawn by eye on held-out photos it put
# more heat in the box than LayerCAM at the last conv block and its peak on the lesion more often, on
# two trainings (+0.105 / +0.151 and +0.204 / +0.549 on a model whose last-block maps sat at one place
# whatever the photo showed), for ~70 ms more a photo (bench/RESULTS.md, gradcam-eye-boxes). Smoothed
# by 2 % of the side: the fine map's specks read as regions, at -0.003 heat and no pointing change.
DEFAULT = CamSettings("layercam", ("stride:8",), smooth=0.02)
ENV = "DERM_ML_CAM"  # a CamSettings spec that replaces DEFAULT server-wide (e.g. "gradcam@head")


def default_settings() -> CamSettings:
    """``DEFAULT``, or the spec in the environment variable ``DERM_ML_CAM`` (read on every call, so a
    bad value fails the heat maps with a message naming it, never the import)."""
    spec = os.environ.get(ENV, "").strip()
    if not spec:
        return DEFAULT
    try:
        return CamSettings.parse(spec)
    except ValueError as e:
        raise ValueError(f"{ENV}={spec!r}: {e}") from None


def layer_names(model, layers: Sequence[str], head_name: str = GRADCAM_LAYER) -> list[str]:
    """Submodule names of ``CamSettings.layers`` in ``model`` ("block:K" -> "backbone.blocks.K")."""
    b = getattr(model, "backbone", None)
    n = len(b.blocks) if hasattr(b, "blocks") else 0
    out = []
    for name in layers:
        if name == "head":
            out.append(head_name)
            continue
        k = int(name.split(":")[1])
        if name.startswith("stride:"):
            strides = _block_strides(b) if n else []
            found = [i for i, s in enumerate(strides) if s == k]
            if not found:
                raise ValueError(f"layer {name!r}: the model's blocks have output strides {sorted(set(strides))}")
            out.append(f"backbone.blocks.{found[-1]}")
            continue
        if not -n <= k < n:
            raise ValueError(f"layer {name!r}: the model has {n} blocks")
        out.append(f"backbone.blocks.{k % n}")
    return out


def _block_strides(backbone) -> list[int]:
    """Output stride (input side / output side) after each block: the product of conv strides."""

    def stride(module):
        p = 1
        for m in module.modules():
            if isinstance(m, torch.nn.Conv2d):
                p *= m.stride[0]
        return p

    s, out = stride(backbone.stem), []
    for blk in backbone.blocks:
        s *= stride(blk)
        out.append(s)
    return out


class _RawCAM:
    """Mixin for a pytorch-grad-cam method: raw (ReLU'd, unscaled) maps at each layer's own
    resolution, one array (N, h, w) per target layer; ``_cams`` upsamples and combines them."""

    def compute_cam_per_layer(self, input_tensor, targets, eigen_smooth):
        acts = [a.cpu().data.numpy() for a in self.activations_and_grads.activations]
        grads = [g.cpu().data.numpy() for g in self.activations_and_grads.gradients]
        return [
            np.maximum(self.get_cam_image(input_tensor, layer, targets, acts[i], grads[i], eigen_smooth), 0)
            for i, layer in enumerate(self.target_layers)
        ]

    def aggregate_multi_layers(self, cam_per_target_layer):
        return cam_per_target_layer


_RAW = {k: type(f"_Raw{v.__name__}", (_RawCAM, v), {}) for k, v in METHODS.items()}
_RawGradCAM = _RAW["gradcam"]


class _OnceTrunk(torch.nn.Module):
    """Runs everything before the first target layer once on the first row of the input (all rows
    are the same photo), then the rest (the later blocks, the head, pooling, classifier) on one row
    per target: the backward pass stops at the first target layer.

    Works for ``networks.Classifier`` (backbone.stem -> backbone.blocks -> backbone.head -> pool ->
    dropout -> fc) with targets among ``backbone.head`` / ``backbone.blocks.K``. For any other
    module or layer the caller falls back to a plain batched input.
    """

    def __init__(self, model: torch.nn.Module, cut: int):
        super().__init__()
        self.model = model
        self.cut = cut  # blocks run without grad

    @staticmethod
    def cut_for(model, names: Sequence[str]) -> int | None:
        """How many blocks can run without grad for these target layers (None: not supported)."""
        b = getattr(model, "backbone", None)
        if not (
            all(hasattr(b, n) for n in ("stem", "blocks", "head"))
            and all(hasattr(model, n) for n in ("pool", "dropout", "fc"))
        ):
            return None
        cuts = []
        for name in names:
            m = re.fullmatch(r"backbone\.(?:head|blocks\.(\d+))", name)
            if m is None:
                return None
            cuts.append(len(b.blocks) if m.group(1) is None else int(m.group(1)))
        return min(cuts)

    def forward(self, x):
        m = self.model
        b = m.backbone
        with torch.no_grad():
            h = b.stem(x[:1])
            for blk in b.blocks[: self.cut]:
                h = blk(h)
        h = h.detach().expand(len(x), -1, -1, -1).requires_grad_(True)
        for blk in b.blocks[self.cut :]:  # target blocks: the CAM hooks fire here
            h = blk(h)
        a = b.head(h)
        return m.fc(m.dropout(m.pool(a).flatten(1)))


def _cams(model, layer_name, x: torch.Tensor, class_indices: Sequence[int], method: str = "gradcam") -> np.ndarray:
    """(N, S, S) raw CAMs for N class indices of one photo ``x`` (1, 3, S, S); ``layer_name`` is a
    submodule name or a list of them (maps averaged, see ``CamSettings``)."""
    if not class_indices:
        return np.zeros((0,) + tuple(x.shape[-2:]), np.float32)
    names = [layer_name] if isinstance(layer_name, str) else list(layer_name)
    n = len(class_indices)
    cut = _OnceTrunk.cut_for(model, names)
    if cut is not None:
        wrapped = _OnceTrunk(model, cut)
        xin = x.expand(n, -1, -1, -1)
    else:  # generic path: batched input, parameters stay frozen, grads flow from the input
        wrapped = model
        xin = x.expand(n, -1, -1, -1).clone().requires_grad_(True)
    layers = [model.get_submodule(nm) for nm in names]
    targets = [ClassifierOutputTarget(int(c)) for c in class_indices]
    with torch.enable_grad(), _RAW[method](model=wrapped, target_layers=layers) as cam:
        raw = cam(input_tensor=xin, targets=targets)  # per layer (N, h, w) at its resolution
    ups = []
    for r in raw:
        t = torch.from_numpy(np.ascontiguousarray(r, dtype=np.float32))[:, None]
        ups.append(F.interpolate(t, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[:, 0].clamp_min_(0))
    if len(ups) == 1:
        return ups[0].numpy()
    # hooks record in forward order: ups[-1] is the deepest layer; the others are rescaled to its
    # mean so every map of a photo stays in one unit (the shared colour scale)
    ref = float(ups[-1].mean())
    out = ups[-1].clone()
    for u in ups[:-1]:
        mu = float(u.mean())
        out += u * (ref / mu) if mu > 0 and ref > 0 else u
    return (out / len(ups)).numpy()


def _model_cams(model, x: torch.Tensor, idx: Sequence[int], cfg: CamSettings, head_name: str) -> np.ndarray:
    names = layer_names(model, cfg.layers, head_name)
    cams = _cams(model, names, x, idx, cfg.method)
    if cfg.flip and len(idx):
        cams = (cams + _cams(model, names, x.flip(3), idx, cfg.method)[:, :, ::-1]) / 2
    if cfg.smooth and len(idx):
        cams = ndimage.gaussian_filter(
            cams, sigma=(0, cfg.smooth * cams.shape[-2], cfg.smooth * cams.shape[-1]), mode="nearest"
        )
    return np.ascontiguousarray(cams, dtype=np.float32)


def explain(
    predictor, img, sub_targets: Sequence[str], meta_targets: Sequence[str] = (), settings: CamSettings | None = None
) -> list[HeatMap]:
    """Heat maps for the given sub-classes (fine model) and meta-classes (coarse model).

    ``predictor`` is an ``inference.ml.predict.Predictor``; ``img`` a PIL image; ``settings`` how the
    maps are made (``default_settings()`` when None).
    """
    cfg = settings or default_settings()
    tax = predictor.taxonomy
    x = predictor.preprocess(img).to(getattr(predictor, "device", "cpu")).contiguous(memory_format=torch.channels_last)
    head = predictor.gradcam_layer_name
    subs = list(tax.sub_classes)
    metas = list(tax.meta_classes)
    out: list[HeatMap] = []
    members = getattr(predictor, "fine_models", None) or [predictor.fine_model]
    idx = [subs.index(s) for s in sub_targets]
    fine = np.mean([_model_cams(m, x, idx, cfg, head) for m in members], axis=0)  # ensemble: mean of the members' maps
    out += [HeatMap("sub", s, r, fine[r]) for r, s in enumerate(sub_targets)]
    coarse = _model_cams(predictor.coarse_model, x, [metas.index(m) for m in meta_targets], cfg, head)
    out += [HeatMap("meta", m, r, coarse[r]) for r, m in enumerate(meta_targets)]
    return out


def shared_scale(maps: Iterable[HeatMap]) -> float:
    """Top of the colour scale shared by all maps of one photo (their largest value)."""
    peaks = [m.peak for m in maps]
    return max(peaks) if peaks and max(peaks) > 0 else 1.0


# A perceptually ordered palette (dark blue -> cyan -> yellow -> red), 0..1 anchors.
_ANCHORS = np.array(
    [
        [0.00, 0, 0, 130],
        [0.20, 0, 60, 255],
        [0.40, 0, 210, 255],
        [0.60, 120, 255, 120],
        [0.80, 255, 210, 0],
        [1.00, 220, 20, 0],
    ],
    np.float32,
)


def colourise(v: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> uint8 RGB with the portal's heat-map palette."""
    v = np.clip(v, 0, 1)
    rgb = np.stack([np.interp(v, _ANCHORS[:, 0], _ANCHORS[:, k]) for k in (1, 2, 3)], axis=-1)
    return rgb.astype(np.uint8)


def render_overlay(cam: np.ndarray, vmax: float, photo_size: tuple[int, int], max_side: int = 384) -> Image.Image:
    """RGBA overlay with the photo's aspect ratio (long side <= max_side): the heat map, on the
    shared scale [0, vmax], placed on the centre square; transparent elsewhere. Alpha grows with
    heat so cold regions leave the photo visible."""
    w, h = photo_size
    s = min(1.0, max_side / max(w, h))
    ow, oh = max(1, round(w * s)), max(1, round(h * s))
    left, top, side = crop_square((w, h))
    sl, st, ss = round(left * s), round(top * s), max(1, round(side * s))
    v = np.clip(np.asarray(cam, np.float32) / max(vmax, 1e-12), 0, 1)
    v = np.asarray(Image.fromarray(v).resize((ss, ss), Image.BILINEAR), np.float32)
    rgba = np.zeros((oh, ow, 4), np.uint8)
    rgb = colourise(v)
    alpha = (255 * np.clip(0.25 + 0.75 * v, 0, 1)).astype(np.uint8)
    y1, x1 = min(oh, st + ss), min(ow, sl + ss)
    rgba[st:y1, sl:x1, :3] = rgb[: y1 - st, : x1 - sl]
    rgba[st:y1, sl:x1, 3] = alpha[: y1 - st, : x1 - sl]
    return Image.fromarray(rgba, "RGBA")


def downsample(cam: np.ndarray, n: int = 32) -> np.ndarray:
    """Area-average a heat map to n x n (kept with the overlay to recompute box masses later)."""
    return np.asarray(Image.fromarray(np.asarray(cam, np.float32), "F").resize((n, n), Image.BOX), np.float32)
