"""Pages of the reports app: reader studies (set-up, reading, results) and, when present,
the patient malignancy report (reports.patient_urls, built separately)."""

import importlib

from django.urls import include, path

from . import views, views_reading

app_name = "reports"
urlpatterns: list = [
    # coordinators and admins
    path("studies/", views.study_list, name="study_list"),
    path("studies/new/", views.study_create, name="study_create"),
    path("studies/<int:pk>/", views.study_detail, name="study_detail"),
    path("studies/<int:pk>/results/", views.study_results, name="study_results"),
    path("studies/<int:pk>/readings.csv", views.study_readings_csv, name="study_readings_csv"),
    path("studies/<int:pk>/report.pdf", views.study_report_pdf, name="study_report_pdf"),
    path("studies/<int:pk>/charts/<slug:key>.<str:fmt>", views.study_chart, name="study_chart"),
    path("studies/plotly.min.js", views.plotly_js, name="plotly_js"),
    # invited readers
    path("reading/", views_reading.my_studies, name="my_studies"),
    path("reading/<int:study_pk>/", views_reading.reading_start, name="reading_start"),
    path("reading/<int:study_pk>/<str:session>/case/<int:number>/", views_reading.reading_case, name="reading_case"),
    path("reading/<int:study_pk>/case/<int:number>/photo/<int:idx>", views_reading.reading_photo, name="reading_photo"),
]

try:  # the patient-report pages land in their own module
    importlib.import_module("reports.patient_urls")
except ModuleNotFoundError as exc:  # pragma: no cover - depends on what has landed
    if exc.name != "reports.patient_urls":
        raise
else:
    urlpatterns.append(path("", include("reports.patient_urls")))
