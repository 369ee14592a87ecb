"""HTML pages of the annotation workspace. Thin: services in boxes.py / review.py /
voc_coco.py / crops.py, reads in boxes.py / agreement.py; the editor itself is
static/annotation/workspace.js talking to annotation/workspace_api.py."""
from __future__ import annotations

import io
import json
import zipfile

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from derm_portal import roles

from . import agreement, boxes, review
from .models import AnnotationStatus, AnnotatorGroup, Assignment, Crop, ExclusionReason, Photo, PhotoAnnotation
from .selectors import photo_get, taxonomy_default, taxonomy_tree
from .views import require_role


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
        mine = {a.photo_id: a for a in PhotoAnnotation.objects.filter(annotator=request.user, photo__in=[p.pk for p in rows])}
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
    return render(request, "annotation/workspace.html", {
        "f": f, "page": page, "rows": rows, "querystring": query.urlencode(), "counts": counts,
        "statuses": AnnotationStatus.choices, **_taxonomy_context(),
        "is_admin": roles.has_role(request.user, roles.ADMIN),
        "my_groups": request.user.annotator_groups.all(),
    })


def _editor(request, *, mode: str, api_url: str, photo: Photo, extra: dict | None = None):
    ctx = _taxonomy_context()
    f = _filters(request)
    config = {
        "mode": mode,
        "api": api_url,
        "queue": f["queue"] or ("review" if mode == "review" else "annotate"),
        "status": f["status"], "label": f["label"],
        "queueApi": reverse("workspace-queue"),
        "labels": ctx.pop("labels_json"),
        "exclusionReasons": ExclusionReason.choices,
        "workspaceUrl": reverse("annotation:workspace"),
    }
    return render(request, "annotation/workspace_photo.html", {
        "photo": photo, "mode": mode, "config": config, **ctx, **(extra or {}),
    })


@require_role(*roles.CAN_ANNOTATE)
def workspace_photo(request, pk: int):
    photo = photo_get(user=request.user, pk=pk)
    return _editor(request, mode="annotate", api_url=reverse("workspace-detail", args=[photo.pk]), photo=photo)


@require_role(*roles.CAN_ANNOTATE)
def review_photo(request, pk: int):
    ann = get_object_or_404(PhotoAnnotation.objects.select_related("photo", "annotator"), pk=pk)
    photo = photo_get(user=request.user, pk=ann.photo_id)
    return _editor(request, mode="review", api_url=reverse("review-detail", args=[ann.pk]), photo=photo,
                   extra={"reviewed": ann, "can_set_gold": roles.has_role(request.user, roles.CAN_CONFIRM_LABEL)})


# --------------------------------------------------------------------------- groups
@require_role(*review.CAN_MANAGE_GROUPS)
def groups_page(request):
    """Admin: put annotators in group A and B, then split unassigned photos of a filter in half."""
    User = get_user_model()
    annotators = User.objects.filter(groups__name__in=roles.CAN_ANNOTATE, is_active=True).distinct().order_by("username")
    ctx = _taxonomy_context()
    if request.method == "POST":
        try:
            if request.POST.get("action") == "members":
                a_ids = set(map(int, request.POST.getlist("group_a")))
                b_ids = set(map(int, request.POST.getlist("group_b")))
                if a_ids & b_ids:
                    raise boxes.AnnotationError("A person can be in group A or group B, not both.")
                ga = review.group_set_members(name=request.POST.get("name_a") or "Group A", members=annotators.filter(pk__in=a_ids), by=request.user)
                gb = review.group_set_members(name=request.POST.get("name_b") or "Group B", members=annotators.filter(pk__in=b_ids), by=request.user)
                messages.success(request, f"{ga.name}: {ga.members.count()} member(s); {gb.name}: {gb.members.count()} member(s).")
            elif request.POST.get("action") == "split":
                ga = get_object_or_404(AnnotatorGroup, pk=request.POST.get("group_a"))
                gb = get_object_or_404(AnnotatorGroup, pk=request.POST.get("group_b"))
                photos = boxes.class_filter(Photo.objects.all(), request.POST.get("label", "").strip())
                if request.POST.get("modality"):
                    photos = photos.filter(modality=request.POST["modality"])
                counts = review.groups_split(group_a=ga, group_b=gb, photos=photos, by=request.user)
                messages.success(request, "Assigned: " + ", ".join(f"{k} {v} photo(s)" for k, v in counts.items()))
            elif request.POST.get("action") == "unassign":
                group = get_object_or_404(AnnotatorGroup, pk=request.POST.get("group"))
                n, _ = Assignment.objects.filter(group=group).exclude(photo__annotations__isnull=False).delete()
                messages.success(request, f"{n} untouched photo(s) unassigned from {group.name}.")
        except boxes.AnnotationError as exc:
            messages.error(request, str(exc))
        return redirect("annotation:workspace_groups")
    groups = list(AnnotatorGroup.objects.prefetch_related("members"))
    for g in groups:
        g.n_assigned = g.assignments.count()
        g.n_accepted = PhotoAnnotation.objects.filter(photo__assignment__group=g, status=AnnotationStatus.ACCEPTED).values("photo").distinct().count()
    group_a = groups[0] if groups else None
    group_b = groups[1] if len(groups) > 1 else None
    return render(request, "annotation/workspace_groups.html", {
        "annotators": annotators, "groups": groups, "group_a": group_a, "group_b": group_b,
        "a_members": set(group_a.members.values_list("pk", flat=True)) if group_a else set(),
        "b_members": set(group_b.members.values_list("pk", flat=True)) if group_b else set(),
        "unassigned": Photo.objects.filter(assignment__isnull=True).count(),
        **ctx,
    })


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
    return render(request, "annotation/workspace_agreement.html", {
        "report": report, "rows": rows, "gold": agreement.gold_scores(threshold=threshold), "threshold": threshold,
        "can_set_gold": roles.has_role(request.user, roles.CAN_CONFIRM_LABEL),
    })


@require_POST
@require_role(*roles.CAN_CONFIRM_LABEL)
def gold_toggle(request, pk: int):
    ann = get_object_or_404(PhotoAnnotation, pk=pk)
    photo_get(user=request.user, pk=ann.photo_id)
    try:
        review.gold_set(annotation=ann, by=request.user, is_gold=request.POST.get("gold") == "1")
        messages.success(request, f"Annotation {ann.pk} is {'now' if ann.is_gold else 'no longer'} the gold reference of photo {ann.photo_id}.")
    except boxes.AnnotationError as exc:
        messages.error(request, str(exc))
    return redirect(request.POST.get("next") or reverse("annotation:workspace_agreement"))
