"""Bookkeeping of background jobs (see derm_portal.dispatch and derm_portal.reconcile)."""

from django.db import models


class JobDispatch(models.Model):
    """When a job was last handed to the broker by the reconciler, so that a job is re-sent at most once
    per resend interval however many reconcilers run; and, for jobs with no row of their own (lesion
    crops), the durable request itself: pending while ``completed_at`` is older than ``requested_at``."""

    kind = models.CharField(max_length=32)
    key = models.CharField(max_length=64, help_text="The job's row id, or its parameters for crops.")
    params = models.JSONField(default=dict, blank=True)
    requested_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True, help_text="Start time of the run in progress.")
    completed_at = models.DateTimeField(null=True, blank=True, help_text="Start time of the last finished run.")
    enqueued_at = models.DateTimeField(null=True, blank=True)
    sends = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["kind", "key"], name="jobdispatch_one_per_job")]

    def __str__(self):
        return f"{self.kind} {self.key} (sent {self.sends}x)"


class SubmissionToken(models.Model):
    """A form's one-time token (derm_portal.idempotency): the first submission creates the object and
    records it here; a repeated submission of the same form (double click, resend) gets that object."""

    user = models.ForeignKey("auth.User", on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=32)
    token = models.CharField(max_length=64)
    object_pk = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "kind", "token"], name="submissiontoken_once")]

    def __str__(self):
        return f"{self.kind} {self.token} -> {self.object_pk}"
