"""This site's triage targets: an admin sets the target sensitivities of a model's urgency tiers; the
thresholds are recomputed from the artefact's stored held-out outputs (no retraining) and used for
predictions made from then on (``selectors.site_thresholds``)."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from .. import loader
from ..models import ModelVersion, TriageSetting


def _target(value, field: str, label: str) -> float:
    try:
        v = float(str(value).strip())
    except (TypeError, ValueError):
        raise ValidationError({field: f"{label} must be a number between 0 and 1 (e.g. 0.9), not {value!r}."})
    if not 0.5 <= v <= 1:
        raise ValidationError(
            {field: f"{label} must be between 0.5 and 1 (a share of the positive held-out photos), not {v:g}."}
        )
    return v


def triage_targets_set(*, model_version: ModelVersion, urgent, malignant, high_grade=None, by=None) -> TriageSetting:
    """Recompute ``model_version``'s tier thresholds for these target sensitivities and keep them for
    this site. ValidationError (naming the field) for a bad target or an artefact without triage
    calibration; nothing is written then."""
    from inference.ml.triage import DEFAULT_TARGETS, thresholds_for_targets

    u = _target(urgent, "urgent_target", "Urgent-tier target sensitivity")
    m = _target(malignant, "malignant_target", "Malignant target sensitivity")
    h = (
        DEFAULT_TARGETS["high_grade"]
        if high_grade in (None, "")
        else _target(high_grade, "high_grade_target", "High-grade target sensitivity")
    )
    try:
        result = thresholds_for_targets(loader.artefact_dir(model_version), urgent=u, malignant=m, high_grade=h)
    except FileNotFoundError as exc:
        raise ValidationError(
            f"{model_version.name} has no triage calibration on this server (run `python -m "
            f"inference.ml calibrate`), so its thresholds cannot be recomputed: {exc}"
        )
    except ValueError as exc:
        raise ValidationError(str(exc))
    with transaction.atomic():
        setting, _ = TriageSetting.objects.update_or_create(
            model_version=model_version,
            defaults={
                "urgent_target": u,
                "malignant_target": m,
                "high_grade_target": h,
                "result": result,
                "updated_by": by,
            },
        )
    return setting


def triage_targets_reset(*, model_version: ModelVersion) -> None:
    """Back to the artefact's own thresholds (chosen at training time)."""
    TriageSetting.objects.filter(model_version=model_version).delete()
