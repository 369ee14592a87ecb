"""Writes for cases, photos, labels and taxonomies. Plain functions, keyword-only."""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from derm_portal import roles

from .images import ImageRejected, clean_image, read_upload
from .models import (
    Case,
    CaseStatus,
    DiagnosisLabel,
    ExclusionReason,
    LabelChange,
    LabelSource,
    MetaClass,
    Modality,
    Patient,
    Photo,
    SubClass,
    Taxonomy,
)

log = logging.getLogger(__name__)


class DuplicatePhoto(ValueError):
    def __init__(self, filename: str, existing: Photo):
        self.filename = filename
        self.existing = existing
        super().__init__(f"{filename}: this photo is already in the case (photo {existing.pk}); it was not stored twice.")


# --------------------------------------------------------------------------- patients/cases
def patient_get_or_create(*, code: str, sex: str = "unknown", birth_year: int | None = None) -> Patient:
    code = (code or "").strip()
    if not code:
        raise ValidationError({"patient_code": "A pseudonymous patient code is required."})
    patient, created = Patient.objects.get_or_create(code=code, defaults={"sex": sex or "unknown", "birth_year": birth_year})
    if not created and ((sex and sex != "unknown" and patient.sex == "unknown") or (birth_year and not patient.birth_year)):
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
        _delete_stored(stored_name, keep_if_referenced=True)
        existing = Photo.objects.filter(case=case, sha256=clean.sha256).first()
        if existing:
            raise DuplicatePhoto(filename, existing)
        raise
    except BaseException:
        _delete_stored(stored_name, keep_if_referenced=True)
        raise
    if run_hooks:
        for hook in _photo_hooks():
            transaction.on_commit(lambda hook=hook, pk=photo.pk: hook(photo_pk=pk))
    return photo


def _delete_stored(name: str | None, *, keep_if_referenced: bool) -> None:
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
                {"id": p.pk, "name": p.original_name, "width": p.width, "height": p.height,
                 "modality": p.modality, "modality_display": p.get_modality_display()}
                for p in self.photos
            ],
            "errors": self.errors,
        }


def photos_attach_batch(*, case: Case, uploads: Iterable, uploaded_by, modality: str = Modality.CLINICAL) -> BatchResult:
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


# --------------------------------------------------------------------------- labels
def label_record(
    *,
    case: Case,
    sub_class: SubClass,
    source: str,
    by,
    report_text: str = "",
    report_file=None,
    signed_at: datetime | None = None,
    note: str = "",
    check_permissions: bool = True,
) -> DiagnosisLabel:
    """Record (or change) the case's label from one source. Histopathology labels are
    the confirmed ones and only dermatologists and admins may record them."""
    if source not in LabelSource.values:
        raise ValidationError({"source": f"Unknown label source {source!r}."})
    confirmed = source == LabelSource.HISTOPATHOLOGY
    if check_permissions:
        needed = roles.CAN_CONFIRM_LABEL if confirmed else roles.CAN_RECORD_LABEL
        if not roles.has_role(by, needed):
            raise PermissionDenied(
                "Only dermatologists and admins confirm histopathology labels." if confirmed else "You may not record labels."
            )
    with transaction.atomic():
        label = DiagnosisLabel.objects.select_for_update().filter(case=case, source=source).first()
        old = label.sub_class if label else None
        if label is None:
            label = DiagnosisLabel(case=case, source=source)
        label.sub_class = sub_class
        label.confirmed = confirmed
        label.report_text = report_text or label.report_text
        label.signed_by = by if (by is not None and getattr(by, "pk", None)) else label.signed_by
        label.signed_at = signed_at or timezone.now()
        if report_file is not None:
            label.report_file = report_file
        label.save()
        if old is None or old.pk != sub_class.pk:
            LabelChange.objects.create(
                label=label,
                case=case,
                source=source,
                old_sub_class=old,
                new_sub_class=sub_class,
                changed_by=by if getattr(by, "pk", None) else None,
                note=note,
            )
        if confirmed and case.status != CaseStatus.EXCLUDED and case.status != CaseStatus.CONFIRMED:
            case.status = CaseStatus.CONFIRMED
            case.save(update_fields=["status", "updated_at"])
    return label


# --------------------------------------------------------------------------- taxonomy
class TaxonomyError(ValueError):
    pass


_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
TAXONOMY_CODE_MAX = 64  # MetaClass.code / SubClass.code
TAXONOMY_NAME_MAX = 100  # Taxonomy.name
DISPLAY_NAME_MAX = 200  # display_name


def _check_text(value, what: str, limit: int) -> None:
    """One line of text: a string, not blank, at most `limit` characters, no line breaks."""
    if not isinstance(value, str):
        raise TaxonomyError(f"{what} must be text, not {type(value).__name__} {value!r:.60}.")
    if not value.strip():
        raise TaxonomyError(f"{what} is empty.")
    if len(value) > limit:
        raise TaxonomyError(f'{what} "{value[:40]}..." is {len(value)} characters long; the limit is {limit}.')
    if _CONTROL_CHARS.search(value):
        raise TaxonomyError(f"{what} {value!r:.80} contains a line break or control character; use one line of text.")


def taxonomy_validate(data: dict, *, name: str | None = None) -> None:
    """Raise TaxonomyError with a clear message for any structural problem."""
    if not isinstance(data, dict) or not isinstance(data.get("meta_classes"), dict) or not data["meta_classes"]:
        raise TaxonomyError('The taxonomy needs a non-empty "meta_classes" object: {"<meta>": ["<sub>", ...]}.')
    parents: dict[str, str] = {}
    for meta, subs in data["meta_classes"].items():
        _check_text(meta, "A meta-class code", TAXONOMY_CODE_MAX)
        if not isinstance(subs, list) or not subs:
            raise TaxonomyError(f'Meta-class "{meta}" needs a non-empty list of sub-classes.')
        for sub in subs:
            _check_text(sub, f'A sub-class code under "{meta}"', TAXONOMY_CODE_MAX)
            if sub in parents:
                raise TaxonomyError(
                    f'Sub-class "{sub}" is listed under two parents, "{parents[sub]}" and "{meta}"; each sub-class has exactly one.'
                )
            if sub in data["meta_classes"]:
                raise TaxonomyError(f'"{sub}" is used both as a meta-class and as a sub-class.')
            parents[sub] = meta
    malignancy = data.get("malignancy") or {}
    if not isinstance(malignancy, dict):
        raise TaxonomyError('"malignancy" must be an object {"<sub>": 1, 2, 3 or null}.')
    for sub, grade in malignancy.items():
        if sub not in parents:
            raise TaxonomyError(f'Malignancy grade given for "{sub}", which is not a sub-class of this taxonomy.')
        if isinstance(grade, bool) or grade not in (1, 2, 3, None):
            raise TaxonomyError(f'Malignancy grade of "{sub}" must be 1, 2, 3 or null (not a tumour), not {grade!r}.')
    display = data.get("display_names")
    if display is not None:
        if not isinstance(display, dict):
            raise TaxonomyError('"display_names" must be an object {"<code>": "<name shown to people>"}, '
                                f"not {type(display).__name__}.")
        for code, text in display.items():
            _check_text(text, f'The display name of "{code}"', DISPLAY_NAME_MAX)
    if name is not None or data.get("name") is not None:
        _check_text(name if name is not None else data.get("name"), "The taxonomy name", TAXONOMY_NAME_MAX)
    if not isinstance(data.get("description", ""), str):
        raise TaxonomyError('"description" must be text.')
    version = data.get("version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
        raise TaxonomyError(f'"version" must be a whole number from 1, not {version!r}.')


def _no_duplicate_keys(pairs):
    """json object_pairs_hook: a key given twice in one object is an error, not a silent overwrite."""
    seen: dict = {}
    for key, value in pairs:
        if key in seen:
            raise TaxonomyError(f'the key "{key}" appears twice in one JSON object; give each key once.')
        seen[key] = value
    return seen


def taxonomy_import(*, data: dict, created_by=None, make_default: bool = False, name: str | None = None) -> Taxonomy:
    """Create a new taxonomy version from the inference.ml JSON format
    (plus optional "name", "display_names" {code: text} and "description")."""
    taxonomy_validate(data, name=name or None)
    name = name or data.get("name") or "taxonomy"
    display = data.get("display_names") or {}
    grades = data.get("malignancy") or {}
    with transaction.atomic():
        last = Taxonomy.objects.filter(name=name).order_by("-version").first()
        tax = Taxonomy.objects.create(
            name=name,
            version=(last.version + 1) if last else int(data.get("version") or 1),
            description=data.get("description", ""),
            created_by=created_by,
        )
        for m_order, (meta, subs) in enumerate(data["meta_classes"].items()):
            mc = MetaClass.objects.create(taxonomy=tax, code=meta, display_name=display.get(meta, meta), order=m_order)
            SubClass.objects.bulk_create(
                SubClass(
                    taxonomy=tax,
                    meta_class=mc,
                    code=sub,
                    display_name=display.get(sub, sub),
                    malignancy_grade=grades.get(sub),
                    order=s_order,
                )
                for s_order, sub in enumerate(subs)
            )
        if make_default or not Taxonomy.objects.filter(is_default=True).exists():
            taxonomy_make_default(taxonomy=tax)
    return tax


def taxonomy_make_default(*, taxonomy: Taxonomy) -> Taxonomy:
    with transaction.atomic():
        Taxonomy.objects.filter(is_default=True).exclude(pk=taxonomy.pk).update(is_default=False)
        taxonomy.is_default = True
        taxonomy.save(update_fields=["is_default"])
    return taxonomy


def taxonomy_load_default(*, created_by=None) -> Taxonomy:
    """Load the shipped HAM10000 taxonomy once (idempotent)."""
    existing = Taxonomy.objects.filter(name="HAM10000").order_by("version").first()
    if existing:
        return existing
    from .defaults import HAM10000_TAXONOMY

    return taxonomy_import(data=HAM10000_TAXONOMY, created_by=created_by, make_default=True)


def subclass_update(*, sub_class: SubClass, by, display_name: str | None = None, malignancy_grade: Any = "keep") -> SubClass:
    if not roles.has_role(by, roles.CAN_EDIT_TAXONOMY):
        raise PermissionDenied("Only admins edit the taxonomy.")
    if display_name is not None:
        sub_class.display_name = display_name.strip() or sub_class.code
    if malignancy_grade != "keep":
        if malignancy_grade not in (None, 1, 2, 3):
            raise ValidationError({"malignancy_grade": "Grade must be 1, 2, 3 or empty (not a tumour)."})
        sub_class.malignancy_grade = malignancy_grade
    sub_class.save()
    return sub_class


def metaclass_update(*, meta_class: MetaClass, by, display_name: str) -> MetaClass:
    if not roles.has_role(by, roles.CAN_EDIT_TAXONOMY):
        raise PermissionDenied("Only admins edit the taxonomy.")
    meta_class.display_name = display_name.strip() or meta_class.code
    meta_class.save(update_fields=["display_name"])
    return meta_class


def taxonomy_from_json_bytes(raw: bytes, *, source_name: str) -> dict:
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TaxonomyError(f"{source_name}: not valid JSON ({exc}).")
    except TaxonomyError as exc:
        raise TaxonomyError(f"{source_name}: {exc}")
