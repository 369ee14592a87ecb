"""Recovery after a broker outage with real processes (PostgreSQL, Redis, Celery workers with beat).

Photos get their predictions requested by a process whose broker is down (a port nothing listens on):
the requests succeed and leave pending rows. Then two real workers, each with an embedded beat running
the reconciler every second, come up against Redis: every photo ends with exactly one done prediction,
computed once (one attempt) and sent once (one dispatch) although two reconcilers ran many passes.

Skipped locally without Redis or PostgreSQL; fails in CI (DERM_REQUIRE_SERVICES=1)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.db import connection

from derm_portal.models import JobDispatch
from inference.models import Prediction, PredictionStatus
from tests.conftest import need
from tests.factories import make_photo
from tests.workers import REPO, flush, new_prefix, redis_ok, start_worker, stop, until, worker_env

pytestmark = [pytest.mark.celery_worker, pytest.mark.django_db(transaction=True)]
DEAD_BROKER = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def _worker_with_beat(prefix, tag, tmp_path):
    log = tmp_path / f"worker-{tag}.log"
    env = worker_env(prefix, DERM_RECONCILE_SECONDS="1", DERM_RECONCILE_GRACE_SECONDS="0")
    return start_worker("interactive", tag, log, env, "-B", "-s", str(tmp_path / f"beat-{tag}")), log


def test_predictions_requested_while_the_broker_was_down_are_computed_exactly_once(active_model, case, tmp_path):
    need(redis_ok(), "Redis is not reachable")
    need(connection.vendor == "postgresql", "needs PostgreSQL (workers share the test database)")
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
        env=worker_env(CELERY_BROKER_URL=DEAD_BROKER),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "not sent (broker unavailable?)" in out.stderr
    assert list(Prediction.objects.values_list("status", flat=True)) == [PredictionStatus.PENDING] * 4

    tag, prefix = new_prefix()
    workers = [_worker_with_beat(prefix, f"{w}-{tag}", tmp_path) for w in ("a", "b")]
    try:
        until(
            lambda: Prediction.objects.filter(status=PredictionStatus.DONE).count() == 4,
            240,
            "the reconciled predictions to finish",
            workers[0][1],
        )
        until(
            lambda: all("derm_portal.reconcile" in log.read_text() for _, log in workers),
            60,
            "both reconcilers to run",
            workers[1][1],
        )
    finally:
        for proc, _ in workers:
            stop(proc)
        flush(prefix)
    preds = list(Prediction.objects.order_by("photo_id"))
    assert [p.photo_id for p in preds] == [p.pk for p in photos]  # one per photo
    assert all(p.status == PredictionStatus.DONE and p.attempts == 1 for p in preds)
    sends = dict(JobDispatch.objects.filter(kind="prediction").values_list("key", "sends"))
    assert sends == {str(p.pk): 1 for p in preds}
