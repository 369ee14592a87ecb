"""HTML pages for cases, photos, labels and taxonomy. Thin: they call services/selectors."""

from __future__ import annotations

import csv
import io
import json
import logging
import re

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import prefetch_related_objects
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.module_loading import import_string
from django.views.decorators.http import require_POST
from PIL import Image

from derm_portal import roles
from derm_portal.csvsafe import spreadsheet_safe
from derm_portal.http import private_file_response

from . import selectors, services
from .forms import CaseCreateForm, LabelForm, StatusForm, TaxonomyImportForm
from .models import CaseStatus, LabelSource, MetaClass, Modality, SubClass, Taxonomy

require_role = roles.require_role


@require_role(*roles.CAN_VIEW_CLINICAL)
def case_list(request):
    filters = {k: request.GET.get(k, "").strip() for k in ("q", "status", "diagnosis", "confirmed", "modality")}
    qs = selectors.case_list(user=request.user, **filters)
    paginator = Paginator(qs.values_list("pk", flat=True), 25)
    page = paginator.get_page(request.GET.get("page"))
    page.object_list = selectors.case_rows(user=request.user, ids=list(page.object_list))
    source_names = dict(LabelSource.choices)
    for row in page.object_list:
        row.diagnosis_source_display = source_names.get(row.diagnosis_source, row.diagnosis_source)
    taxonomy = selectors.taxonomy_default_shared()
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "annotation/case_list.html",
        {
            "page": page,
            "filters": filters,
            "querystring": query.urlencode(),
            "statuses": CaseStatus.choices,
            "modalities": Modality.choices,
            "sub_classes": selectors.sub_classes_shared(taxonomy.pk if taxonomy else None),
        },
    )


def _case_panels(request, case) -> list[str]:
    html = []
    for path in getattr(settings, "DERM_CASE_PANELS", []):
        try:
            panel = import_string(path)
        except ImportError:
            continue
        fragment = panel(request, case)
        if fragment:
            html.append(fragment)
    return html


@require_role(*roles.CAN_VIEW_CLINICAL)
def case_detail(request, pk: int):
    case = selectors.case_get(user=request.user, pk=pk)
    prefetch_related_objects([case], "photos")  # read once for the page and every panel
    taxonomy = selectors.taxonomy_default_shared()
    can_confirm = roles.has_role(request.user, roles.CAN_CONFIRM_LABEL)
    allowed = [s for s in LabelSource.values if s != LabelSource.HISTOPATHOLOGY or can_confirm]
    return render(
        request,
        "annotation/case_detail.html",
        {
            "case": case,
            "photos": case.photos.all(),
            "labels": selectors.case_labels(case=case),
            "history": selectors.case_label_history(case=case),
            "label_form": LabelForm(
                taxonomy=taxonomy,
                allowed_sources=allowed,
                sub_classes=selectors.sub_classes_shared(taxonomy.pk) if taxonomy else None,
            ),
            "status_form": StatusForm(initial={"status": case.status, "exclusion_reason": case.exclusion_reason}),
            "can_confirm": can_confirm,
            "can_record": roles.has_role(request.user, roles.CAN_RECORD_LABEL),
            "can_edit": roles.has_role(request.user, roles.CAN_EDIT_CASES),
            "modalities": Modality.choices,
            "max_upload_bytes": settings.DERM_MAX_UPLOAD_BYTES,
            "panels": _case_panels(request, case),
        },
    )


@require_role(*roles.CAN_EDIT_CASES)
def case_create(request):
    from derm_portal.idempotency import token_from

    form = CaseCreateForm(request.POST or None)
    if request.method == "POST":
        if form.is_valid():
            d = form.cleaned_data
            uploads = request.FILES.getlist("photos")
            try:
                case, result = services.case_create_with_photos(
                    patient_code=d["patient_code"],
                    sex=d["sex"],
                    birth_year=d["birth_year"],
                    body_site=d["body_site"],
                    clinical_history=d["clinical_history"],
                    age_at_visit=d["age_at_visit"],
                    uploads=uploads,
                    uploaded_by=request.user,
                    modality=d["modality"],
                    submission_token=token_from(request.POST),
                )
            except services.NothingStored as exc:
                for err in exc.errors:
                    form.add_error(None, err["error"])
            except ValidationError as exc:
                form.add_error(None, "; ".join(exc.messages))
            else:
                if request.headers.get("accept", "").startswith("application/json"):
                    return JsonResponse({"case": case.pk, "url": case_url(case), **result.as_dict()}, status=201)
                for err in result.errors:
                    messages.error(request, err["error"])
                if result.photos:
                    messages.success(request, f"Case created with {len(result.photos)} photo(s).")
                return redirect("annotation:case_detail", pk=case.pk)
        if request.headers.get("accept", "").startswith("application/json"):
            return JsonResponse({"errors": form.errors.get_json_data()}, status=400)
    return render(
        request, "annotation/case_create.html", {"form": form, "max_upload_bytes": settings.DERM_MAX_UPLOAD_BYTES}
    )


def case_url(case) -> str:
    from django.urls import reverse

    return reverse("annotation:case_detail", args=[case.pk])


@require_POST
@require_role(*roles.CAN_EDIT_CASES)
def photo_upload(request, pk: int):
    """Drag-and-drop upload target: answers JSON with what was stored and what was refused."""
    case = selectors.case_get(user=request.user, pk=pk)
    modality = request.POST.get("modality", Modality.CLINICAL)
    if modality not in Modality.values:
        return JsonResponse({"errors": [{"file": "", "error": f"Unknown modality {modality!r}."}]}, status=400)
    files = request.FILES.getlist("photos")
    if not files:
        return JsonResponse({"stored": [], "errors": [{"file": "", "error": "No file was sent."}]}, status=400)
    result = services.photos_attach_batch(case=case, uploads=files, uploaded_by=request.user, modality=modality)
    status = 201 if result.photos else 400
    if request.headers.get("accept", "").startswith("application/json") or request.headers.get("x-requested-with"):
        return JsonResponse(result.as_dict(), status=status)
    for err in result.errors:
        messages.error(request, err["error"])
    if result.photos:
        messages.success(request, f"{len(result.photos)} photo(s) added.")
    return redirect("annotation:case_detail", pk=case.pk)


@require_role(*roles.CAN_VIEW_CLINICAL)
def photo_file(request, pk: int):
    """Streams a clinical photo after the permission check; never a public URL.
    `?w=NNN` returns a downscaled JPEG for galleries."""
    photo = selectors.photo_get(user=request.user, pk=pk)
    return stream_photo(photo, request.GET.get("w"))


def stream_photo(photo, width: str | None = None):
    try:
        if width and width.isdigit() and 16 <= int(width) < photo.width:
            with photo.file.open("rb") as fh:
                img = Image.open(fh)
                img.draft("RGB", (int(width), int(width)))  # JPEG: decode at a reduced scale, not full size
                img.thumbnail((int(width), int(width) * 4))
                out = io.BytesIO()
                img.convert("RGB").save(out, "JPEG", quality=85)
            response = private_file_response(out.getvalue(), content_type="image/jpeg")
        else:
            ext = photo.file.name.rsplit(".", 1)[-1].lower()
            response = private_file_response(
                photo.file.open("rb"), content_type="image/png" if ext == "png" else "image/jpeg"
            )
    except FileNotFoundError:
        logging.getLogger(__name__).error("photo %s: file %s is missing from storage", photo.pk, photo.file.name)
        raise Http404("The photo file is missing from storage.")
    return response


@require_POST
@require_role(*roles.CAN_RECORD_LABEL)
def label_record(request, pk: int):
    case = selectors.case_get(user=request.user, pk=pk)
    form = LabelForm(request.POST, request.FILES, taxonomy=selectors.taxonomy_default())
    if not form.is_valid():
        for field, errs in form.errors.items():
            messages.error(request, f"{field}: {' '.join(errs)}")
        return redirect("annotation:case_detail", pk=case.pk)
    d = form.cleaned_data
    try:
        services.label_record(
            case=case,
            sub_class=d["sub_class"],
            source=d["source"],
            by=request.user,
            report_text=d["report_text"],
            report_file=d["report_file"],
            note=d["note"],
        )
    except ValidationError as exc:
        messages.error(request, "; ".join(exc.messages))
    else:
        messages.success(
            request, f"Label recorded: {d['sub_class'].display_name} ({dict(LabelSource.choices)[d['source']]})."
        )
    return redirect("annotation:case_detail", pk=case.pk)


@require_POST
@require_role(*roles.CAN_EDIT_CASES)
def case_status(request, pk: int):
    case = selectors.case_get(user=request.user, pk=pk)
    form = StatusForm(request.POST)
    if form.is_valid():
        try:
            services.case_set_status(
                case=case,
                status=form.cleaned_data["status"],
                exclusion_reason=form.cleaned_data["exclusion_reason"],
                note=form.cleaned_data["note"],
                by=request.user,
            )
            messages.success(request, "Status updated.")
        except ValidationError as exc:
            messages.error(request, "; ".join(exc.messages))
    return redirect("annotation:case_detail", pk=case.pk)


@require_role(*roles.CAN_VIEW_CLINICAL)
def label_report_file(request, pk: int, label_pk: int):
    case = selectors.case_get(user=request.user, pk=pk)
    label = get_object_or_404(case.labels, pk=label_pk)
    if not label.report_file:
        raise PermissionDenied("This label has no report file.")
    return private_file_response(
        label.report_file.open("rb"), max_age=0, filename=label.report_file.name.rsplit("/", 1)[-1]
    )


@require_role(*roles.CAN_EXPORT_PATIENT_DATA)
def cases_export(request):
    """CSV of cases with patient pseudonyms and labels. Admins only."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "case_id",
            "external_id",
            "patient_code",
            "sex",
            "birth_year",
            "body_site",
            "status",
            "diagnosis",
            "source",
            "confirmed",
            "photos",
        ]
    )
    for case in selectors.case_list(user=request.user).iterator(chunk_size=2000):
        writer.writerow(
            [
                case.pk,
                spreadsheet_safe(case.external_id),
                spreadsheet_safe(case.patient.code),
                case.patient.sex,
                case.patient.birth_year or "",
                spreadsheet_safe(case.body_site),
                case.status,
                case.diagnosis_code or "",
                case.diagnosis_source or "",
                bool(case.diagnosis_confirmed),
                case.photo_count or 0,
            ]
        )
    logging.getLogger("derm_portal.audit").info("cases CSV export by %s", request.user.get_username())
    response = HttpResponse(out.getvalue(), content_type="text/csv")
    response["Content-Disposition"] = 'attachment; filename="derm-portal-cases.csv"'
    return response


# ------------------------------------------------------------------ taxonomy
def _taxonomy_edits(request, taxonomy) -> tuple[dict, dict]:
    """The edit form's names and grades, keyed by sub-class / meta-class pk (absent fields are left out)."""
    subs, metas = {}, {}
    for sub in SubClass.objects.filter(taxonomy=taxonomy):
        name = request.POST.get(f"sub-{sub.pk}-name")
        if name is None:
            continue
        grade = request.POST.get(f"sub-{sub.pk}-grade")
        try:
            parsed = int(grade) if grade else None
        except ValueError:
            raise ValidationError({"malignancy_grade": f"Grade of {sub.code} must be 1, 2, 3 or empty (not a tumour)."})
        subs[sub.pk] = (name, parsed)
    for meta in MetaClass.objects.filter(taxonomy=taxonomy):
        name = request.POST.get(f"meta-{meta.pk}-name")
        if name is not None:
            metas[meta.pk] = name
    return subs, metas


def taxonomy_page(request, pk: int | None = None):
    taxonomy = get_object_or_404(Taxonomy, pk=pk) if pk else selectors.taxonomy_default()
    can_edit = roles.has_role(request.user, roles.CAN_EDIT_TAXONOMY)
    import_form = TaxonomyImportForm()
    if request.method == "POST":
        if not can_edit:
            raise PermissionDenied("Only admins edit the taxonomy.")
        action = request.POST.get("action")
        try:
            if action == "import":
                import_form = TaxonomyImportForm(request.POST, request.FILES)
                if import_form.is_valid():
                    upload = import_form.cleaned_data["file"]
                    data = services.taxonomy_from_json_bytes(upload.read(), source_name=upload.name)
                    new = services.taxonomy_import(
                        data=data,
                        created_by=request.user,
                        make_default=import_form.cleaned_data["make_default"],
                        name=import_form.cleaned_data["name"] or None,
                    )
                    messages.success(request, f"Imported {new}.")
                    return redirect("annotation:taxonomy_version", pk=new.pk)
            elif action == "make_default":
                services.taxonomy_make_default(taxonomy=taxonomy)
                messages.success(request, f"{taxonomy} is now the default taxonomy.")
                return redirect("annotation:taxonomy_version", pk=taxonomy.pk)
            elif action == "edit":
                subs, metas = _taxonomy_edits(request, taxonomy)
                services.taxonomy_edit(taxonomy=taxonomy, by=request.user, sub_classes=subs, meta_classes=metas)
                messages.success(request, "Taxonomy saved.")
                return redirect("annotation:taxonomy_version", pk=taxonomy.pk)
        except (services.TaxonomyError, ValidationError) as exc:
            messages.error(request, str(exc) if isinstance(exc, services.TaxonomyError) else "; ".join(exc.messages))
    return render(
        request,
        "annotation/taxonomy.html",
        {
            "taxonomy": taxonomy,
            "tree": selectors.taxonomy_tree(taxonomy=taxonomy) if taxonomy else [],
            "taxonomies": Taxonomy.objects.all(),
            "can_edit": can_edit,
            "import_form": import_form,
            "grades": [(1, "Benign"), (2, "Low malignancy"), (3, "High malignancy")],
        },
    )


def taxonomy_export(request, pk: int):
    taxonomy = get_object_or_404(Taxonomy, pk=pk)
    response = HttpResponse(
        json.dumps(selectors.taxonomy_export(taxonomy=taxonomy), indent=2), content_type="application/json"
    )
    # A header value: the name without quotes, line breaks or other non-filename characters.
    safe_name = re.sub(r"[^A-Za-z0-9._-]+", "-", taxonomy.name).strip("-") or "taxonomy"
    response["Content-Disposition"] = f'attachment; filename="taxonomy-{safe_name}-v{taxonomy.version}.json"'
    return response
