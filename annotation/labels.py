"""Writes for diagnosis labels and the class taxonomy. Plain functions, keyword-only."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from derm_portal import roles, shared_cache

from .models import (
    Case,
    CaseStatus,
    DiagnosisLabel,
    LabelChange,
    LabelSource,
    MetaClass,
    SubClass,
    Taxonomy,
)


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
                "Only dermatologists and admins confirm histopathology labels."
                if confirmed
                else "You may not record labels."
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
            raise TaxonomyError(
                '"display_names" must be an object {"<code>": "<name shown to people>"}, '
                f"not {type(display).__name__}."
            )
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
        shared_cache.changed()  # bulk_create sends no signal
    return tax


def taxonomy_make_default(*, taxonomy: Taxonomy) -> Taxonomy:
    with transaction.atomic():
        Taxonomy.objects.filter(is_default=True).exclude(pk=taxonomy.pk).update(is_default=False)
        taxonomy.is_default = True
        taxonomy.save(update_fields=["is_default"])
        shared_cache.changed()  # the queryset update sends no signal
    return taxonomy


def taxonomy_load_default(*, created_by=None) -> Taxonomy:
    """Load the shipped HAM10000 taxonomy once (idempotent)."""
    existing = Taxonomy.objects.filter(name="HAM10000").order_by("version").first()
    if existing:
        return existing
    from .defaults import HAM10000_TAXONOMY

    return taxonomy_import(data=HAM10000_TAXONOMY, created_by=created_by, make_default=True)


def subclass_update(
    *, sub_class: SubClass, by, display_name: str | None = None, malignancy_grade: Any = "keep"
) -> SubClass:
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


def taxonomy_edit(
    *, taxonomy: Taxonomy, by, sub_classes: dict[int, tuple[str, int | None]], meta_classes: dict[int, str]
) -> None:
    """Rename sub-classes (and set their malignancy grade) and meta-classes of one taxonomy:
    all of them or, on any refusal, none."""
    with transaction.atomic():
        for sub in SubClass.objects.filter(taxonomy=taxonomy, pk__in=list(sub_classes)):
            name, grade = sub_classes[sub.pk]
            subclass_update(sub_class=sub, by=by, display_name=name, malignancy_grade=grade)
        for meta in MetaClass.objects.filter(taxonomy=taxonomy, pk__in=list(meta_classes)):
            metaclass_update(meta_class=meta, by=by, display_name=meta_classes[meta.pk])


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
