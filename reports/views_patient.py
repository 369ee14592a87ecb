"""Patient malignancy report pages: printable HTML and PDF per photo."""
from __future__ import annotations

from django.http import HttpResponse
from django.shortcuts import render
from django.utils.text import slugify

from .patient_report import DISCLAIMER, GRADES, SCORE_EXPLANATION, patient_report_build, patient_report_pdf as render_pdf


def _page(request, report, status=200):
    return render(
        request,
        "reports/patient_report.html",
        {"report": report, "info": report.info, "grades": GRADES, "disclaimer": DISCLAIMER, "score_explanation": SCORE_EXPLANATION},
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
    response = HttpResponse(render_pdf(report=report), content_type="application/pdf")
    name = f"derm-report-{slugify(report.case_reference) or 'case'}-photo-{report.photo.pk}.pdf"
    disposition = "attachment" if request.GET.get("download") else "inline"
    response["Content-Disposition"] = f'{disposition}; filename="{name}"'
    response["Cache-Control"] = "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response
