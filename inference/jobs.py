"""Sending the app's background jobs, for the services.

The services enqueue jobs; tasks.py calls the services. So that the two never import each other, a
job is looked up by its task name in Celery's registry (tasks.py is imported by ``InferenceConfig.ready``
in every process, and by the worker's autodiscovery). Call these from ``transaction.on_commit`` so a
worker never sees a row before it is committed.
"""
from __future__ import annotations

from celery import current_app

PREDICTION = "inference.tasks.run_prediction"
RECOMPUTE = "inference.tasks.run_recompute"
TRAINING = "inference.tasks.run_training"


def _send(name: str, *args) -> None:
    current_app.tasks[name].delay(*args)


def enqueue_prediction(prediction_pk: int) -> None:
    """One prediction (interactive queue)."""
    _send(PREDICTION, prediction_pk)


def enqueue_recompute(model_version_pk: int, case_pk: int | None = None, force: bool = False) -> None:
    """A model's predictions for every photo, or one case's, that lacks one (long queue)."""
    _send(RECOMPUTE, model_version_pk, case_pk, force)


def enqueue_training(run_pk: int) -> None:
    """One training run (long queue)."""
    _send(TRAINING, run_pk)
