"""Pages of the reports app: reader studies (set-up, reading, results) and, when present,
the patient malignancy report (reports.patient_urls, built separately)."""
import importlib

from django.urls import include, path

app_name = "reports"
urlpatterns: list = []

try:  # the patient-report pages land in their own module
    importlib.import_module("reports.patient_urls")
except ModuleNotFoundError as exc:  # pragma: no cover - depends on what has landed
    if exc.name != "reports.patient_urls":
        raise
else:
    urlpatterns.append(path("", include("reports.patient_urls")))
