"""Patients, cases, photos, diagnosis labels, the two-level taxonomy, imports and phone links.

Business rules live in services.py (writes) and selectors.py (reads); models hold
fields, choices, constraints and small properties only.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class Taxonomy(models.Model):
    """A versioned two-level tree: meta-classes -> sub-classes."""

    name = models.CharField(max_length=100)
    version = models.PositiveIntegerField(default=1)
    description = models.TextField(blank=True)
    is_default = models.BooleanField(default=False, help_text="Used for new labels and models.")
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["name", "-version"]
        verbose_name_plural = "taxonomies"
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="taxonomy_name_version_unique"),
            models.UniqueConstraint(
                fields=["is_default"], condition=Q(is_default=True), name="taxonomy_single_default"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


class MetaClass(models.Model):
    taxonomy = models.ForeignKey(Taxonomy, on_delete=models.CASCADE, related_name="meta_classes")
    code = models.SlugField(max_length=64)
    display_name = models.CharField(max_length=200)
    order = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["taxonomy", "order", "code"]
        constraints = [models.UniqueConstraint(fields=["taxonomy", "code"], name="metaclass_code_unique")]

    def __str__(self) -> str:
        return self.display_name or self.code


class MalignancyGrade(models.IntegerChoices):
    BENIGN = 1, "Benign"
    LOW = 2, "Low malignancy"
    HIGH = 3, "High malignancy"


class SubClass(models.Model):
    taxonomy = models.ForeignKey(Taxonomy, on_delete=models.CASCADE, related_name="sub_classes")
    meta_class = models.ForeignKey(MetaClass, on_delete=models.CASCADE, related_name="sub_classes")
    code = models.SlugField(max_length=64)
    display_name = models.CharField(max_length=200)
    # NULL = not a tumour (no malignancy grade).
    malignancy_grade = models.PositiveSmallIntegerField(choices=MalignancyGrade.choices, null=True, blank=True)
    order = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["taxonomy", "meta_class__order", "order", "code"]
        constraints = [
            models.UniqueConstraint(fields=["taxonomy", "code"], name="subclass_code_unique"),
            models.CheckConstraint(
                condition=Q(malignancy_grade__isnull=True) | Q(malignancy_grade__in=[1, 2, 3]),
                name="subclass_grade_valid",
            ),
        ]

    def __str__(self) -> str:
        return self.display_name or self.code


class Sex(models.TextChoices):
    FEMALE = "female", "Female"
    MALE = "male", "Male"
    OTHER = "other", "Other"
    UNKNOWN = "unknown", "Unknown"


class Patient(models.Model):
    """Pseudonymised: a code, never a name."""

    code = models.CharField(max_length=64, unique=True, help_text="Pseudonymous code, never a name.")
    sex = models.CharField(max_length=10, choices=Sex.choices, default=Sex.UNKNOWN)
    birth_year = models.PositiveSmallIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["code"]
        constraints = [
            models.CheckConstraint(
                condition=Q(birth_year__isnull=True) | (Q(birth_year__gte=1880) & Q(birth_year__lte=2100)),
                name="patient_birth_year_range",
            )
        ]

    def __str__(self) -> str:
        return self.code


class CaseStatus(models.TextChoices):
    OPEN = "open", "Open"
    AWAITING_PATHOLOGY = "awaiting_pathology", "Awaiting pathology"
    CONFIRMED = "confirmed", "Confirmed"
    EXCLUDED = "excluded", "Excluded"


class ExclusionReason(models.TextChoices):
    BLUR = "blur", "Blurred or lesion missing"
    MEDICATION = "medication", "Covered by medication"
    HIDDEN = "hidden", "Hidden by hair or other organs"
    SMALL_SITE = "small_site", "Site too small"
    EXUDATE = "exudate", "Too much exudate"
    OTHER = "other", "Other"


class Case(models.Model):
    """One patient visit for one lesion."""

    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="cases")
    external_id = models.CharField(
        max_length=100, blank=True, db_index=True, help_text="e.g. lesion_id of an imported data set"
    )
    body_site = models.CharField(max_length=100, blank=True)
    age_at_visit = models.PositiveSmallIntegerField(null=True, blank=True)
    clinical_history = models.TextField(blank=True)
    status = models.CharField(max_length=24, choices=CaseStatus.choices, default=CaseStatus.OPEN, db_index=True)
    exclusion_reason = models.CharField(max_length=16, choices=ExclusionReason.choices, blank=True)
    exclusion_note = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="cases_created"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(status="excluded") & ~Q(exclusion_reason=""))
                | (~Q(status="excluded") & Q(exclusion_reason="")),
                name="case_exclusion_reason_iff_excluded",
            ),
            models.UniqueConstraint(
                fields=["external_id"], condition=~Q(external_id=""), name="case_external_id_unique"
            ),
        ]
        indexes = [models.Index(fields=["status", "-created_at"], name="case_status_created_idx")]

    def __str__(self) -> str:
        return f"Case {self.pk} ({self.patient.code})" if self.patient_id else f"Case {self.pk}"

    @property
    def reference(self) -> str:
        return self.external_id or f"C{self.pk:06d}"


class Modality(models.TextChoices):
    CLINICAL = "clinical", "Clinical"
    DERMOSCOPIC = "dermoscopic", "Dermoscopic"


def photo_upload_to(instance: Photo, filename: str) -> str:
    # Content-addressed, no patient data in the path.
    return f"photos/{instance.sha256[:2]}/{instance.sha256}.{filename.rsplit('.', 1)[-1].lower()}"


class Photo(models.Model):
    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="photos")
    file = models.FileField(upload_to=photo_upload_to, max_length=255)
    modality = models.CharField(max_length=16, choices=Modality.choices, default=Modality.CLINICAL, db_index=True)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64, db_index=True)
    original_name = models.CharField(max_length=255, blank=True)
    acquired_at = models.DateTimeField(null=True, blank=True)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["case", "created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["case", "sha256"], name="photo_unique_per_case"),
            models.CheckConstraint(condition=Q(width__gt=0) & Q(height__gt=0), name="photo_positive_size"),
        ]

    def __str__(self) -> str:
        return f"Photo {self.pk} of case {self.case_id}"


class LabelSource(models.TextChoices):
    HISTOPATHOLOGY = "histopathology", "Histopathology"
    CONSENSUS = "consensus", "Clinical consensus"
    FOLLOW_UP = "follow_up", "Follow-up"
    CONFOCAL = "confocal", "Confocal microscopy"
    CLINICAL = "clinical", "Clinical impression"


def report_upload_to(instance: DiagnosisLabel, filename: str) -> str:
    return f"reports/case-{instance.case_id}/{filename}"


class DiagnosisLabel(models.Model):
    """A diagnosis for a case from one source. `confirmed` is true only for histopathology.
    A case holds at most one label per source; changes are kept in LabelChange."""

    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="labels")
    sub_class = models.ForeignKey(SubClass, on_delete=models.PROTECT, related_name="labels")
    source = models.CharField(max_length=20, choices=LabelSource.choices)
    confirmed = models.BooleanField(default=False)
    report_text = models.TextField(blank=True)
    report_file = models.FileField(upload_to=report_upload_to, blank=True, max_length=255)
    signed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    signed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["case", "-confirmed", "source"]
        constraints = [
            models.UniqueConstraint(fields=["case", "source"], name="label_one_per_source"),
            models.CheckConstraint(
                condition=(Q(source="histopathology") & Q(confirmed=True))
                | (~Q(source="histopathology") & Q(confirmed=False)),
                name="label_confirmed_iff_histopathology",
            ),
        ]
        indexes = [models.Index(fields=["sub_class", "confirmed"], name="label_sub_confirmed_idx")]

    def __str__(self) -> str:
        return f"{self.sub_class.code} ({self.get_source_display()})"


class LabelChange(models.Model):
    """Audit trail of diagnosis labels: who changed what, when."""

    label = models.ForeignKey(DiagnosisLabel, on_delete=models.SET_NULL, null=True, related_name="changes")
    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="label_changes")
    source = models.CharField(max_length=20, choices=LabelSource.choices)
    old_sub_class = models.ForeignKey(SubClass, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    new_sub_class = models.ForeignKey(SubClass, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    changed_at = models.DateTimeField(auto_now_add=True)
    note = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-changed_at", "-id"]


class ImportRun(models.Model):
    """One import, visible in the portal: a run of import_dataset, or a box file too large to
    import within the request, queued on the long queue (rules in annotation/interchange/jobs.py)."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    path = models.CharField(max_length=500)
    kind = models.CharField(max_length=20)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    summary = models.JSONField(default=dict)
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DONE)
    progress = models.JSONField(default=dict, blank=True, help_text="{stage, done, total} while running")
    upload = models.FileField(upload_to="imports/", blank=True, help_text="the queued file; removed once imported")
    options = models.JSONField(
        default=dict, blank=True, help_text="how to import: annotator, status, replace_accepted, map, dry_run"
    )
    heartbeat_at = models.DateTimeField(null=True, blank=True, help_text="last sign of life of the worker importing it")
    attempts = models.PositiveSmallIntegerField(
        default=0, help_text="workers that started it (a dead one's run is resent)"
    )


class PhoneUploadToken(models.Model):
    """A short-lived link (shown as a QR code on the desk) that lets a phone add photos
    to one case without logging in. Only the SHA-256 of the token is stored, so a copy
    of the database gives no working link. Rules live in annotation/phone/services.py."""

    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="phone_tokens")
    token_hash = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    max_photos = models.PositiveSmallIntegerField(default=10)
    photos_uploaded = models.PositiveSmallIntegerField(default=0)
    files_rejected = models.PositiveIntegerField(default=0)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(max_photos__gt=0), name="phonetoken_max_photos_positive"),
            models.CheckConstraint(
                condition=Q(photos_uploaded__lte=models.F("max_photos")), name="phonetoken_within_limit"
            ),
        ]

    def __str__(self) -> str:
        return f"Phone link {self.pk} for case {self.case_id}"

    @property
    def remaining(self) -> int:
        return max(0, self.max_photos - self.photos_uploaded)
