"""The annotation workspace: boxes, per-annotator photo annotations, two-group review, gold
references and crops. Rules (who may review what, the status machine) live in annotation/review.py
and annotation/boxes.py; these models keep the data consistent with constraints."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from .. import pixels
from .cases import Case, ExclusionReason, MetaClass, Photo, SubClass


class AnnotationStatus(models.TextChoices):
    TO_ANNOTATE = "to_annotate", "To annotate"
    ANNOTATED = "annotated", "Annotated (waiting for review)"
    ACCEPTED = "accepted", "Accepted"
    REJECTED = "rejected", "Rejected (back to annotator)"


class AnnotatorGroup(models.Model):
    """A review group: photos assigned to one group are reviewed by another group."""

    name = models.CharField(max_length=100, unique=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="annotator_groups", blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Assignment(models.Model):
    """A photo is annotated by one group (and therefore reviewed by the others)."""

    photo = models.OneToOneField(Photo, on_delete=models.CASCADE, related_name="assignment")
    group = models.ForeignKey(AnnotatorGroup, on_delete=models.CASCADE, related_name="assignments")
    assigned_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    assigned_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["photo"]


class PhotoAnnotation(models.Model):
    """One annotator's boxes on one photo, with its review state."""

    photo = models.ForeignKey(Photo, on_delete=models.CASCADE, related_name="annotations")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="photo_annotations")
    status = models.CharField(
        max_length=16, choices=AnnotationStatus.choices, default=AnnotationStatus.TO_ANNOTATE, db_index=True
    )
    excluded = models.BooleanField(default=False, help_text="The photo is unusable for training (cleaning reason).")
    exclusion_reason = models.CharField(max_length=16, choices=ExclusionReason.choices, blank=True)
    exclusion_note = models.CharField(max_length=500, blank=True)
    is_gold = models.BooleanField(
        default=False, help_text="Reference boxes of a gold photo; annotators are scored against them."
    )
    submitted_at = models.DateTimeField(null=True, blank=True)
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="reviews_done"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    review_note = models.CharField(max_length=1000, blank=True)
    fixed_by_reviewer = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["photo", "created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["photo", "annotator"], name="annotation_one_per_annotator"),
            models.UniqueConstraint(fields=["photo"], condition=Q(is_gold=True), name="annotation_one_gold_per_photo"),
            models.CheckConstraint(
                condition=(Q(excluded=True) & ~Q(exclusion_reason="")) | (Q(excluded=False) & Q(exclusion_reason="")),
                name="annotation_exclusion_reason_iff_excluded",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["to_annotate", "annotated", "accepted", "rejected"]),
                name="annotation_status_valid",
            ),
        ]
        indexes = [models.Index(fields=["annotator", "status"], name="annotation_annotator_status")]

    def __str__(self) -> str:
        return f"Annotation {self.pk} of photo {self.photo_id} by {self.annotator_id}"


class BoxOrigin(models.TextChoices):
    DRAWN = "drawn", "Drawn or changed by the annotator"
    PREFILLED = "prefilled", "Copied from another annotation, unchanged"
    PROPOSED = "proposed", "Proposed by the model, accepted unchanged"


class Box(models.Model):
    """A lesion rectangle in pixel coordinates of the original photo (x1, y1 exclusive
    edges as in labelImg's xmax/ymax), with the photo size at annotation time. Coordinates
    keep the sub-pixel values of imported files, on a 1e-6 px grid (annotation/pixels.py)."""

    annotation = models.ForeignKey(PhotoAnnotation, on_delete=models.CASCADE, related_name="boxes")
    photo = models.ForeignKey(Photo, on_delete=models.CASCADE, related_name="boxes")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    x0 = models.FloatField()
    y0 = models.FloatField()
    x1 = models.FloatField()
    y1 = models.FloatField()
    image_width = models.PositiveIntegerField()
    image_height = models.PositiveIntegerField()
    sub_class = models.ForeignKey(SubClass, null=True, blank=True, on_delete=models.PROTECT, related_name="boxes")
    meta_class = models.ForeignKey(MetaClass, null=True, blank=True, on_delete=models.PROTECT, related_name="boxes")
    difficult = models.BooleanField(default=False)
    truncated = models.BooleanField(default=False)
    # agreement counts only the annotator's own boxes: a copied or proposed box becomes
    # "drawn" once its geometry or label is changed
    origin = models.CharField(max_length=10, choices=BoxOrigin.choices, default=BoxOrigin.DRAWN)
    source_box = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="copies",
        help_text="the other annotator's box this one was pre-filled from",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["annotation", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(sub_class__isnull=False) | Q(meta_class__isnull=False), name="box_has_label"
            ),
            models.CheckConstraint(
                condition=Q(x0__gte=0)
                & Q(y0__gte=0)
                & Q(x0__lt=models.F("x1"))
                & Q(y0__lt=models.F("y1"))
                & Q(x1__lte=models.F("image_width"))
                & Q(y1__lte=models.F("image_height")),
                name="box_inside_photo",
            ),
        ]

    def __str__(self) -> str:
        return f"Box {self.pk} [{','.join(pixels.text(v) for v in (self.x0, self.y0, self.x1, self.y1))}]"

    @property
    def label_code(self) -> str:
        return self.sub_class.code if self.sub_class_id else self.meta_class.code

    @property
    def area(self) -> float:
        return (self.x1 - self.x0) * (self.y1 - self.y0)


class ReviewComment(models.Model):
    """A reviewer's remark, pinned to a box (or to the whole photo); the point is kept
    so the pin stays visible when the box is later moved or deleted."""

    annotation = models.ForeignKey(PhotoAnnotation, on_delete=models.CASCADE, related_name="comments")
    box = models.ForeignKey(Box, null=True, blank=True, on_delete=models.SET_NULL, related_name="comments")
    x = models.IntegerField(null=True, blank=True)
    y = models.IntegerField(null=True, blank=True)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    text = models.TextField()
    resolved = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]


def crop_upload_to(instance: Crop, filename: str) -> str:
    return f"crops/{instance.photo_id % 100:02d}/{filename}"


class Crop(models.Model):
    """A training image cut out of a photo by an accepted box (plus a margin)."""

    photo = models.ForeignKey(Photo, on_delete=models.CASCADE, related_name="crops")
    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="crops")
    box = models.ForeignKey(Box, null=True, on_delete=models.SET_NULL, related_name="crops")
    file = models.FileField(upload_to=crop_upload_to, max_length=255)
    margin = models.FloatField(default=0.0, help_text="Margin added on each side, as a fraction of the box size.")
    x0 = models.IntegerField()
    y0 = models.IntegerField()
    x1 = models.IntegerField()
    y1 = models.IntegerField()
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    sub_class = models.ForeignKey(SubClass, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    meta_class = models.ForeignKey(MetaClass, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["case", "photo", "id"]
        constraints = [
            models.UniqueConstraint(fields=["box", "margin"], name="crop_one_per_box_margin"),
            models.CheckConstraint(condition=Q(width__gt=0) & Q(height__gt=0), name="crop_positive_size"),
            models.CheckConstraint(condition=Q(margin__gte=0), name="crop_margin_non_negative"),
        ]

    @property
    def label_code(self) -> str:
        return self.sub_class.code if self.sub_class_id else (self.meta_class.code if self.meta_class_id else "")


class AnnotationEvent(models.Model):
    """History of an annotation's status: who submitted, accepted, rejected, reopened or
    imported it, when (the review trail, and the source of the per-annotator review stats)."""

    annotation = models.ForeignKey(PhotoAnnotation, on_delete=models.CASCADE, related_name="events")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    from_status = models.CharField(max_length=16, choices=AnnotationStatus.choices, blank=True)
    to_status = models.CharField(max_length=16, choices=AnnotationStatus.choices)
    action = models.CharField(max_length=20)  # submit, accept, fix_accept, reject, reopen, import
    note = models.CharField(max_length=1000, blank=True)
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["annotation", "at", "id"]
