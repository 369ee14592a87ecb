"""The model registry: registering an engine artefact as a ModelVersion, activating and retiring it.

One model is active per taxonomy; activation is admin-only and logged in ModelActivation.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from annotation.models import Taxonomy
from derm_portal import roles, shared_cache

from .. import jobs, loader
from ..models import ModelActivation, ModelStatus, ModelVersion

log = logging.getLogger(__name__)


class RegistryError(ValueError):
    """An artefact cannot be registered or served (missing directory or files)."""


class ActivationReasonRequired(RegistryError):
    """The model fails an activation check (``review.activation_concerns``) and no written reason was given."""

    def __init__(self, concerns: list[str]):
        self.concerns = concerns
        super().__init__("This model needs a written reason to be activated: " + " ".join(concerns))


def _taxonomy_signature(data: dict) -> tuple:
    metas = data.get("meta_classes") or {}
    grades = data.get("malignancy") or {}
    return (
        frozenset((m, s) for m, subs in metas.items() for s in subs),
        frozenset((s, g) for s, g in grades.items() if g is not None),
    )


def taxonomy_match_or_create(*, data: dict, created_by=None) -> Taxonomy:
    """The portal taxonomy with exactly the tree (and malignancy grades) of ``data``; the default
    taxonomy wins ties, else the newest. Creates a new taxonomy version when none matches."""
    from annotation.selectors import taxonomy_default, taxonomy_export
    from annotation.services import taxonomy_import

    want = _taxonomy_signature(data)
    default = taxonomy_default()
    candidates = ([default] if default else []) + list(Taxonomy.objects.order_by("-created_at", "-id"))
    for tax in candidates:
        if _taxonomy_signature(taxonomy_export(taxonomy=tax)) == want:
            return tax
    return taxonomy_import(data=data, created_by=created_by, name=data.get("name") or "model taxonomy")


def model_register(
    *, model_dir, name: str = "", created_by=None, activate: bool = False, reason: str = ""
) -> ModelVersion:
    """Register an inference.ml artefact directory (idempotent: the same directory twice gives the
    same ModelVersion). Reads model.json, taxonomy.json and metrics.json."""
    from inference.ml import artefact as art

    model_dir = Path(model_dir)
    try:
        manifest = art.read_manifest(model_dir)
    except FileNotFoundError as exc:
        raise RegistryError(str(exc)) from exc
    tax_file = model_dir / "taxonomy.json"
    if not tax_file.is_file():
        raise RegistryError(f"{model_dir}: no taxonomy.json")
    tax_data = json.loads(tax_file.read_text(encoding="utf-8"))
    metrics_file = model_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text(encoding="utf-8")) if metrics_file.is_file() else {}
    stored = loader.stored_artefact_path(model_dir)
    existing = ModelVersion.objects.filter(artefact_path=stored).first()
    if existing:
        if activate and not existing.is_active:
            model_activate(model_version=existing, by=created_by, reason=reason)
        return existing
    with transaction.atomic():
        taxonomy = taxonomy_match_or_create(data=tax_data, created_by=created_by)
        mv = ModelVersion.objects.create(
            name=(name or f"{manifest.get('backbone', 'model')} {manifest.get('created', '')}").strip()[:200],
            taxonomy=taxonomy,
            artefact_path=stored,
            data_fingerprint=str((manifest.get("data") or {}).get("fingerprint", ""))[:128],
            code_version=str(manifest.get("code_version", ""))[:200],
            manifest=manifest,
            metrics=metrics,
            created_by=created_by,
        )
    log.info("registered model version %s (%s) for %s", mv.pk, mv.name, taxonomy)
    if activate:
        model_activate(model_version=mv, by=created_by, reason=reason)
    return mv


def model_activate(
    *, model_version: ModelVersion, by, note: str = "", recompute: bool = False, reason: str = ""
) -> ModelVersion:
    """Make ``model_version`` the one active model of its taxonomy; the previous one is retired.
    Admins only (``by=None`` = the command line). A model failing an activation check (below a tier
    target, no triage calibration, too few photos of a class) needs a written ``reason``
    (ActivationReasonRequired otherwise). Logged in ModelActivation with the checks it failed."""
    from ..review import activation_concerns

    if by is not None and not roles.has_role(by, *roles.CAN_ACTIVATE_MODELS):
        raise PermissionDenied("Only an admin may activate a model.")
    if not loader.artefact_present(model_version):
        raise RegistryError("The model's artefact directory is missing on this server; it cannot be served.")
    concerns = activation_concerns(model_version)
    reason = (reason or "").strip()
    if concerns and not reason and not model_version.is_active:
        raise ActivationReasonRequired(concerns)
    with transaction.atomic():
        rows = list(
            ModelVersion.objects.select_for_update().filter(taxonomy_id=model_version.taxonomy_id).order_by("pk")
        )
        previous = next((m for m in rows if m.status == ModelStatus.ACTIVE), None)
        if previous and previous.pk == model_version.pk:
            return model_version
        if previous:
            ModelVersion.objects.filter(pk=previous.pk).update(status=ModelStatus.RETIRED)
        now = timezone.now()
        ModelVersion.objects.filter(pk=model_version.pk).update(
            status=ModelStatus.ACTIVE, activated_at=now, activated_by=by
        )
        ModelActivation.objects.create(
            model_version=model_version,
            previous=previous,
            activated_by=by,
            note=note[:500],
            override_reason=reason if concerns else "",
            concerns=concerns,
        )
        if recompute:
            model_recompute_request(model_version=model_version)
        shared_cache.changed()  # the queryset updates send no signal
    model_version.refresh_from_db()
    log.warning(
        "model %s activated by %s (previous: %s)%s",
        model_version.pk,
        getattr(by, "username", "command line"),
        previous.pk if previous else None,
        f"; checks failed: {concerns}; reason: {reason!r}" if concerns else "",
    )
    return model_version


def model_recompute_request(*, model_version: ModelVersion) -> None:
    """Queue the model's predictions for every photo that lacks one (long queue), after commit."""
    transaction.on_commit(lambda pk=model_version.pk: jobs.enqueue_recompute(pk))


def model_retire(*, model_version: ModelVersion, by) -> ModelVersion:
    if by is not None and not roles.has_role(by, *roles.CAN_ACTIVATE_MODELS):
        raise PermissionDenied("Only an admin may retire a model.")
    ModelVersion.objects.filter(pk=model_version.pk).update(status=ModelStatus.RETIRED)
    shared_cache.changed()
    model_version.refresh_from_db()
    return model_version


def model_active_for(*, taxonomy: Taxonomy | None = None) -> ModelVersion | None:
    """The active model of ``taxonomy`` (default: the portal's default taxonomy); when that
    taxonomy has none, the most recently activated active model."""
    from annotation.selectors import taxonomy_default

    taxonomy = taxonomy or taxonomy_default()
    qs = ModelVersion.objects.filter(status=ModelStatus.ACTIVE)
    if taxonomy is not None:
        mv = qs.filter(taxonomy=taxonomy).first()
        if mv:
            return mv
    return qs.order_by("-activated_at", "-pk").first()


def model_active_shared() -> ModelVersion | None:
    """model_active_for() of the default taxonomy, from the shared cache: for pages that show it (jobs
    that predict read it from the database, never from a copy)."""
    return shared_cache.shared("active-model", model_active_for)
