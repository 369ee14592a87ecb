"""Celery application. Queues: `interactive` (predictions, Grad-CAM) and `long`
(training, imports, study exports), so a training run never delays a prediction."""

import os

from celery import Celery
from kombu import Queue

# Production unless told otherwise: `./run serve` and the tests name their settings.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "derm_portal.settings.production")

app = Celery("derm_portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = (Queue("interactive"), Queue("long"))
app.autodiscover_tasks()
# The job reconciler (derm_portal.reconcile): `./run beat` in production, started by `./run serve`.
app.conf.beat_schedule = {
    "reconcile-jobs": {
        "task": "derm_portal.reconcile",
        "schedule": float(os.environ.get("DERM_RECONCILE_SECONDS", 30)),
        "options": {"queue": "interactive", "expires": 60},
    },
}


@app.task(name="derm_portal.ping")
def ping(value: int = 1) -> int:
    """Health check used by the deployment docs and the Celery integration test."""
    return value + 1
