"""The case-page panel (DERM_CASE_PANELS): per photo, the model's ranked differential, the coarse
distribution, the malignancy grade, warnings, Grad-CAM overlays and the doctor's assessment.
Only roles.CAN_SEE_PREDICTIONS see it."""

from __future__ import annotations

from django.template.loader import render_to_string

from annotation.models import SubClass

from . import selectors
from .presenters import prediction_view, warning_rule
from .services import model_active_for


def photo_block_context(*, request, photo, prediction) -> dict:
    assessments = list(selectors.assessments_visible_to(request.user).filter(photo=photo).order_by("-created_at")[:5])
    return {"photo": photo, "p": prediction_view(prediction), "assessments": assessments}


def panel_common_context() -> dict:
    active = model_active_for()
    taxonomy_id = active.taxonomy_id if active else None
    return {
        "active_model": active,
        "sub_classes": list(SubClass.objects.filter(taxonomy_id=taxonomy_id).select_related("meta_class"))
        if taxonomy_id
        else [],
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
    return render_to_string("inference/_panel_models.html", header_context(preds, model_active_for()))


def panel_context(request, case) -> dict:
    preds = selectors.case_predictions(user=request.user, case=case)
    common = panel_common_context()
    return {
        "case": case,
        "blocks": [
            photo_block_context(request=request, photo=ph, prediction=preds.get(ph.pk)) for ph in case.photos.all()
        ],
        **common,
        **header_context(preds.values(), common["active_model"]),
    }


def prediction_panel(request, case) -> str:
    if not selectors.can_see_predictions(request.user):
        return ""
    return render_to_string("inference/case_panel.html", panel_context(request, case), request=request)
