"""Sending the app's background jobs, for the services.

The services enqueue jobs; tasks.py calls the services. So that the two never import each other, a
job is looked up by its task name in Celery's registry (tasks.py is imported by ``InferenceConfig.ready``
in every process, and by the worker's autodiscovery). Call these from ``transaction.on_commit`` so a
worker never sees a row before it is committed. A send the broker refuses is logged, not raised: the
row stays queued and the reconciler (derm_portal.reconcile) sends it when the broker is back.
"""

from __future__ import annotations

from derm_portal.dispatch import send

PREDICTION = "inference.tasks.run_prediction"
RECOMPUTE = "inference.tasks.run_recompute"
TRAINING = "inference.tasks.run_training"


def enqueue_prediction(prediction_pk: int) -> bool:
    """One prediction (interactive queue)."""
    return send(PREDICTION, prediction_pk)


def enqueue_recompute(model_version_pk: int, case_pk: int | None = None, force: bool = False) -> bool:
    """A model's predictions for every photo, or one case's, that lacks one (long queue)."""
    return send(RECOMPUTE, model_version_pk, case_pk, force)


def enqueue_training(run_pk: int) -> bool:
    """One training run (long queue)."""
    return send(TRAINING, run_pk)
