"""Grad-CAM heat maps for the hierarchy: top sub-classes (fine model) and top meta-class
(coarse model), with pytorch-grad-cam. Pure PyTorch/NumPy: never imports Django.

Public API:

    from inference.ml.explain import explain, shared_scale, render_overlay, heatmap_mass_in_boxes
    maps = explain(predictor, pil_image, sub_targets=["mel", "nv", "bkl"], meta_targets=["melanocytic"])
    vmax = shared_scale(maps)                      # one colour scale for all maps of the photo
    rgba = render_overlay(maps[0].cam, vmax, photo.size)    # PIL RGBA, photo's aspect ratio
    share = heatmap_mass_in_boxes(maps[0].cam, [(x0, y0, x1, y1)], photo.size)

How it stays fast (target: one photo, 3 + 1 targets, < 300 ms on 2 CPU cores):
- weights stay frozen (``requires_grad`` False everywhere). The trunk (stem + MBConv blocks, i.e.
  everything before the target layer ``backbone.head``) runs once, under ``no_grad``, on the one
  photo; its output is the only tensor that requires grad, so the backward pass stops at the
  target layer instead of running through the whole network.
- targets are batched: the trunk output is expanded (no copy) to one row per target, so the
  target layer and classifier run once on a batch of N rows and one backward gives all N maps.

With an ensemble of fine models, a sub-class map is the mean of the members' maps (the members
see the same photo and their probabilities are averaged the same way).

Heat maps are *raw* Grad-CAM values (ReLU of the gradient-weighted activations, no per-map
min-max scaling as pytorch-grad-cam does by default), so all maps of one photo can share one colour
scale: ``shared_scale`` is the maximum over them.

Geometry: the model sees the centre square of the photo (shorter side resized to the input size,
centre crop; see ``data.load_image``). ``cam`` arrays cover that square; ``crop_square`` gives it in
original photo pixels, which is how overlays and box masses are placed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget


@dataclass
class HeatMap:
    kind: str            # "sub" (fine model) | "meta" (coarse model)
    target: str          # class code
    rank: int            # 0 = top-ranked of its kind
    cam: np.ndarray      # float32 (S, S), raw Grad-CAM (>= 0) at the model's input resolution

    @property
    def peak(self) -> float:
        return float(self.cam.max()) if self.cam.size else 0.0


class _RawGradCAM(GradCAM):
    """GradCAM that returns raw (ReLU'd, unscaled) maps at the model input size."""

    def compute_cam_per_layer(self, input_tensor, targets, eigen_smooth):
        acts = [a.cpu().data.numpy() for a in self.activations_and_grads.activations]
        grads = [g.cpu().data.numpy() for g in self.activations_and_grads.gradients]
        out = []
        for i, layer in enumerate(self.target_layers):
            cam = self.get_cam_image(input_tensor, layer, targets, acts[i], grads[i], eigen_smooth)
            out.append(np.maximum(cam, 0)[:, None])
        return out

    def aggregate_multi_layers(self, cam_per_target_layer):
        return np.mean(np.concatenate(cam_per_target_layer, axis=1), axis=1)


class _OnceTrunk(torch.nn.Module):
    """Runs everything before the target layer once on the first row of the input (all rows are
    the same photo), then the target layer + pooling + classifier on one row per target.

    Works for ``networks.Classifier`` (backbone.stem -> backbone.blocks -> backbone.head -> pool ->
    dropout -> fc). For any other module the caller falls back to a plain batched input.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    @staticmethod
    def supports(model) -> bool:
        b = getattr(model, "backbone", None)
        return all(hasattr(b, n) for n in ("stem", "blocks", "head")) and all(
            hasattr(model, n) for n in ("pool", "dropout", "fc"))

    def forward(self, x):
        m = self.model
        b = m.backbone
        with torch.no_grad():
            trunk = b.blocks(b.stem(x[:1]))
        trunk = trunk.detach().expand(len(x), -1, -1, -1).requires_grad_(True)
        a = b.head(trunk)                      # target layer: the CAM hooks fire here
        return m.fc(m.dropout(m.pool(a).flatten(1)))


def _cams(model, layer_name: str, x: torch.Tensor, class_indices: Sequence[int]) -> np.ndarray:
    """(N, S, S) raw CAMs for N class indices of one photo ``x`` (1, 3, S, S)."""
    if not class_indices:
        return np.zeros((0,) + tuple(x.shape[-2:]), np.float32)
    n = len(class_indices)
    if _OnceTrunk.supports(model):
        wrapped = _OnceTrunk(model)
        layer = model.get_submodule(layer_name)
        xin = x.expand(n, -1, -1, -1)
    else:   # generic path: batched input, parameters stay frozen, grads flow from the input
        wrapped = model
        layer = model.get_submodule(layer_name)
        xin = x.expand(n, -1, -1, -1).clone().requires_grad_(True)
    targets = [ClassifierOutputTarget(int(c)) for c in class_indices]
    with torch.enable_grad(), _RawGradCAM(model=wrapped, target_layers=[layer]) as cam:
        raw = cam(input_tensor=xin, targets=targets)      # (N, h, w) at the layer's resolution
    t = torch.from_numpy(np.ascontiguousarray(raw, dtype=np.float32))[:, None]
    up = F.interpolate(t, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]
    return up.clamp_min_(0).numpy()


def explain(predictor, img, sub_targets: Sequence[str], meta_targets: Sequence[str] = ()) -> list[HeatMap]:
    """Grad-CAM maps for the given sub-classes (fine model) and meta-classes (coarse model).

    ``predictor`` is an ``inference.ml.predict.Predictor``; ``img`` a PIL image.
    """
    tax = predictor.taxonomy
    x = predictor.preprocess(img).to(getattr(predictor, "device", "cpu")).contiguous(memory_format=torch.channels_last)
    layer = predictor.gradcam_layer_name
    subs = list(tax.sub_classes)
    metas = list(tax.meta_classes)
    out: list[HeatMap] = []
    members = getattr(predictor, "fine_models", None) or [predictor.fine_model]
    idx = [subs.index(s) for s in sub_targets]
    fine = np.mean([_cams(m, layer, x, idx) for m in members], axis=0)   # ensemble: mean of the members' maps
    out += [HeatMap("sub", s, r, fine[r]) for r, s in enumerate(sub_targets)]
    coarse = _cams(predictor.coarse_model, layer, x, [metas.index(m) for m in meta_targets])
    out += [HeatMap("meta", m, r, coarse[r]) for r, m in enumerate(meta_targets)]
    return out


def shared_scale(maps: Iterable[HeatMap]) -> float:
    """Top of the colour scale shared by all maps of one photo (their largest value)."""
    peaks = [m.peak for m in maps]
    return max(peaks) if peaks and max(peaks) > 0 else 1.0


def crop_square(photo_size: tuple[int, int]) -> tuple[float, float, float]:
    """(left, top, side) of the centre square the model sees, in original photo pixels."""
    w, h = photo_size
    side = float(min(w, h))
    return (w - side) / 2.0, (h - side) / 2.0, side


# A perceptually ordered palette (dark blue -> cyan -> yellow -> red), 0..1 anchors.
_ANCHORS = np.array([
    [0.00, 0, 0, 130], [0.20, 0, 60, 255], [0.40, 0, 210, 255], [0.60, 120, 255, 120],
    [0.80, 255, 210, 0], [1.00, 220, 20, 0]], np.float32)


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


def heatmap_mass_in_boxes(heatmap: np.ndarray, boxes: Iterable[Sequence[float]], photo_size: tuple[int, int]) -> float | None:
    """Share (0..1) of the heat map's mass that falls inside the union of ``boxes``.

    ``heatmap`` (H, W) covers the centre square the model sees (see ``crop_square``); ``boxes``
    are (x0, y0, x1, y1) in original photo pixels; ``photo_size`` is (width, height). A heat-map
    cell counts as inside when its centre is inside a box. Returns None when there are no boxes or
    the map is empty (all zero).
    """
    hm = np.clip(np.asarray(heatmap, np.float64), 0, None)
    boxes = [tuple(map(float, b)) for b in boxes]
    total = hm.sum()
    if not boxes or total <= 0:
        return None
    H, W = hm.shape
    left, top, side = crop_square(photo_size)
    # centres of heat-map cells in original photo pixels
    xs = left + (np.arange(W) + 0.5) * side / W
    ys = top + (np.arange(H) + 0.5) * side / H
    mask = np.zeros((H, W), bool)
    for x0, y0, x1, y1 in boxes:
        x0, x1 = min(x0, x1), max(x0, x1)
        y0, y1 = min(y0, y1), max(y0, y1)
        mask |= ((ys >= y0) & (ys < y1))[:, None] & ((xs >= x0) & (xs < x1))[None, :]
    return float(hm[mask].sum() / total)
