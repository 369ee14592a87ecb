"""A large COCO upload is imported by a real Celery worker on the `long` queue (Redis and
PostgreSQL shared with the test): the page queues it, the worker writes progress and the
report to the ImportRun, and the page shows the result.

Skipped locally without Redis or PostgreSQL; fails in CI (DERM_REQUIRE_SERVICES=1)."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.urls import reverse

from annotation.models import Box, ImportRun
from derm_portal import roles
from tests.annotation.test_import_scale import coco_file, photo_named
from tests.conftest import need
from tests.workers import flush, new_prefix, portal_on_redis, redis_ok, start_worker, stop, until, worker_env

pytestmark = [pytest.mark.celery_worker, pytest.mark.django_db(transaction=True)]


def test_large_coco_upload_is_imported_by_the_long_worker(users, taxonomy, client, settings, tmp_path):
    need(redis_ok(), "Redis is not reachable")
    need(connection.vendor == "postgresql", "needs PostgreSQL (the worker shares the test database)")
    admin = users[roles.ADMIN]
    photos = [photo_named(f"lesion-{k}.jpg") for k in range(3)]
    data = coco_file(2000, {p.original_name: 1 + 500 * k for k, p in enumerate(photos)})
    settings.DERM_BOX_IMPORT_INLINE_BYTES = 1000

    tag, prefix = new_prefix()
    log = tmp_path / "worker-long.log"
    worker = start_worker("long", f"long-{tag}", log, worker_env(prefix))
    with portal_on_redis(prefix):
        try:
            client.force_login(admin)
            resp = client.post(
                reverse("annotation:workspace_io"),
                {
                    "action": "import_coco",
                    "status": "annotated",
                    "coco": SimpleUploadedFile("big.json", data, "application/json"),
                },
            )
            assert resp.status_code == 302
            run = ImportRun.objects.get(kind="coco")
            until(
                lambda: ImportRun.objects.get(pk=run.pk).status == ImportRun.Status.DONE,
                180,
                "the long worker to import",
                log,
            )
            run.refresh_from_db()
            assert run.summary["boxes"] == 3 and run.progress == {"stage": "photos", "done": 3, "total": 3}
            assert "annotation.tasks.import_boxes" in log.read_text()
            assert Box.objects.filter(annotation__photo__in=photos).count() == 3
            assert "3 box(es) on 3 photo(s)" in client.get(reverse("annotation:workspace_io")).content.decode()
        finally:
            stop(worker)
            flush(prefix)
