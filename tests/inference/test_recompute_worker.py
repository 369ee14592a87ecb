"""Activation recomputes a retired model's results in the background, with a real Celery worker on
the long queue, Redis and PostgreSQL: until the worker has run, the case page shows the retired
model's result labelled as such and the model page "0 of N photos"; afterwards every photo has the
new model's result, and the page names it.

Skipped locally without Redis or PostgreSQL; fails in CI (DERM_REQUIRE_SERVICES=1)."""

from __future__ import annotations

import shutil

import pytest
from django.db import connection
from django.urls import reverse

from derm_portal import roles
from inference import services
from inference.models import ModelStatus, Prediction, PredictionStatus
from tests.conftest import need
from tests.factories import make_photo
from tests.workers import flush, new_prefix, portal_on_redis, redis_ok, start_worker, stop, until, worker_env

pytestmark = [pytest.mark.celery_worker, pytest.mark.django_db(transaction=True)]


def test_activation_recomputes_retired_results_with_a_real_worker(
    active_model, case, users, client, tmp_path, model_copy
):
    need(redis_ok(), "Redis is not reachable")
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
    tag, prefix = new_prefix()
    log = tmp_path / "worker-long.log"
    worker = None
    with portal_on_redis(prefix):
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

            worker = start_worker("long", f"long-{tag}", log, worker_env(prefix))
            until(
                lambda: Prediction.objects.filter(model_version=new, status=PredictionStatus.DONE).count() == 3,
                600,
                "the worker to recompute the 3 photos",
                log,
            )
            assert "run_recompute" in log.read_text()
            assert not Prediction.objects.filter(
                status__in=[PredictionStatus.PENDING, PredictionStatus.RUNNING]
            ).exists()
            assert "3 of 3 photos" in client.get(reverse("inference:model_detail", args=[new.pk])).content.decode()
            page = client.get(reverse("annotation:case_detail", args=[case.pk])).content.decode()
            head = page[page.index('id="pp-model"') : page.index('id="prediction-blocks"')]
            assert "new model" in head and "tiny test model" not in head and "retired model" not in page
        finally:
            stop(worker)
            flush(prefix)
