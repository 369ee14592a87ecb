"""Reads for models, predictions, overlays, assessments and training runs, scoped to the user."""

from __future__ import annotations

from django.db.models import Case as CaseWhen
from django.db.models import Count, IntegerField, QuerySet, Value, When
from django.http import Http404

from annotation.selectors import cases_visible_to
from derm_portal import roles

from .models import (
    DoctorAssessment,
    GradCamOverlay,
    ModelStatus,
    ModelVersion,
    Prediction,
    PredictionStatus,
    TrainingRun,
)


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
    return Prediction.objects.filter(photo__case__in=cases_visible_to(user)).select_related("model_version", "photo")


def _active_first(qs: QuerySet[Prediction]) -> QuerySet[Prediction]:
    return qs.annotate(
        _active=CaseWhen(
            When(model_version__status=ModelStatus.ACTIVE, then=Value(0)), default=Value(1), output_field=IntegerField()
        )
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


# --------------------------------------------------------------------------- photos as the model sees them
def photo_boxes(photo) -> list[tuple[float, float, float, float]]:
    """Annotator boxes of the photo in original pixels (boxes drawn on a resized copy are scaled back)."""
    out = []
    for b in photo.boxes.all():
        try:
            sx = photo.width / b.image_width if b.image_width else 1.0
            sy = photo.height / b.image_height if b.image_height else 1.0
            out.append((float(b.x0) * sx, float(b.y0) * sy, float(b.x1) * sx, float(b.y1) * sy))
        except (TypeError, ZeroDivisionError):
            continue
    return out


def overlay_box_masses(*, prediction: Prediction) -> dict[int, float | None]:
    """overlay pk -> share of its heat map inside the photo's *current* annotator boxes (boxes are
    usually drawn after the upload, so this is computed on read from the stored 32x32 map)."""
    import numpy as np

    from inference.ml.heatmaps import heatmap_mass_in_boxes

    photo = prediction.photo
    boxes = photo_boxes(photo)
    out = {}
    for ov in prediction.overlays.all():
        if not boxes:
            out[ov.pk] = None
        elif ov.heatmap:
            out[ov.pk] = heatmap_mass_in_boxes(np.asarray(ov.heatmap, np.float32), boxes, (photo.width, photo.height))
        else:
            out[ov.pk] = ov.box_mass
    return out


def photo_metadata(photo) -> dict:
    """What the model's metadata model may take for a photo (``annotation.selectors.case_metadata``)."""
    from annotation.selectors import case_metadata

    return case_metadata(photo.case, when=photo.acquired_at or photo.created_at)


def model_manifest(model_version) -> dict:
    """The model's manifest: the registered copy, else read from its artefact ({} when unreadable)."""
    from . import loader

    if model_version.manifest:
        return dict(model_version.manifest)
    if not loader.artefact_present(model_version):
        return {}
    from inference.ml.artefact import read_manifest

    try:
        return read_manifest(loader.artefact_dir(model_version))
    except Exception:  # an unreadable manifest says nothing about the model
        return {}


# --------------------------------------------------------------------------- what a training run would use
def training_cases(*, taxonomy, label_sources) -> list[tuple]:
    """(photo, sub_class_code, case_pk) for every photo of a non-excluded case with a label from the chosen
    sources; per case the confirmed label wins, then the most recently signed."""
    from annotation.models import DiagnosisLabel, Photo

    labels = (
        DiagnosisLabel.objects.filter(source__in=list(label_sources), sub_class__taxonomy=taxonomy)
        .select_related("sub_class")
        .order_by("case_id", "-confirmed", "-signed_at", "-pk")
    )
    best: dict[int, str] = {}
    for lab in labels:
        best.setdefault(lab.case_id, lab.sub_class.code)
    photos = (
        Photo.objects.filter(case_id__in=list(best))
        .exclude(case__status="excluded")
        .select_related("case", "case__patient")
        .order_by("case_id", "pk")
    )
    return [(p, best[p.case_id], p.case_id) for p in photos]


def training_case_counts(*, taxonomy, label_sources) -> tuple[int, int]:
    """(cases, photos) training_cases would export, counted in the database."""
    from annotation.models import DiagnosisLabel, Photo

    cases = (
        DiagnosisLabel.objects.filter(source__in=list(label_sources), sub_class__taxonomy=taxonomy)
        .exclude(case__status="excluded")
        .values("case_id")
        .distinct()
    )
    return cases.count(), Photo.objects.filter(case_id__in=cases).count()


def model_recompute_progress(*, model_version) -> dict:
    """How far the model has read the portal's photos: done / total photos, and pending, running, failed."""
    from annotation.models import Photo

    by_status = dict(model_version.predictions.values_list("status").annotate(n=Count("pk")).values_list("status", "n"))
    total = Photo.objects.count()
    done = by_status.get(PredictionStatus.DONE, 0)
    return {
        "total": total,
        "done": done,
        "pending": by_status.get(PredictionStatus.PENDING, 0),
        "running": by_status.get(PredictionStatus.RUNNING, 0),
        "failed": by_status.get(PredictionStatus.FAILED, 0),
        "percent": round(100 * done / total) if total else 100,
        "in_progress": bool(by_status.get(PredictionStatus.PENDING) or by_status.get(PredictionStatus.RUNNING)),
    }


def training_class_counts(*, taxonomy, label_sources) -> dict[str, int]:
    """Sub-class code -> photos training_cases would export (0 for a class without any), counted in the database."""
    from annotation.models import DiagnosisLabel, Photo, SubClass

    best: dict[int, str] = {}
    labels = (
        DiagnosisLabel.objects.filter(source__in=list(label_sources), sub_class__taxonomy=taxonomy)
        .exclude(case__status="excluded")
        .order_by("case_id", "-confirmed", "-signed_at", "-pk")
        .values_list("case_id", "sub_class__code")
    )
    for case_id, code in labels:
        best.setdefault(case_id, code)
    out = dict.fromkeys(SubClass.objects.filter(taxonomy=taxonomy).values_list("code", flat=True), 0)
    per_case = Photo.objects.filter(case_id__in=list(best)).values("case_id").annotate(n=Count("pk"))
    for row in per_case:
        code = best[row["case_id"]]
        out[code] = out.get(code, 0) + row["n"]
    return out


def site_thresholds(*, model_version: ModelVersion) -> dict | None:
    """This site's tier thresholds for ``model_version`` ({urgent, malignant}), None: the artefact's own."""
    from .models import TriageSetting

    s = TriageSetting.objects.filter(model_version=model_version).first()
    return dict(s.thresholds) if s is not None and s.thresholds else None
