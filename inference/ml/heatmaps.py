"""Where a heat map's mass lies relative to boxes drawn on the photo. NumPy only (no torch), so
the web pages that show box shares read stored maps without loading the engine.

Geometry: a heat map covers the centre square the model sees (shorter side resized, centre crop;
``crop_square`` gives it in original photo pixels); boxes are (x0, y0, x1, y1) in photo pixels.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def crop_square(photo_size: tuple[int, int]) -> tuple[float, float, float]:
    """(left, top, side) of the centre square the model sees, in original photo pixels."""
    w, h = photo_size
    side = float(min(w, h))
    return (w - side) / 2.0, (h - side) / 2.0, side


def box_mask(shape: tuple[int, int], boxes: Iterable[Sequence[float]], photo_size: tuple[int, int]) -> np.ndarray:
    """(H, W) bool mask of the heat-map cells whose centre lies inside the union of ``boxes``
    ((x0, y0, x1, y1) in original photo pixels; the map covers the centre square, ``crop_square``)."""
    H, W = shape
    left, top, side = crop_square(photo_size)
    # centres of heat-map cells in original photo pixels
    xs = left + (np.arange(W) + 0.5) * side / W
    ys = top + (np.arange(H) + 0.5) * side / H
    mask = np.zeros((H, W), bool)
    for x0, y0, x1, y1 in (tuple(map(float, b)) for b in boxes):
        x0, x1 = min(x0, x1), max(x0, x1)
        y0, y1 = min(y0, y1), max(y0, y1)
        mask |= ((ys >= y0) & (ys < y1))[:, None] & ((xs >= x0) & (xs < x1))[None, :]
    return mask


def heatmap_mass_in_boxes(
    heatmap: np.ndarray, boxes: Iterable[Sequence[float]], photo_size: tuple[int, int]
) -> float | None:
    """Share (0..1) of the heat map's mass that falls inside the union of ``boxes``.

    ``heatmap`` (H, W) covers the centre square the model sees (see ``crop_square``); ``boxes``
    are (x0, y0, x1, y1) in original photo pixels; ``photo_size`` is (width, height). A heat-map
    cell counts as inside when its centre is inside a box. Returns None when there are no boxes or
    the map is empty (all zero).
    """
    hm = np.clip(np.asarray(heatmap, np.float64), 0, None)
    boxes = list(boxes)
    total = hm.sum()
    if not boxes or total <= 0:
        return None
    return float(hm[box_mask(hm.shape, boxes, photo_size)].sum() / total)


def peak_in_boxes(heatmap: np.ndarray, boxes: Iterable[Sequence[float]], photo_size: tuple[int, int]) -> float | None:
    """Pointing game: 1.0 when the heat map's hottest cell is inside the union of ``boxes``, 0.0
    when outside; with several equally hot cells, the share of them inside (the chance that one
    picked at random hits). None when there are no boxes or the map is empty; geometry as
    ``heatmap_mass_in_boxes``."""
    hm = np.asarray(heatmap, np.float64)
    boxes = list(boxes)
    if not boxes or hm.size == 0 or hm.max() <= 0:
        return None
    peak = hm >= hm.max()
    return float((box_mask(hm.shape, boxes, photo_size) & peak).sum() / peak.sum())
