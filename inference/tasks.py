"""Celery tasks: thin, primary keys only, idempotent. acks_late + reject_on_worker_lost (set
globally in settings) mean a job whose worker dies is redelivered; the services re-check row status
so a redelivered or duplicated message is harmless."""
from __future__ import annotations

from celery import shared_task

from . import services


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True)
def run_prediction(self, prediction_pk: int) -> str:
    """Ranked differential + Grad-CAM overlays for one Prediction (interactive queue)."""
    return services.prediction_execute(prediction_pk=prediction_pk, task_id=self.request.id or "")


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, queue="long")
def run_recompute(self, model_version_pk: int, case_pk: int | None = None, force: bool = False) -> dict:
    """Predictions of one model for all photos (or one case's) that lack one (long queue)."""
    from .models import ModelVersion

    mv = ModelVersion.objects.filter(pk=model_version_pk).first()
    if mv is None:
        return {}
    return services.photos_recompute(model_version=mv, case_pk=case_pk, force=force, task_id=self.request.id or "")


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True)
def run_training(self, run_pk: int) -> str:
    """One portal training run (long queue, see CELERY_TASK_ROUTES)."""
    return services.training_run_execute(run_pk=run_pk)
