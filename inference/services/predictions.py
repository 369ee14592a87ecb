"""Predictions: requesting one for a photo, claiming and computing it in a worker, storing it with
its Grad-CAM overlays, and recomputing a model's predictions for many photos.

A prediction row moves pending -> running -> done | failed. Every step re-checks the row under a lock,
so a redelivered or duplicated job is harmless (see ``prediction_claim``).
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.utils import timezone

from annotation.models import Photo

from .. import jobs, loader, selectors
from ..models import GradCamOverlay, ModelVersion, Prediction, PredictionStatus
from .dblock import with_lock_retry
from .registry import model_active_for

log = logging.getLogger(__name__)

# Warning rule shown on the case page (and tested): the top two fused probabilities closer than
# this are "too close to call".
CLOSE_MARGIN = float(getattr(settings, "DERM_PREDICTION_CLOSE_MARGIN", 0.10))
# A prediction left "running" longer than this by a worker that died is taken over.
STALE_RUNNING = timedelta(seconds=int(getattr(settings, "DERM_PREDICTION_STALE_SECONDS", 120)))


def prediction_request(
    *, photo: Photo, model_version: ModelVersion | None = None, force: bool = False, enqueue: bool = True
) -> Prediction | None:
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
        except IntegrityError:  # a concurrent request created it
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
                    transaction.on_commit(lambda pk=pred.pk: jobs.enqueue_prediction(pk))
                return pred
            _prediction_reset(pred)
        if enqueue:
            transaction.on_commit(lambda pk=pred.pk: jobs.enqueue_prediction(pk))
    return pred


def _prediction_reset(pred: Prediction) -> None:
    for ov in list(pred.overlays.all()):
        _overlay_delete(ov)
    pred.status = PredictionStatus.PENDING
    pred.ranked, pred.meta_probabilities = [], {}
    pred.malignancy_score = pred.malignancy_grade = pred.margin = pred.ood_score = None
    pred.looks_unfamiliar = False
    _triage_store(pred, {}, False)
    pred.warning = pred.error = pred.task_id = ""
    pred.started_at = pred.finished_at = None
    pred.duration_ms = None
    pred.save()


def _triage_store(pred: Prediction, t: dict, calibrated: bool) -> None:
    """Copy ``triage.py``'s block onto the row (no tier when the model abstains)."""
    pred.tier = t.get("tier") or ""
    pred.triage_reason = t.get("reason") or ""
    pred.abstain = t.get("abstain") or ""
    pred.urgent_probability = t.get("urgent_probability")
    pred.malignant_probability = t.get("malignant_probability")
    pred.triage_thresholds = t.get("thresholds") or {}
    pred.unfamiliar_score = t.get("unfamiliar_score")
    pred.calibrated = calibrated


def prediction_request_for_photo(*, photo_pk: int) -> Prediction | None:
    """DERM_PHOTO_ATTACHED_HOOKS entry: a new photo gets a pending prediction by the active model."""
    photo = Photo.objects.filter(pk=photo_pk).first()
    if photo is None:
        return None
    try:
        return prediction_request(photo=photo)
    except Exception:  # a hook must never break an upload
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
            log.warning(
                "prediction %s: taking over from a dead attempt (task %s, started %s)",
                pred.pk,
                pred.task_id,
                pred.started_at,
            )
        pred.status = PredictionStatus.RUNNING
        pred.task_id = task_id[:64]
        pred.started_at = now
        pred.attempts += 1
        pred.save(update_fields=["status", "task_id", "started_at", "attempts"])
    return pred, "claimed"


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


def prediction_execute(*, prediction_pk: int, task_id: str = "") -> str:
    """Claim, compute and store one prediction with its overlays. Safe to run twice: a done
    prediction is not recomputed and overlays are replaced, never duplicated."""
    pred, state = with_lock_retry(
        lambda: prediction_claim(prediction_pk=prediction_pk, task_id=task_id), what=f"prediction {prediction_pk} claim"
    )
    if pred is None:
        return state
    t0 = time.perf_counter()
    try:
        from inference.ml import serving

        predictor = loader.predictor_for(pred.model_version)
        photo = pred.photo
        image = _open_photo_rgb(photo)
        out = serving.prediction_compute(
            predictor=predictor,
            image=image,
            photo_size=(photo.width, photo.height),
            boxes=selectors.photo_boxes(photo),
            metadata=selectors.photo_metadata(photo),
            modality=photo.modality,
            thresholds=selectors.site_thresholds(model_version=pred.model_version),
        )
    except Exception as exc:
        log.exception("prediction %s failed", prediction_pk)
        return _prediction_fail(prediction_pk=prediction_pk, task_id=task_id, exc=exc)
    try:
        return with_lock_retry(
            lambda: _prediction_store(prediction_pk=prediction_pk, task_id=task_id, out=out, started=t0),
            what=f"prediction {prediction_pk} store",
        )
    except Exception as exc:  # never leave the row "running": it is failed (a recompute request retries it)
        log.exception("prediction %s could not be stored", prediction_pk)
        return _prediction_fail(prediction_pk=prediction_pk, task_id=task_id, exc=exc)


def _prediction_fail(*, prediction_pk: int, task_id: str, exc: BaseException) -> str:
    def write():
        with transaction.atomic():
            running = Prediction.objects.filter(pk=prediction_pk, task_id=task_id[:64], status=PredictionStatus.RUNNING)
            return running.update(
                status=PredictionStatus.FAILED, error=f"{type(exc).__name__}: {exc}"[:2000], finished_at=timezone.now()
            )

    n = with_lock_retry(write, what=f"prediction {prediction_pk} fail")
    return "failed" if n else "superseded"


def predictions_reclaim_stale(*, model_version: ModelVersion | None = None) -> int:
    """Predictions left "running" longer than STALE_RUNNING (their worker died or gave up) go back to
    pending and are sent again; returns how many."""

    def write():
        with transaction.atomic():
            qs = Prediction.objects.select_for_update().filter(
                status=PredictionStatus.RUNNING, started_at__lt=timezone.now() - STALE_RUNNING
            )
            if model_version is not None:
                qs = qs.filter(model_version=model_version)
            pks = list(qs.values_list("pk", flat=True))
            Prediction.objects.filter(pk__in=pks).update(status=PredictionStatus.PENDING, task_id="", started_at=None)
            for pk in pks:
                transaction.on_commit(lambda pk=pk: jobs.enqueue_prediction(pk))
            return len(pks)

    n = with_lock_retry(write, what="reclaim stale predictions")
    if n:
        log.warning("%d stale running prediction(s) sent again", n)
    return n


def _prediction_store(*, prediction_pk: int, task_id: str, out: dict, started: float) -> str:
    with transaction.atomic():
        pred = Prediction.objects.select_for_update().get(pk=prediction_pk)
        if pred.status != PredictionStatus.RUNNING or pred.task_id != task_id[:64]:
            return "superseded"  # another attempt took over; it will store its own result
        for ov in list(pred.overlays.all()):
            _overlay_delete(ov)
        for o in out["overlays"]:
            ov = GradCamOverlay(
                prediction=pred,
                target_kind=o["kind"],
                target=o["target"],
                rank=o["rank"],
                scale_max=o["scale_max"],
                box_mass=o["box_mass"],
                heatmap=o.get("heatmap"),
            )
            name = _overlay_name(pred, o["kind"], o["target"])
            if ov.image.storage.exists(name):  # leftover of a crashed attempt
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
        _triage_store(pred, out.get("triage") or {}, bool(out.get("calibrated")))
        pred.warning = " ".join(
            x
            for x in (
                prediction_warning(
                    looks_unfamiliar=out["looks_unfamiliar"], ranked=out["ranked"], margin=out["margin"]
                ),
                out["cam_error"],
            )
            if x
        )
        pred.status = PredictionStatus.DONE
        pred.error = ""
        pred.finished_at = timezone.now()
        pred.duration_ms = int((time.perf_counter() - started) * 1000)
        pred.save()
    return "done"


def photos_recompute(
    *, model_version: ModelVersion, case_pk: int | None = None, force: bool = False, task_id: str = ""
) -> dict:
    """Compute predictions of ``model_version`` for every photo (of one case) lacking a done one,
    in this process (long queue): never floods the interactive queue."""
    photos = Photo.objects.all().order_by("pk")
    if case_pk:
        photos = photos.filter(case_id=case_pk)
    counts: dict[str, int] = {}
    predictions_reclaim_stale(model_version=model_version)
    for photo_pk in list(photos.values_list("pk", flat=True)):
        photo = Photo.objects.filter(pk=photo_pk).first()
        if photo is None:  # deleted meanwhile
            continue
        try:
            pred = with_lock_retry(
                lambda photo=photo: prediction_request(
                    photo=photo, model_version=model_version, force=force, enqueue=False
                ),
                what=f"photo {photo_pk} request",
            )
            if pred is None:
                continue
            state = prediction_execute(prediction_pk=pred.pk, task_id=task_id or f"recompute-{model_version.pk}")
        except Exception:  # one photo must not stop the others; its row is failed or pending, never running
            log.exception("recompute of photo %s by model %s failed", photo_pk, model_version.pk)
            state = "error"
        counts[state] = counts.get(state, 0) + 1
    return counts


def photos_ranked(*, model_version: ModelVersion, photos) -> list[list[dict]]:
    """The ranked differential (``Prediction.ranked`` rows) of each photo by ``model_version``, computed
    now through the cached predictor with each photo's metadata; nothing is stored. For callers that
    need a model's answer on photos without a finished prediction (reader studies)."""
    from inference.ml.serving import ranked_rows

    photos = list(photos)
    if not photos:
        return []
    predictor = loader.predictor_for(model_version)
    diffs = predictor.predict(
        [_open_photo_rgb(p) for p in photos], metadata=[selectors.photo_metadata(p) for p in photos]
    )
    return [ranked_rows(d) for d in diffs]
