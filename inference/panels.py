"""The case-page panel (DERM_CASE_PANELS): per photo, the model's ranked differential, the coarse
distribution, the malignancy grade, warnings, Grad-CAM overlays and the doctor's assessment.
Only roles.CAN_SEE_PREDICTIONS see it."""

from __future__ import annotations

from django.db.models import prefetch_related_objects
from django.template.loader import render_to_string

from annotation.selectors import sub_classes_shared

from . import selectors
from .presenters import prediction_view, warning_rule
from .services.registry import model_active_shared

ASSESSMENTS_SHOWN = 5


def photo_block_context(*, request, photo, prediction, assessments=None) -> dict:
    """One photo's block; ``assessments`` (its newest first) when the caller fetched them for many photos."""
    if assessments is None:
        assessments = selectors.assessments_visible_to(request.user).filter(photo=photo).order_by("-created_at")
    return {"photo": photo, "p": prediction_view(prediction), "assessments": list(assessments[:ASSESSMENTS_SHOWN])}


def panel_common_context() -> dict:
    active = model_active_shared()
    return {
        "active_model": active,
        "sub_classes": sub_classes_shared(active.taxonomy_id if active else None),
        "warning_rule": warning_rule(active),
    }


def shown_models(preds) -> list:
    """The model versions that made the predictions shown (the header names these, never another model)."""
    seen = {}
    for p in preds:
        seen.setdefault(p.model_version_id, p.model_version)
    return list(seen.values())


def header_context(preds, active) -> dict:
    """The panel header's context (``_panel_models.html``) for the predictions shown."""
    models = shown_models(preds)
    return {
        "active_model": active,
        "shown_models": models,
        "shows_retired": any(active is None or m.pk != active.pk for m in models),
        "recomputing": bool(active) and active.predictions.filter(status__in=selectors.pending_statuses()).exists(),
    }


def panel_header(preds) -> str:
    """The header's HTML, sent with the polled state so it follows the blocks when results are replaced."""
    return render_to_string("inference/_panel_models.html", header_context(preds, model_active_shared()))


def panel_context(request, case) -> dict:
    """A constant number of queries however many photos: predictions with their heat maps, the photos'
    boxes (for the heat-map shares) and the doctors' assessments are each read once for the case."""
    photos = list(case.photos.all())
    preds = selectors.case_predictions(user=request.user, case=case)
    if preds:
        prefetch_related_objects(photos, "boxes")
        by_pk = {ph.pk: ph for ph in photos}
        for p in preds.values():
            p.photo = by_pk.get(p.photo_id, p.photo)  # the photo with its boxes
    assessments: dict[int, list] = {}
    for a in selectors.assessments_visible_to(request.user).filter(photo__in=photos).order_by("-created_at", "-id"):
        assessments.setdefault(a.photo_id, []).append(a)
    common = panel_common_context()
    return {
        "case": case,
        "blocks": [
            photo_block_context(
                request=request, photo=ph, prediction=preds.get(ph.pk), assessments=assessments.get(ph.pk, [])
            )
            for ph in photos
        ],
        **common,
        **header_context(preds.values(), common["active_model"]),
    }


def prediction_panel(request, case) -> str:
    if not selectors.can_see_predictions(request.user):
        return ""
    return render_to_string("inference/case_panel.html", panel_context(request, case), request=request)
