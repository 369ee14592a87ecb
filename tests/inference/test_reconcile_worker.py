"""Recovery after a broker outage with real processes (PostgreSQL, Redis, Celery workers with beat).

Photos get their predictions requested by a process whose broker is down (a port nothing listens on):
the requests succeed and leave pending rows. Then two real workers, each with an embedded beat running
the reconciler every second, come up against Redis: every photo ends with exactly one done prediction,
computed once (one attempt) and sent once (one dispatch) although two reconcilers ran many passes.

Skipped locally without Redis or PostgreSQL; fails in CI (DERM_REQUIRE_SERVICES=1)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
from django.conf import settings as dj_settings
from django.db import connection

from derm_portal.models import JobDispatch
from inference.models import Prediction, PredictionStatus
from tests.conftest import need
from tests.factories import make_photo
from tests.inference.test_worker_redelivery import BROKER, REPO, _db_url, _kill, _redis_ok, _until

pytestmark = [pytest.mark.celery_worker, pytest.mark.django_db(transaction=True)]
DEAD_BROKER = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def _env(**extra):
    return dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="derm_portal.settings.base",
        DATABASE_URL=_db_url(),
        CELERY_TASK_ALWAYS_EAGER="0",
        DERM_MEDIA_ROOT=str(dj_settings.MEDIA_ROOT),
        DERM_MODEL_ROOT=str(dj_settings.DERM_MODEL_ROOT),
        DERM_INFERENCE_THREADS="1",
        PYTHONPATH=str(REPO),
        OMP_NUM_THREADS="1",
        DJANGO_LOG_LEVEL="WARNING",
        **extra,
    )


def _worker_with_beat(prefix, tag, tmp_path):
    log = tmp_path / f"worker-{tag}.log"
    env = _env(
        CELERY_BROKER_URL=BROKER, CELERY_KEY_PREFIX=prefix, DERM_RECONCILE_SECONDS="1", DERM_RECONCILE_GRACE_SECONDS="0"
    )
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "derm_portal",
        "worker",
        "-B",
        "-s",
        str(tmp_path / f"beat-{tag}"),
        "-Q",
        "interactive",
        "-n",
        f"{tag}@%h",
        "-P",
        "solo",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-l",
        "info",
    ]
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    ), log


def test_predictions_requested_while_the_broker_was_down_are_computed_exactly_once(active_model, case, tmp_path):
    need(_redis_ok(), f"Redis is not reachable at {BROKER}")
    need(connection.vendor == "postgresql", "needs PostgreSQL (workers share the test database)")
    import redis

    photos = [make_photo(case, color=(40 * i, 100, 120)) for i in range(4)]
    script = (
        "import django; django.setup()\n"
        "from inference import services\n"
        f"for pk in {[p.pk for p in photos]}:\n"
        "    assert services.prediction_request_for_photo(photo_pk=pk) is not None\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=_env(CELERY_BROKER_URL=DEAD_BROKER),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "not sent (broker unavailable?)" in out.stderr
    assert list(Prediction.objects.values_list("status", flat=True)) == [PredictionStatus.PENDING] * 4

    tag = uuid.uuid4().hex[:10]
    prefix = f"derm-test-{tag}:"
    workers = [_worker_with_beat(prefix, f"{w}-{tag}", tmp_path) for w in ("a", "b")]
    try:
        _until(
            lambda: Prediction.objects.filter(status=PredictionStatus.DONE).count() == 4,
            240,
            "the reconciled predictions to finish",
            workers[0][1],
        )
        _until(
            lambda: all("derm_portal.reconcile" in log.read_text() for _, log in workers),
            60,
            "both reconcilers to run",
            workers[1][1],
        )
    finally:
        for proc, _ in workers:
            _kill(proc)
        r = redis.Redis.from_url(BROKER)
        for key in r.scan_iter(match=f"{prefix}*"):
            r.delete(key)
    preds = list(Prediction.objects.order_by("photo_id"))
    assert [p.photo_id for p in preds] == [p.pk for p in photos]  # one per photo
    assert all(p.status == PredictionStatus.DONE and p.attempts == 1 for p in preds)
    sends = dict(JobDispatch.objects.filter(kind="prediction").values_list("key", "sends"))
    assert sends == {str(p.pk): 1 for p in preds}
