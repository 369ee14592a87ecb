"""Reader-study background jobs (queue `long`): thin, primary keys only, safe to run twice."""

from __future__ import annotations

from celery import shared_task
from django.db import transaction


@shared_task(acks_late=True, reject_on_worker_lost=True)
def study_model_outputs(study_pk: int) -> dict:
    """Collect the compared model's case-level outputs for a study (idempotent: it recomputes the
    same snapshot from the same predictions / artefact)."""
    from .model_outputs import study_model_outputs_refresh, study_training_overlap
    from .models import ReaderStudy

    study = ReaderStudy.objects.filter(pk=study_pk).select_related("model_version").first()
    if study is None or study.status != "draft":
        return {"skipped": True}
    study_training_overlap(study=study)
    return study_model_outputs_refresh(study=study)


def enqueue_model_outputs(*, study_pk: int) -> None:
    transaction.on_commit(lambda: study_model_outputs.delay(study_pk))
