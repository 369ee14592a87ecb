"""Writes of the inference app, one module per subject:

- ``registry``: registering engine artefacts as ModelVersions, activating and retiring them;
- ``predictions``: requesting, computing (in a worker) and storing predictions with their overlays;
- ``assessments``: doctors' agreement with the model's answer;
- ``training`` / ``training_job``: creating and cancelling training runs / running one in a worker.

Keyword-only functions named ``<entity>_<action>``, re-exported here so callers write
``from inference import services``. Jobs are sent through ``inference.jobs`` after commit; tasks.py
calls these services and is never imported by them.
"""

from .assessments import assessment_record
from .predictions import (
    CLOSE_MARGIN,
    STALE_RUNNING,
    photos_ranked,
    photos_recompute,
    prediction_claim,
    prediction_execute,
    prediction_request,
    prediction_request_for_photo,
    prediction_warning,
    predictions_reclaim_stale,
    predictions_request_for_case,
)
from .registry import (
    ActivationReasonRequired,
    RegistryError,
    model_activate,
    model_active_for,
    model_recompute_request,
    model_register,
    model_retire,
    taxonomy_match_or_create,
)
from .training import (
    ALLOWED_CONFIG_KEYS,
    LABEL_SOURCE_SETS,
    training_config_clean,
    training_data_export,
    training_run_cancel,
    training_run_create,
)
from .training_job import TRAINING_STALE, training_run_execute

__all__ = [
    "ALLOWED_CONFIG_KEYS",
    "CLOSE_MARGIN",
    "LABEL_SOURCE_SETS",
    "STALE_RUNNING",
    "TRAINING_STALE",
    "ActivationReasonRequired",
    "RegistryError",
    "assessment_record",
    "model_activate",
    "model_active_for",
    "model_recompute_request",
    "model_register",
    "model_retire",
    "photos_ranked",
    "photos_recompute",
    "prediction_claim",
    "prediction_execute",
    "prediction_request",
    "prediction_request_for_photo",
    "prediction_warning",
    "predictions_reclaim_stale",
    "predictions_request_for_case",
    "taxonomy_match_or_create",
    "training_config_clean",
    "training_data_export",
    "training_run_cancel",
    "training_run_create",
    "training_run_execute",
]
