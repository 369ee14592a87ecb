"""The model's proposed first box on a photo: the box around the hottest region of the top
sub-class's Grad-CAM map, read from the active model's stored prediction (no model run here).

The stored map is 32x32 over the centre square the model saw (inference.ml.explain); the
proposal is the bounding box of the connected region >= LEVEL x peak that holds the peak,
mapped back to photo pixels. Prediction rows are read through the app registry so that
annotation does not import inference (which imports annotation)."""

from __future__ import annotations

import numpy as np
from django.apps import apps
from scipy import ndimage

from derm_portal import roles

LEVEL = 0.5  # share of the map's peak that still counts as the lesion


def cam_box(heatmap, width: int, height: int, level: float = LEVEL) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) in photo pixels of the region around the map's peak, or None for an empty map."""
    cam = np.asarray(heatmap, dtype=np.float32)
    if cam.ndim != 2 or cam.size == 0 or not np.isfinite(cam).all() or cam.max() <= 0:
        return None
    peak = np.unravel_index(int(np.argmax(cam)), cam.shape)
    regions, _ = ndimage.label(cam >= level * cam.max())
    rows, cols = np.nonzero(regions == regions[peak])
    side = float(min(width, height))
    left, top = (width - side) / 2.0, (height - side) / 2.0
    ch, cw = side / cam.shape[0], side / cam.shape[1]
    x0, x1 = left + cols.min() * cw, left + (cols.max() + 1) * cw
    y0, y1 = top + rows.min() * ch, top + (rows.max() + 1) * ch
    box = (max(0, round(x0)), max(0, round(y0)), min(width, round(x1)), min(height, round(y1)))
    return box if box[0] < box[2] and box[1] < box[3] else None


def proposal_for(*, photo, user) -> dict | None:
    """{x0, y0, x1, y1, label, probability} from the active model's finished prediction of the
    photo; the class and probability only for roles that may see predictions (others get the box)."""
    Prediction = apps.get_model("inference", "Prediction")
    pred = (
        Prediction.objects.filter(photo=photo, status="done", model_version__status="active")
        .order_by("-created_at", "-pk")
        .first()
    )
    if pred is None or not pred.ranked:
        return None
    top = pred.ranked[0]
    overlay = (
        pred.overlays.filter(target_kind="sub", target=top.get("sub_class")).first()
        or pred.overlays.filter(target_kind="sub", rank=0).first()
    )
    box = cam_box(overlay.heatmap, photo.width, photo.height) if overlay and overlay.heatmap else None
    if box is None:
        return None
    sees = roles.has_role(user, *roles.CAN_SEE_PREDICTIONS)
    return {
        "x0": box[0],
        "y0": box[1],
        "x1": box[2],
        "y1": box[3],
        "model": pred.model_version_id,
        "label": top.get("sub_class") if sees else None,
        "probability": top.get("probability") if sees else None,
    }
