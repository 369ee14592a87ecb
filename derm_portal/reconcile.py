"""The job reconciler: every DERM_RECONCILE_SECONDS (Celery beat, ``./run beat``; ``./run serve`` starts
it) it sends again the jobs whose message was lost or whose worker died:

- pending predictions older than the grace period, and running ones older than their stale limit;
- queued training runs, and running ones whose heartbeat is stale;
- queued box-import runs, and running ones whose heartbeat is stale (the import gives up, failed with a
  message, after DERM_IMPORT_MAX_ATTEMPTS workers died on it);
- crop requests not served since they were made.

Each job is sent at most once per resend interval by any number of reconcilers (``dispatch.claim``
locks a bookkeeping row), and the job itself claims its row under a lock before working, so a
duplicate message is answered "skipped"/"busy" and never computes twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from . import dispatch
from .models import JobDispatch

log = logging.getLogger(__name__)

INTERVAL = int(getattr(settings, "DERM_RECONCILE_SECONDS", 30))
# A job younger than this is still on its first way through the broker.
GRACE = timedelta(seconds=int(getattr(settings, "DERM_RECONCILE_GRACE_SECONDS", 60)))
# A job the reconciler sent is not sent again before this (its message may be queued behind others).
RESEND = timedelta(seconds=int(getattr(settings, "DERM_RECONCILE_RESEND_SECONDS", 600)))
BATCH = 500  # jobs per kind per run: a long outage drains over several runs
KEEP = timedelta(days=2)  # bookkeeping rows of row-backed jobs are dropped after this

CROPS = "crops"
CROP_TASK = "annotation.tasks.make_crops"
IMPORT_TASK = "annotation.tasks.import_boxes"


def _due_predictions(now) -> list[int]:
    from inference.models import Prediction, PredictionStatus
    from inference.services.predictions import STALE_RUNNING

    qs = Prediction.objects.filter(
        Q(status=PredictionStatus.PENDING, created_at__lt=now - GRACE)
        | Q(status=PredictionStatus.RUNNING, started_at__lt=now - STALE_RUNNING)
    )
    return list(qs.order_by("pk").values_list("pk", flat=True)[:BATCH])


def _due_trainings(now) -> list[int]:
    from inference.models import TrainingRun, TrainingStatus
    from inference.services.training_job import TRAINING_STALE

    stale = now - TRAINING_STALE
    qs = TrainingRun.objects.filter(
        Q(status=TrainingStatus.QUEUED, created_at__lt=now - GRACE)
        | Q(status=TrainingStatus.RUNNING, heartbeat_at__lt=stale)
        | Q(status=TrainingStatus.RUNNING, heartbeat_at__isnull=True, started_at__lt=stale)
    )
    return list(qs.order_by("pk").values_list("pk", flat=True)[:BATCH])


def _due_imports(now) -> list[int]:
    from annotation.interchange.jobs import IMPORT_STALE
    from annotation.models import ImportRun

    stale = now - IMPORT_STALE
    qs = ImportRun.objects.filter(kind="coco").filter(  # the queued kind; dataset imports run in their command
        Q(status=ImportRun.Status.QUEUED, started_at__lt=now - GRACE)
        | Q(status=ImportRun.Status.RUNNING, heartbeat_at__lt=stale)
        | Q(status=ImportRun.Status.RUNNING, heartbeat_at__isnull=True, started_at__lt=stale)
    )
    return list(qs.order_by("pk").values_list("pk", flat=True)[:BATCH])


def _due_crops(now) -> list[JobDispatch]:
    qs = JobDispatch.objects.filter(kind=CROPS, requested_at__lt=now - GRACE).filter(
        Q(completed_at__isnull=True) | Q(completed_at__lt=F("requested_at"))
    )
    return list(qs.order_by("pk")[:BATCH])


def reconcile(*, send: Callable[..., bool] = dispatch.send) -> dict[str, int]:
    """One pass; returns how many jobs of each kind were sent."""
    from inference import jobs

    now = timezone.now()
    sent = {"prediction": 0, "training": 0, "import": 0, CROPS: 0}

    def one(kind: str, key: str, task: str, *args, **kwargs) -> None:
        if not dispatch.claim(kind, key, RESEND):
            return
        if send(task, *args, **kwargs):
            sent[kind] += 1
        else:
            dispatch.unclaim(kind, key)

    for pk in _due_predictions(now):
        one("prediction", str(pk), jobs.PREDICTION, pk)
    for pk in _due_trainings(now):
        one("training", str(pk), jobs.TRAINING, pk)
    for pk in _due_imports(now):
        one("import", str(pk), IMPORT_TASK, run_pk=pk)
    for row in _due_crops(now):
        one(CROPS, row.key, CROP_TASK, **row.params)
    JobDispatch.objects.exclude(kind=CROPS).filter(enqueued_at__lt=now - KEEP).delete()
    if any(sent.values()):
        log.info("reconciler sent %s", sent)
    return sent
