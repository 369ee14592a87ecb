"""Two-group cross review: groups, photo assignment, accept / fix-and-accept / reject.

Rule: nobody reviews their own work, nor work of a member of one of their groups, nor a
photo assigned to one of their groups. Enforced here (services) and in the queues.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from derm_portal import roles

from .boxes import (
    AnnotationError,
    LabelIndex,
    boxes_replace,
    boxes_validate,
    event_log,
    exclusion_clean,
    label_index,
    status_transition,
)
from .models import AnnotationStatus, AnnotatorGroup, Assignment, Photo, PhotoAnnotation

CAN_MANAGE_GROUPS = (roles.ADMIN,)


# --------------------------------------------------------------------------- groups
def _require_admin(user) -> None:
    if not roles.has_role(user, CAN_MANAGE_GROUPS):
        raise PermissionDenied("Only admins manage annotator groups and assignments.")


def group_set_members(*, name: str, members: Iterable, by) -> AnnotatorGroup:
    _require_admin(by)
    members = list(members)
    for u in members:
        if not roles.has_role(u, roles.CAN_ANNOTATE):
            raise AnnotationError(f"{u.get_username()} may not annotate (role) and cannot join a group.")
    group, _ = AnnotatorGroup.objects.get_or_create(name=name.strip() or "Group")
    group.members.set(members)
    return group


@dataclass
class SplitResult:
    """Photos per group assigned by a split, and one line per photo whose assignment
    followed (or was moved to) the group of the person who already annotated it."""

    counts: dict[str, int]
    moved: list[str] = field(default_factory=list)


def _work_groups(photo_ids: list[int], groups: list[AnnotatorGroup]) -> dict[int, dict[int, str]]:
    """photo id -> {group id: annotator name} of the non-gold annotations by members of `groups`."""
    out: dict[int, dict[int, str]] = {}
    rows = PhotoAnnotation.objects.filter(photo_id__in=photo_ids, is_gold=False, annotator__annotator_groups__in=groups)
    for photo_id, group_id, name in rows.values_list("photo_id", "annotator__annotator_groups", "annotator__username"):
        out.setdefault(photo_id, {})[group_id] = name
    return out


def groups_split(*, group_a: AnnotatorGroup, group_b: AnnotatorGroup, photos: QuerySet[Photo], by) -> SplitResult:
    """Assign the unassigned photos of `photos` half to A, half to B. Photos of one case
    stay together (a case is split as a unit), alternating so both halves get a similar mix.
    A case someone of A or B already annotated goes to that person's group, moving it there
    if it was assigned to the other one, so submitted work stays reviewable by the other
    group (a reviewer never reviews a photo of their own group); each such move is listed."""
    _require_admin(by)
    if group_a.pk == group_b.pk:
        raise AnnotationError("Pick two different groups.")
    overlap = set(group_a.members.values_list("pk", flat=True)) & set(group_b.members.values_list("pk", flat=True))
    if overlap:
        raise AnnotationError(
            "A person is in both groups; each annotator belongs to one group so reviews stay independent."
        )
    groups = {group_a.pk: group_a, group_b.pk: group_b}
    candidates = photos.filter(Q(assignment__isnull=True) | Q(assignment__group__in=list(groups)))
    rows_in = list(candidates.order_by("case_id", "id").values_list("pk", "case_id", "assignment__group_id"))
    work = _work_groups([pk for pk, _, _ in rows_in], list(groups.values()))
    by_case: dict[int, list[tuple[int, int | None]]] = {}
    for pk, case_id, assigned in rows_in:
        by_case.setdefault(case_id, []).append((pk, assigned))
    result = SplitResult({group_a.name: 0, group_b.name: 0})
    create, move = [], {}
    for case_id, members in by_case.items():
        owners: dict[int, str] = {}
        for pk, _ in members:
            owners.update(work.get(pk, {}))
        if len(owners) > 1:
            if any(assigned is None for _, assigned in members):
                result.moved.append(
                    f"Case {case_id}: annotated in both groups ({', '.join(sorted(owners.values()))}); left unassigned."
                )
            continue
        if owners:
            gid, who = next(iter(owners.items()))
            target = groups[gid]
        elif all(assigned is None for _, assigned in members):
            target = group_a if result.counts[group_a.name] <= result.counts[group_b.name] else group_b
            who = ""
        else:
            continue  # assigned and untouched: a re-split leaves it where it is
        for pk, assigned in members:
            if assigned == target.pk:
                continue
            result.counts[target.name] += 1
            if assigned is None:
                create.append(Assignment(photo_id=pk, group=target, assigned_by=by))
                if who:
                    result.moved.append(
                        f"Photo {pk} (case {case_id}) went to {target.name} with {who}'s annotation; the other group reviews it."
                    )
            else:
                move[pk] = target
                result.moved.append(
                    f"Photo {pk} (case {case_id}) moved from {groups[assigned].name} to {target.name} "
                    f"with {who}'s annotation; the other group reviews it."
                )
    with transaction.atomic():
        Assignment.objects.bulk_create(create, ignore_conflicts=True)
        for pk, target in move.items():
            Assignment.objects.filter(photo_id=pk).update(group=target, assigned_by=by)
    return result


def group_unassign_untouched(*, group: AnnotatorGroup, by) -> int:
    """Take back the group's photos nobody has annotated yet; returns how many."""
    _require_admin(by)
    n, _ = Assignment.objects.filter(group=group).exclude(photo__annotations__isnull=False).delete()
    return n


# --------------------------------------------------------------------------- rules
def review_refusal(*, user, annotation: PhotoAnnotation) -> str | None:
    """Why `user` may not review `annotation`, or None when they may."""
    if not roles.has_role(user, roles.CAN_ANNOTATE):
        return "Your role may not review annotations."
    if annotation.annotator_id == user.pk:
        return "Nobody reviews their own work."
    my_groups = set(user.annotator_groups.values_list("pk", flat=True))
    if my_groups & set(annotation.annotator.annotator_groups.values_list("pk", flat=True)):
        return "This annotation was made by a member of your own group; the other group reviews it."
    assigned = Assignment.objects.filter(photo_id=annotation.photo_id).values_list("group_id", flat=True).first()
    if assigned and assigned in my_groups:
        return "This photo is assigned to your own group; the other group reviews it."
    return None


def _check_review(user, annotation: PhotoAnnotation) -> None:
    reason = review_refusal(user=user, annotation=annotation)
    if reason:
        raise PermissionDenied(reason)
    if annotation.status != AnnotationStatus.ANNOTATED:
        raise AnnotationError(
            f"Only annotations waiting for review can be reviewed (this one is {annotation.get_status_display().lower()})."
        )


def _locked(annotation: PhotoAnnotation) -> PhotoAnnotation:
    return PhotoAnnotation.objects.select_for_update().select_related("annotator").get(pk=annotation.pk)


def review_accept(*, annotation: PhotoAnnotation, by, note: str = "") -> PhotoAnnotation:
    with transaction.atomic():
        annotation = _locked(annotation)
        _check_review(by, annotation)
        status_transition(annotation=annotation, to=AnnotationStatus.ACCEPTED)
        annotation.reviewer, annotation.reviewed_at, annotation.review_note = by, timezone.now(), note[:1000]
        annotation.save()
        event_log(annotation=annotation, actor=by, from_status=AnnotationStatus.ANNOTATED, action="accept", note=note)
    return annotation


def review_fix_and_accept(
    *,
    annotation: PhotoAnnotation,
    by,
    boxes: Any,
    note: str = "",
    labels: LabelIndex | None = None,
    excluded: bool | None = None,
    exclusion_reason: str = "",
) -> PhotoAnnotation:
    """The reviewer corrects the boxes and accepts in one step (kept on the annotator's
    annotation, flagged fixed_by_reviewer)."""
    labels = labels or label_index()
    with transaction.atomic():
        annotation = _locked(annotation)
        _check_review(by, annotation)
        clean = boxes_validate(boxes, photo=annotation.photo, labels=labels)
        boxes_replace(annotation=annotation, boxes=clean)
        if excluded is not None:
            annotation.excluded, annotation.exclusion_reason, annotation.exclusion_note = exclusion_clean(
                excluded, exclusion_reason, annotation.exclusion_note
            )
        status_transition(annotation=annotation, to=AnnotationStatus.ACCEPTED)
        annotation.reviewer, annotation.reviewed_at, annotation.review_note = by, timezone.now(), note[:1000]
        annotation.fixed_by_reviewer = True
        annotation.save()
        event_log(
            annotation=annotation, actor=by, from_status=AnnotationStatus.ANNOTATED, action="fix_accept", note=note
        )
    return annotation


def review_reject(
    *,
    annotation: PhotoAnnotation,
    by,
    comment: str,
    box_id: int | None = None,
    x: int | None = None,
    y: int | None = None,
) -> PhotoAnnotation:
    """Send back to the annotator with a comment, pinned to one of its boxes if given."""
    comment = (comment or "").strip()
    if not comment:
        raise AnnotationError("Say what to fix: a rejection needs a comment.")
    with transaction.atomic():
        annotation = _locked(annotation)
        _check_review(by, annotation)
        box = None
        if box_id is not None:
            box = annotation.boxes.filter(pk=box_id).first()
            if box is None:
                raise AnnotationError(f"Box {box_id} is not part of this annotation.")
            x, y = int((box.x0 + box.x1) // 2), int(box.y0)  # the pin: whole pixels
        status_transition(annotation=annotation, to=AnnotationStatus.REJECTED)
        annotation.reviewer, annotation.reviewed_at, annotation.review_note = by, timezone.now(), comment[:1000]
        annotation.save()
        annotation.comments.create(box=box, x=x, y=y, author=by, text=comment)
        event_log(
            annotation=annotation, actor=by, from_status=AnnotationStatus.ANNOTATED, action="reject", note=comment
        )
    return annotation


def annotation_reopen(*, annotation: PhotoAnnotation, by) -> PhotoAnnotation:
    """Admin: send an accepted annotation back to 'to annotate'."""
    _require_admin(by)
    with transaction.atomic():
        annotation = _locked(annotation)
        before = annotation.status
        status_transition(annotation=annotation, to=AnnotationStatus.TO_ANNOTATE)
        annotation.save()
        event_log(annotation=annotation, actor=by, from_status=before, action="reopen")
    return annotation


def gold_set(*, annotation: PhotoAnnotation, by, is_gold: bool = True) -> PhotoAnnotation:
    """Mark an annotation as the reference ('gold') boxes of its photo: an accepted one,
    or a dermatologist's/admin's own submitted boxes (an expert reference is not sent
    through peer review; it is accepted as it becomes gold, and the history says so)."""
    if not roles.has_role(by, roles.CAN_CONFIRM_LABEL):
        raise PermissionDenied("Only dermatologists and admins set gold reference boxes.")
    with transaction.atomic():
        annotation = _locked(annotation)
        own_expert = annotation.annotator_id == by.pk and annotation.status == AnnotationStatus.ANNOTATED
        if is_gold and annotation.status != AnnotationStatus.ACCEPTED and not own_expert:
            raise AnnotationError(
                "Only an accepted annotation, or your own submitted boxes, can become the gold reference."
            )
        if is_gold:
            PhotoAnnotation.objects.filter(photo_id=annotation.photo_id, is_gold=True).exclude(pk=annotation.pk).update(
                is_gold=False
            )
        annotation.is_gold = is_gold
        if is_gold and own_expert:
            status_transition(annotation=annotation, to=AnnotationStatus.ACCEPTED)
            annotation.reviewer, annotation.reviewed_at = by, timezone.now()
            annotation.review_note = "Expert reference (gold)"
            annotation.save()
            event_log(
                annotation=annotation,
                actor=by,
                from_status=AnnotationStatus.ANNOTATED,
                action="gold",
                note="expert reference accepted as gold",
            )
        else:
            annotation.save(update_fields=["is_gold", "updated_at"])
    return annotation


def review_stats() -> list[dict]:
    """Per annotator, from the status history: submissions, decisions, rejection rate and
    how often the reviewer had to fix the boxes."""
    from collections import Counter, defaultdict

    from .models import AnnotationEvent

    counts: dict[str, Counter] = defaultdict(Counter)
    for username, action in AnnotationEvent.objects.values_list("annotation__annotator__username", "action"):
        counts[username][action] += 1
    out = []
    for name, c in sorted(counts.items()):
        decided = c["accept"] + c["fix_accept"] + c["reject"]
        out.append(
            {
                "annotator": name,
                "submitted": c["submit"] + c["resubmit"],
                "resubmitted": c["resubmit"],
                "accepted": c["accept"] + c["fix_accept"],
                "fixed_by_reviewer": c["fix_accept"],
                "rejected": c["reject"],
                "imported": c["import"],
                "rejection_rate": c["reject"] / decided if decided else None,
                "fix_rate": c["fix_accept"] / decided if decided else None,
            }
        )
    return out
