"""HTML pages and small JSON endpoints for decision support. Thin: they call services/selectors."""

from __future__ import annotations

from pathlib import Path

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import FileResponse, Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from annotation import selectors as annotation_selectors
from annotation.models import SubClass
from derm_portal import roles
from derm_portal.http import private_file_response

from . import charts, loader, presenters, selectors, services
from .models import PredictionStatus, TrainingStatus
from .panels import panel_common_context, panel_header, photo_block_context
from .presenters import prediction_signature, prediction_view

require_role = roles.require_role


# --------------------------------------------------------------------------- case panel
@require_GET
@require_role(*roles.CAN_SEE_PREDICTIONS)
def case_prediction_state(request, pk: int):
    """Polled by the case panel: per photo the prediction's status and a signature that changes
    when its content does."""
    case = annotation_selectors.case_get(user=request.user, pk=pk)
    preds = selectors.case_predictions(user=request.user, case=case)
    photos = []
    for ph in case.photos.all():
        p = preds.get(ph.pk)
        photos.append(
            {
                "photo": ph.pk,
                "status": p.status if p else "none",
                "prediction": p.pk if p else None,
                "signature": prediction_signature(p) if p else "none",
            }
        )
    pending = any(x["status"] in (PredictionStatus.PENDING, PredictionStatus.RUNNING) for x in photos)
    return JsonResponse({"case": case.pk, "photos": photos, "pending": pending, "header": panel_header(preds.values())})


@require_GET
@require_role(*roles.CAN_SEE_PREDICTIONS)
def photo_prediction_block(request, pk: int):
    """The panel's HTML block for one photo (swapped in by the polling script)."""
    photo = annotation_selectors.photo_get(user=request.user, pk=pk)
    preds = selectors.case_predictions(user=request.user, case=photo.case)
    ctx = photo_block_context(request=request, photo=photo, prediction=preds.get(photo.pk))
    ctx.update(panel_common_context())
    return HttpResponse(render_to_string("inference/_photo_block.html", ctx, request=request))


@require_GET
@require_role(*roles.CAN_SEE_PREDICTIONS)
def prediction_json(request, pk: int):
    return JsonResponse(prediction_view(selectors.prediction_get(user=request.user, pk=pk)))


@require_GET
@require_role(*roles.CAN_SEE_PREDICTIONS)
def overlay_image(request, pk: int):
    """Streams a Grad-CAM overlay PNG after the permission check; never a public URL."""
    ov = selectors.overlay_get(user=request.user, pk=pk)
    try:
        fh = ov.image.open("rb")
    except FileNotFoundError:
        raise Http404("Overlay file missing.")
    return private_file_response(fh, content_type="image/png")


@require_POST
@require_role(*roles.CAN_SEE_PREDICTIONS)
def case_recompute(request, pk: int):
    case = annotation_selectors.case_get(user=request.user, pk=pk)
    force = request.POST.get("force") == "1"
    n = services.predictions_request_for_case(case=case, force=force)
    if not n:
        messages.error(request, "No active model: an admin must activate one first.")
    else:
        messages.success(request, f"The active model is running on {n} photo(s).")
    return redirect("annotation:case_detail", pk=case.pk)


@require_POST
@require_role(*roles.CAN_SEE_PREDICTIONS)
def assessment_create(request, pk: int):
    photo = annotation_selectors.photo_get(user=request.user, pk=pk)
    agrees = request.POST.get("agrees") == "yes"
    sub_code = request.POST.get("sub_class", "").strip()
    sub = None
    if sub_code:
        sub = SubClass.objects.filter(pk=sub_code).first() if sub_code.isdigit() else None
        if sub is None:
            messages.error(request, "Unknown diagnosis.")
            return redirect("annotation:case_detail", pk=photo.case_id)
    try:
        services.assessment_record(
            photo=photo, doctor=request.user, agrees=agrees, sub_class=sub, note=request.POST.get("note", "")
        )
    except ValidationError as exc:
        messages.error(request, "; ".join(exc.messages))
    else:
        messages.success(request, "Your assessment was recorded (the pathology label is unchanged).")
    return redirect(reverse("annotation:case_detail", args=[photo.case_id]) + f"#prediction-photo-{photo.pk}")


# --------------------------------------------------------------------------- model registry
@require_role(*roles.CAN_VIEW_MODELS)
def model_list(request):
    models = list(selectors.model_versions_visible_to(request.user).order_by("-created_at"))
    rows = [{"m": m, "summary": charts.metrics_summary(m.metrics)} for m in models]
    return render(
        request,
        "inference/model_list.html",
        {
            "rows": rows,
            "can_activate": roles.has_role(request.user, *roles.CAN_ACTIVATE_MODELS),
            "can_train": roles.has_role(request.user, *roles.CAN_TRAIN_MODELS),
        },
    )


@require_role(*roles.CAN_VIEW_MODELS)
def model_detail(request, pk: int):
    m = selectors.model_version_get(user=request.user, pk=pk)
    return render(
        request,
        "inference/model_detail.html",
        {
            "m": m,
            "summary": charts.metrics_summary(m.metrics),
            "comparison": charts.comparison_table(m.metrics),
            "per_class": charts.per_class_table(m.metrics, "hierarchical_product"),
            "per_class_coarse": charts.per_class_table(m.metrics, "coarse"),
            "malignancy": charts.malignancy_table(m.metrics),
            "figures": charts.figures(m.metrics),
            "has_roc_points": charts.has_roc_points(m.metrics),
            "manifest": presenters.manifest_view(m),
            "activations": m.activations.select_related("activated_by", "previous")[:20],
            "artefact_present": loader.artefact_present(m),
            "can_activate": roles.has_role(request.user, *roles.CAN_ACTIVATE_MODELS),
            "n_predictions": m.predictions.count(),
            "n_done": m.predictions.filter(status=PredictionStatus.DONE).count(),
            "recompute": selectors.model_recompute_progress(model_version=m),
            "training_run": getattr(m, "training_run", None) if hasattr(m, "training_run") else None,
        },
    )


@require_role(*roles.CAN_ACTIVATE_MODELS)
def model_activate(request, pk: int):
    """GET: the confirmation page (candidate beside the active model, failed checks); POST: activate,
    with the admin's written reason when the model fails a check."""
    from .review import activation_review

    m = selectors.model_version_get(user=request.user, pk=pk)
    review = activation_review(m)
    reason = request.POST.get("reason", "").strip() if request.method == "POST" else ""
    if request.method == "POST":
        recompute = request.POST.get("recompute") == "1"
        if request.POST.get("confirm") != "1":
            messages.error(request, "Tick the confirmation box to activate the model.")
        else:
            try:
                services.model_activate(
                    model_version=m,
                    by=request.user,
                    note=request.POST.get("note", ""),
                    recompute=recompute,
                    reason=reason,
                )
            except services.ActivationReasonRequired:
                messages.error(
                    request, "This model fails the checks listed below: write why it should be activated anyway."
                )
            except services.RegistryError as exc:
                messages.error(request, str(exc))
            else:
                messages.success(
                    request,
                    f"{m.name} is now the active model for {m.taxonomy}."
                    + (" Every photo is being recomputed with it in the background." if recompute else ""),
                )
                return redirect("inference:model_detail", pk=m.pk)
    return render(
        request,
        "inference/model_activate.html",
        {
            "m": m,
            "review": review,
            "reason": reason,
            "artefact_present": loader.artefact_present(m),
        },
    )


@require_POST
@require_role(*roles.CAN_ACTIVATE_MODELS)
def model_recompute(request, pk: int):
    m = selectors.model_version_get(user=request.user, pk=pk)
    services.model_recompute_request(model_version=m)
    messages.success(request, "Predictions for every photo without one are being computed (long queue).")
    return redirect("inference:model_detail", pk=m.pk)


@require_GET
def plotly_js(request):
    """plotly.js from the pinned plotly package (no CDN, no vendored copy in the repo)."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    response = FileResponse(open(path, "rb"), content_type="application/javascript")  # noqa: SIM115  (closed by FileResponse)
    response["Cache-Control"] = "private, max-age=86400"
    return response


# --------------------------------------------------------------------------- training runs
SOURCE_SETS = [
    ("confirmed", "Histopathology-confirmed only"),
    ("confirmed_consensus", "Confirmed + clinical consensus"),
    ("confirmed_consensus_followup", "Confirmed + consensus + follow-up"),
    ("all_but_clinical", "Confirmed + consensus + follow-up + confocal"),
]


FORM_SETTINGS = ("epochs", "image_size", "batch_size", "backbone", "fine_models", "colour_constancy")
# "Other cameras" on the training form: presets of the engine's optics augmentation (blur, sensor noise,
# JPEG re-compression of the training photos; README "Recipe"), by the value the form posts
CAMERA_PRESETS = {
    "off": ("off: dermoscopic photos as they are", {"blur": 0, "noise": 0}),
    "half": ("blur and noise on half the photos", {"optics_p": 0.5}),
    "all": ("blur and noise on every photo", {"optics_p": 1.0}),
    "half_jpeg": ("blur, noise and JPEG on half the photos", {"optics_p": 0.5, "jpeg": 20}),
}


@require_role(*roles.CAN_TRAIN_MODELS)
def training_list(request):
    from annotation.selectors import taxonomy_default
    from derm_portal.idempotency import token_from

    if request.method == "POST":
        sources = services.LABEL_SOURCE_SETS.get(request.POST.get("source_set", ""), None)
        if sources is None:
            sources = request.POST.getlist("label_sources")
        config = {k: request.POST.get(k, "").strip() for k in FORM_SETTINGS}
        cameras = request.POST.get("cameras", "")
        if cameras and cameras not in CAMERA_PRESETS:
            messages.error(request, f"Unknown choice for other cameras: {cameras!r}.")
            return redirect("inference:training_list")
        if cameras:
            config["augment"] = CAMERA_PRESETS[cameras][1]
        try:
            run = services.training_run_create(
                by=request.user,
                label_sources=sources,
                name=request.POST.get("name", ""),
                config=config,
                submission_token=token_from(request.POST),
            )
        except ValidationError as exc:
            messages.error(request, "; ".join(exc.messages))
        else:
            messages.success(request, f"Training run {run.pk} queued.")
            return redirect("inference:training_detail", pk=run.pk)
    from .review import MIN_CLASS_PHOTOS, small_classes

    taxonomy = taxonomy_default()
    counts, small = {}, {}
    if taxonomy:
        for key, _ in SOURCE_SETS:
            counts[key] = selectors.training_case_counts(
                taxonomy=taxonomy, label_sources=services.LABEL_SOURCE_SETS[key]
            )
            small[key] = small_classes(
                selectors.training_class_counts(taxonomy=taxonomy, label_sources=services.LABEL_SOURCE_SETS[key])
            )
    return render(
        request,
        "inference/training_list.html",
        {
            "runs": selectors.training_runs_visible_to(request.user)[:50],
            "source_sets": [(k, label, counts.get(k, (0, 0))) for k, label in SOURCE_SETS],
            "small_by_set": [(k, small.get(k, [])) for k, _ in SOURCE_SETS],
            "min_class_photos": MIN_CLASS_PHOTOS,
            "defaults": presenters.training_form_defaults(FORM_SETTINGS),
            "camera_presets": [(k, label) for k, (label, _) in CAMERA_PRESETS.items()],
            "taxonomy": taxonomy,
        },
    )


@require_role(*roles.CAN_TRAIN_MODELS)
def training_detail(request, pk: int):
    from .review import MIN_CLASS_PHOTOS, small_classes

    run = selectors.training_run_get(user=request.user, pk=pk)
    small = small_classes(selectors.training_class_counts(taxonomy=run.taxonomy, label_sources=run.label_sources))
    return render(
        request,
        "inference/training_detail.html",
        {
            "run": run,
            "state": presenters.training_state(run),
            "small_classes": small,
            "min_class_photos": MIN_CLASS_PHOTOS,
        },
    )


@require_GET
@require_role(*roles.CAN_TRAIN_MODELS)
def training_state_json(request, pk: int):
    return JsonResponse(presenters.training_state(selectors.training_run_get(user=request.user, pk=pk)))


@require_POST
@require_role(*roles.CAN_TRAIN_MODELS)
def training_cancel(request, pk: int):
    run = selectors.training_run_get(user=request.user, pk=pk)
    services.training_run_cancel(run=run, by=request.user)
    messages.success(request, "Cancellation requested." if run.status != TrainingStatus.CANCELLED else "Cancelled.")
    return redirect("inference:training_detail", pk=run.pk)
