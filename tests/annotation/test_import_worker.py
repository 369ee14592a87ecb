"""A large COCO upload is imported by a real Celery worker on the `long` queue (Redis and
PostgreSQL shared with the test): the page queues it, the worker writes progress and the
report to the ImportRun, and the page shows the result.

Skipped locally without Redis or PostgreSQL; fails in CI (DERM_REQUIRE_SERVICES=1)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings as dj_settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.urls import reverse

from annotation.models import Box, ImportRun
from derm_portal import roles
from derm_portal.celery import app as portal_app
from tests.annotation.test_voc_coco import photo_named
from tests.conftest import need
from tests.factories import celery_fresh_connections

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


def _until(cond, timeout, what, log):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}\n{log.read_text()[-3000:]}")


def test_large_coco_upload_is_imported_by_the_long_worker(users, taxonomy, client, settings, tmp_path):
    need(_redis_ok(), f"Redis is not reachable at {BROKER}")
    need(connection.vendor == "postgresql", "needs PostgreSQL (the worker shares the test database)")
    import redis

    admin = users[roles.ADMIN]
    photos = [photo_named(f"lesion-{k}.jpg") for k in range(3)]
    images = [{"id": i, "file_name": f"missing-{i}.jpg"} for i in range(1, 2001)]
    for k, p in enumerate(photos):
        images[k * 500]["file_name"] = p.original_name
    anns = [{"id": i, "image_id": i, "category_id": 1, "bbox": [5, 5, 30, 20]} for i in range(1, 2001)]
    data = json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "nv"}]}).encode()
    settings.DERM_BOX_IMPORT_INLINE_BYTES = 1000

    tag = uuid.uuid4().hex[:10]
    prefix = f"derm-test-{tag}:"
    log = tmp_path / "worker-long.log"
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="derm_portal.settings.base",
        DATABASE_URL=_db_url(),
        CELERY_BROKER_URL=BROKER,
        CELERY_KEY_PREFIX=prefix,
        CELERY_TASK_ALWAYS_EAGER="0",
        DERM_MEDIA_ROOT=str(dj_settings.MEDIA_ROOT),
        PYTHONPATH=str(REPO),
        DJANGO_LOG_LEVEL="WARNING",
    )
    worker = subprocess.Popen(
        [
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
        ],
        cwd=REPO,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    saved = {k: portal_app.conf[k] for k in ("task_always_eager", "broker_url", "broker_transport_options")}
    portal_app.conf.update(
        task_always_eager=False, broker_url=BROKER, broker_transport_options={"global_keyprefix": prefix}
    )
    celery_fresh_connections(portal_app)
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
        _until(
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
        portal_app.conf.update(saved)
        celery_fresh_connections(portal_app)
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(timeout=10)
        r = redis.Redis.from_url(BROKER)
        for key in r.scan_iter(match=f"{prefix}*"):
            r.delete(key)
