"""Crash redelivery with real Celery workers, Redis and PostgreSQL: worker A claims a prediction
(row 'running' with the job's task id) and is killed (SIGKILL) mid-job; the unacknowledged job
comes back from Redis (acks_late, visibility timeout shortened for the test) to worker B, which
sees the same task id, takes the row over and stores the result once.

Skipped locally without Redis or PostgreSQL; fails in CI (DERM_REQUIRE_SERVICES=1)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings as dj_settings
from django.db import connection

from inference import services
from inference.models import Prediction, PredictionStatus
from tests.conftest import need
from tests.factories import make_photo

REPO = Path(__file__).resolve().parents[2]
BROKER = os.environ.get("CELERY_BROKER_URL") or "redis://127.0.0.1:6379/0"
if not BROKER.startswith("redis"):
    BROKER = "redis://127.0.0.1:6379/0"

pytestmark = [pytest.mark.celery_worker, pytest.mark.django_db(transaction=True)]


def _redis_ok() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(BROKER, socket_connect_timeout=2).ping())
    except Exception:
        return False


def _db_url() -> str:
    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def _worker(prefix, tag, log, **extra):
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="derm_portal.settings.base",
        DATABASE_URL=_db_url(),
        CELERY_BROKER_URL=BROKER,
        CELERY_KEY_PREFIX=prefix,
        CELERY_TASK_ALWAYS_EAGER="0",
        DERM_MEDIA_ROOT=str(dj_settings.MEDIA_ROOT),
        DERM_MODEL_ROOT=str(dj_settings.DERM_MODEL_ROOT),
        DERM_INFERENCE_THREADS="1",
        PYTHONPATH=str(REPO),
        OMP_NUM_THREADS="1",
        DJANGO_LOG_LEVEL="WARNING",
        **extra,
    )
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "derm_portal",
        "worker",
        "-Q",
        "interactive",
        "-n",
        f"{tag}@%h",
        "-P",
        "solo",
        "-I",
        "tests.inference.worker_crash_helper",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-l",
        "info",
    ]
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )


def _kill(proc, sig=signal.SIGTERM):
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _until(cond, timeout, what, log=None):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}" + (f"\n{log.read_text()[-3000:]}" if log else ""))


def test_killed_worker_job_is_redelivered_and_taken_over(active_model, case, tmp_path):
    need(_redis_ok(), f"Redis is not reachable at {BROKER}")
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
        _until(lambda: r.get(hang_key), 120, "worker A to claim the prediction", logs["a"])
        pred.refresh_from_db()
        assert pred.status == PredictionStatus.RUNNING and pred.task_id == job.id and pred.attempts == 1
        _kill(a, signal.SIGKILL)  # the worker dies mid-job, no ack
        b = _worker(prefix, f"b-{tag}", logs["b"])
        _until(
            lambda: Prediction.objects.get(pk=pred.pk).status == PredictionStatus.DONE,
            120,
            "the redelivered job to finish on worker B",
            logs["b"],
        )
        pred.refresh_from_db()
        assert pred.task_id == job.id and pred.attempts == 2 and pred.overlays.count() == 4
        assert job.id in logs["b"].read_text()
    finally:
        _kill(a, signal.SIGKILL)
        if b is not None:
            _kill(b)
        r.delete(hang_key)
        for key in r.scan_iter(match=f"{prefix}*"):
            r.delete(key)
