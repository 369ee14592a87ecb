"""Case-page panel (settings.DERM_CASE_PANELS): the reader studies a case is part of, for
coordinators and admins, so nobody edits a case's reference label mid-study unknowingly."""

from __future__ import annotations

from django.template.loader import render_to_string

from derm_portal import roles

from .models import StudyCase


def case_studies_panel(request, case) -> str:
    if not roles.has_role(request.user, roles.CAN_COORDINATE_STUDIES):
        return ""
    rows = list(
        StudyCase.objects.filter(case=case).select_related("study", "truth_sub_class").order_by("-study__created_at")
    )
    if not rows:
        return ""
    return render_to_string("reports/study_case_panel.html", {"rows": rows, "case": case}, request=request)
