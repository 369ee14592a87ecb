"""JSON API of the annotation workspace (used by static/annotation/workspace.js).

/api/workspace/queue/?queue=annotate|review&status=&label=   the work queue (ids, in order)
/api/workspace/{photo}/                                       photo + my boxes (+ prefill)
/api/workspace/{photo}/boxes/   PUT {boxes, excluded, exclusion_reason, exclusion_note, submit}
/api/reviews/{annotation}/                                    an annotation to review
/api/reviews/{annotation}/decide/ POST {action: accept|fix_accept|reject, boxes, comment, box}
/api/boxes/                                                   read-only list (filters)
/api/agreement/                                               agreement report + gold scores
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response

from derm_portal import roles
from derm_portal.permissions import role_permission

from . import agreement, boxes, review
from .models import AnnotationStatus, Box, PhotoAnnotation
from .proposals import proposal_for
from .selectors import case_reference_label, photo_get

ID = OpenApiParameter("id", int, OpenApiParameter.PATH)

AnnotatePermission = role_permission(roles.CAN_ANNOTATE, roles.CAN_ANNOTATE, "AnnotatePermission")


def _error(exc: boxes.AnnotationError) -> Response:
    return Response({"detail": str(exc), "errors": exc.errors}, status=status.HTTP_400_BAD_REQUEST)


def photo_info(photo) -> dict:
    label = case_reference_label(case=photo.case)
    return {
        "id": photo.pk,
        "width": photo.width,
        "height": photo.height,
        "name": photo.original_name,
        "url": reverse("annotation:photo_file", args=[photo.pk]),
        "case_id": photo.case_id,
        "case_ref": photo.case.reference,
        "case_url": reverse("annotation:case_detail", args=[photo.case_id]),
        "diagnosis": label.sub_class.code if label else None,
        "diagnosis_confirmed": bool(label and label.confirmed),
        "editor_url": reverse("annotation:workspace_photo", args=[photo.pk]),
    }


def others_payload(*, photo, user, exclude_pk: int | None) -> list[dict]:
    """Other annotators' submitted boxes on this photo, for comparison/adjudication.
    Annotators see them only when reviewing; gold boxes only dermatologists and admins."""
    qs = (
        PhotoAnnotation.objects.filter(photo=photo).exclude(status=AnnotationStatus.TO_ANNOTATE).exclude(annotator=user)
    )
    if exclude_pk:
        qs = qs.exclude(pk=exclude_pk)
    if not roles.has_role(user, roles.CAN_CONFIRM_LABEL):
        qs = qs.exclude(is_gold=True)
    return [
        {
            "id": a.pk,
            "annotator": a.annotator.get_username(),
            "status": a.status,
            "is_gold": a.is_gold,
            "boxes": [boxes.box_payload(b) for b in a.boxes.select_related("sub_class", "meta_class")],
        }
        for a in qs.select_related("annotator").order_by("id")
    ]


def workspace_payload(*, photo, user) -> dict:
    mine = PhotoAnnotation.objects.filter(photo=photo, annotator=user).select_related("annotator", "reviewer").first()
    data = {
        "mode": "annotate",
        "photo": photo_info(photo),
        "annotation": boxes.annotation_payload(mine),
        "editable": mine is None or mine.status in boxes.EDITABLE_BY_ANNOTATOR,
        "prefill": None,
        # adjudicators (dermatologists, admins) may compare with the other annotators
        "others": others_payload(photo=photo, user=user, exclude_pk=mine.pk if mine else None)
        if roles.has_role(user, roles.CAN_CONFIRM_LABEL)
        else [],
    }
    data["proposal"] = None
    if mine is None or (mine.status == AnnotationStatus.TO_ANNOTATE and not mine.boxes.exists()):
        data["proposal"] = proposal_for(photo=photo, user=user)  # the model's first box; key A accepts it
        src = boxes.prefill_source(photo=photo, user=user)
        if src is not None:
            data["prefill"] = {
                "from": src.annotator.get_username(),
                "status": src.status,
                "boxes": [
                    {**boxes.box_payload(b), "id": None, "source_box": b.pk}
                    for b in src.boxes.select_related("sub_class", "meta_class")
                ],
            }
    return data


def review_payload(*, annotation: PhotoAnnotation, user) -> dict:
    refusal = review.review_refusal(user=user, annotation=annotation)
    return {
        "mode": "review",
        "photo": photo_info(annotation.photo),
        "annotation": boxes.annotation_payload(annotation),
        "editable": refusal is None and annotation.status == AnnotationStatus.ANNOTATED,
        "can_review": refusal is None and annotation.status == AnnotationStatus.ANNOTATED,
        "refusal": refusal,
        "others": others_payload(photo=annotation.photo, user=user, exclude_pk=annotation.pk),
        "review_url": reverse("annotation:review_photo", args=[annotation.pk]),
    }


class SaveSerializer(serializers.Serializer):
    boxes = serializers.ListField(child=serializers.DictField(), allow_empty=True)
    excluded = serializers.BooleanField(default=False)
    exclusion_reason = serializers.CharField(required=False, allow_blank=True, default="")
    exclusion_note = serializers.CharField(required=False, allow_blank=True, default="")
    submit = serializers.BooleanField(default=False)


class DecideSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=["accept", "fix_accept", "reject"])
    boxes = serializers.ListField(child=serializers.DictField(), required=False)
    comment = serializers.CharField(required=False, allow_blank=True, default="")
    box = serializers.IntegerField(required=False, allow_null=True)
    note = serializers.CharField(required=False, allow_blank=True, default="")


def queue_items(*, user, queue: str, status: str = "", label: str = "", limit: int = 500) -> list[dict]:
    if queue == "review":
        anns = boxes.queue_to_review(user=user, label=label)[:limit]
        return [
            {
                "photo": a.photo_id,
                "annotation": a.pk,
                "annotator": a.annotator.get_username(),
                "status": a.status,
                "url": reverse("annotation:review_photo", args=[a.pk]),
                "api": reverse("review-detail", args=[a.pk]),
            }
            for a in anns
        ]
    photos = list(boxes.queue_to_annotate(user=user, status=status, label=label).select_related("case")[:limit])
    mine = dict(
        PhotoAnnotation.objects.filter(annotator=user, photo__in=[p.pk for p in photos]).values_list(
            "photo_id", "status"
        )
    )
    return [
        {
            "photo": p.pk,
            "status": mine.get(p.pk, AnnotationStatus.TO_ANNOTATE),
            "case": p.case.reference,
            "url": reverse("annotation:workspace_photo", args=[p.pk]),
            "api": reverse("workspace-detail", args=[p.pk]),
        }
        for p in photos
    ]


class WorkspaceViewSet(viewsets.ViewSet):
    permission_classes = [AnnotatePermission]

    @extend_schema(parameters=[ID], responses=dict)
    def retrieve(self, request, pk=None):
        return Response(workspace_payload(photo=photo_get(user=request.user, pk=pk), user=request.user))

    @extend_schema(parameters=[ID], request=SaveSerializer, responses=dict)
    @action(detail=True, methods=["put", "post"])
    def boxes(self, request, pk=None):
        photo = photo_get(user=request.user, pk=pk)
        ser = SaveSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        d = ser.validated_data
        try:
            boxes.annotation_save(
                photo=photo,
                user=request.user,
                boxes=d["boxes"],
                excluded=d["excluded"],
                exclusion_reason=d["exclusion_reason"],
                exclusion_note=d["exclusion_note"],
                submit=d["submit"],
            )
        except boxes.AnnotationError as exc:
            return _error(exc)
        except DjangoPermissionDenied as exc:
            raise PermissionDenied(str(exc))
        return Response(workspace_payload(photo=photo, user=request.user))

    @extend_schema(
        parameters=[
            OpenApiParameter("queue", str, enum=["annotate", "review"]),
            OpenApiParameter("status", str),
            OpenApiParameter("label", str),
        ],
        responses=dict,
    )
    @action(detail=False, methods=["get"])
    def queue(self, request):
        p = request.query_params
        items = queue_items(
            user=request.user, queue=p.get("queue", "annotate"), status=p.get("status", ""), label=p.get("label", "")
        )
        # the open totals (not capped like items) for the editor's "My photos to annotate (N)"
        totals = {
            "annotate": boxes.queue_to_annotate(user=request.user).count(),
            "review": boxes.queue_to_review(user=request.user).count(),
        }
        return Response({"count": len(items), "items": items, "totals": totals})


class ReviewViewSet(viewsets.ViewSet):
    permission_classes = [AnnotatePermission]

    def _get(self, request, pk) -> PhotoAnnotation:
        ann = get_object_or_404(PhotoAnnotation.objects.select_related("photo__case", "annotator"), pk=pk)
        photo_get(user=request.user, pk=ann.photo_id)  # visibility check
        return ann

    @extend_schema(parameters=[ID], responses=dict)
    def retrieve(self, request, pk=None):
        return Response(review_payload(annotation=self._get(request, pk), user=request.user))

    @extend_schema(parameters=[ID], request=DecideSerializer, responses=dict)
    @action(detail=True, methods=["post"])
    def decide(self, request, pk=None):
        ann = self._get(request, pk)
        ser = DecideSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        d = ser.validated_data
        try:
            if d["action"] == "accept":
                review.review_accept(annotation=ann, by=request.user, note=d["note"])
            elif d["action"] == "fix_accept":
                review.review_fix_and_accept(
                    annotation=ann, by=request.user, boxes=d.get("boxes") or [], note=d["note"]
                )
            else:
                review.review_reject(annotation=ann, by=request.user, comment=d["comment"], box_id=d.get("box"))
        except boxes.AnnotationError as exc:
            return _error(exc)
        except DjangoPermissionDenied as exc:
            raise PermissionDenied(str(exc))
        ann.refresh_from_db()
        return Response(review_payload(annotation=ann, user=request.user))


class BoxSerializer(serializers.ModelSerializer):
    sub_class = serializers.SlugRelatedField(slug_field="code", read_only=True)
    meta_class = serializers.SlugRelatedField(slug_field="code", read_only=True)
    annotator = serializers.CharField(source="annotator.username", read_only=True)
    status = serializers.CharField(source="annotation.status", read_only=True)

    class Meta:
        model = Box
        fields = [
            "id",
            "photo",
            "annotation",
            "annotator",
            "status",
            "x0",
            "y0",
            "x1",
            "y1",
            "image_width",
            "image_height",
            "sub_class",
            "meta_class",
            "difficult",
            "truncated",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class BoxViewSet(viewsets.ReadOnlyModelViewSet):
    permission_classes = [role_permission(roles.CAN_VIEW_CLINICAL, (), "BoxReadPermission")]
    serializer_class = BoxSerializer
    filterset_fields = ["photo", "annotation", "annotator", "annotation__status"]

    def get_queryset(self):
        from .selectors import cases_visible_to

        return (
            Box.objects.filter(photo__case__in=cases_visible_to(self.request.user))
            .select_related("sub_class", "meta_class", "annotator", "annotation")
            .order_by("id")
        )


class AgreementViewSet(viewsets.ViewSet):
    permission_classes = [role_permission(roles.CAN_ANNOTATE, (), "AgreementPermission")]

    @extend_schema(parameters=[OpenApiParameter("iou", float)], responses=dict)
    def list(self, request):
        try:
            threshold = min(0.95, max(0.05, float(request.query_params.get("iou", 0.5))))
        except ValueError:
            threshold = 0.5
        report = agreement.agreement_report(threshold=threshold)
        report["gold"] = agreement.gold_scores(threshold=threshold)
        return Response(report)
