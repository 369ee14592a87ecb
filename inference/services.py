"""Writes for the model registry, predictions, Grad-CAM overlays, assessments and training runs.

Keyword-only functions named ``<entity>_<action>``. Tasks (tasks.py) are thin wrappers around
``prediction_execute``, ``photos_recompute`` and ``training_run_execute``.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Iterable

import numpy as np

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.utils import timezone

from annotation.models import DiagnosisLabel, LabelSource, Photo, SubClass, Taxonomy
from derm_portal import roles

from . import loader
from .models import (DoctorAssessment, GradCamOverlay, ModelActivation, ModelStatus, ModelVersion, Prediction,
                     PredictionStatus, TrainingRun, TrainingStatus)

log = logging.getLogger(__name__)

# Warning rule shown on the case page (and tested): the top two fused probabilities closer than
# this are "too close to call".
CLOSE_MARGIN = float(getattr(settings, "DERM_PREDICTION_CLOSE_MARGIN", 0.10))
# A prediction left "running" longer than this by a worker that died is taken over.
STALE_RUNNING = timedelta(seconds=int(getattr(settings, "DERM_PREDICTION_STALE_SECONDS", 120)))
GRADCAM_TOP_SUB = 3
_CAM_LOCK = threading.Lock()
# A training run whose worker has not reported progress for this long is taken over by a redelivered job.
TRAINING_STALE = timedelta(seconds=int(getattr(settings, "DERM_TRAINING_STALE_SECONDS", 900)))


class RegistryError(ValueError):
    pass


# =========================================================================== registry
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


def model_register(*, model_dir, name: str = "", created_by=None, activate: bool = False) -> ModelVersion:
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
            model_activate(model_version=existing, by=created_by)
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
        model_activate(model_version=mv, by=created_by)
    return mv


def model_activate(*, model_version: ModelVersion, by, note: str = "", recompute: bool = False) -> ModelVersion:
    """Make ``model_version`` the one active model of its taxonomy; the previous one is retired.
    Admins only (``by=None`` = the command line). Logged in ModelActivation."""
    if by is not None and not roles.has_role(by, *roles.CAN_ACTIVATE_MODELS):
        raise PermissionDenied("Only an admin may activate a model.")
    if not loader.artefact_dir(model_version).joinpath("model.json").is_file():
        raise RegistryError("The model's artefact directory is missing on this server; it cannot be served.")
    with transaction.atomic():
        rows = list(ModelVersion.objects.select_for_update().filter(taxonomy_id=model_version.taxonomy_id).order_by("pk"))
        previous = next((m for m in rows if m.status == ModelStatus.ACTIVE), None)
        if previous and previous.pk == model_version.pk:
            return model_version
        if previous:
            ModelVersion.objects.filter(pk=previous.pk).update(status=ModelStatus.RETIRED)
        now = timezone.now()
        ModelVersion.objects.filter(pk=model_version.pk).update(
            status=ModelStatus.ACTIVE, activated_at=now, activated_by=by
        )
        ModelActivation.objects.create(model_version=model_version, previous=previous, activated_by=by, note=note[:500])
        if recompute:
            transaction.on_commit(lambda pk=model_version.pk: _enqueue_recompute(pk))
    model_version.refresh_from_db()
    log.warning("model %s activated by %s (previous: %s)", model_version.pk, getattr(by, "username", "command line"),
                previous.pk if previous else None)
    return model_version


def model_retire(*, model_version: ModelVersion, by) -> ModelVersion:
    if by is not None and not roles.has_role(by, *roles.CAN_ACTIVATE_MODELS):
        raise PermissionDenied("Only an admin may retire a model.")
    ModelVersion.objects.filter(pk=model_version.pk).update(status=ModelStatus.RETIRED)
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


def _enqueue_recompute(model_version_pk: int, case_pk: int | None = None, force: bool = False):
    from . import tasks

    tasks.run_recompute.delay(model_version_pk, case_pk, force)


# =========================================================================== predictions
def prediction_request(*, photo: Photo, model_version: ModelVersion | None = None, force: bool = False,
                       enqueue: bool = True) -> Prediction | None:
    """Get or create the prediction of ``photo`` by ``model_version`` (default: the active model)
    and enqueue its computation after commit. A done prediction is kept unless ``force``; a failed
    one is reset and retried. Returns None when no model is active."""
    model_version = model_version or model_active_for()
    if model_version is None:
        return None
    with transaction.atomic():
        try:
            with transaction.atomic():
                pred, created = Prediction.objects.get_or_create(photo=photo, model_version=model_version)
        except IntegrityError:     # a concurrent request created it
            pred, created = Prediction.objects.get(photo=photo, model_version=model_version), False
        if not created:
            pred = Prediction.objects.select_for_update().get(pk=pred.pk)
            if pred.status == PredictionStatus.DONE and not force:
                return pred
            if pred.status in (PredictionStatus.PENDING, PredictionStatus.RUNNING) and not force:
                # pending: (re)send the job; running but stale: its worker died and the broker has not
                # redelivered yet (Redis visibility timeout) - a new job takes it over.
                stale = pred.started_at is None or pred.started_at < timezone.now() - STALE_RUNNING
                needs = pred.status == PredictionStatus.PENDING or stale
                if needs and enqueue:
                    transaction.on_commit(lambda pk=pred.pk: _enqueue_prediction(pk))
                return pred
            _prediction_reset(pred)
        if enqueue:
            transaction.on_commit(lambda pk=pred.pk: _enqueue_prediction(pk))
    return pred


def _prediction_reset(pred: Prediction) -> None:
    for ov in list(pred.overlays.all()):
        _overlay_delete(ov)
    pred.status = PredictionStatus.PENDING
    pred.ranked, pred.meta_probabilities = [], {}
    pred.malignancy_score = pred.malignancy_grade = pred.margin = pred.ood_score = None
    pred.looks_unfamiliar = False
    pred.warning = pred.error = pred.task_id = ""
    pred.started_at = pred.finished_at = None
    pred.duration_ms = None
    pred.save()


def _enqueue_prediction(prediction_pk: int):
    from . import tasks

    tasks.run_prediction.delay(prediction_pk)


def prediction_request_for_photo(*, photo_pk: int) -> Prediction | None:
    """DERM_PHOTO_ATTACHED_HOOKS entry: a new photo gets a pending prediction by the active model."""
    photo = Photo.objects.filter(pk=photo_pk).first()
    if photo is None:
        return None
    try:
        return prediction_request(photo=photo)
    except Exception:   # a hook must never break an upload
        log.exception("could not request a prediction for photo %s", photo_pk)
        return None


def predictions_request_for_case(*, case, force: bool = False) -> int:
    n = 0
    for photo in case.photos.all():
        if prediction_request(photo=photo, force=force):
            n += 1
    return n


def prediction_warning(*, looks_unfamiliar: bool, ranked: list[dict], margin: float | None = None) -> str:
    """The plain-language warning of the case page. Rule: (a) the photo's out-of-distribution score
    is above the 99th percentile of the training photos' scores, or (b) the top two fused
    probabilities differ by less than CLOSE_MARGIN (10 percentage points)."""
    parts = []
    if looks_unfamiliar:
        parts.append("This photo looks unlike the photos the model was trained on; its answer may be unreliable.")
    if margin is None and len(ranked) >= 2:
        margin = ranked[0]["probability"] - ranked[1]["probability"]
    if margin is not None and len(ranked) >= 2 and margin < CLOSE_MARGIN:
        a, b = ranked[0], ranked[1]
        parts.append(
            f"The top two diagnoses are close ({a['sub_class']} {a['probability']:.0%} vs "
            f"{b['sub_class']} {b['probability']:.0%}, less than {CLOSE_MARGIN * 100:.0f} percentage points apart): "
            "the model cannot tell them apart."
        )
    return " ".join(parts)


@dataclass
class ExecuteResult:
    status: str          # claimed state: done | skipped-done | busy | missing | failed | superseded
    prediction_pk: int

    def __str__(self):
        return self.status


def prediction_claim(*, prediction_pk: int, task_id: str) -> tuple[Prediction | None, str]:
    """Lock the row and mark it running for this attempt. Rules:
    done -> skip; failed -> skip (a recompute request resets it); running by another live attempt
    -> busy; running by this same task id (the message was redelivered after its worker died) or
    running for longer than STALE_RUNNING -> taken over."""
    with transaction.atomic():
        pred = Prediction.objects.select_for_update(skip_locked=True).filter(pk=prediction_pk).first()
        if pred is None:
            return None, ("busy" if Prediction.objects.filter(pk=prediction_pk).exists() else "missing")
        if pred.status == PredictionStatus.DONE:
            return None, "skipped-done"
        if pred.status == PredictionStatus.FAILED:
            return None, "failed"
        now = timezone.now()
        if pred.status == PredictionStatus.RUNNING:
            same_message = bool(task_id) and pred.task_id == task_id
            stale = pred.started_at is None or pred.started_at < now - STALE_RUNNING
            if not (same_message or stale):
                return None, "busy"
            log.warning("prediction %s: taking over from a dead attempt (task %s, started %s)",
                        pred.pk, pred.task_id, pred.started_at)
        pred.status = PredictionStatus.RUNNING
        pred.task_id = task_id[:64]
        pred.started_at = now
        pred.attempts += 1
        pred.save(update_fields=["status", "task_id", "started_at", "attempts"])
    return pred, "claimed"


def photo_boxes(photo: Photo) -> list[tuple[float, float, float, float]]:
    """Annotator boxes of the photo in original pixels, when the annotation app has them
    (guarded: the Box model may not exist yet)."""
    try:
        from annotation.models import Box  # noqa: F401
    except ImportError:
        return []
    rel = getattr(photo, "boxes", None)
    if rel is None:
        return []
    out = []
    for b in rel.all():
        try:
            sx = photo.width / b.image_width if getattr(b, "image_width", None) else 1.0
            sy = photo.height / b.image_height if getattr(b, "image_height", None) else 1.0
            out.append((float(b.x0) * sx, float(b.y0) * sy, float(b.x1) * sx, float(b.y1) * sy))
        except (AttributeError, TypeError, ZeroDivisionError):
            continue
    return out


def overlay_box_masses(*, prediction: Prediction) -> dict[int, float | None]:
    """overlay pk -> share of its heat map inside the photo's *current* annotator boxes (boxes are
    usually drawn after the upload, so this is computed on read from the stored 32x32 map)."""
    from inference.ml.explain import heatmap_mass_in_boxes

    photo = prediction.photo
    boxes = photo_boxes(photo)
    out = {}
    for ov in prediction.overlays.all():
        if not boxes:
            out[ov.pk] = None
        elif ov.heatmap:
            out[ov.pk] = heatmap_mass_in_boxes(np.asarray(ov.heatmap, np.float32), boxes, (photo.width, photo.height))
        else:
            out[ov.pk] = ov.box_mass
    return out


def _overlay_name(pred: Prediction, kind: str, target: str) -> str:
    return f"overlays/{pred.pk}/{kind}-{target}.png"


def _overlay_delete(ov: GradCamOverlay) -> None:
    name = ov.image.name
    ov.delete()
    if name:
        try:
            ov.image.storage.delete(name)
        except Exception:
            log.warning("could not delete overlay file %s", name)


def _open_photo_rgb(photo: Photo):
    from PIL import Image

    with photo.file.open("rb") as fh:
        img = Image.open(fh)
        img.load()
    return img.convert("RGB")


def photo_metadata(photo: Photo) -> dict:
    """What the model's metadata model may take for a photo (``annotation.selectors.case_metadata``)."""
    from annotation.selectors import case_metadata

    return case_metadata(photo.case, when=photo.acquired_at or photo.created_at)


def prediction_compute(*, predictor, image, photo_size, boxes=(), metadata: dict | None = None) -> dict:
    """Pure computation (no DB): differential + Grad-CAM overlay PNGs. Returns a dict. ``metadata``
    (age, sex, site) enters where the artefact has a metadata model (``Predictor.fuse``)."""
    from inference.ml.explain import downsample, explain, heatmap_mass_in_boxes, render_overlay, shared_scale

    t0 = time.perf_counter()
    diff = predictor.predict_one(image, metadata=metadata)
    d = diff.to_dict()
    ranked = [{k: r[k] for k in ("sub_class", "meta_class", "probability", "fine_probability")} for r in d["ranked"]]
    metas = sorted(d["meta_probabilities"].items(), key=lambda kv: -kv[1])
    t1 = time.perf_counter()
    overlays, cam_error = [], ""
    try:
        # Grad-CAM hooks live on the shared (cached) model: one photo at a time per process
        # (matters only with threads, e.g. eager jobs in a threaded dev server)
        with _CAM_LOCK:
            maps = explain(predictor, image, [r["sub_class"] for r in ranked[:GRADCAM_TOP_SUB]], [metas[0][0]] if metas else [])
        vmax = shared_scale(maps)
        for m in maps:
            buf = io.BytesIO()
            render_overlay(m.cam, vmax, photo_size).save(buf, "PNG", optimize=False, compress_level=3)
            overlays.append({
                "kind": m.kind, "target": m.target, "rank": m.rank, "png": buf.getvalue(), "scale_max": vmax,
                "box_mass": heatmap_mass_in_boxes(m.cam, boxes, photo_size) if boxes else None,
                "heatmap": np.round(downsample(m.cam / vmax), 4).tolist(),
            })
    except Exception as exc:   # heat maps are an aid: their failure must not hide the differential
        log.exception("Grad-CAM failed")
        cam_error = f"Heat maps unavailable: {exc}"
    return {
        "ranked": ranked,
        "meta_probabilities": d["meta_probabilities"],
        "fused_method": d["fused_method"],
        "malignancy_score": d["malignancy_score"],
        "malignancy_grade": d["malignancy_grade"],
        "margin": d["margin"],
        "ood_score": d["ood_score"],
        "looks_unfamiliar": bool(d["looks_unfamiliar"]),
        "metadata_used": d["extra"].get("metadata_used") or {},
        "overlays": overlays,
        "cam_error": cam_error,
        "seconds": {"predict": t1 - t0, "gradcam": time.perf_counter() - t1},
    }


def prediction_execute(*, prediction_pk: int, task_id: str = "") -> str:
    """Claim, compute and store one prediction with its overlays. Safe to run twice: a done
    prediction is not recomputed and overlays are replaced, never duplicated."""
    pred, state = prediction_claim(prediction_pk=prediction_pk, task_id=task_id)
    if pred is None:
        return state
    t0 = time.perf_counter()
    try:
        predictor = loader.predictor_for(pred.model_version)
        photo = pred.photo
        image = _open_photo_rgb(photo)
        out = prediction_compute(predictor=predictor, image=image, photo_size=(photo.width, photo.height),
                                 boxes=photo_boxes(photo), metadata=photo_metadata(photo))
    except Exception as exc:
        log.exception("prediction %s failed", prediction_pk)
        with transaction.atomic():
            n = Prediction.objects.filter(pk=prediction_pk, task_id=task_id[:64], status=PredictionStatus.RUNNING).update(
                status=PredictionStatus.FAILED, error=f"{type(exc).__name__}: {exc}"[:2000], finished_at=timezone.now()
            )
        return "failed" if n else "superseded"
    return _prediction_store(prediction_pk=prediction_pk, task_id=task_id, out=out, started=t0)


def _prediction_store(*, prediction_pk: int, task_id: str, out: dict, started: float) -> str:
    with transaction.atomic():
        pred = Prediction.objects.select_for_update().get(pk=prediction_pk)
        if pred.status != PredictionStatus.RUNNING or pred.task_id != task_id[:64]:
            return "superseded"    # another attempt took over; it will store its own result
        for ov in list(pred.overlays.all()):
            _overlay_delete(ov)
        for o in out["overlays"]:
            ov = GradCamOverlay(prediction=pred, target_kind=o["kind"], target=o["target"], rank=o["rank"],
                                scale_max=o["scale_max"], box_mass=o["box_mass"], heatmap=o.get("heatmap"))
            name = _overlay_name(pred, o["kind"], o["target"])
            if ov.image.storage.exists(name):      # leftover of a crashed attempt
                ov.image.storage.delete(name)
            ov.image.save(name.rsplit("/", 1)[-1], ContentFile(o["png"]), save=False)
            ov.save()
        pred.ranked = out["ranked"]
        pred.meta_probabilities = out["meta_probabilities"]
        pred.fused_method = out["fused_method"]
        pred.malignancy_score = out["malignancy_score"]
        pred.malignancy_grade = out["malignancy_grade"]
        pred.margin = out["margin"]
        pred.ood_score = out["ood_score"]
        pred.looks_unfamiliar = out["looks_unfamiliar"]
        pred.metadata_used = out.get("metadata_used") or {}
        pred.warning = " ".join(x for x in (
            prediction_warning(looks_unfamiliar=out["looks_unfamiliar"], ranked=out["ranked"], margin=out["margin"]),
            out["cam_error"]) if x)
        pred.status = PredictionStatus.DONE
        pred.error = ""
        pred.finished_at = timezone.now()
        pred.duration_ms = int((time.perf_counter() - started) * 1000)
        pred.save()
    return "done"


def photos_recompute(*, model_version: ModelVersion, case_pk: int | None = None, force: bool = False,
                     task_id: str = "") -> dict:
    """Compute predictions of ``model_version`` for every photo (of one case) lacking a done one,
    in this process (long queue): never floods the interactive queue."""
    photos = Photo.objects.all().order_by("pk")
    if case_pk:
        photos = photos.filter(case_id=case_pk)
    counts: dict[str, int] = {}
    for photo in photos.iterator():
        pred = prediction_request(photo=photo, model_version=model_version, force=force, enqueue=False)
        if pred is None:
            continue
        state = prediction_execute(prediction_pk=pred.pk, task_id=task_id or f"recompute-{model_version.pk}")
        counts[state] = counts.get(state, 0) + 1
    return counts


# =========================================================================== assessments
def assessment_record(*, photo: Photo, doctor, agrees: bool, sub_class: SubClass | None = None,
                      note: str = "") -> DoctorAssessment:
    """The doctor's agreement with the model or own diagnosis. Stored apart from DiagnosisLabel:
    a pathology label is never touched."""
    if not roles.has_role(doctor, *roles.CAN_SEE_PREDICTIONS):
        raise PermissionDenied("Only dermatologists record assessments of the model's answer.")
    if not agrees and sub_class is None:
        raise ValidationError({"sub_class": "When you disagree, pick your own diagnosis."})
    pred = (Prediction.objects.filter(photo=photo, status=PredictionStatus.DONE)
            .order_by("-model_version__status", "-finished_at").first())
    if sub_class is not None and pred is not None and sub_class.taxonomy_id != pred.model_version.taxonomy_id:
        raise ValidationError({"sub_class": "That diagnosis is from another taxonomy than the model's."})
    if agrees and sub_class is None and pred is not None and pred.ranked:
        sub_class = SubClass.objects.filter(taxonomy_id=pred.model_version.taxonomy_id,
                                            code=pred.ranked[0]["sub_class"]).first()
    return DoctorAssessment.objects.create(case=photo.case, photo=photo, prediction=pred, doctor=doctor,
                                           agrees=agrees, sub_class=sub_class, note=note[:1000])


# =========================================================================== training runs
LABEL_SOURCE_SETS = {
    "confirmed": [LabelSource.HISTOPATHOLOGY],
    "confirmed_consensus": [LabelSource.HISTOPATHOLOGY, LabelSource.CONSENSUS],
    "confirmed_consensus_followup": [LabelSource.HISTOPATHOLOGY, LabelSource.CONSENSUS, LabelSource.FOLLOW_UP],
    "all_but_clinical": [LabelSource.HISTOPATHOLOGY, LabelSource.CONSENSUS, LabelSource.FOLLOW_UP, LabelSource.CONFOCAL],
}
ALLOWED_CONFIG_KEYS = {"epochs": int, "coarse_epochs": int, "image_size": int, "batch_size": int, "backbone": str,
                       "pretrained": bool, "seed": int, "threads": int, "holdout": float, "fine_models": int,
                       "colour_constancy": str, "augment": dict}


def training_run_create(*, by, label_sources: Iterable[str], taxonomy: Taxonomy | None = None, name: str = "",
                        config: dict | None = None) -> TrainingRun:
    from annotation.selectors import taxonomy_default

    if not roles.has_role(by, *roles.CAN_TRAIN_MODELS):
        raise PermissionDenied("Only admins and dermatologists may start training runs.")
    sources = sorted(set(label_sources))
    bad = [s for s in sources if s not in LabelSource.values]
    if not sources or bad:
        raise ValidationError({"label_sources": f"Choose label sources from {LabelSource.values}."})
    clean = {}
    for k, v in (config or {}).items():
        if v in (None, "", {}):
            continue
        if k not in ALLOWED_CONFIG_KEYS:
            raise ValidationError({"config": f"Unknown training setting {k!r}."})
        if k == "augment":
            clean[k] = _augment_clean(v)
            continue
        try:
            kind = ALLOWED_CONFIG_KEYS[k]
            if kind is bool and isinstance(v, str):
                if v.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(v)
                clean[k] = v.lower() in ("true", "1", "yes")
            else:
                clean[k] = kind(v)
        except (TypeError, ValueError):
            raise ValidationError({"config": f"{k} must be a {ALLOWED_CONFIG_KEYS[k].__name__}."})
    for k in ("epochs", "image_size", "batch_size", "fine_models"):
        if k in clean and clean[k] < 1:
            raise ValidationError({"config": f"{k} must be positive."})
    if clean.get("fine_models", 1) > 5:
        raise ValidationError({"config": "fine_models must be at most 5 (each one adds a full fine training)."})
    if "colour_constancy" in clean:
        from inference.ml.data import COLOUR_CONSTANCY

        if clean["colour_constancy"] not in COLOUR_CONSTANCY:
            raise ValidationError({"config": f"colour_constancy must be one of {', '.join(COLOUR_CONSTANCY)}."})
    taxonomy = taxonomy or taxonomy_default()
    if taxonomy is None:
        raise ValidationError("No taxonomy is loaded.")
    with transaction.atomic():
        run = TrainingRun.objects.create(name=name[:200], taxonomy=taxonomy, label_sources=sources, config=clean,
                                         created_by=by, progress={"stage": "queued"})
        transaction.on_commit(lambda pk=run.pk: _enqueue_training(pk))
    return run


def _augment_clean(value) -> dict:
    """The ``augment`` training setting: overrides of the engine's augmentation (e.g. ``{"optics_p": 0.5}``),
    as a mapping or its JSON text, checked by the engine so a bad one fails here and not in the worker."""
    from inference.ml.data import AugmentConfig

    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValidationError({"config": "augment must be a JSON object, e.g. {\"optics_p\": 0.5}."})
    if not isinstance(value, dict):
        raise ValidationError({"config": "augment must be a JSON object, e.g. {\"optics_p\": 0.5}."})
    try:
        AugmentConfig.from_overrides(value)
    except (TypeError, ValueError) as exc:
        raise ValidationError({"config": str(exc)})
    return dict(value)


def _enqueue_training(run_pk: int):
    from . import tasks

    tasks.run_training.delay(run_pk)


def training_run_cancel(*, run: TrainingRun, by) -> TrainingRun:
    if not roles.has_role(by, *roles.CAN_TRAIN_MODELS):
        raise PermissionDenied("Only admins and dermatologists may cancel training runs.")
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if run.is_finished:
            return run
        run.cancel_requested = True
        fields = ["cancel_requested"]
        if run.status == TrainingStatus.QUEUED:   # never started: nothing to stop
            run.status = TrainingStatus.CANCELLED
            run.finished_at = timezone.now()
            run.progress = {**run.progress, "stage": "cancelled"}
            fields += ["status", "finished_at", "progress"]
        run.save(update_fields=fields)
    return run


def training_cases(*, taxonomy: Taxonomy, label_sources: Iterable[str]):
    """(photo, sub_class_code, case_pk) for every photo of a case with a label from the chosen sources;
    per case the confirmed label wins, then the most recently signed."""
    labels = (DiagnosisLabel.objects.filter(source__in=list(label_sources), sub_class__taxonomy=taxonomy)
              .select_related("sub_class").order_by("case_id", "-confirmed", "-signed_at", "-pk"))
    best: dict[int, str] = {}
    for lab in labels:
        best.setdefault(lab.case_id, lab.sub_class.code)
    photos = Photo.objects.filter(case_id__in=list(best)).exclude(case__status="excluded").order_by("case_id", "pk")
    return [(p, best[p.case_id], p.case_id) for p in photos]


def training_case_counts(*, taxonomy: Taxonomy, label_sources: Iterable[str]) -> tuple[int, int]:
    """(cases, photos) training_cases would export, counted in the database."""
    cases = (DiagnosisLabel.objects.filter(source__in=list(label_sources), sub_class__taxonomy=taxonomy)
             .exclude(case__status="excluded").values("case_id").distinct())
    return cases.count(), Photo.objects.filter(case_id__in=cases).count()


def training_data_export(*, run: TrainingRun, dest: Path) -> dict:
    """Write the run's cases as an inference.ml generic data folder: images/ + labels.csv
    (image,label,case_id). Returns counts."""
    from annotation.selectors import taxonomy_export

    rows = training_cases(taxonomy=run.taxonomy, label_sources=run.label_sources)
    img_dir = dest / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    with open(dest / "labels.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image", "label", "case_id"])
        for photo, code, case_pk in rows:
            ext = photo.file.name.rsplit(".", 1)[-1].lower()
            name = f"p{photo.pk}.{ext}"
            target = img_dir / name
            try:
                src = Path(photo.file.path)
                target.symlink_to(src)
            except (NotImplementedError, AttributeError, ValueError, OSError):
                with photo.file.open("rb") as fh:
                    target.write_bytes(fh.read())
            w.writerow([f"images/{name}", code, f"case-{case_pk}"])
    tax = taxonomy_export(taxonomy=run.taxonomy)
    (dest / "taxonomy.json").write_text(json.dumps(tax), encoding="utf-8")
    per_class: dict[str, set] = {}
    for _, code, case_pk in rows:
        per_class.setdefault(code, set()).add(case_pk)
    return {"n_photos": len(rows), "n_cases": len({c for _, _, c in rows}), "taxonomy": tax,
            "classes": sorted(per_class), "cases_per_class": {c: len(v) for c, v in per_class.items()}}


def _run_update(run_pk: int, **fields) -> None:
    TrainingRun.objects.filter(pk=run_pk).update(**fields)


def _log_append(run_pk: int, line: str) -> None:
    run = TrainingRun.objects.only("log").get(pk=run_pk)
    stamp = timezone.now().strftime("%H:%M:%S")
    _run_update(run_pk, log=(run.log + f"[{stamp}] {line}\n")[-20000:])


def training_run_execute(*, run_pk: int) -> str:
    """Run one training job to the end: export data, train with progress and cancellation,
    register a candidate ModelVersion. A failed or cancelled run registers nothing and removes
    its partial artefact."""
    from inference.ml.train import TrainConfig, TrainingCancelled, train

    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().filter(pk=run_pk).first()
        if run is None:
            return "missing"
        if run.is_finished:
            return f"skipped-{run.status}"
        now = timezone.now()
        if run.status == TrainingStatus.RUNNING and run.heartbeat_at and run.heartbeat_at > now - TRAINING_STALE:
            return "busy"       # a duplicate message while a live worker trains (broker visibility timeout)
        if run.cancel_requested:
            run.status, run.finished_at = TrainingStatus.CANCELLED, now
            run.save(update_fields=["status", "finished_at"])
            return "cancelled"
        if run.status == TrainingStatus.RUNNING:
            log.warning("training run %s: taking over from a dead worker (last heartbeat %s)", run.pk, run.heartbeat_at)
        run.status, run.started_at, run.heartbeat_at = TrainingStatus.RUNNING, now, now
        run.attempts += 1
        run.progress = {"stage": "export"}
        run.save(update_fields=["status", "started_at", "heartbeat_at", "attempts", "progress"])
    tmp_root = Path(getattr(settings, "VAR_DIR", tempfile.gettempdir())) / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"training-{run_pk}-", dir=tmp_root))
    # deterministic per run: a redelivered job (worker died) resumes from the engine's checkpoints
    out = loader.model_root() / f"run-{run_pk}-{run.created_at:%Y%m%d-%H%M%S-%f}"
    state = {"last_write": 0.0, "last_check": 0.0, "cancel": False, "stage": None, "merged": {}}

    def should_stop() -> bool:
        now = time.monotonic()
        if now - state["last_check"] >= 1.0:
            state["last_check"] = now
            state["cancel"] = TrainingRun.objects.filter(pk=run_pk, cancel_requested=True).exists()
        return state["cancel"]

    def progress(d: dict) -> None:
        now = time.monotonic()
        stage_changed = d.get("stage") != state["stage"]
        if stage_changed:
            state["stage"] = d.get("stage")
            _log_append(run_pk, f"stage {d.get('stage')}")
        clean = {k: v for k, v in d.items() if isinstance(v, (int, float, str, bool)) or v is None}
        if stage_changed:
            clean.setdefault("eta_seconds", None)
            clean.setdefault("batch", None)
        state["merged"].update(clean)     # the last epoch / loss stay visible through evaluation
        if d.get("message"):
            _log_append(run_pk, d["message"])
        if stage_changed or d.get("event") or now - state["last_write"] >= 1.0:
            state["last_write"] = now
            _run_update(run_pk, progress={**state["merged"], "updated": timezone.now().isoformat()},
                        heartbeat_at=timezone.now())
            if d.get("event") == "epoch_end":
                member = f" model {d['member']}/{d['members']}" if d.get("members", 1) > 1 else ""
                _log_append(run_pk, f"{d.get('stage')}{member} epoch {d.get('epoch')}/{d.get('epochs')}: loss "
                                    f"{d.get('loss', float('nan')):.4f} ({d.get('seconds', 0):.1f} s)")

    try:
        info = training_data_export(run=run, dest=work)
        _run_update(run_pk, n_cases=info["n_cases"], n_photos=info["n_photos"])
        _log_append(run_pk, f"exported {info['n_photos']} photos of {info['n_cases']} cases; classes {info['classes']}")
        if len(info["classes"]) < 2 or info["n_cases"] < 4:
            raise ValueError(f"Not enough data to train: {info['n_cases']} cases, classes {info['classes']} "
                             "(need at least 4 cases and 2 diagnoses).")
        _log_append(run_pk, "cases per diagnosis: " + ", ".join(f"{c} {n}" for c, n in sorted(info["cases_per_class"].items())))
        cfg = TrainConfig(data=str(work), taxonomy=info["taxonomy"], out=str(out), cache_dir="",
                          **{k: v for k, v in run.config.items() if k in ALLOWED_CONFIG_KEYS})
        try:
            train(cfg, progress=progress, should_stop=should_stop)
        except ValueError as exc:
            if "n_splits" in str(exc):     # the engine's case-grouped stratified hold-out split
                raise ValueError(
                    "Too few photos per diagnosis for a held-out test split by case (about 1 case in 5 is held out). "
                    "Label more cases or widen the label sources. (" + str(exc) + ")") from exc
            raise
        if should_stop():
            raise TrainingCancelled("cancelled")
        with transaction.atomic():
            name = run.name or f"Run {run.pk} ({', '.join(run.label_sources)})"
            mv = model_register(model_dir=out, name=name, created_by=run.created_by)
            TrainingRun.objects.filter(pk=run_pk).update(
                status=TrainingStatus.SUCCEEDED, model_version=mv, finished_at=timezone.now(),
                progress={**state["merged"], "stage": "done", "eta_seconds": None, "model_version": mv.pk},
            )
        _log_append(run_pk, f"registered candidate model version {mv.pk}")
        return "succeeded"
    except TrainingCancelled:
        shutil.rmtree(out, ignore_errors=True)
        _run_update(run_pk, status=TrainingStatus.CANCELLED, finished_at=timezone.now(),
                    progress={"stage": "cancelled"})
        _log_append(run_pk, "cancelled on request; nothing was registered")
        return "cancelled"
    except Exception as exc:
        log.exception("training run %s failed", run_pk)
        shutil.rmtree(out, ignore_errors=True)
        _run_update(run_pk, status=TrainingStatus.FAILED, finished_at=timezone.now(), error=f"{type(exc).__name__}: {exc}"[:4000],
                    progress={"stage": "failed"})
        _log_append(run_pk, f"failed: {type(exc).__name__}: {exc}")
        return "failed"
    finally:
        shutil.rmtree(work, ignore_errors=True)
