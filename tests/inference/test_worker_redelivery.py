"""Crash redelivery with real Celery workers, Redis and PostgreSQL: worker A claims a prediction
(row 'running' with the job's task id) and is killed (SIGKILL) mid-job; the unacknowledged job
comes back from Redis (acks_late, visibility timeout shortened for the test) to worker B, which
sees the same task id, takes the row over and stores the result once.

Skipped locally without Redis or PostgreSQL; fails in CI (DERM_REQUIRE_SERVICES=1)."""

from __future__ import annotations

import signal
import uuid

import pytest
from django.db import connection

from inference import services
from inference.models import Prediction, PredictionStatus
from tests.conftest import need
from tests.factories import make_photo
from tests.workers import BROKER, flush, redis_ok, start_worker, stop, until, worker_env

pytestmark = [pytest.mark.celery_worker, pytest.mark.django_db(transaction=True)]


def _worker(prefix, name, log, **extra):
    env = worker_env(prefix, **extra)
    return start_worker("interactive", name, log, env, "-I", "tests.inference.worker_crash_helper")


def test_killed_worker_job_is_redelivered_and_taken_over(active_model, case, tmp_path):
    need(redis_ok(), "Redis is not reachable")
    need(connection.vendor == "postgresql", "needs PostgreSQL (workers share the test database)")
    import redis
    from celery import Celery

    tag = uuid.uuid4().hex[:10]
    prefix = f"derm-test-{tag}:"
    hang_key = f"derm-test-hang-{tag}"
    r = redis.Redis.from_url(BROKER)
    pred = services.prediction_request(photo=make_photo(case), enqueue=False)
    client = Celery("derm-test-client", broker=BROKER, set_as_current=False)
    client.conf.broker_transport_options = {"global_keyprefix": prefix}
    logs = {k: tmp_path / f"worker-{k}.log" for k in ("a", "b")}
    a = _worker(prefix, f"a-{tag}", logs["a"], DERM_TEST_HANG_PREDICTION="1", DERM_TEST_HANG_KEY=hang_key)
    b = None
    try:
        job = client.send_task("inference.tasks.run_prediction", args=[pred.pk], queue="interactive")
        until(lambda: r.get(hang_key), 120, "worker A to claim the prediction", logs["a"])
        pred.refresh_from_db()
        assert pred.status == PredictionStatus.RUNNING and pred.task_id == job.id and pred.attempts == 1
        stop(a, signal.SIGKILL)  # the worker dies mid-job, no ack
        b = _worker(prefix, f"b-{tag}", logs["b"])
        until(
            lambda: Prediction.objects.get(pk=pred.pk).status == PredictionStatus.DONE,
            120,
            "the redelivered job to finish on worker B",
            logs["b"],
        )
        pred.refresh_from_db()
        assert pred.task_id == job.id and pred.attempts == 2 and pred.overlays.count() == 4
        assert job.id in logs["b"].read_text()
    finally:
        stop(a, signal.SIGKILL)
        if b is not None:
            stop(b)
        r.delete(hang_key)
        flush(prefix)
