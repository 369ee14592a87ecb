"""Activation recomputes a retired model's results in the background, with a real Celery worker on
the long queue, Redis and PostgreSQL: until the worker has run, the case page shows the retired
model's result labelled as such and the model page "0 of N photos"; afterwards every photo has the
new model's result, and the page names it.

Skipped locally without Redis or PostgreSQL; fails in CI (DERM_REQUIRE_SERVICES=1)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid

import pytest
from django.conf import settings as dj_settings
from django.db import connection
from django.urls import reverse

from derm_portal import roles
from derm_portal.celery import app as portal_app
from inference import services
from inference.models import ModelStatus, Prediction, PredictionStatus
from tests.conftest import need
from tests.factories import make_photo
from tests.inference.test_worker_redelivery import BROKER, REPO, _db_url, _kill, _redis_ok, _until

pytestmark = [pytest.mark.celery_worker, pytest.mark.django_db(transaction=True)]


def _long_worker(prefix, tag, log):
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
    )
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "derm_portal",
        "worker",
        "-Q",
        "long",
        "-n",
        f"long-{tag}@%h",
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
    )


def test_activation_recomputes_retired_results_with_a_real_worker(
    active_model, case, users, client, tmp_path, model_copy
):
    need(_redis_ok(), f"Redis is not reachable at {BROKER}")
    need(connection.vendor == "postgresql", "needs PostgreSQL (the worker shares the test database)")
    photos = [make_photo(case, color=(30 * i, 70, 90)) for i in range(3)]
    for p in photos:  # the old model's results, computed here
        pred = services.prediction_request(photo=p, enqueue=False)
        assert services.prediction_execute(prediction_pk=pred.pk, task_id="old") == "done"
    new_dir = model_copy.parent / "new"
    shutil.copytree(model_copy, new_dir)
    new = services.model_register(model_dir=new_dir, name="new model")
    client.force_login(users[roles.ADMIN])

    # the portal's jobs go to Redis (under a key prefix of their own) only now: the photos above were computed here
    tag = uuid.uuid4().hex[:10]
    conf = portal_app.conf
    saved = (conf.task_always_eager, conf.broker_url, conf.broker_transport_options)
    prefix = f"derm-test-{tag}:"
    conf.task_always_eager, conf.broker_url = False, BROKER
    conf.broker_transport_options = {"global_keyprefix": prefix}
    portal_app.set_current()
    log = tmp_path / "worker-long.log"
    worker = None
    try:
        r = client.post(
            reverse("inference:model_activate", args=[new.pk]),
            {"confirm": "1", "reason": "tiny test model", "recompute": "1"},
        )
        assert r.status_code == 302
        new.refresh_from_db()
        active_model.refresh_from_db()
        assert (new.status, active_model.status) == (ModelStatus.ACTIVE, ModelStatus.RETIRED)
        # queued, not yet run: the old results are shown, labelled with the model that made them
        page = client.get(reverse("annotation:case_detail", args=[case.pk])).content.decode()
        head = page[page.index('id="pp-model"') : page.index('id="prediction-blocks"')]
        assert "tiny test model" in head and "retired" in head and "new model" not in head
        assert page.count("retired model, not the one in use") == 3
        assert "0 of 3 photos" in client.get(reverse("inference:model_detail", args=[new.pk])).content.decode()

        worker = _long_worker(prefix, tag, log)
        _until(
            lambda: Prediction.objects.filter(model_version=new, status=PredictionStatus.DONE).count() == 3,
            600,
            "the worker to recompute the 3 photos",
            log,
        )
        assert "run_recompute" in log.read_text()
        assert not Prediction.objects.filter(status__in=[PredictionStatus.PENDING, PredictionStatus.RUNNING]).exists()
        assert "3 of 3 photos" in client.get(reverse("inference:model_detail", args=[new.pk])).content.decode()
        page = client.get(reverse("annotation:case_detail", args=[case.pk])).content.decode()
        head = page[page.index('id="pp-model"') : page.index('id="prediction-blocks"')]
        assert "new model" in head and "tiny test model" not in head and "retired model" not in page
    finally:
        if worker is not None:
            _kill(worker)
        conf.task_always_eager, conf.broker_url, conf.broker_transport_options = saved
        import redis

        rc = redis.Redis.from_url(BROKER)
        for key in rc.scan_iter(match=f"{prefix}*"):
            rc.delete(key)
