"""HTML pages of the annotation workspace. Thin: services in boxes.py / review.py /
interchange/ / crops.py, reads in boxes.py / agreement.py; the editor itself is
static/annotation/workspace.js talking to annotation/workspace_api.py."""

from __future__ import annotations

import json

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from derm_portal import roles
from derm_portal.roles import require_role

from . import agreement, boxes, review
from .models import AnnotationStatus, AnnotatorGroup, Crop, ExclusionReason, Photo, PhotoAnnotation
from .selectors import photo_get, taxonomy_default, taxonomy_tree


def _taxonomy_context() -> dict:
    tax = taxonomy_default()
    tree = taxonomy_tree(taxonomy=tax) if tax else []
    labels = []
    for node in tree:
        meta = node["meta"]
        labels.append({"code": meta.code, "name": meta.display_name, "meta": meta.code, "level": "meta"})
        for s in node["subs"]:
            labels.append({"code": s.code, "name": s.display_name, "meta": meta.code, "level": "sub"})
    return {"taxonomy": tax, "tree": tree, "labels_json": labels}


def _filters(request) -> dict:
    return {k: request.GET.get(k, "").strip() for k in ("queue", "status", "label")}


@never_cache  # the queue counts change with every submission; Back must not show stale ones
@require_role(*roles.CAN_ANNOTATE)
def workspace(request):
    """Landing page: my photos to annotate / photos to review, filterable by class and status."""
    f = _filters(request)
    f["queue"] = f["queue"] if f["queue"] in ("annotate", "review") else "annotate"
    if f["queue"] == "review":
        qs = boxes.queue_to_review(user=request.user, label=f["label"])
    else:
        qs = boxes.queue_to_annotate(user=request.user, status=f["status"], label=f["label"]).select_related("case")
    page = Paginator(qs, 40).get_page(request.GET.get("page"))
    rows = list(page.object_list)
    if f["queue"] == "annotate":
        mine = {
            a.photo_id: a
            for a in PhotoAnnotation.objects.filter(annotator=request.user, photo__in=[p.pk for p in rows])
        }
        rows = [{"photo": p, "annotation": mine.get(p.pk)} for p in rows]
    else:
        rows = [{"photo": a.photo, "annotation": a} for a in rows]
    query = request.GET.copy()
    query.pop("page", None)
    counts = {
        "annotate": boxes.queue_to_annotate(user=request.user).count(),
        "review": boxes.queue_to_review(user=request.user).count(),
        "rejected": PhotoAnnotation.objects.filter(annotator=request.user, status=AnnotationStatus.REJECTED).count(),
    }
    return render(
        request,
        "annotation/workspace.html",
        {
            "f": f,
            "page": page,
            "rows": rows,
            "querystring": query.urlencode(),
            "counts": counts,
            "statuses": AnnotationStatus.choices,
            **_taxonomy_context(),
            "is_admin": roles.has_role(request.user, roles.ADMIN),
            "my_groups": request.user.annotator_groups.all(),
        },
    )


def _editor(request, *, mode: str, api_url: str, photo: Photo, extra: dict | None = None):
    ctx = _taxonomy_context()
    f = _filters(request)
    config = {
        "mode": mode,
        "api": api_url,
        "queue": f["queue"] or ("review" if mode == "review" else "annotate"),
        "status": f["status"],
        "label": f["label"],
        "queueApi": reverse("workspace-queue"),
        "labels": ctx.pop("labels_json"),
        "exclusionReasons": ExclusionReason.choices,
        "workspaceUrl": reverse("annotation:workspace"),
        "autosaveSeconds": getattr(settings, "ANNOTATION_AUTOSAVE_SECONDS", 20),
    }
    return render(
        request,
        "annotation/workspace_photo.html",
        {
            "photo": photo,
            "mode": mode,
            "config": config,
            **ctx,
            **(extra or {}),
        },
    )


@require_role(*roles.CAN_ANNOTATE)
def workspace_photo(request, pk: int):
    photo = photo_get(user=request.user, pk=pk)
    mine = PhotoAnnotation.objects.filter(photo=photo, annotator=request.user).first()
    can_gold = roles.has_role(request.user, roles.CAN_CONFIRM_LABEL)
    return _editor(
        request,
        mode="annotate",
        api_url=reverse("workspace-detail", args=[photo.pk]),
        photo=photo,
        extra={
            "reviewed": mine
            if can_gold and mine and mine.status in (AnnotationStatus.ANNOTATED, AnnotationStatus.ACCEPTED)
            else None,
            "can_set_gold": can_gold,
        },
    )


@require_role(*roles.CAN_ANNOTATE)
def review_photo(request, pk: int):
    ann = get_object_or_404(PhotoAnnotation.objects.select_related("photo", "annotator"), pk=pk)
    photo = photo_get(user=request.user, pk=ann.photo_id)
    return _editor(
        request,
        mode="review",
        api_url=reverse("review-detail", args=[ann.pk]),
        photo=photo,
        extra={"reviewed": ann, "can_set_gold": roles.has_role(request.user, roles.CAN_CONFIRM_LABEL)},
    )


# --------------------------------------------------------------------------- groups
@require_role(*review.CAN_MANAGE_GROUPS)
def groups_page(request):
    """Admin: put annotators in group A and B, then split unassigned photos of a filter in half."""
    User = get_user_model()
    annotators = (
        User.objects.filter(groups__name__in=roles.CAN_ANNOTATE, is_active=True).distinct().order_by("username")
    )
    ctx = _taxonomy_context()
    if request.method == "POST":
        try:
            if request.POST.get("action") == "members":
                a_ids = {int(v) for v in request.POST.getlist("group_a") if v.isdigit()}
                b_ids = {int(v) for v in request.POST.getlist("group_b") if v.isdigit()}
                if a_ids & b_ids:
                    raise boxes.AnnotationError("A person can be in group A or group B, not both.")
                ga = review.group_set_members(
                    name=request.POST.get("name_a") or "Group A",
                    members=annotators.filter(pk__in=a_ids),
                    by=request.user,
                )
                gb = review.group_set_members(
                    name=request.POST.get("name_b") or "Group B",
                    members=annotators.filter(pk__in=b_ids),
                    by=request.user,
                )
                messages.success(
                    request, f"{ga.name}: {ga.members.count()} member(s); {gb.name}: {gb.members.count()} member(s)."
                )
            elif request.POST.get("action") == "split":
                ga = get_object_or_404(AnnotatorGroup, pk=request.POST.get("group_a"))
                gb = get_object_or_404(AnnotatorGroup, pk=request.POST.get("group_b"))
                photos = boxes.class_filter(Photo.objects.all(), request.POST.get("label", "").strip())
                if request.POST.get("modality"):
                    photos = photos.filter(modality=request.POST["modality"])
                split = review.groups_split(group_a=ga, group_b=gb, photos=photos, by=request.user)
                messages.success(
                    request, "Assigned: " + ", ".join(f"{k} {v} photo(s)" for k, v in split.counts.items())
                )
                for line in split.moved:
                    messages.info(request, line)
            elif request.POST.get("action") == "unassign":
                group = get_object_or_404(AnnotatorGroup, pk=request.POST.get("group"))
                n = review.group_unassign_untouched(group=group, by=request.user)
                messages.success(request, f"{n} untouched photo(s) unassigned from {group.name}.")
        except boxes.AnnotationError as exc:
            messages.error(request, str(exc))
        return redirect("annotation:workspace_groups")
    groups = list(AnnotatorGroup.objects.prefetch_related("members"))
    for g in groups:
        g.n_assigned = g.assignments.count()
        g.n_accepted = (
            PhotoAnnotation.objects.filter(photo__assignment__group=g, status=AnnotationStatus.ACCEPTED)
            .values("photo")
            .distinct()
            .count()
        )
    group_a = groups[0] if groups else None
    group_b = groups[1] if len(groups) > 1 else None
    return render(
        request,
        "annotation/workspace_groups.html",
        {
            "annotators": annotators,
            "groups": groups,
            "group_a": group_a,
            "group_b": group_b,
            "a_members": set(group_a.members.values_list("pk", flat=True)) if group_a else set(),
            "b_members": set(group_b.members.values_list("pk", flat=True)) if group_b else set(),
            "unassigned": Photo.objects.filter(assignment__isnull=True).count(),
            **ctx,
        },
    )


# --------------------------------------------------------------------------- agreement
@require_role(*roles.CAN_ANNOTATE)
def agreement_page(request):
    try:
        threshold = min(0.95, max(0.05, float(request.GET.get("iou", 0.5))))
    except ValueError:
        threshold = 0.5
    report = agreement.agreement_report(threshold=threshold)
    rows = []
    for a in report["annotators"]:
        rows.append({"name": a, "cells": [report["matrix"][a][b] if a != b else "self" for b in report["annotators"]]})
    return render(
        request,
        "annotation/workspace_agreement.html",
        {
            "report": report,
            "rows": rows,
            "gold": agreement.gold_scores(threshold=threshold),
            "threshold": threshold,
            "review_stats": review.review_stats(),
            "can_set_gold": roles.has_role(request.user, roles.CAN_CONFIRM_LABEL),
        },
    )


@require_POST
@require_role(*roles.CAN_CONFIRM_LABEL)
def gold_toggle(request, pk: int):
    ann = get_object_or_404(PhotoAnnotation, pk=pk)
    photo_get(user=request.user, pk=ann.photo_id)
    try:
        ann = review.gold_set(annotation=ann, by=request.user, is_gold=request.POST.get("gold") == "1")
        messages.success(
            request,
            f"Annotation {ann.pk} is {'now' if ann.is_gold else 'no longer'} the gold reference of photo {ann.photo_id}.",
        )
    except boxes.AnnotationError as exc:
        messages.error(request, str(exc))
    return redirect(request.POST.get("next") or reverse("annotation:workspace_agreement"))


# --------------------------------------------------------------------------- import / export
@require_role(*roles.CAN_ANNOTATE)
def io_page(request):
    from .interchange import coco, export, jobs, voc
    from .interchange.limits import limit
    from .interchange.mapping import mapping_parse, with_mapping
    from .interchange.store import dry_run

    report = None
    is_admin = roles.has_role(request.user, roles.ADMIN)
    if request.method == "POST":
        action = request.POST.get("action")
        status = request.POST.get("status") or AnnotationStatus.ANNOTATED
        try:
            labels, mapping = boxes.label_index(), None
            if request.FILES.get("map"):  # their class names -> taxonomy codes
                m = request.FILES["map"]
                try:
                    text = m.read().decode("utf-8-sig")
                except UnicodeDecodeError:
                    raise boxes.AnnotationError(f"The label mapping {m.name} is not UTF-8 text.")
                mapping = mapping_parse(text, source=m.name, labels=labels)
                labels = with_mapping(labels, mapping)
            trial = bool(request.POST.get("dry_run"))
            if action == "import_voc":
                xmls = [(f.name, f.read()) for f in request.FILES.getlist("xml")]
                images = {f.name: f.read() for f in request.FILES.getlist("images")}
                if not xmls:
                    raise boxes.AnnotationError("Choose one or more .xml files.")

                def run():
                    return voc.voc_import(
                        files=xmls,
                        user=request.user,
                        status=status,
                        images=images,
                        create_cases=bool(request.POST.get("create_cases")),
                        labels=labels,
                    )

                report = dry_run(run) if trial else run()
            elif action == "import_coco":
                upload = request.FILES.get("coco")
                if upload is None:
                    raise boxes.AnnotationError("Choose a COCO .json file.")
                # a large file goes to the long queue with its mapping, dry-run choice and, to create
                # cases from, its images
                if upload.size > limit("INLINE_BYTES"):
                    create_cases = bool(request.POST.get("create_cases"))
                    run = jobs.box_import_enqueue(
                        data=upload.read(),
                        source=upload.name,
                        user=request.user,
                        status=status,
                        mapping=mapping,
                        trial=trial,
                        images={f.name: f.read() for f in request.FILES.getlist("images")} if create_cases else None,
                        create_cases=create_cases,
                    )
                    what = (
                        f"dry run {run.pk} on the long queue; what it would import shows"
                        if trial
                        else f"import {run.pk} on the long queue; its progress and result show"
                    )
                    messages.success(request, f"{upload.name} is large: queued as {what} below (reload).")
                    return redirect("annotation:workspace_io")
                data = upload.read()
                images = {f.name: f.read() for f in request.FILES.getlist("images")}

                def run():
                    return coco.coco_import(
                        data=data,
                        source=upload.name,
                        user=request.user,
                        status=status,
                        labels=labels,
                        images=images,
                        create_cases=bool(request.POST.get("create_cases")),
                    )

                report = dry_run(run) if trial else run()
            elif action == "export":
                statuses = request.POST.getlist("export_status") or [AnnotationStatus.ACCEPTED]
                anns = export.annotations_for_export(user=request.user, statuses=statuses)
                fmt = request.POST.get("format")
                if fmt == "coco":
                    resp = HttpResponse(json.dumps(export.export_coco(anns), indent=1), content_type="application/json")
                    resp["Content-Disposition"] = 'attachment; filename="derm-boxes-coco.json"'
                elif fmt == "csv":
                    resp = HttpResponse(export.export_csv(anns), content_type="text/csv")
                    resp["Content-Disposition"] = 'attachment; filename="derm-boxes.csv"'
                elif fmt == "yolo":
                    from .interchange.yolo import export_yolo_zip

                    resp = HttpResponse(
                        export_yolo_zip(anns, with_images=bool(request.POST.get("with_images"))),
                        content_type="application/zip",
                    )
                    resp["Content-Disposition"] = 'attachment; filename="derm-boxes-yolo.zip"'
                else:
                    resp = HttpResponse(
                        export.export_voc_zip(anns, with_images=bool(request.POST.get("with_images"))),
                        content_type="application/zip",
                    )
                    resp["Content-Disposition"] = 'attachment; filename="derm-boxes-voc.zip"'
                return resp
        except boxes.AnnotationError as exc:
            messages.error(request, str(exc))
        except PermissionDenied as exc:
            messages.error(request, str(exc))
    return render(
        request,
        "annotation/workspace_io.html",
        {
            "report": report,
            "is_admin": is_admin,
            "statuses": AnnotationStatus.choices,
            "can_create_cases": roles.has_role(request.user, roles.CAN_EDIT_CASES),
            "runs": jobs.box_import_runs(user=request.user),
        },
    )


# --------------------------------------------------------------------------- crops
CAN_MAKE_CROPS = roles.CAN_TRAIN_MODELS


@require_role(*roles.CAN_ANNOTATE)
def crops_page(request):
    from . import crops

    can_make = roles.has_role(request.user, CAN_MAKE_CROPS)
    if request.method == "POST":
        if not can_make:
            raise PermissionDenied("Only dermatologists and admins make and export training crops.")
        try:
            margin = float(request.POST.get("margin") or 0) / 100.0
            min_size = int(request.POST.get("min_size") or 0)
        except ValueError:
            messages.error(request, "Margin and minimum size are numbers.")
            return redirect("annotation:workspace_crops")
        if request.POST.get("action") == "export":
            import tempfile

            from django.http import FileResponse

            fh = tempfile.TemporaryFile()  # noqa: SIM115  (FileResponse closes it)
            crops.crops_export_zip(fh, level=request.POST.get("level", "sub"), margin=margin)
            fh.seek(0)
            return FileResponse(fh, as_attachment=True, filename="derm-crops.zip", content_type="application/zip")
        if margin < 0 or margin > 5 or min_size < 0:
            messages.error(request, "Margin must be between 0 and 500 % and the minimum size positive.")
            return redirect("annotation:workspace_crops")
        crops.crops_request(margin=margin, min_size=min_size)
        messages.success(
            request, f"Making crops (margin {margin:.0%}, minimum {min_size} px) on the long queue; reload to see them."
        )
        return redirect("annotation:workspace_crops")
    from django.db.models import Count

    stats = list(
        Crop.objects.values("margin")
        .annotate(n=Count("id"), cases=Count("case", distinct=True), photos=Count("photo", distinct=True))
        .order_by("margin")
    )
    for s in stats:
        s["per_photo"] = s["n"] / s["photos"] if s["photos"] else None
    by_label = list(Crop.objects.values("sub_class__code", "meta_class__code").annotate(n=Count("id")).order_by("-n"))
    accepted = crops.accepted_boxes().count()
    accepted_photos = crops.accepted_boxes().values("photo").distinct().count()
    return render(
        request,
        "annotation/workspace_crops.html",
        {
            "stats": stats,
            "by_label": by_label,
            "recent": Crop.objects.select_related("case", "sub_class", "meta_class").order_by("-id")[:24],
            "accepted": accepted,
            "accepted_photos": accepted_photos,
            "can_make": can_make,
        },
    )


@require_role(*roles.CAN_ANNOTATE)
def crop_file(request, pk: int):
    from derm_portal.http import private_file_response

    crop = get_object_or_404(Crop, pk=pk)
    photo_get(user=request.user, pk=crop.photo_id)  # same visibility as the photo
    return private_file_response(crop.file.open("rb"), content_type="image/jpeg")


# --------------------------------------------------------------------------- case page panel
def case_panel(request, case) -> str:
    """DERM_CASE_PANELS entry: boxes and review state of each photo, with links to annotate."""
    from django.template.loader import render_to_string

    if not roles.has_role(request.user, roles.CAN_VIEW_CLINICAL):
        return ""
    anns = PhotoAnnotation.objects.filter(photo__case=case).select_related("annotator").order_by("photo_id", "id")
    from django.db.models import Count

    anns = anns.annotate(n_boxes=Count("boxes"))
    by_photo: dict[int, list] = {}
    for a in anns:
        by_photo.setdefault(a.photo_id, []).append(a)
    rows = [{"photo": p, "annotations": by_photo.get(p.pk, [])} for p in case.photos.all()]
    if not rows:
        return ""
    return render_to_string(
        "annotation/workspace_case_panel.html",
        {
            "rows": rows,
            "can_annotate": roles.has_role(request.user, roles.CAN_ANNOTATE),
            "n_crops": Crop.objects.filter(case=case).count(),
        },
        request=request,
    )
