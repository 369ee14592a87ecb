"""The model page's triage targets form (admins): recompute this site's tier thresholds."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from derm_portal import roles

from . import selectors
from .services.triage import triage_targets_reset, triage_targets_set


@require_POST
@roles.require_role(*roles.CAN_ACTIVATE_MODELS)
def model_triage_targets(request, pk: int):
    m = selectors.model_version_get(user=request.user, pk=pk)
    if request.POST.get("reset") == "1":
        triage_targets_reset(model_version=m)
        messages.success(request, "This site uses the thresholds chosen at training again.")
        return redirect("inference:model_detail", pk=m.pk)
    try:
        s = triage_targets_set(
            model_version=m,
            urgent=request.POST.get("urgent_target", ""),
            malignant=request.POST.get("malignant_target", ""),
            high_grade=request.POST.get("high_grade_target"),
            by=request.user,
        )
    except ValidationError as exc:
        messages.error(request, "; ".join(exc.messages))
    else:
        th = s.thresholds
        messages.success(
            request,
            f"Thresholds recomputed for this site: urgent {th.get('urgent'):.3f}, "
            f"refer {th.get('malignant'):.3f}. New predictions use them.",
        )
    return redirect("inference:model_detail", pk=m.pk)
