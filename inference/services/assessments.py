"""Doctors' assessments of the model's answer, kept apart from the pathology labels."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied, ValidationError

from annotation.models import Photo, SubClass
from derm_portal import roles

from ..models import DoctorAssessment, Prediction, PredictionStatus


def assessment_record(
    *, photo: Photo, doctor, agrees: bool, sub_class: SubClass | None = None, note: str = ""
) -> DoctorAssessment:
    """The doctor's agreement with the model or own diagnosis. Stored apart from DiagnosisLabel:
    a pathology label is never touched."""
    if not roles.has_role(doctor, *roles.CAN_SEE_PREDICTIONS):
        raise PermissionDenied("Only dermatologists record assessments of the model's answer.")
    if not agrees and sub_class is None:
        raise ValidationError({"sub_class": "When you disagree, pick your own diagnosis."})
    pred = (
        Prediction.objects.filter(photo=photo, status=PredictionStatus.DONE)
        .order_by("-model_version__status", "-finished_at")
        .first()
    )
    if sub_class is not None and pred is not None and sub_class.taxonomy_id != pred.model_version.taxonomy_id:
        raise ValidationError({"sub_class": "That diagnosis is from another taxonomy than the model's."})
    if agrees and sub_class is None and pred is not None and pred.ranked:
        sub_class = SubClass.objects.filter(
            taxonomy_id=pred.model_version.taxonomy_id, code=pred.ranked[0]["sub_class"]
        ).first()
    return DoctorAssessment.objects.create(
        case=photo.case,
        photo=photo,
        prediction=pred,
        doctor=doctor,
        agrees=agrees,
        sub_class=sub_class,
        note=note[:1000],
    )
