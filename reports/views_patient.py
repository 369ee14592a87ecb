"""Patient malignancy report pages: printable HTML and PDF per photo."""

from __future__ import annotations

from django.shortcuts import render
from django.utils.text import slugify

from derm_portal.http import private_file_response

from .patient_report import (
    DISCLAIMER,
    GRADES,
    SCORE_EXPLANATION,
    patient_report_build,
)
from .patient_report_pdf import patient_report_pdf as render_pdf


def _page(request, report, status=200):
    return render(
        request,
        "reports/patient_report.html",
        {
            "report": report,
            "info": report.info,
            "grades": GRADES,
            "disclaimer": DISCLAIMER,
            "score_explanation": SCORE_EXPLANATION,
        },
        status=status,
    )


def patient_report(request, photo_pk: int):
    report = patient_report_build(user=request.user, photo_pk=photo_pk)
    return _page(request, report)


def patient_report_pdf(request, photo_pk: int):
    report = patient_report_build(user=request.user, photo_pk=photo_pk)
    if not report.available:
        # No PDF of nothing: the page explains why there is no report.
        return _page(request, report, status=404)
    name = f"derm-report-{slugify(report.case_reference) or 'case'}-photo-{report.photo.pk}.pdf"
    return private_file_response(
        render_pdf(report=report),
        content_type="application/pdf",
        max_age=0,
        filename=name,
        attachment=bool(request.GET.get("download")),
    )
