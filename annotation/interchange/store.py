"""Shared by the box importers: who may import what, and writing one photo's boxes."""

from __future__ import annotations

from collections.abc import Callable

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from derm_portal import roles

from ..boxes import AnnotationError, CleanBox, boxes_replace, event_log
from ..models import AnnotationStatus, ExclusionReason, Photo, PhotoAnnotation
from .report import ImportReport


def check_import_rights(user, annotator, status: str) -> None:
    if not roles.has_role(user, roles.CAN_ANNOTATE):
        raise PermissionDenied("Your role may not import boxes.")
    if annotator.pk != user.pk and not roles.has_role(user, roles.ADMIN):
        raise PermissionDenied("Only admins import boxes in someone else's name.")
    if status == AnnotationStatus.ACCEPTED and not roles.has_role(user, roles.ADMIN):
        raise PermissionDenied("Only admins import boxes as already accepted.")
    if status not in (AnnotationStatus.ANNOTATED, AnnotationStatus.ACCEPTED, AnnotationStatus.TO_ANNOTATE):
        raise AnnotationError(f"Imported boxes can be 'to_annotate', 'annotated' or 'accepted', not {status!r}.")


def store_boxes(
    *,
    photo: Photo,
    annotator,
    boxes: list[CleanBox],
    status: str,
    excluded: str,
    report: ImportReport,
    source: str,
    by,
    replace_accepted: bool,
) -> None:
    ann = PhotoAnnotation.objects.filter(photo=photo, annotator=annotator).first()
    before = ann.status if ann else ""
    if ann and ann.status == AnnotationStatus.ACCEPTED and not replace_accepted and status != AnnotationStatus.ACCEPTED:
        report.error(
            source, None, f"{annotator.get_username()}'s boxes on photo {photo.pk} are already accepted; not replaced."
        )
        return
    now = timezone.now()
    if ann is None:
        ann = PhotoAnnotation(photo=photo, annotator=annotator)
    ann.status = status
    ann.excluded = bool(excluded)
    ann.exclusion_reason = excluded or ""
    if status != AnnotationStatus.TO_ANNOTATE:
        ann.submitted_at = ann.submitted_at or now
    if status == AnnotationStatus.ACCEPTED:
        ann.reviewer, ann.reviewed_at = ann.reviewer or by, ann.reviewed_at or now
    ann.save()
    boxes_replace(annotation=ann, boxes=boxes)
    event_log(annotation=ann, actor=by, from_status=before, action="import", note=source)
    report.photos += 1
    report.boxes += len(boxes)
    report.clipped += sum(b.clipped for b in boxes)


def exclusion_from(value: str, source: str, line: int | None, report: ImportReport) -> str:
    value = (value or "").strip()
    if value and value not in ExclusionReason.values:
        report.error(
            source,
            line,
            f"unknown exclusion reason {value!r} ignored (expected one of {', '.join(ExclusionReason.values)}).",
        )
        return ""
    return value


def scale(box: dict, sx: float, sy: float) -> dict:
    return {**box, "x0": box["x0"] * sx, "x1": box["x1"] * sx, "y0": box["y0"] * sy, "y1": box["y1"] * sy}


class _RollBack(Exception):
    pass


def dry_run(run: Callable[[], ImportReport]) -> ImportReport:
    """Run an import and roll all of it back: the report says what would be imported.
    Photo files stored for cases it would create are removed again."""
    from ..services import stored_file_delete

    holder: list[ImportReport] = []
    try:
        with transaction.atomic():
            holder.append(run())
            raise _RollBack
    except _RollBack:
        pass
    report = holder[0]
    for name in report.created_files:
        stored_file_delete(name, keep_if_referenced=True)
    report.dry_run = True
    return report
