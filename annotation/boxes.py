"""Boxes and per-annotator photo annotations: validation, saving, work queues.

Writes are `annotation_*` / `boxes_*` functions (keyword-only); reads are the `queue_*`
and `*_payload` functions. Review rules (who may review, accept/reject) are in review.py.
Boxes are pixel coordinates of the original photo, sub-pixel values kept (pixels.py);
x1/y1 are the right/bottom edges (labelImg's xmax/ymax), so a box covers x0 <= x < x1.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from derm_portal import roles

from . import pixels
from .box_validation import AnnotationError, CleanBox, LabelIndex, boxes_validate, label_index
from .models import (
    AnnotationEvent,
    AnnotationStatus,
    Box,
    BoxOrigin,
    CaseStatus,
    DiagnosisLabel,
    ExclusionReason,
    Photo,
    PhotoAnnotation,
)
from .selectors import cases_visible_to

# The status machine. Reopening an accepted annotation is an admin action (review.py).
TRANSITIONS: dict[str, set[str]] = {
    AnnotationStatus.TO_ANNOTATE: {AnnotationStatus.ANNOTATED},
    AnnotationStatus.ANNOTATED: {AnnotationStatus.ACCEPTED, AnnotationStatus.REJECTED},
    AnnotationStatus.REJECTED: {AnnotationStatus.ANNOTATED},
    AnnotationStatus.ACCEPTED: {AnnotationStatus.TO_ANNOTATE},
}
EDITABLE_BY_ANNOTATOR = {AnnotationStatus.TO_ANNOTATE, AnnotationStatus.REJECTED}


def event_log(*, annotation: PhotoAnnotation, actor, from_status: str, action: str, note: str = "") -> AnnotationEvent:
    """Record a status change (call after the annotation is saved)."""
    return AnnotationEvent.objects.create(
        annotation=annotation,
        actor=actor if getattr(actor, "pk", None) else None,
        from_status=from_status or "",
        to_status=annotation.status,
        action=action,
        note=(note or "")[:1000],
    )


def status_transition(*, annotation: PhotoAnnotation, to: str) -> None:
    """Move along the status machine or raise AnnotationError (no save)."""
    current = annotation.status
    if to not in TRANSITIONS.get(current, set()):
        raise AnnotationError(
            f"An annotation that is {AnnotationStatus(current).label.lower()} cannot become {AnnotationStatus(to).label.lower()}."
        )
    annotation.status = to


# --------------------------------------------------------------------------- writes
_GEOMETRY = ("x0", "y0", "x1", "y1", "sub_class_id", "meta_class_id")


def _new_box_origin(cb: CleanBox, fields: dict, sources: dict[int, Box]) -> tuple[str, Box | None]:
    """A new box is 'prefilled' when it equals the other annotator's box it was copied
    from, 'proposed' when the model's proposal was taken as is, else the annotator's own."""
    src = sources.get(cb.source_box) if cb.source_box else None
    if src is not None:
        same = all(getattr(src, k) == fields[k] for k in ("x0", "y0", "x1", "y1")) and (
            src.sub_class_id,
            src.meta_class_id,
        ) == (fields["sub_class"] and fields["sub_class"].pk, fields["meta_class"].pk)
        return (BoxOrigin.PREFILLED if same else BoxOrigin.DRAWN), src
    return (BoxOrigin.PROPOSED if cb.proposed else BoxOrigin.DRAWN), None


def boxes_replace(*, annotation: PhotoAnnotation, boxes: Iterable[CleanBox]) -> list[Box]:
    """Make the annotation's boxes exactly `boxes`: boxes with a known id are updated in
    place (so review comments stay pinned), the others created, the missing deleted.
    A changed box becomes the annotator's own (origin 'drawn')."""
    photo = annotation.photo
    boxes = list(boxes)
    existing = {b.pk: b for b in annotation.boxes.all()}
    wanted = [cb.source_box for cb in boxes if cb.source_box and cb.id not in existing]
    sources = (
        {b.pk: b for b in Box.objects.filter(pk__in=wanted, photo=photo).exclude(annotation=annotation)}
        if wanted
        else {}
    )
    keep, create, update = set(), [], []
    for cb in boxes:
        fields = dict(
            x0=cb.x0,
            y0=cb.y0,
            x1=cb.x1,
            y1=cb.y1,
            image_width=photo.width,
            image_height=photo.height,
            sub_class=cb.label.sub_class,
            meta_class=cb.label.meta_class,
            difficult=cb.difficult,
            truncated=cb.truncated,
        )
        if cb.id in existing and cb.id not in keep:
            box = existing[cb.id]
            keep.add(cb.id)
            changed = any(getattr(box, k) != v for k, v in fields.items())
            if changed:
                before = tuple(getattr(box, k) for k in _GEOMETRY)
                for k, v in fields.items():
                    setattr(box, k, v)
                if tuple(getattr(box, k) for k in _GEOMETRY) != before:
                    box.origin = BoxOrigin.DRAWN
                update.append(box)
        else:
            origin, src = _new_box_origin(cb, fields, sources)
            create.append(
                Box(
                    annotation=annotation,
                    photo=photo,
                    annotator_id=annotation.annotator_id,
                    origin=origin,
                    source_box=src,
                    **fields,
                )
            )
    stale = [pk for pk in existing if pk not in keep]
    if stale:
        Box.objects.filter(pk__in=stale).delete()
    for box in update:
        box.save()
    Box.objects.bulk_create(create)
    return list(annotation.boxes.select_related("sub_class", "meta_class").order_by("id"))


def annotation_get_or_create(*, photo: Photo, annotator) -> PhotoAnnotation:
    annotation, _ = PhotoAnnotation.objects.get_or_create(photo=photo, annotator=annotator)
    return annotation


def exclusion_clean(excluded: bool, reason: str, note: str) -> tuple[bool, str, str]:
    if not excluded:
        return False, "", ""
    if reason not in ExclusionReason.values:
        raise AnnotationError(
            [
                {
                    "box": None,
                    "field": "exclusion_reason",
                    "message": "Pick why the photo is excluded (blur, medication, hidden, small site, exudate, other).",
                }
            ]
        )
    return True, reason, (note or "")[:500]


def annotation_save(
    *,
    photo: Photo,
    user,
    boxes: Any,
    excluded: bool = False,
    exclusion_reason: str = "",
    exclusion_note: str = "",
    submit: bool = False,
    labels: LabelIndex | None = None,
) -> PhotoAnnotation:
    """Save the user's own boxes on a photo (draft), and with submit=True hand them in
    for review (to_annotate/rejected -> annotated). Submitted or accepted work is locked."""
    if not roles.has_role(user, roles.CAN_ANNOTATE):
        raise PermissionDenied("Your role may not annotate photos.")
    labels = labels or label_index()
    clean = boxes_validate(boxes, photo=photo, labels=labels)
    excluded, exclusion_reason, exclusion_note = exclusion_clean(bool(excluded), exclusion_reason, exclusion_note)
    if submit and not clean and not excluded:
        raise AnnotationError("Draw at least one box, or mark the photo excluded, before submitting.")
    with transaction.atomic():
        annotation = annotation_get_or_create(photo=photo, annotator=user)
        annotation = PhotoAnnotation.objects.select_for_update().get(pk=annotation.pk)
        if annotation.status not in EDITABLE_BY_ANNOTATOR:
            raise AnnotationError(
                f"This annotation is {annotation.get_status_display().lower()}; it can no longer be edited by its annotator."
            )
        boxes_replace(annotation=annotation, boxes=clean)
        annotation.excluded, annotation.exclusion_reason, annotation.exclusion_note = (
            excluded,
            exclusion_reason,
            exclusion_note,
        )
        before = annotation.status
        if submit:
            status_transition(annotation=annotation, to=AnnotationStatus.ANNOTATED)
            annotation.submitted_at = timezone.now()
            annotation.comments.filter(resolved=False).update(resolved=True)
        annotation.save()
        if submit:
            event_log(
                annotation=annotation,
                actor=user,
                from_status=before,
                action="resubmit" if before == AnnotationStatus.REJECTED else "submit",
            )
    return annotation


# --------------------------------------------------------------------------- reads
def annotatable_photos(user) -> QuerySet[Photo]:
    if not roles.has_role(user, roles.CAN_ANNOTATE):
        return Photo.objects.none()
    return Photo.objects.filter(case__in=cases_visible_to(user))


def class_filter(qs: QuerySet[Photo], code: str) -> QuerySet[Photo]:
    """Photos whose case diagnosis or whose boxes carry the sub- or meta-class `code`."""
    if not code:
        return qs
    case_label = DiagnosisLabel.objects.filter(case=OuterRef("case")).filter(
        Q(sub_class__code=code) | Q(sub_class__meta_class__code=code)
    )
    box_label = Box.objects.filter(photo=OuterRef("pk")).filter(Q(sub_class__code=code) | Q(meta_class__code=code))
    return qs.filter(Exists(case_label) | Exists(box_label))


def queue_to_annotate(*, user, status: str = "", label: str = "") -> QuerySet[Photo]:
    """'My photos to annotate'. Default (status ''): open work — photos assigned to one of
    my groups that no other member of that group has taken, plus my own drafts and my
    rejected annotations (rejected first). A user in no group sees unassigned photos
    nobody annotated yet. With a status, my own annotations in that status."""
    base = annotatable_photos(user)
    mine = PhotoAnnotation.objects.filter(photo=OuterRef("pk"), annotator=user)
    if status and status != "open":
        qs = base.filter(Exists(mine.filter(status=status)))
    else:
        taken_in_group = PhotoAnnotation.objects.filter(
            photo=OuterRef("pk"), annotator__annotator_groups=OuterRef("assignment__group"), is_gold=False
        ).exclude(annotator=user)
        my_open = mine.filter(status__in=list(EDITABLE_BY_ANNOTATOR))
        mine_any = mine.all()
        if user.annotator_groups.exists():
            fresh = Q(assignment__group__members=user) & ~Exists(taken_in_group) & ~Exists(mine_any)
        else:
            fresh = Q(assignment__isnull=True) & ~Exists(PhotoAnnotation.objects.filter(photo=OuterRef("pk")))
        fresh &= ~Q(case__status=CaseStatus.EXCLUDED)  # excluded cases are not worth boxing
        qs = base.filter(fresh | Exists(my_open))
        qs = qs.annotate(_rejected=Exists(mine.filter(status=AnnotationStatus.REJECTED)))
        qs = class_filter(qs.distinct(), label)
        return qs.order_by("-_rejected", "case_id", "id")
    return class_filter(qs, label).order_by("case_id", "id")


def queue_to_review(*, user, label: str = "", status: str = AnnotationStatus.ANNOTATED) -> QuerySet[PhotoAnnotation]:
    """Annotations waiting for review that this user may review: never their own, never
    one by a member of their own group, never of a photo assigned to their own group."""
    if not roles.has_role(user, roles.CAN_ANNOTATE):
        return PhotoAnnotation.objects.none()
    my_groups = list(user.annotator_groups.values_list("pk", flat=True))
    qs = PhotoAnnotation.objects.filter(
        status=status or AnnotationStatus.ANNOTATED, photo__case__in=cases_visible_to(user)
    )
    qs = qs.exclude(annotator=user).exclude(is_gold=True)
    if my_groups:
        qs = qs.exclude(annotator__annotator_groups__in=my_groups).exclude(photo__assignment__group__in=my_groups)
    if label:
        qs = qs.filter(photo__in=class_filter(Photo.objects.all(), label))
    return qs.select_related("photo", "annotator").order_by("submitted_at", "id")


def prefill_source(*, photo: Photo, user) -> PhotoAnnotation | None:
    """The previous annotation to start from when the user has none: the accepted one,
    else the latest other one. None on gold photos (scored blind) ."""
    others = PhotoAnnotation.objects.filter(photo=photo).exclude(annotator=user)
    if others.filter(is_gold=True).exists():
        return None
    others = others.filter(boxes__isnull=False).distinct()
    return (
        others.filter(status=AnnotationStatus.ACCEPTED).order_by("-reviewed_at", "-id").first()
        or others.order_by("-updated_at", "-id").first()
    )


def box_payload(box: Box) -> dict:
    return {
        "id": box.pk,
        "x0": pixels.number(box.x0),
        "y0": pixels.number(box.y0),
        "x1": pixels.number(box.x1),
        "y1": pixels.number(box.y1),
        "label": box.label_code,
        "sub_class": box.sub_class.code if box.sub_class_id else None,
        "meta_class": box.meta_class.code if box.meta_class_id else None,
        "difficult": box.difficult,
        "truncated": box.truncated,
        "origin": box.origin,
        "source_box": box.source_box_id,
    }


def annotation_payload(annotation: PhotoAnnotation | None) -> dict | None:
    if annotation is None:
        return None
    return {
        "id": annotation.pk,
        "annotator": annotation.annotator.get_username(),
        "annotator_id": annotation.annotator_id,
        "status": annotation.status,
        "status_display": annotation.get_status_display(),
        "excluded": annotation.excluded,
        "exclusion_reason": annotation.exclusion_reason,
        "exclusion_note": annotation.exclusion_note,
        "is_gold": annotation.is_gold,
        "review_note": annotation.review_note,
        "reviewer": annotation.reviewer.get_username() if annotation.reviewer_id else None,
        "fixed_by_reviewer": annotation.fixed_by_reviewer,
        "boxes": [box_payload(b) for b in annotation.boxes.select_related("sub_class", "meta_class").order_by("id")],
        "history": [
            {
                "action": e.action,
                "to": e.to_status,
                "actor": e.actor.get_username() if e.actor_id else None,
                "at": e.at.isoformat(),
                "note": e.note,
            }
            for e in annotation.events.select_related("actor")
        ],
        "comments": [
            {
                "id": c.pk,
                "box": c.box_id,
                "x": c.x,
                "y": c.y,
                "text": c.text,
                "author": c.author.get_username(),
                "resolved": c.resolved,
                "created_at": c.created_at.isoformat(),
            }
            for c in annotation.comments.select_related("author")
        ],
    }
