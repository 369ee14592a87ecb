"""Reader studies: a set of confirmed cases read blinded by invited readers, compared with a model.

Business rules live in services.py (writes) and selectors.py / results.py (reads).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class QuestionType(models.TextChoices):
    BINARY = "binary", "Binary (positive set vs the rest)"
    MULTICLASS = "multiclass", "Multi-class (sub-classes or meta-classes)"
    GRADE = "grade", "Malignancy grade (benign / low / high)"


class ClassLevel(models.TextChoices):
    SUB = "sub", "Sub-classes"
    META = "meta", "Meta-classes"


class ConfidenceScale(models.TextChoices):
    NONE = "none", "No confidence rating"
    FIVE = "five", "Confidence 1-5"
    PERCENT = "percent", "Confidence 0-100 %"


class StudyStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    OPEN = "open", "Open"
    CLOSED = "closed", "Closed"


class Experience(models.TextChoices):
    INTERN = "intern", "Intern"
    RESIDENT = "resident", "Resident"
    ATTENDING = "attending", "Attending"
    EXPERT = "expert", "Expert"


class Session(models.TextChoices):
    UNAIDED = "unaided", "Unaided"
    AIDED = "aided", "AI-aided"


class ReaderStudy(models.Model):
    # what a coordinator sets on a draft study (the form, the API and study_update share it)
    SETTINGS = (
        "title",
        "description",
        "question_type",
        "class_level",
        "positive_codes",
        "question_text",
        "confidence_scale",
        "model_version",
        "shuffle",
        "allow_back",
        "aided_session",
        "show_history",
    )

    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    taxonomy = models.ForeignKey("annotation.Taxonomy", on_delete=models.PROTECT, related_name="reader_studies")
    question_type = models.CharField(max_length=12, choices=QuestionType.choices, default=QuestionType.BINARY)
    class_level = models.CharField(
        max_length=4,
        choices=ClassLevel.choices,
        default=ClassLevel.SUB,
        help_text="Multi-class questions: answer with a sub-class or a meta-class.",
    )
    positive_codes = models.JSONField(
        default=list, blank=True, help_text="Binary questions: the sub-class codes that count as positive."
    )
    question_text = models.CharField(max_length=300, blank=True)
    confidence_scale = models.CharField(max_length=8, choices=ConfidenceScale.choices, default=ConfidenceScale.NONE)
    model_version = models.ForeignKey(
        "inference.ModelVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="reader_studies"
    )
    shuffle = models.BooleanField(default=True, help_text="Each reader gets their own (seeded) case order.")
    allow_back = models.BooleanField(default=False, help_text="Readers may go back and change answers.")
    aided_session = models.BooleanField(default=False, help_text="A second AI-aided session follows.")
    show_history = models.BooleanField(default=False, help_text="Show age, body site and clinical history.")
    status = models.CharField(max_length=8, choices=StudyStatus.choices, default=StudyStatus.DRAFT, db_index=True)
    seed = models.PositiveIntegerField(default=0)
    # bumped by every write that changes results (readings, cases, model outputs): the results cache key
    results_version = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(question_type__in=["binary", "multiclass", "grade"]), name="readerstudy_question_type_valid"
            ),
            models.CheckConstraint(
                condition=Q(status__in=["draft", "open", "closed"]), name="readerstudy_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.title

    def results_changed(self) -> None:
        """Invalidate the cached results: their cache key includes results_version."""
        ReaderStudy.objects.filter(pk=self.pk).update(results_version=models.F("results_version") + 1)


class StudyCase(models.Model):
    """A case in a study. Readers only ever see `number` (opaque, random), never the case id."""

    study = models.ForeignKey(ReaderStudy, on_delete=models.CASCADE, related_name="study_cases")
    case = models.ForeignKey("annotation.Case", on_delete=models.PROTECT, related_name="+")
    number = models.PositiveIntegerField()
    # reference standard frozen when the case is added (the confirmed histopathology label)
    truth_sub_class = models.ForeignKey("annotation.SubClass", on_delete=models.PROTECT, related_name="+")
    # the compared model's case-level fused probabilities {sub_class_code: p} (mean over photos)
    model_probs = models.JSONField(null=True, blank=True)
    model_source = models.CharField(max_length=20, blank=True, help_text="prediction | predictor")
    in_training = models.CharField(max_length=8, default="unknown", help_text="yes | no | unknown")

    class Meta:
        ordering = ["study", "number"]
        constraints = [
            models.UniqueConstraint(fields=["study", "number"], name="studycase_number_unique"),
            models.UniqueConstraint(fields=["study", "case"], name="studycase_case_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.study_id} #{self.number}"


class StudyReader(models.Model):
    study = models.ForeignKey(ReaderStudy, on_delete=models.CASCADE, related_name="readers")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="study_invitations")
    experience = models.CharField(max_length=10, choices=Experience.choices)
    seed = models.PositiveIntegerField(default=0, help_text="Seeds this reader's case order.")
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    invited_at = models.DateTimeField(auto_now_add=True)
    unaided_done_at = models.DateTimeField(null=True, blank=True)
    aided_done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["study", "invited_at", "id"]
        constraints = [models.UniqueConstraint(fields=["study", "user"], name="studyreader_unique")]

    def __str__(self) -> str:
        return f"{self.user} in {self.study_id}"


class Reading(models.Model):
    """One reader's answer to one case in one session. Created when the case is served."""

    study_reader = models.ForeignKey(StudyReader, on_delete=models.CASCADE, related_name="readings")
    study_case = models.ForeignKey(StudyCase, on_delete=models.CASCADE, related_name="readings")
    session = models.CharField(max_length=8, choices=Session.choices, default=Session.UNAIDED)
    # binary: "pos" / "neg"; multi-class: the class code; grade: "1" / "2" / "3"
    answer = models.CharField(max_length=64, blank=True)
    confidence = models.FloatField(null=True, blank=True)
    comment = models.CharField(max_length=500, blank=True)
    served_at = models.DateTimeField(help_text="When the case was last served to the reader.")
    answered_at = models.DateTimeField(null=True, blank=True)
    server_ms = models.PositiveIntegerField(null=True, blank=True, help_text="Served -> answered, summed over answers.")
    active_ms = models.PositiveIntegerField(
        null=True, blank=True, help_text="Client-side time the page was visible and active."
    )
    revisions = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["study_reader", "session", "study_case__number"]
        constraints = [
            models.UniqueConstraint(fields=["study_reader", "study_case", "session"], name="reading_unique"),
            models.CheckConstraint(condition=Q(session__in=["unaided", "aided"]), name="reading_session_valid"),
            models.CheckConstraint(
                condition=Q(confidence__isnull=True) | (Q(confidence__gte=0) & Q(confidence__lte=100)),
                name="reading_confidence_range",
            ),
        ]
        indexes = [models.Index(fields=["study_reader", "session", "answered_at"], name="reading_progress_idx")]

    def __str__(self) -> str:
        return f"Reading {self.pk}"
