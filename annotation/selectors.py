"""Reads for cases, photos, labels and taxonomies, always scoped to the user."""

from __future__ import annotations

from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Subquery
from django.http import Http404
from django.utils import timezone

from derm_portal import roles
from derm_portal.shared_cache import shared

from .models import Case, DiagnosisLabel, LabelChange, MetaClass, Photo, SubClass, Taxonomy


def cases_visible_to(user) -> QuerySet[Case]:
    """Clinical roles see every case; a coordinator (and no other clinical role) only the
    histopathology-confirmed ones, which are all a reader study can use (roles.py)."""
    if roles.has_role(user, roles.CAN_VIEW_ALL_CASES):
        return Case.objects.all()
    if roles.has_role(user, roles.CAN_VIEW_CONFIRMED_CASES):
        return Case.objects.filter(Exists(DiagnosisLabel.objects.filter(case=OuterRef("pk"), confirmed=True)))
    return Case.objects.none()


def _best_label(field: str):
    return Subquery(
        DiagnosisLabel.objects.filter(case=OuterRef("pk")).order_by("-confirmed", "-signed_at").values(field)[:1]
    )


def case_list(
    *,
    user,
    q: str = "",
    status: str = "",
    diagnosis: str = "",
    confirmed: str = "",
    modality: str = "",
) -> QuerySet[Case]:
    qs = cases_visible_to(user).select_related("patient")
    if q:
        qs = qs.filter(
            Q(patient__code__icontains=q)
            | Q(external_id__icontains=q)
            | Q(body_site__icontains=q)
            | Q(clinical_history__icontains=q)
        )
    if status:
        qs = qs.filter(status=status)
    if diagnosis:
        qs = qs.filter(Exists(DiagnosisLabel.objects.filter(case=OuterRef("pk"), sub_class__code=diagnosis)))
    if confirmed in ("yes", "true", "1"):
        qs = qs.filter(Exists(DiagnosisLabel.objects.filter(case=OuterRef("pk"), confirmed=True)))
    elif confirmed in ("no", "false", "0"):
        qs = qs.filter(~Exists(DiagnosisLabel.objects.filter(case=OuterRef("pk"), confirmed=True)))
    if modality:
        qs = qs.filter(Exists(Photo.objects.filter(case=OuterRef("pk"), modality=modality)))
    return qs.annotate(
        diagnosis_code=_best_label("sub_class__code"),
        diagnosis_confirmed=_best_label("confirmed"),
        diagnosis_source=_best_label("source"),
        photo_count=Subquery(
            Photo.objects.filter(case=OuterRef("pk")).values("case").annotate(c=Count("pk")).values("c")[:1]
        ),
    ).order_by("-created_at", "-id")


def case_rows(*, user, ids: list[int]) -> list[Case]:
    """The list-page rows for `ids` (one page), annotated like case_list, in the given order.

    Pages are cut from `case_list(...).values_list("pk", flat=True)` first, so the
    per-row label/photo subqueries run for the 25-50 rows shown only, never for the rows
    an OFFSET skips (page 200 of 10,000 cases stays as fast as page 1)."""
    if not ids:
        return []
    rows = {c.pk: c for c in case_list(user=user).filter(pk__in=list(ids))}
    return [rows[pk] for pk in ids if pk in rows]


def case_get(*, user, pk: int) -> Case:
    try:
        return cases_visible_to(user).select_related("patient", "created_by").get(pk=pk)
    except Case.DoesNotExist:
        raise Http404("No such case, or you may not see it.")


def photo_get(*, user, pk: int) -> Photo:
    try:
        return Photo.objects.select_related("case").get(pk=pk, case__in=cases_visible_to(user))
    except Photo.DoesNotExist:
        raise Http404("No such photo, or you may not see it.")


def case_labels(*, case: Case) -> list[DiagnosisLabel]:
    return list(case.labels.select_related("sub_class__meta_class", "signed_by").order_by("-confirmed", "source"))


def case_label_history(*, case: Case) -> QuerySet[LabelChange]:
    return case.label_changes.select_related("old_sub_class", "new_sub_class", "changed_by")


def case_reference_label(*, case: Case) -> DiagnosisLabel | None:
    """The label a model may learn from: the confirmed one if any, else the best other."""
    return case.labels.select_related("sub_class").order_by("-confirmed", "-signed_at").first()


def taxonomy_default() -> Taxonomy | None:
    return Taxonomy.objects.filter(is_default=True).first() or Taxonomy.objects.order_by("-created_at").first()


# The same for every user, read by every case page and list: from the shared cache (derm_portal.shared_cache).
def taxonomy_default_shared() -> Taxonomy | None:
    return shared("taxonomy-default", taxonomy_default)


def sub_classes_shared(taxonomy_id: int | None) -> list[SubClass]:
    """The taxonomy's sub-classes with their meta-classes, in display order."""
    if taxonomy_id is None:
        return []
    return shared(
        f"sub-classes:{taxonomy_id}",
        lambda: list(SubClass.objects.filter(taxonomy_id=taxonomy_id).select_related("meta_class")),
    )


def meta_classes_shared(taxonomy_id: int | None) -> list[MetaClass]:
    if taxonomy_id is None:
        return []
    return shared(f"meta-classes:{taxonomy_id}", lambda: list(MetaClass.objects.filter(taxonomy_id=taxonomy_id)))


def taxonomy_tree(*, taxonomy: Taxonomy) -> list[dict]:
    subs = SubClass.objects.filter(taxonomy=taxonomy).select_related("meta_class")
    tree: dict[int, dict] = {}
    for meta in taxonomy.meta_classes.all():
        tree[meta.pk] = {"meta": meta, "subs": []}
    for sub in subs:
        tree[sub.meta_class_id]["subs"].append(sub)
    return list(tree.values())


def taxonomy_export(*, taxonomy: Taxonomy) -> dict:
    """The inference.ml JSON format plus names, so a model trained on it can be served."""
    meta_classes: dict[str, list[str]] = {}
    malignancy: dict[str, int | None] = {}
    display: dict[str, str] = {}
    for node in taxonomy_tree(taxonomy=taxonomy):
        meta = node["meta"]
        meta_classes[meta.code] = [s.code for s in node["subs"]]
        display[meta.code] = meta.display_name
        for s in node["subs"]:
            display[s.code] = s.display_name
            if s.malignancy_grade is not None:
                malignancy[s.code] = s.malignancy_grade
    return {
        "name": taxonomy.name,
        "version": taxonomy.version,
        "description": taxonomy.description,
        "meta_classes": meta_classes,
        "malignancy": malignancy,
        "display_names": display,
    }


def case_metadata(case, when=None) -> dict:
    """Age (at the visit, or from the birth year and ``when``), sex and body site of a case, for the
    engine's metadata model (``inference/ml/metadata.py``) and the training export; unknown fields
    are left out."""
    patient = case.patient
    out = {}
    age = case.age_at_visit
    if age is None and patient.birth_year:
        year = (when or timezone.now()).year
        age = year - patient.birth_year if year >= patient.birth_year else None
    if age is not None:
        out["age"] = age
    if patient.sex in ("male", "female"):
        out["sex"] = patient.sex
    if case.body_site.strip():
        out["site"] = case.body_site.strip()
    return out
