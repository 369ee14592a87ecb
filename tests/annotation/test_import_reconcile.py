"""Queued box imports recover by themselves: the reconciler (derm_portal.reconcile) resends a run whose
message was lost (queued past the grace period) or whose worker died (running with a stale heartbeat),
once per resend interval however many reconcilers run; the resent import stores no box twice; after
IMPORT_MAX_ATTEMPTS dead workers the run is failed with a message instead of being resent forever."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from annotation.interchange import jobs
from annotation.models import Box, ImportRun
from derm_portal import roles
from derm_portal.reconcile import IMPORT_TASK, reconcile
from tests.annotation.test_import_scale import coco_file, photo_named

pytestmark = pytest.mark.django_db
OLD = timedelta(hours=1)


class Recorder:
    """The reconciler's send: records the import runs it sends."""

    def __init__(self):
        self.sent = []

    def __call__(self, name, *args, **kwargs):
        assert name == IMPORT_TASK
        self.sent.append(kwargs["run_pk"])
        return True


@pytest.fixture
def admin(users, taxonomy):
    return users[roles.ADMIN]


def _queued(admin, django_capture_on_commit_callbacks, n_photos=2) -> ImportRun:
    """A queued run whose message was lost (the send at commit never happened)."""
    photos = {f"lesion-{k}.jpg": 1 + k for k in range(n_photos)}
    for name in photos:
        photo_named(name)
    with django_capture_on_commit_callbacks(execute=False):
        return jobs.box_import_enqueue(data=coco_file(n_photos + 1, photos), source="boxes.json", user=admin)


def _set(run, **fields):
    ImportRun.objects.filter(pk=run.pk).update(**fields)


def test_lost_and_dead_imports_are_resent_once_and_live_or_fresh_ones_are_left(
    admin, django_capture_on_commit_callbacks
):
    now = timezone.now()
    lost, fresh, dead, live = (_queued(admin, django_capture_on_commit_callbacks, 1) for _ in range(4))
    _set(lost, started_at=now - OLD)
    _set(dead, status=ImportRun.Status.RUNNING, started_at=now - OLD, heartbeat_at=now - OLD, attempts=1)
    _set(live, status=ImportRun.Status.RUNNING, started_at=now - OLD, heartbeat_at=now, attempts=1)
    first = Recorder()
    assert reconcile(send=first)["import"] == 2
    assert sorted(first.sent) == sorted([lost.pk, dead.pk])
    assert fresh.pk not in first.sent and live.pk not in first.sent
    second = Recorder()  # another reconciler, or the next tick, within the resend interval
    assert reconcile(send=second)["import"] == 0 and second.sent == []


def test_an_import_resent_after_its_worker_died_stores_each_box_once(
    admin, django_capture_on_commit_callbacks, monkeypatch
):
    run = _queued(admin, django_capture_on_commit_callbacks, n_photos=3)
    real_import = jobs.coco_import

    def import_then_die(**kw):  # the worker is killed after the boxes were committed, before the run is done
        real_import(**kw)
        raise SystemExit("worker killed")

    monkeypatch.setattr(jobs, "coco_import", import_then_die)
    with pytest.raises(SystemExit):
        jobs.box_import_run(run_pk=run.pk, task_id="first")
    monkeypatch.undo()
    run.refresh_from_db()
    assert run.status == ImportRun.Status.RUNNING and run.attempts == 1 and run.upload
    assert Box.objects.count() == 3
    assert jobs.box_import_run(run_pk=run.pk, task_id="duplicate") == "busy"  # its heartbeat is fresh

    _set(run, heartbeat_at=timezone.now() - OLD)
    rec = Recorder()
    assert reconcile(send=rec)["import"] == 1 and rec.sent == [run.pk]
    assert jobs.box_import_run(run_pk=run.pk, task_id="resent") == ImportRun.Status.DONE
    run.refresh_from_db()
    assert run.status == ImportRun.Status.DONE and run.attempts == 2 and not run.upload
    assert run.summary["boxes"] == 3
    assert Box.objects.count() == 3  # replaced, not added
    assert jobs.box_import_run(run_pk=run.pk, task_id="late") == "skipped"


def test_a_run_that_killed_its_workers_too_often_is_failed_with_a_message(admin, django_capture_on_commit_callbacks):
    run = _queued(admin, django_capture_on_commit_callbacks)
    old = timezone.now() - OLD
    _set(run, status=ImportRun.Status.RUNNING, started_at=old, heartbeat_at=old, attempts=jobs.IMPORT_MAX_ATTEMPTS)
    rec = Recorder()
    assert reconcile(send=rec)["import"] == 1
    assert jobs.box_import_run(run_pk=run.pk, task_id="resent") == "failed"
    run.refresh_from_db()
    assert run.status == ImportRun.Status.FAILED and run.finished_at and not run.upload
    assert f"given up after {jobs.IMPORT_MAX_ATTEMPTS} attempts" in run.summary["failure"]
    assert Box.objects.count() == 0
    _set(run, finished_at=old)
    from derm_portal.models import JobDispatch

    JobDispatch.objects.update(enqueued_at=None)  # even past the resend interval a failed run is not sent
    assert reconcile(send=Recorder())["import"] == 0
