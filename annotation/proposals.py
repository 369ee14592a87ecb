"""The model's proposed first box on a photo: the photo's lesion outline chosen by the top
sub-class's Grad-CAM map (``inference.ml.proposal``, NumPy only), read from the active model's
stored prediction and the photo file (no model run here).

The stored map is 32x32 over the centre square the model saw; where the photo does not split into
lesion and skin the box around the map's hot region is proposed instead. Prediction rows are read
through the app registry so that annotation does not import inference's Django modules (which
import annotation)."""

from __future__ import annotations

import logging

from django.apps import apps
from PIL import Image

from derm_portal import roles
from inference.ml.proposal import WORK_SIDE, map_box, propose_box

log = logging.getLogger(__name__)


def _rounded(box, width: int, height: int) -> tuple[int, int, int, int] | None:
    x0, y0, x1, y1 = (
        max(0, round(box[0])),
        max(0, round(box[1])),
        min(width, round(box[2])),
        min(height, round(box[3])),
    )
    return (x0, y0, x1, y1) if x0 < x1 and y0 < y1 else None


def photo_box(photo, heatmap) -> tuple[tuple[int, int, int, int] | None, str]:
    """(box in the photo's pixels, "outline" | "map") for the stored map; the map's box when the
    file cannot be read."""
    try:
        with photo.file.open("rb") as fh:
            img = Image.open(fh)
            img.draft("RGB", (2 * WORK_SIDE, 2 * WORK_SIDE))  # JPEG: decode at a reduced scale
            img = img.convert("RGB")
    except (OSError, ValueError):
        log.warning("proposal for photo %s: its file could not be read; the map's box is proposed", photo.pk)
        box = map_box(heatmap, photo.width, photo.height)
        return (_rounded(box, photo.width, photo.height) if box else None), "map"
    box, how = propose_box(img, heatmap)
    if box is None:
        return None, how
    sx, sy = photo.width / img.width, photo.height / img.height
    return _rounded((box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy), photo.width, photo.height), how


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
    box, how = photo_box(photo, overlay.heatmap) if overlay and overlay.heatmap else (None, "")
    if box is None:
        return None
    sees = roles.has_role(user, *roles.CAN_SEE_PREDICTIONS)
    return {
        "x0": box[0],
        "y0": box[1],
        "x1": box[2],
        "y1": box[3],
        "model": pred.model_version_id,
        "source": how,  # "outline": the photo's lesion region under the map; "map": the map's hot region
        "label": top.get("sub_class") if sees else None,
        "probability": top.get("probability") if sees else None,
    }
