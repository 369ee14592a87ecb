"""Celery tasks: thin, primary keys in, one service call each, idempotent. acks_late +
reject_on_worker_lost (set globally in settings) mean a job whose worker dies is redelivered; the
services re-check row status so a redelivered or duplicated message is harmless. The services send
these jobs through ``inference.jobs`` (by task name), so they never import this module."""

from __future__ import annotations

import logging

from celery import shared_task
from celery.signals import worker_process_init, worker_ready

from . import services

log = logging.getLogger(__name__)


def _warm_active_model(**_):
    """Load the active model when a worker process starts, so the first photo does not pay for it."""
    from django.db import close_old_connections

    from . import loader

    try:
        mv = services.model_active_for()
        if mv is not None:
            predictor = loader.predictor_for(mv)
            # one dummy photo through the whole path: first-call allocations and imports happen now
            from PIL import Image

            from inference.ml.serving import prediction_compute

            prediction_compute(
                predictor=predictor, image=Image.new("RGB", (64, 48), (128, 100, 90)), photo_size=(64, 48)
            )
            log.info("worker: model %s loaded and warmed up", mv.pk)
    except Exception:  # a missing artefact must not stop the worker; the task reports it
        log.warning("worker: could not preload the active model", exc_info=True)
    finally:
        close_old_connections()


def _warm_if_single_process(sender=None, **kw):
    pool = str(getattr(sender, "pool_cls", "") or "")
    if "solo" in pool or "thread" in pool:  # prefork children warm up in worker_process_init
        _warm_active_model()


worker_process_init.connect(_warm_active_model, weak=False, dispatch_uid="inference-warm-process")
worker_ready.connect(_warm_if_single_process, weak=False, dispatch_uid="inference-warm-ready")


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
