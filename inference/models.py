"""Model registry, predictions, Grad-CAM overlays, doctors' assessments and training runs.

Business rules live in services/ (writes) and selectors.py (reads); models hold
fields, choices, constraints and small properties only. Other apps (reports) read
``Prediction`` (malignancy_score / malignancy_grade / model_version): keep field names stable.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class ModelStatus(models.TextChoices):
    CANDIDATE = "candidate", "Candidate"
    ACTIVE = "active", "Active"
    RETIRED = "retired", "Retired"


class ModelVersion(models.Model):
    """A registered inference.ml artefact (a directory with model.json)."""

    name = models.CharField(max_length=200)
    taxonomy = models.ForeignKey("annotation.Taxonomy", on_delete=models.PROTECT, related_name="model_versions")
    artefact_path = models.CharField(
        max_length=500, help_text="Relative to settings.DERM_MODEL_ROOT, or an absolute path outside the repo."
    )
    data_fingerprint = models.CharField(max_length=128, blank=True)
    code_version = models.CharField(max_length=200, blank=True)
    manifest = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True, help_text="The artefact's evaluation report.")
    status = models.CharField(max_length=12, choices=ModelStatus.choices, default=ModelStatus.CANDIDATE, db_index=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    activated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["taxonomy"], condition=Q(status="active"), name="modelversion_one_active_per_taxonomy"
            ),
            models.UniqueConstraint(fields=["artefact_path"], name="modelversion_artefact_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_status_display()})"

    @property
    def has_metadata(self) -> bool:
        """Trained with a metadata model (age, sex, body site: inference/ml/metadata.py)."""
        return bool((self.manifest or {}).get("metadata"))

    @property
    def is_active(self) -> bool:
        return self.status == ModelStatus.ACTIVE


class ModelActivation(models.Model):
    """Audit log of activations (who switched which model on, replacing which)."""

    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="activations")
    previous = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    activated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    activated_at = models.DateTimeField(auto_now_add=True)
    note = models.CharField(max_length=500, blank=True)
    # Why the admin activated a model that misses the tier targets or was trained on too few photos of a class.
    override_reason = models.TextField(blank=True)
    concerns = models.JSONField(
        default=list, blank=True, help_text="The activation checks the model failed (plain words)."
    )

    class Meta:
        ordering = ["-activated_at", "-id"]


class PredictionStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class Tier(models.TextChoices):
    URGENT = "urgent", "Urgent"
    REFER = "refer", "Refer"
    ROUTINE = "routine", "Routine"


class Prediction(models.Model):
    """The model's ranked differential for one photo with one model version."""

    photo = models.ForeignKey("annotation.Photo", on_delete=models.CASCADE, related_name="predictions")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="predictions")
    status = models.CharField(
        max_length=10, choices=PredictionStatus.choices, default=PredictionStatus.PENDING, db_index=True
    )
    # [{sub_class, meta_class, probability, fine_probability}, ...] sorted by fused probability.
    ranked = models.JSONField(default=list, blank=True)
    meta_probabilities = models.JSONField(default=dict, blank=True)
    fused_method = models.CharField(max_length=20, blank=True)
    malignancy_score = models.FloatField(null=True, blank=True)
    malignancy_grade = models.PositiveSmallIntegerField(null=True, blank=True)
    margin = models.FloatField(null=True, blank=True, help_text="Top-1 minus top-2 fused probability.")
    ood_score = models.FloatField(null=True, blank=True)
    looks_unfamiliar = models.BooleanField(default=False)
    # Patient metadata the model's metadata model took for this photo ({"age": decade, "sex", "site"}; empty: photo only).
    metadata_used = models.JSONField(default=dict, blank=True)
    # Urgency tier from the calibrated differential (inference/ml/triage.py); blank when the model abstains
    # (``abstain`` says why, ``triage_reason`` in plain words). Advice comes from the tier, never from S.
    tier = models.CharField(max_length=8, choices=Tier.choices, blank=True, db_index=True)
    triage_reason = models.TextField(blank=True)
    abstain = models.CharField(
        max_length=16, blank=True, help_text="no_grades | no_calibration | modality | unfamiliar"
    )
    urgent_probability = models.FloatField(
        null=True, blank=True, help_text="Calibrated sum over high-grade malignancies."
    )
    malignant_probability = models.FloatField(null=True, blank=True, help_text="Calibrated sum over all malignancies.")
    triage_thresholds = models.JSONField(default=dict, blank=True, help_text="{urgent, malignant} used for the tier.")
    calibrated = models.BooleanField(default=False, help_text="Ranked probabilities are temperature-scaled.")
    unfamiliar_score = models.FloatField(null=True, blank=True)
    warning = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    task_id = models.CharField(
        max_length=64, blank=True, help_text="Celery task id of the attempt that claimed the row."
    )
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["photo", "model_version"], name="prediction_one_per_photo_model"),
            models.CheckConstraint(
                condition=Q(malignancy_grade__isnull=True) | Q(malignancy_grade__in=[1, 2, 3]),
                name="prediction_grade_valid",
            ),
        ]
        indexes = [models.Index(fields=["photo", "-created_at"], name="prediction_photo_created_idx")]

    def __str__(self) -> str:
        return f"Prediction {self.pk} photo {self.photo_id} ({self.status})"

    @property
    def top(self) -> dict | None:
        return self.ranked[0] if self.ranked else None


class TriageSetting(models.Model):
    """This site's target sensitivities for one model's urgency tiers, set by an admin, with the
    thresholds recomputed from the artefact's held-out outputs (``triage.thresholds_for_targets``)."""

    model_version = models.OneToOneField(ModelVersion, on_delete=models.CASCADE, related_name="triage_setting")
    urgent_target = models.FloatField(help_text="Share of high-grade malignancies to put in the urgent tier.")
    malignant_target = models.FloatField(help_text="Share of malignancies to put in the refer or urgent tier.")
    high_grade_target = models.FloatField(
        default=0.98, help_text="Share of high-grade malignancies to keep out of routine (refer or urgent)."
    )
    # thresholds_for_targets' result: {targets, thresholds, urgent: {...}, malignant: {...}, ...}
    result = models.JSONField(default=dict)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(urgent_target__gt=0)
                & Q(urgent_target__lte=1)
                & Q(malignant_target__gt=0)
                & Q(malignant_target__lte=1)
                & Q(high_grade_target__gt=0)
                & Q(high_grade_target__lte=1),
                name="triagesetting_targets_range",
            ),
        ]

    @property
    def thresholds(self) -> dict:
        return (self.result or {}).get("thresholds") or {}


class TargetKind(models.TextChoices):
    SUB = "sub", "Sub-class (fine model)"
    META = "meta", "Meta-class (coarse model)"


def overlay_upload_to(instance: GradCamOverlay, filename: str) -> str:
    return f"overlays/{instance.prediction_id}/{filename}"


class GradCamOverlay(models.Model):
    prediction = models.ForeignKey(Prediction, on_delete=models.CASCADE, related_name="overlays")
    target_kind = models.CharField(max_length=4, choices=TargetKind.choices)
    target = models.CharField(max_length=64, help_text="Sub-class or meta-class code.")
    rank = models.PositiveSmallIntegerField(default=0, help_text="0 = top-ranked.")
    image = models.FileField(upload_to=overlay_upload_to, max_length=255)
    scale_max = models.FloatField(
        null=True, blank=True, help_text="Raw CAM value mapped to the top of the shared colour scale."
    )
    box_mass = models.FloatField(
        null=True,
        blank=True,
        help_text="Share of heat-map mass inside annotator boxes (0..1) "
        "when the prediction was computed; pages and API recompute it from `heatmap` with the current boxes.",
    )
    heatmap = models.JSONField(
        null=True, blank=True, help_text="32x32 heat map on the shared scale (0..1) over the centre square."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["prediction", "target_kind", "rank"]
        constraints = [
            models.UniqueConstraint(fields=["prediction", "target_kind", "target"], name="overlay_one_per_target"),
            models.CheckConstraint(
                condition=Q(box_mass__isnull=True) | (Q(box_mass__gte=0) & Q(box_mass__lte=1)),
                name="overlay_box_mass_range",
            ),
        ]


class DoctorAssessment(models.Model):
    """A dermatologist's view of the model's answer. Stored apart from DiagnosisLabel:
    it never changes a pathology label."""

    case = models.ForeignKey("annotation.Case", on_delete=models.CASCADE, related_name="assessments")
    photo = models.ForeignKey(
        "annotation.Photo", null=True, blank=True, on_delete=models.CASCADE, related_name="assessments"
    )
    prediction = models.ForeignKey(
        Prediction, null=True, blank=True, on_delete=models.SET_NULL, related_name="assessments"
    )
    doctor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assessments")
    agrees = models.BooleanField()
    sub_class = models.ForeignKey(
        "annotation.SubClass",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The doctor's own diagnosis when they disagree (optional when they agree).",
    )
    note = models.CharField(max_length=1000, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]


class TrainingStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class TrainingRun(models.Model):
    """A training job started from the portal. Ends with a candidate ModelVersion or nothing."""

    name = models.CharField(max_length=200, blank=True)
    taxonomy = models.ForeignKey("annotation.Taxonomy", on_delete=models.PROTECT, related_name="training_runs")
    label_sources = models.JSONField(
        default=list, help_text="Label sources of the cases used, e.g. ['histopathology']."
    )
    config = models.JSONField(
        default=dict, blank=True, help_text="Overrides of the engine's TrainConfig (epochs, image size ...)."
    )
    status = models.CharField(
        max_length=10, choices=TrainingStatus.choices, default=TrainingStatus.QUEUED, db_index=True
    )
    progress = models.JSONField(default=dict, blank=True, help_text="{stage, epoch, epochs, loss, eta_seconds, ...}")
    cancel_requested = models.BooleanField(default=False)
    n_cases = models.PositiveIntegerField(null=True, blank=True)
    n_photos = models.PositiveIntegerField(null=True, blank=True)
    log = models.TextField(blank=True)
    error = models.TextField(blank=True)
    model_version = models.OneToOneField(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="training_run"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True, help_text="Last sign of life of the worker running it.")
    attempts = models.PositiveSmallIntegerField(default=0)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(model_version__isnull=True) | Q(status="succeeded"),
                name="trainingrun_model_only_if_succeeded",
            ),
        ]

    def __str__(self) -> str:
        return f"Training run {self.pk} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in (TrainingStatus.SUCCEEDED, TrainingStatus.FAILED, TrainingStatus.CANCELLED)
