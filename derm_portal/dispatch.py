"""Handing jobs to the broker without ever failing the request that made them.

A job's row (prediction, training run, import run, crop request) is committed first; sending it is
best effort. When the broker is down the send is logged and the row stays queued: the reconciler
(derm_portal.reconcile, every DERM_RECONCILE_SECONDS) sends it once the broker is back.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from .models import JobDispatch

log = logging.getLogger(__name__)


def send(name: str, *args, **kwargs) -> bool:
    """Send the task registered as ``name``; False (logged) when the broker cannot take it."""
    from .celery import app  # the project's app, whichever Celery app is "current" in this process

    task = app.tasks[name]
    if app.conf.task_always_eager:  # runs here: its errors are the caller's to see
        task.apply_async(args=args, kwargs=kwargs)
        return True
    try:
        task.apply_async(args=args, kwargs=kwargs)
        return True
    except Exception:  # broker down or unreachable: the reconciler sends it later
        log.warning("job %s%s not sent (broker unavailable?); the reconciler will send it", name, args, exc_info=True)
        return False


def _row(kind: str, key: str, **defaults) -> JobDispatch:
    try:
        with transaction.atomic():
            return JobDispatch.objects.get_or_create(kind=kind, key=key, defaults=defaults)[0]
    except IntegrityError:  # another process created it
        return JobDispatch.objects.get(kind=kind, key=key)


def claim(kind: str, key: str, resend: timedelta) -> bool:
    """True for exactly one caller per ``resend`` interval: the row is locked, and a send within the
    interval (by any reconciler) makes every other caller skip the job."""
    now = timezone.now()
    with transaction.atomic():
        row = JobDispatch.objects.select_for_update().get(pk=_row(kind, key).pk)
        if row.enqueued_at is not None and row.enqueued_at > now - resend:
            return False
        row.enqueued_at, row.sends = now, row.sends + 1
        row.save(update_fields=["enqueued_at", "sends"])
    return True


def unclaim(kind: str, key: str) -> None:
    """The send failed: the next reconciler run tries again."""
    JobDispatch.objects.filter(kind=kind, key=key).update(enqueued_at=None)


def request(kind: str, key: str, params: dict) -> JobDispatch:
    """Record a request for a job that has no row of its own (pending until ``complete``)."""
    row = _row(kind, key, params=params)
    JobDispatch.objects.filter(pk=row.pk).update(requested_at=timezone.now(), params=params)
    return row


def start(kind: str, key: str, busy_for: timedelta):
    """Claim a run of a row-less job: its start time, or None while another run started less than
    ``busy_for`` ago and has not finished (a duplicate message then does nothing)."""
    now = timezone.now()
    with transaction.atomic():
        row = JobDispatch.objects.select_for_update().get(pk=_row(kind, key).pk)
        running = row.started_at is not None and (row.completed_at is None or row.completed_at < row.started_at)
        if running and row.started_at > now - busy_for:
            return None
        row.started_at = now
        row.save(update_fields=["started_at"])
    return now


def complete(kind: str, key: str, started_at) -> None:
    """A run of the job that started at ``started_at`` finished: requests made before then are served."""
    JobDispatch.objects.filter(kind=kind, key=key).update(completed_at=started_at)
