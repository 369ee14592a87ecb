"""Training runs from the portal: creating one (checked settings), cancelling it, and exporting its
cases as the engine's data folder. Running it in a worker: ``training_job.training_run_execute``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from annotation.models import LabelSource, Taxonomy
from derm_portal import roles

from .. import jobs, selectors
from ..models import TrainingRun, TrainingStatus

# The label-source choices of the training form, by the value it posts.
LABEL_SOURCE_SETS = {
    "confirmed": [LabelSource.HISTOPATHOLOGY],
    "confirmed_consensus": [LabelSource.HISTOPATHOLOGY, LabelSource.CONSENSUS],
    "confirmed_consensus_followup": [LabelSource.HISTOPATHOLOGY, LabelSource.CONSENSUS, LabelSource.FOLLOW_UP],
    "all_but_clinical": [
        LabelSource.HISTOPATHOLOGY,
        LabelSource.CONSENSUS,
        LabelSource.FOLLOW_UP,
        LabelSource.CONFOCAL,
    ],
}
# The engine settings (TrainConfig fields) a run may override, with their types.
ALLOWED_CONFIG_KEYS = {
    "epochs": int,
    "coarse_epochs": int,
    "image_size": int,
    "batch_size": int,
    "backbone": str,
    "pretrained": bool,
    "seed": int,
    "threads": int,
    "holdout": float,
    "fine_models": int,
    "colour_constancy": str,
    "augment": dict,
}


def _config_value(key: str, value):
    kind = ALLOWED_CONFIG_KEYS[key]
    try:
        if kind is bool and isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("true", "1", "yes")
        return kind(value)
    except (TypeError, ValueError):
        raise ValidationError({"config": f"{key} must be a {kind.__name__}."})


def training_config_clean(config: dict | None) -> dict:
    """The run's engine settings, typed and checked here so a bad one fails on the form, not in the worker."""
    clean = {}
    for k, v in (config or {}).items():
        if v in (None, "", {}):
            continue
        if k not in ALLOWED_CONFIG_KEYS:
            raise ValidationError({"config": f"Unknown training setting {k!r}."})
        clean[k] = _augment_clean(v) if k == "augment" else _config_value(k, v)
    for k in ("epochs", "image_size", "batch_size", "fine_models"):
        if k in clean and clean[k] < 1:
            raise ValidationError({"config": f"{k} must be positive."})
    if clean.get("fine_models", 1) > 5:
        raise ValidationError({"config": "fine_models must be at most 5 (each one adds a full fine training)."})
    if "colour_constancy" in clean:
        from inference.ml.data import COLOUR_CONSTANCY

        if clean["colour_constancy"] not in COLOUR_CONSTANCY:
            raise ValidationError({"config": f"colour_constancy must be one of {', '.join(COLOUR_CONSTANCY)}."})
    return clean


def _augment_clean(value) -> dict:
    """The ``augment`` training setting: overrides of the engine's augmentation (e.g. ``{"optics_p": 0.5}``),
    as a mapping or its JSON text, checked by the engine so a bad one fails here and not in the worker."""
    from inference.ml.data import AugmentConfig

    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValidationError({"config": 'augment must be a JSON object, e.g. {"optics_p": 0.5}.'})
    if not isinstance(value, dict):
        raise ValidationError({"config": 'augment must be a JSON object, e.g. {"optics_p": 0.5}.'})
    try:
        AugmentConfig.from_overrides(value)
    except (TypeError, ValueError) as exc:
        raise ValidationError({"config": str(exc)})
    return dict(value)


def training_run_create(
    *,
    by,
    label_sources: Iterable[str],
    taxonomy: Taxonomy | None = None,
    name: str = "",
    config: dict | None = None,
    submission_token: str = "",
) -> TrainingRun:
    """Queue a training run on the cases labelled from ``label_sources`` (admins and dermatologists).
    A repeated submission of one form (same ``submission_token``) returns the first's run."""
    from annotation.selectors import taxonomy_default
    from derm_portal.idempotency import once

    if not roles.has_role(by, *roles.CAN_TRAIN_MODELS):
        raise PermissionDenied("Only admins and dermatologists may start training runs.")
    sources = sorted(set(label_sources))
    bad = [s for s in sources if s not in LabelSource.values]
    if not sources or bad:
        raise ValidationError({"label_sources": f"Choose label sources from {LabelSource.values}."})
    clean = training_config_clean(config)
    taxonomy = taxonomy or taxonomy_default()
    if taxonomy is None:
        raise ValidationError("No taxonomy is loaded.")

    def create() -> TrainingRun:
        run = TrainingRun.objects.create(
            name=name[:200],
            taxonomy=taxonomy,
            label_sources=sources,
            config=clean,
            created_by=by,
            progress={"stage": "queued"},
        )
        transaction.on_commit(lambda pk=run.pk: jobs.enqueue_training(pk))
        return run

    with transaction.atomic():
        return once(
            user=by,
            kind="training",
            token=submission_token,
            create=create,
            fetch=lambda pk: TrainingRun.objects.get(pk=pk),
        )[0]


def training_run_cancel(*, run: TrainingRun, by) -> TrainingRun:
    """Ask a run to stop; a run that has not started is cancelled at once."""
    if not roles.has_role(by, *roles.CAN_TRAIN_MODELS):
        raise PermissionDenied("Only admins and dermatologists may cancel training runs.")
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if run.is_finished:
            return run
        run.cancel_requested = True
        fields = ["cancel_requested"]
        if run.status == TrainingStatus.QUEUED:  # never started: nothing to stop
            run.status = TrainingStatus.CANCELLED
            run.finished_at = timezone.now()
            run.progress = {**run.progress, "stage": "cancelled"}
            fields += ["status", "finished_at", "progress"]
        run.save(update_fields=fields)
    return run


def training_data_export(*, run: TrainingRun, dest: Path) -> dict:
    """Write the run's cases as the engine's data folder (``annotation.datafolder``: images/ + labels.csv
    with the case, age, sex, site and modality of every photo) and taxonomy.json. Returns counts."""
    from annotation.datafolder import DataFolderWriter
    from annotation.selectors import taxonomy_export

    rows = selectors.training_cases(taxonomy=run.taxonomy, label_sources=run.label_sources)
    with DataFolderWriter(dest, link=True) as folder:
        for photo, code, _ in rows:
            folder.add(
                name=f"p{photo.pk}.{photo.file.name.rsplit('.', 1)[-1].lower()}",
                file=photo.file,
                label=code,
                photo=photo,
            )
    tax = taxonomy_export(taxonomy=run.taxonomy)
    (Path(dest) / "taxonomy.json").write_text(json.dumps(tax), encoding="utf-8")
    per_class: dict[str, set] = {}
    for _, code, case_pk in rows:
        per_class.setdefault(code, set()).add(case_pk)
    return {
        "n_photos": len(rows),
        "n_cases": len({c for _, _, c in rows}),
        "taxonomy": tax,
        "classes": sorted(per_class),
        "cases_per_class": {c: len(v) for c, v in per_class.items()},
    }
