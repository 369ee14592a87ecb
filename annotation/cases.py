"""Writes for patients, cases and their photos. Plain functions, keyword-only."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.utils.module_loading import import_string

from derm_portal import roles

from .images import ImageRejected, clean_image, read_upload
from .models import Case, CaseStatus, ExclusionReason, Modality, Patient, Photo

log = logging.getLogger(__name__)


class DuplicatePhoto(ValueError):
    def __init__(self, filename: str, existing: Photo):
        self.filename = filename
        self.existing = existing
        super().__init__(
            f"{filename}: this photo is already in the case (photo {existing.pk}); it was not stored twice."
        )


# --------------------------------------------------------------------------- patients/cases
def patient_get_or_create(*, code: str, sex: str = "unknown", birth_year: int | None = None) -> Patient:
    code = (code or "").strip()
    if not code:
        raise ValidationError({"patient_code": "A pseudonymous patient code is required."})
    patient, created = Patient.objects.get_or_create(
        code=code, defaults={"sex": sex or "unknown", "birth_year": birth_year}
    )
    if not created and (
        (sex and sex != "unknown" and patient.sex == "unknown") or (birth_year and not patient.birth_year)
    ):
        patient.sex = sex if patient.sex == "unknown" and sex else patient.sex
        patient.birth_year = patient.birth_year or birth_year
        patient.save(update_fields=["sex", "birth_year"])
    return patient


def case_create(
    *,
    patient_code: str,
    created_by,
    sex: str = "unknown",
    birth_year: int | None = None,
    body_site: str = "",
    clinical_history: str = "",
    age_at_visit: int | None = None,
    external_id: str = "",
    validate_constraints: bool = True,
) -> Case:
    """Create a case (and its pseudonymous patient if new). Importers that already know the
    external id is new pass validate_constraints=False to skip the per-constraint SELECTs
    of full_clean(); the database still enforces every constraint."""
    with transaction.atomic():
        patient = patient_get_or_create(code=patient_code, sex=sex, birth_year=birth_year)
        case = Case(
            patient=patient,
            body_site=body_site,
            clinical_history=clinical_history,
            age_at_visit=age_at_visit,
            external_id=external_id,
            created_by=created_by,
        )
        case.full_clean(validate_constraints=validate_constraints)
        case.save()
    return case


def case_set_status(*, case: Case, status: str, by, exclusion_reason: str = "", note: str = "") -> Case:
    if not roles.has_role(by, roles.CAN_EDIT_CASES):
        raise PermissionDenied("You may not change case status.")
    if status not in CaseStatus.values:
        raise ValidationError({"status": f"Unknown status {status!r}."})
    if status == CaseStatus.EXCLUDED:
        if exclusion_reason not in ExclusionReason.values:
            raise ValidationError({"exclusion_reason": "Pick why the case is excluded."})
    else:
        exclusion_reason, note = "", ""
    if status == CaseStatus.CONFIRMED and not case.labels.filter(confirmed=True).exists():
        raise ValidationError({"status": "A case is confirmed only by a histopathology label."})
    case.status = status
    case.exclusion_reason = exclusion_reason
    case.exclusion_note = note
    case.save(update_fields=["status", "exclusion_reason", "exclusion_note", "updated_at"])
    return case


# --------------------------------------------------------------------------- photos
def _photo_hooks() -> list:
    return [import_string(path) for path in getattr(settings, "DERM_PHOTO_ATTACHED_HOOKS", [])]


def photo_attach(
    *,
    case: Case,
    data: bytes,
    filename: str,
    uploaded_by=None,
    modality: str = Modality.CLINICAL,
    acquired_at: datetime | None = None,
    run_hooks: bool = True,
) -> Photo:
    """Validate, clean (EXIF orientation applied, metadata dropped) and store one photo.

    Raises ImageRejected or DuplicatePhoto; on any failure nothing is left behind:
    no row, no file.
    """
    if modality not in Modality.values:
        raise ValidationError({"modality": f"Unknown modality {modality!r}."})
    clean = clean_image(data, filename)
    existing = Photo.objects.filter(case=case, sha256=clean.sha256).first()
    if existing:
        raise DuplicatePhoto(filename, existing)
    photo = Photo(
        case=case,
        modality=modality,
        width=clean.width,
        height=clean.height,
        sha256=clean.sha256,
        original_name=filename[:255],
        acquired_at=acquired_at,
        uploaded_by=uploaded_by,
    )
    stored_name = None
    try:
        with transaction.atomic():
            photo.file.save(f"upload.{clean.extension}", ContentFile(clean.content), save=False)
            stored_name = photo.file.name
            photo.save()
    except IntegrityError:
        stored_file_delete(stored_name, keep_if_referenced=True)
        existing = Photo.objects.filter(case=case, sha256=clean.sha256).first()
        if existing:
            raise DuplicatePhoto(filename, existing)
        raise
    except BaseException:
        stored_file_delete(stored_name, keep_if_referenced=True)
        raise
    if run_hooks:
        for hook in _photo_hooks():
            transaction.on_commit(lambda hook=hook, pk=photo.pk: hook(photo_pk=pk))
    return photo


def stored_file_delete(name: str | None, *, keep_if_referenced: bool) -> None:
    """Remove a stored photo file (after a rollback); keep it if a photo row still points at it."""
    if not name:
        return
    if keep_if_referenced and Photo.objects.filter(file=name).exists():
        return
    from django.core.files.storage import default_storage

    try:
        default_storage.delete(name)
    except Exception:  # pragma: no cover - storage outage; logged for the operator
        log.exception("could not delete orphan file %s", name)


@dataclass
class BatchResult:
    photos: list[Photo] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "stored": [
                {
                    "id": p.pk,
                    "name": p.original_name,
                    "width": p.width,
                    "height": p.height,
                    "modality": p.modality,
                    "modality_display": p.get_modality_display(),
                }
                for p in self.photos
            ],
            "errors": self.errors,
        }


def photos_attach_batch(
    *, case: Case, uploads: Iterable, uploaded_by, modality: str = Modality.CLINICAL
) -> BatchResult:
    """Attach several uploads; a bad one is reported and leaves the others untouched."""
    result = BatchResult()
    for upload in uploads:
        name = getattr(upload, "name", "upload")
        try:
            data = read_upload(upload, name)
            with transaction.atomic():
                result.photos.append(
                    photo_attach(case=case, data=data, filename=name, uploaded_by=uploaded_by, modality=modality)
                )
        except (ImageRejected, DuplicatePhoto) as exc:
            result.errors.append({"file": name, "error": str(exc)})
        except ValidationError as exc:
            result.errors.append({"file": name, "error": f"{name}: {'; '.join(exc.messages)}"})
    return result


class NothingStored(ValueError):
    """Every photo of a new case was refused; the case was not created. `errors` says why per file."""

    def __init__(self, errors: list[dict[str, str]]):
        self.errors = errors
        super().__init__("; ".join(e["error"] for e in errors) or "No photo was stored.")


def case_create_with_photos(
    *, uploads: list, uploaded_by, modality: str = Modality.CLINICAL, submission_token: str = "", **case_fields
) -> tuple[Case, BatchResult]:
    """Create a case and attach its photos in one transaction. If photos were sent and every
    one was refused, nothing is created (NothingStored), so a corrected resubmit leaves no empty
    duplicate case; if the transaction fails, the files already written are removed. The form's
    ``submission_token`` makes a repeated submission return the case the first one created."""
    from derm_portal.idempotency import once

    batch = BatchResult()

    def create() -> Case:
        nonlocal batch
        case, batch = _case_create_with_photos(
            uploads=uploads, uploaded_by=uploaded_by, modality=modality, **case_fields
        )
        return case

    case, _ = once(
        user=uploaded_by, kind="case", token=submission_token, create=create, fetch=lambda pk: Case.objects.get(pk=pk)
    )
    return case, batch


def _case_create_with_photos(*, uploads: list, uploaded_by, modality: str, **case_fields) -> tuple[Case, BatchResult]:
    result = None
    try:
        with transaction.atomic():
            case = case_create(created_by=uploaded_by, **case_fields)
            result = photos_attach_batch(case=case, uploads=uploads, uploaded_by=uploaded_by, modality=modality)
            if uploads and not result.photos:
                raise NothingStored(result.errors)
    except BaseException:
        if result is not None:  # rolled back: remove the files already written
            for photo in result.photos:
                stored_file_delete(photo.file.name, keep_if_referenced=False)
        raise
    return case, result
