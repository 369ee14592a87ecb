"""The job reconciler (derm_portal.reconcile) and sending jobs while the broker is down.

Each pass sends every due job once: pending predictions past the grace period, stale running ones,
queued training and import runs, unserved crop requests; a second pass (or a second reconciler)
within the resend interval sends nothing, and a send the broker refuses is tried again next pass."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone

from annotation.models import ImportRun
from derm_portal import dispatch
from derm_portal.models import JobDispatch
from derm_portal.reconcile import CROP_TASK, IMPORT_TASK, reconcile
from inference import jobs
from inference.models import Prediction, PredictionStatus, TrainingRun, TrainingStatus
from tests.factories import make_photo
from tests.inference.factories import PredictionFactory, TrainingRunFactory
from tests.inference.test_training import labelled_cases  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db
OLD = timedelta(hours=1)


class Recorder:
    """The reconciler's send: records (task, args, kwargs) and answers like a broker that is up or down."""

    def __init__(self, up=True):
        self.sent, self.up = [], up

    def __call__(self, name, *args, **kwargs):
        if self.up:
            self.sent.append((name, args, kwargs))
        return self.up


def _age(model, pk, **fields):
    model.objects.filter(pk=pk).update(**fields)


def test_each_due_job_is_sent_once_and_fresh_or_finished_jobs_are_left_alone(case, users):
    now = timezone.now()
    pending_old, pending_new, running_stale, running_live, done = (
        PredictionFactory(photo=make_photo(case, color=(i * 40, 90, 90)), status=s)
        for i, s in enumerate(["pending", "pending", "running", "running", "done"])
    )
    _age(Prediction, pending_old.pk, created_at=now - OLD)
    _age(Prediction, running_stale.pk, created_at=now - OLD, started_at=now - OLD)
    _age(Prediction, running_live.pk, created_at=now - OLD, started_at=now)
    _age(Prediction, done.pk, created_at=now - OLD)
    queued = TrainingRunFactory(status=TrainingStatus.QUEUED)
    dead = TrainingRunFactory(status=TrainingStatus.RUNNING)
    alive = TrainingRunFactory(status=TrainingStatus.RUNNING)
    _age(TrainingRun, queued.pk, created_at=now - OLD)
    _age(TrainingRun, dead.pk, created_at=now - OLD, started_at=now - OLD, heartbeat_at=now - OLD)
    _age(TrainingRun, alive.pk, created_at=now - OLD, started_at=now - OLD, heartbeat_at=now)
    imp = ImportRun(path="boxes.json", kind="coco", status=ImportRun.Status.QUEUED, started_by=users["admin"])
    imp.upload.save("boxes.json", ContentFile(b"{}"), save=False)
    imp.save()
    _age(ImportRun, imp.pk, started_at=now - OLD)
    dispatch.request("crops", "0.1:8", {"margin": 0.1, "min_size": 8})
    JobDispatch.objects.filter(kind="crops").update(requested_at=now - OLD)

    first = Recorder()
    assert reconcile(send=first) == {"prediction": 2, "training": 2, "import": 1, "crops": 1}
    assert sorted(first.sent, key=repr) == sorted(
        [
            (jobs.PREDICTION, (pending_old.pk,), {}),
            (jobs.PREDICTION, (running_stale.pk,), {}),
            (jobs.TRAINING, (queued.pk,), {}),
            (jobs.TRAINING, (dead.pk,), {}),
            (IMPORT_TASK, (), {"run_pk": imp.pk}),
            (CROP_TASK, (), {"margin": 0.1, "min_size": 8}),
        ],
        key=repr,
    )
    second = Recorder()  # a second reconciler (or the next tick) within the resend interval
    assert reconcile(send=second) == {"prediction": 0, "training": 0, "import": 0, "crops": 0}
    assert second.sent == []
    assert JobDispatch.objects.get(kind="prediction", key=str(pending_old.pk)).sends == 1


def test_a_send_the_broker_refuses_is_tried_again_next_pass(case):
    pred = PredictionFactory(photo=make_photo(case), status=PredictionStatus.PENDING)
    _age(Prediction, pred.pk, created_at=timezone.now() - OLD)
    assert reconcile(send=Recorder(up=False))["prediction"] == 0
    again = Recorder()
    assert reconcile(send=again)["prediction"] == 1 and again.sent == [(jobs.PREDICTION, (pred.pk,), {})]


def test_crop_request_is_owed_a_run_that_started_after_it():
    from annotation.crops import CROP_BUSY, CROP_JOB

    dispatch.request(CROP_JOB, "0:0", {"margin": 0.0, "min_size": 0})
    started = dispatch.start(CROP_JOB, "0:0", CROP_BUSY)
    assert started is not None
    assert dispatch.start(CROP_JOB, "0:0", CROP_BUSY) is None  # a duplicate message while it runs
    # asked again while it runs
    JobDispatch.objects.filter(kind=CROP_JOB).update(requested_at=started + timedelta(seconds=1))
    dispatch.complete(CROP_JOB, "0:0", started)
    rec = Recorder()
    now = timezone.now()
    JobDispatch.objects.filter(kind=CROP_JOB).update(requested_at=now - OLD, completed_at=now - 2 * OLD)
    assert reconcile(send=rec)["crops"] == 1 and rec.sent == [(CROP_TASK, (), {"margin": 0.0, "min_size": 0})]
    row = JobDispatch.objects.get(kind=CROP_JOB)
    dispatch.complete(CROP_JOB, "0:0", row.requested_at + timedelta(seconds=1))  # a later run finished
    JobDispatch.objects.filter(kind=CROP_JOB).update(enqueued_at=None)
    assert reconcile(send=Recorder())["crops"] == 0


def test_starting_training_with_the_broker_down_queues_the_run_for_the_reconciler(
    client, users, labelled_cases, django_capture_on_commit_callbacks, caplog, monkeypatch
):
    """No 500 and no lost run: the run is saved queued and the reconciler sends it."""
    from celery.app.task import Task
    from django.urls import reverse
    from kombu.exceptions import OperationalError

    from derm_portal.celery import app

    def broker_down(*args, **kwargs):
        raise OperationalError("Error 111 connecting to the broker: connection refused")

    conf = app.conf
    saved = conf.task_always_eager, conf.broker_url
    conf.task_always_eager = False
    monkeypatch.setattr(Task, "apply_async", broker_down)  # the broker refuses every send
    try:
        client.force_login(users["admin"])
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            r = client.post(
                reverse("inference:training_list"), {"source_set": "confirmed", "epochs": "1", "image_size": "64"}
            )
    finally:
        conf.task_always_eager, conf.broker_url = saved
    assert r.status_code == 302 and len(callbacks) == 1
    assert "not sent (broker unavailable?)" in caplog.text
    run = TrainingRun.objects.get()
    assert run.status == TrainingStatus.QUEUED
    _age(TrainingRun, run.pk, created_at=timezone.now() - OLD)
    rec = Recorder()
    assert reconcile(send=rec)["training"] == 1 and rec.sent == [(jobs.TRAINING, (run.pk,), {})]
