"""A proposed lesion box for the annotation editor: the photo's own lesion outline, chosen by the
model's Grad-CAM map. NumPy/SciPy/Pillow only (no torch), so the web request that offers the box
reads the photo and the stored map without loading the engine.

    from inference.ml.proposal import propose_box
    box, how = propose_box(pil_image, cam)   # (x0, y0, x1, y1) in the photo's pixels, "outline" | "map"

A class map alone is a poor outline: it lights the part of the lesion that decided the class, so
the box around its peak is small and off centre. Here the photo is split into lesion-like and
skin-like pixels (colour distance from the skin at the photo's edges plus how much darker it is,
smoothed, Otsu's threshold; the dark field of a dermoscope's round lens is left out); of the
lesion-like regions the one holding most of the map's heat is the lesion, and its bounding box is
the proposal. Where the photo does not split into lesion and skin (low contrast, no region under
the heat) the box around the map's hot region is proposed instead ("map").
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from .heatmaps import crop_square

WORK_SIDE = 192  # the photo is analysed at this long side; the box is scaled back
LEVEL = 0.3  # share of the smoothed map's peak that still counts as hot ("map" proposals)
SMOOTH = 2.0  # Gaussian sigma in cells of the stored 32x32 map: a fine map's specks become one region
MIN_CONTRAST = 0.06  # lesion-like minus skin-like median score (RGB 0..1, ~15 of 255): below, no lesion
MIN_AREA = 0.002  # a lesion region smaller than this share of the photo is noise
MIN_HEAT = 0.25  # the chosen region must hold this share of the map's heat inside the photo


def otsu_threshold(values: np.ndarray, bins: int = 128) -> tuple[float, float]:
    """Otsu's threshold of ``values`` and its separability (between-class / total variance, 0..1)."""
    v = np.asarray(values, np.float64).ravel()
    lo, hi = float(v.min()), float(v.max())
    if hi - lo < 1e-9:
        return lo, 0.0
    hist, edges = np.histogram(v, bins=bins, range=(lo, hi))
    p = hist / hist.sum()
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(p)
    mu = np.cumsum(p * centres)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu[-1] * w0 - mu) ** 2 / (w0 * (1 - w0))
    between[~np.isfinite(between)] = 0
    k = int(np.argmax(between[:-1]))
    total = float(v.var())
    return float(edges[k + 1]), float(between[k] / total) if total > 0 else 0.0


def map_box(
    cam, width: int, height: int, level: float = LEVEL, smooth: float = SMOOTH
) -> tuple[float, float, float, float] | None:
    """Box in photo pixels around the connected region >= ``level`` x peak that holds the peak of the
    map smoothed by ``smooth`` cells (the map covers the photo's centre square, as the model saw it);
    None for an empty map."""
    cam = np.asarray(cam, dtype=np.float32)
    if cam.ndim != 2 or cam.size == 0 or not np.isfinite(cam).all() or cam.max() <= 0:
        return None
    if smooth:
        cam = ndimage.gaussian_filter(cam, smooth)
    peak = np.unravel_index(int(np.argmax(cam)), cam.shape)
    regions, _ = ndimage.label(cam >= level * cam.max())
    rows, cols = np.nonzero(regions == regions[peak])
    left, top, side = crop_square((width, height))
    ch, cw = side / cam.shape[0], side / cam.shape[1]
    box = (left + cols.min() * cw, top + rows.min() * ch, left + (cols.max() + 1) * cw, top + (rows.max() + 1) * ch)
    return tuple(float(v) for v in box)


def _heat_on_photo(cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The map (over the centre square) spread over an (h, w) grid of the whole photo; 0 outside."""
    h, w = shape
    side = min(h, w)
    square = Image.fromarray(np.clip(np.asarray(cam, np.float32), 0, None), "F").resize((side, side), Image.BILINEAR)
    heat = np.zeros((h, w), np.float32)
    top, left = (h - side) // 2, (w - side) // 2
    heat[top : top + side, left : left + side] = np.asarray(square)
    return heat


def lens_field(lum: np.ndarray) -> np.ndarray:
    """Very dark regions touching a corner: the black field around a dermoscope's round lens."""
    dark = lum < 0.35 * float(np.median(lum))
    lab, _ = ndimage.label(dark)
    h, w = dark.shape
    ids = {int(lab[y, x]) for y in (0, h - 1) for x in (0, w - 1)} - {0}
    return np.isin(lab, list(ids)) if ids else np.zeros_like(dark)


def lesion_regions(rgb: np.ndarray) -> tuple[np.ndarray, int, float]:
    """(labels, count, contrast): connected lesion-like regions of a float RGB (h, w, 3) photo and how
    much they stand out from the skin (difference of the two sides' median scores)."""
    h, w, _ = rgb.shape
    lum = rgb @ np.array([0.299, 0.587, 0.114])
    field = lens_field(lum)
    b = max(2, round(0.06 * min(h, w)))
    ring = np.zeros((h, w), bool)
    ring[:b], ring[-b:], ring[:, :b], ring[:, -b:] = True, True, True, True
    ring &= ~field
    if ring.sum() < 10:
        return np.zeros((h, w), int), 0, 0.0
    skin = np.median(rgb[ring], axis=0)
    darker = np.clip(float(skin @ np.array([0.299, 0.587, 0.114])) - lum, 0, None)
    score = ndimage.gaussian_filter(np.linalg.norm(rgb - skin, axis=2) + darker, sigma=0.015 * max(h, w))
    inside = ~field
    threshold, _ = otsu_threshold(score[inside])
    high = (score > threshold) & inside
    if not high.any() or high.sum() == inside.sum():
        return np.zeros((h, w), int), 0, 0.0
    contrast = float(np.median(score[high]) - np.median(score[inside & ~high]))
    mask = ndimage.binary_opening(ndimage.binary_fill_holes(high), iterations=1)
    labels, n = ndimage.label(mask)
    return labels, n, contrast


def propose_box(image: Image.Image, cam) -> tuple[tuple[float, float, float, float] | None, str]:
    """((x0, y0, x1, y1) in the photo's pixels, "outline" or "map"), or (None, why not)."""
    width, height = image.size
    cam = np.asarray(cam, np.float32) if cam is not None else None
    fallback = map_box(cam, width, height) if cam is not None else None
    scale = WORK_SIDE / max(width, height)
    small = image.convert("RGB")
    if scale < 1:
        small = small.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.BILINEAR)
    rgb = np.asarray(small, np.float64) / 255.0
    h, w, _ = rgb.shape
    if cam is None or fallback is None or min(h, w) < 16:
        return fallback, "map" if fallback else "the map is empty"
    labels, n, contrast = lesion_regions(rgb)
    if n == 0 or contrast < MIN_CONTRAST:
        return fallback, "map"
    heat = _heat_on_photo(cam, (h, w))
    mass = ndimage.sum(heat, labels, index=np.arange(1, n + 1))
    area = ndimage.sum(np.ones_like(heat), labels, index=np.arange(1, n + 1))
    k = int(np.argmax(mass))
    if mass[k] < MIN_HEAT * float(heat.sum()) or area[k] < MIN_AREA * h * w:
        return fallback, "map"
    rows, cols = np.nonzero(labels == k + 1)
    sx, sy = width / w, height / h
    box = (cols.min() * sx, rows.min() * sy, (cols.max() + 1) * sx, (rows.max() + 1) * sy)
    return tuple(float(v) for v in box), "outline"
