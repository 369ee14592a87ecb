"""Reads for models, predictions, overlays, assessments and training runs, scoped to the user."""
from __future__ import annotations

from django.db.models import Case as CaseWhen, IntegerField, QuerySet, Value, When
from django.http import Http404

from annotation.selectors import cases_visible_to
from derm_portal import roles

from .models import (DoctorAssessment, GradCamOverlay, ModelStatus, ModelVersion, Prediction, PredictionStatus,
                     TrainingRun)


def can_see_predictions(user) -> bool:
    return roles.has_role(user, *roles.CAN_SEE_PREDICTIONS)


def model_versions_visible_to(user) -> QuerySet[ModelVersion]:
    if roles.has_role(user, *roles.CAN_VIEW_MODELS):
        return ModelVersion.objects.select_related("taxonomy", "created_by", "activated_by")
    return ModelVersion.objects.none()


def model_version_get(*, user, pk: int) -> ModelVersion:
    try:
        return model_versions_visible_to(user).get(pk=pk)
    except ModelVersion.DoesNotExist:
        raise Http404("No such model, or you may not see it.")


def predictions_visible_to(user) -> QuerySet[Prediction]:
    if not can_see_predictions(user):
        return Prediction.objects.none()
    return Prediction.objects.filter(photo__case__in=cases_visible_to(user)).select_related(
        "model_version", "photo"
    )


def _active_first(qs: QuerySet[Prediction]) -> QuerySet[Prediction]:
    return qs.annotate(
        _active=CaseWhen(When(model_version__status=ModelStatus.ACTIVE, then=Value(0)), default=Value(1),
                      output_field=IntegerField())
    ).order_by("photo_id", "_active", "-created_at", "-pk")


def case_predictions(*, user, case) -> dict[int, Prediction]:
    """photo pk -> the prediction to show (the active model's, else the newest)."""
    if not can_see_predictions(user):
        return {}
    out: dict[int, Prediction] = {}
    qs = _active_first(predictions_visible_to(user).filter(photo__case=case)).prefetch_related("overlays")
    for p in qs:
        out.setdefault(p.photo_id, p)
    return out


def prediction_get(*, user, pk: int) -> Prediction:
    try:
        return predictions_visible_to(user).get(pk=pk)
    except Prediction.DoesNotExist:
        raise Http404("No such prediction, or you may not see it.")


def overlay_get(*, user, pk: int) -> GradCamOverlay:
    if not can_see_predictions(user):
        raise Http404("No such overlay, or you may not see it.")
    try:
        return GradCamOverlay.objects.select_related("prediction").get(
            pk=pk, prediction__in=predictions_visible_to(user)
        )
    except GradCamOverlay.DoesNotExist:
        raise Http404("No such overlay, or you may not see it.")


def assessments_visible_to(user) -> QuerySet[DoctorAssessment]:
    if not can_see_predictions(user):
        return DoctorAssessment.objects.none()
    return DoctorAssessment.objects.filter(case__in=cases_visible_to(user)).select_related("doctor", "sub_class")


def training_runs_visible_to(user) -> QuerySet[TrainingRun]:
    if roles.has_role(user, *roles.CAN_TRAIN_MODELS):
        return TrainingRun.objects.select_related("taxonomy", "created_by", "model_version")
    return TrainingRun.objects.none()


def training_run_get(*, user, pk: int) -> TrainingRun:
    try:
        return training_runs_visible_to(user).get(pk=pk)
    except TrainingRun.DoesNotExist:
        raise Http404("No such training run, or you may not see it.")


def pending_statuses() -> tuple[str, ...]:
    return (PredictionStatus.PENDING, PredictionStatus.RUNNING)
